"""``kdalib tasks grid``: its handler (the arguments are parsed in :mod:`kdalib.cli`)."""

from __future__ import annotations

import sys
from pathlib import Path

from kdalib.tasks.grid import PLANS, grid_status, record_path, recorded_step_ms, run_plan
from kdalib.tasks.record import GridRecord, RecordError


def cmd_grid(args) -> int:
    """Trains the missing runs of a grid plan into its record, or (``--status``) prints what the
    record holds and what is missing. Exit 0, or 2 on unusable input."""
    if args.plan not in PLANS:
        print(f"kdalib tasks grid: unknown --plan {args.plan!r}; choose from {', '.join(PLANS)}", file=sys.stderr)
        return 2
    plan = PLANS[args.plan]
    device = plan.device if args.device == "plan" else args.device
    if args.max_seconds is not None and not args.max_seconds > 0:
        print(f"kdalib tasks grid: --max-seconds must be positive, got {args.max_seconds}", file=sys.stderr)
        return 2
    if args.max_runs is not None and args.max_runs < 0:
        print(f"kdalib tasks grid: --max-runs must be >= 0, got {args.max_runs}", file=sys.stderr)
        return 2
    path = Path(args.record) if args.record else record_path(plan, device)
    try:
        record = GridRecord(path)
    except RecordError as exc:
        print(f"kdalib tasks grid: {exc}", file=sys.stderr)
        return 2
    if args.status:
        status = grid_status(
            plan, record, device, fallback_ms_per_step=recorded_step_ms() if device == "cuda" else None
        )
        print("\n".join(status.summary()))
        print()
        print(status.table())
        return 0
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        print("kdalib tasks grid: the plan runs on cuda, but torch sees no CUDA device", file=sys.stderr)
        return 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    tiers = tuple(args.tier) if args.tier else None
    known = [tier.name for tier in plan.tiers]
    if tiers and not set(tiers) <= set(known):
        print(
            f"kdalib tasks grid: --tier: plan {plan.name!r} has the tiers {known}, got {list(tiers)}", file=sys.stderr
        )
        return 2
    progress = run_plan(plan, record, device, max_seconds=args.max_seconds, max_runs=args.max_runs, tiers=tiers)
    status = grid_status(plan, record, device)
    print(
        f"trained {len(progress.trained)} run(s); {progress.already} were recorded before; "
        f"{len(progress.deferred)} left for lack of time, {progress.not_reached} beyond --max-runs"
    )
    print("\n".join(status.summary()))
    return 0

"""Grids of synthetic-task runs trained a few runs at a time, over as many commands as they need.

A :class:`GridPlan` names the runs of a grid (a :class:`~kdalib.tasks.report_grid.GridProfile`
for the tasks, lengths, model and vocabularies; steps per length; mechanisms and seeds in
priority tiers). :func:`run_plan` trains the runs its :class:`~kdalib.tasks.record.GridRecord`
does not hold yet, in priority order, writes each one into the record as it finishes and stops
between runs when the next one would not finish within ``max_seconds``. :func:`grid_status`
says what is recorded and what is missing; :func:`kdalib.tasks.grid_view.show_grid` displays it
in a notebook, and ``kdalib tasks grid`` (:mod:`kdalib.tasks.command`) runs both from the shell.

Two plans (:data:`PLANS`):

* ``figure4``: the Kimi Linear report's synthetic-task grid (§5.1, Figure 4) at the report's
  model size (2 layers, 2 heads of dimension 128), tasks and lengths (256 to 2,048 tokens), with
  enough steps per length for the models that learn a task to pass their learning transition
  (:data:`FIGURE4_STEPS`, set from the ``transition`` plan's measurement). Its first tier holds
  the runs that decide the report's statements: KDA, Gated DeltaNet and the Mamba-2 rule (the
  three mechanisms of the report's convergence comparison) on every task and length, two seeds.
  Then linear attention and DeltaNet, two seeds; then a third seed for everything.
* ``transition``: where the learning transition lies, measured on the CPU: KDA with the
  ``figure4`` model (2 layers, 2 heads of dimension 128) and problems at 256 and 512 tokens, at
  half its batch (16) and in float32, each run ending once it is 90 % of the way from chance to
  perfect accuracy. ``transition_narrow`` is the same with a narrow model (heads of dimension 32):
  cheaper, but at the report's largest learning rate it stays near chance for 1,000 steps on
  MQAR and palindrome at 256 tokens, so the transition depends on the width and has to be
  measured at the report's.

Choices the report does not state are those of :mod:`kdalib.tasks.report_grid`, plus, here: one
learning rate (10⁻³, the largest of the report's search), held-out accuracy evaluated every
:data:`EVAL_EVERY` steps, and the step counts of :data:`FIGURE4_STEPS` instead of "at most
20,000" (notes/reproductions.md, "Synthetic tasks: the resumable grid").
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kdalib.tasks.record import GridRecord, RunSettings, code_version
from kdalib.tasks.report_grid import (
    PROFILES,
    GridProfile,
    GridRun,
    task_spec,
    transition_step,
)
from kdalib.tasks.train import TrainResult, train_recall_model

EVAL_EVERY = 25
"""Steps between held-out evaluations in both plans: the resolution of the accuracy curves."""

FIGURE4_STEPS = ((256, 1000), (512, 1500), (1024, 2000), (2048, 2500))
"""Training steps per run at each length of the ``figure4`` plan; our choice (the report trains
"at most 20,000"). The ``transition`` plan's CPU runs (KDA, the report's width, half its batch,
seeds 0 and 1) put the transition at 256 tokens (held-out accuracy past halfway from chance) at
step 400 and 400 on MQAR, 350 and 425 on palindrome, 300 and 350 on stack, with 90 % of the way
reached by step 550 at the latest. 1,000 steps at 256 tokens is 2.35 times the latest transition;
each doubling of the length adds half as many steps again, a hedge for harder problems (MQAR's
pairs grow with the length), not a measurement. A cell the status reports as learned by no
mechanism gets more steps at its length: only the runs at that length change key."""


DECIDING_KINDS = ("kda", "gated_deltanet", "mamba2")
"""The mechanisms the report's Figure-4 statements compare (its convergence comparison names
KDA, GDN and Mamba2)."""


@dataclasses.dataclass(frozen=True)
class Tier:
    """A group of runs of one priority: these mechanisms and seeds on every task, at ``lengths``
    (None: every length of the plan)."""

    name: str
    kinds: tuple[str, ...]
    seeds: tuple[int, ...]
    lengths: tuple[int, ...] | None = None


@dataclasses.dataclass(frozen=True)
class GridPlan:
    """The runs of a grid and the order to train them in.

    Attributes:
        name: the plan's name (the default record file is ``05_synthetic_<name>.json``).
        profile: tasks, lengths, learning rates, model size, batch and vocabularies; its kinds
            and seeds must cover the tiers'.
        steps: ``(length, steps per run)`` for every length of the profile.
        tiers: priority groups, trained in order; within a tier: shorter lengths first, then
            task, seed, mechanism and learning rate, so that each (task, length) cell is
            complete before the next starts.
        device: where the plan is meant to run (``cpu`` or ``cuda``): its default device.
        eval_every: steps between held-out evaluations.
        stop_fraction: end each run once its held-out accuracy is this fraction of the way from
            chance to 1 (:attr:`~kdalib.tasks.train.TrainConfig.stop_accuracy`); None: never.
    """

    name: str
    profile: GridProfile
    steps: tuple[tuple[int, int], ...]
    tiers: tuple[Tier, ...]
    device: str
    eval_every: int = EVAL_EVERY
    stop_fraction: float | None = None

    def __post_init__(self) -> None:
        lengths = tuple(length for length, _ in self.steps)
        if sorted(lengths) != sorted(self.profile.lengths) or any(steps < 1 for _, steps in self.steps):
            raise ValueError(
                f"GridPlan {self.name!r}: steps must give a positive count for each length "
                f"{self.profile.lengths}, got {self.steps}"
            )
        for tier in self.tiers:
            if (
                not set(tier.kinds) <= set(self.profile.kinds)
                or not set(tier.seeds) <= set(self.profile.seeds)
                or not set(tier.lengths or ()) <= set(self.profile.lengths)
            ):
                raise ValueError(
                    f"GridPlan {self.name!r}: tier {tier.name!r} uses kinds, seeds or lengths outside the profile"
                )
        names = [tier.name for tier in self.tiers]
        if len(set(names)) != len(names):
            raise ValueError(f"GridPlan {self.name!r}: tier names must differ, got {names}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"GridPlan {self.name!r}: device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.stop_fraction is not None and not 0 < self.stop_fraction <= 1:
            raise ValueError(f"GridPlan {self.name!r}: stop_fraction must be in (0, 1], got {self.stop_fraction}")

    def steps_at(self, length: int) -> int:
        """Steps per run at ``length`` tokens."""
        return dict(self.steps)[length]

    def settings(self, task: str, kind: str, length: int, seed: int, lr: float, device: str, code: str) -> RunSettings:
        """The :class:`~kdalib.tasks.record.RunSettings` of one run of the plan on ``device``."""
        spec = task_spec(task, length, self.profile)
        config = dataclasses.replace(
            self.profile.config(self.steps_at(length), lr, device),
            eval_every=self.eval_every,
            stop_accuracy=None if self.stop_fraction is None else spec.chance + self.stop_fraction * (1 - spec.chance),
        )
        return RunSettings(task, kind, seed, spec, config, device, code)

    def runs(self, device: str | None = None, code: str | None = None) -> list[tuple[str, RunSettings]]:
        """``(tier name, settings)`` of every run, in priority order, each once (in its first tier)."""
        device, code = device or self.device, code or code_version()
        ordered, seen = [], set()
        for tier in self.tiers:
            for length in sorted(tier.lengths or self.profile.lengths):
                for task in self.profile.tasks:
                    for seed in tier.seeds:
                        for kind in tier.kinds:
                            for lr in self.profile.learning_rates:
                                settings = self.settings(task, kind, length, seed, lr, device, code)
                                if settings.key not in seen:
                                    seen.add(settings.key)
                                    ordered.append((tier.name, settings))
        return ordered


_FIGURE4_PROFILE = dataclasses.replace(PROFILES["full"], seeds=(0, 1, 2), budget_s=None)
_TRANSITION_PROFILE = dataclasses.replace(
    PROFILES["full"],
    tasks=("mqar", "palindrome", "stack"),
    kinds=("kda",),
    lengths=(256, 512),
    curve_length=256,
    seeds=(0, 1),
    budget_s=None,
    batch_size=16,
    eval_batches=4,
    operator_dtype=None,
    matmul_precision="highest",
)
_NARROW_PROFILE = dataclasses.replace(_TRANSITION_PROFILE, d_model=64, head_dim=32)
_TRANSITION_STEPS = ((256, 1000), (512, 1500))
PLANS = {
    "figure4": GridPlan(
        name="figure4",
        profile=_FIGURE4_PROFILE,
        steps=FIGURE4_STEPS,
        tiers=(
            Tier("deciding", DECIDING_KINDS, (0, 1)),
            Tier("other mechanisms", ("linear", "deltanet"), (0, 1)),
            Tier("third seed", _FIGURE4_PROFILE.kinds, (2,)),
        ),
        device="cuda",
    ),
    "transition": GridPlan(
        name="transition",
        profile=_TRANSITION_PROFILE,
        steps=_TRANSITION_STEPS,
        tiers=(
            Tier("seed 0 at 256", ("kda",), (0,), (256,)),
            Tier("seed 1 at 256", ("kda",), (1,), (256,)),
            Tier("seed 0 at 512", ("kda",), (0,), (512,)),
            Tier("seed 1 at 512", ("kda",), (1,), (512,)),
        ),
        device="cpu",
        stop_fraction=0.9,
    ),
    "transition_narrow": GridPlan(
        name="transition_narrow",
        profile=_NARROW_PROFILE,
        steps=_TRANSITION_STEPS,
        tiers=(
            Tier("seed 0 at 256", ("kda",), (0,), (256,)),
            Tier("seed 0 at 512", ("kda",), (0,), (512,)),
            Tier("seed 1", ("kda",), (1,)),
        ),
        device="cpu",
        stop_fraction=0.9,
    ),
}


def record_path(plan: GridPlan, device: str | None = None, root: Path | None = None) -> Path:
    """The plan's default record: ``notebooks/results/<device>/05_synthetic_<plan>.json``."""
    from kdalib.repro import results_dir

    return results_dir(device or plan.device, root) / f"05_synthetic_{plan.name}.json"


# --------------------------------------------------------------------------- time per run


def _seconds_per_step(record: GridRecord, device: str, device_name: str | None) -> dict[int, float]:
    """Median wall seconds per training step (evaluations and start-up included) of the recorded
    runs on ``device`` at each length; runs on ``device_name`` only, when there are any."""
    entries = [entry for entry in record.runs.values() if entry["settings"]["device"] == device]
    same_card = [entry for entry in entries if entry["provenance"].get("device_name") == device_name]
    per_length: dict[int, list[float]] = {}
    for entry in same_card or entries:
        length = entry["settings"]["spec"]["seq_len"]
        per_length.setdefault(length, []).append(entry["result"]["seconds"] / entry["result"]["steps_done"])
    return {length: statistics.median(times) for length, times in per_length.items()}


def estimate_seconds(settings: RunSettings, per_step: dict[int, float]) -> float | None:
    """Wall seconds one run should take, from :func:`_seconds_per_step`'s times: at its length, or
    scaled in proportion to length from the longest shorter length timed (an overestimate: a
    step's time grows more slowly than its length); None when nothing shorter was timed."""
    length = settings.length
    if length in per_step:
        seconds = per_step[length]
    else:
        shorter = [timed for timed in per_step if timed < length]
        if not shorter:
            return None
        seconds = per_step[max(shorter)] * length / max(shorter)
    return seconds * settings.config.steps


# --------------------------------------------------------------------------- training


@dataclasses.dataclass
class Progress:
    """What one :func:`run_plan` call did.

    Attributes:
        trained: keys of the runs trained and recorded.
        already: runs of the plan the record held before.
        deferred: runs not started because they would not have finished within ``max_seconds``.
        not_reached: runs not started because ``max_runs`` was reached.
    """

    trained: list[str] = dataclasses.field(default_factory=list)
    already: int = 0
    deferred: list[RunSettings] = dataclasses.field(default_factory=list)
    not_reached: int = 0


def run_plan(
    plan: GridPlan,
    record: GridRecord,
    device: str | None = None,
    max_seconds: float | None = None,
    max_runs: int | None = None,
    tiers: tuple[str, ...] | None = None,
    log: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    train: Callable[..., TrainResult] | None = None,
) -> Progress:
    """Trains the runs of ``plan`` that ``record`` does not hold, in priority order, recording each.

    Args:
        plan: the grid.
        record: where finished runs are written (atomically, one by one) and which runs to skip.
        device: ``cpu`` or ``cuda`` (default: the plan's).
        max_seconds: stop starting runs once this many seconds have passed since the call began,
            and skip a run whose estimated duration (:func:`estimate_seconds`, from the runs
            recorded on the same device) would take the call past it; a later, shorter run may
            still start. None: no limit.
        max_runs: train at most this many runs.
        tiers: train only the runs of these tiers (by name); None: all. Two commands given
            different tiers can train side by side into one record.
        log: called with one line per event (default: print to stderr).
        clock: seconds, monotonic (tests pass their own).
        train: the training function (default :func:`~kdalib.tasks.train.train_recall_model`).

    Returns:
        The :class:`Progress`.
    """
    from kdalib.environment import provenance

    device, train = device or plan.device, train or train_recall_model
    unknown = sorted(set(tiers or ()) - {tier.name for tier in plan.tiers})
    if unknown:
        raise ValueError(f"tiers: plan {plan.name!r} has no tier {', '.join(map(repr, unknown))}")
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    start = clock()
    progress = Progress()
    device_name = provenance(device)["device_name"]
    for tier, settings in plan.runs(device):
        if tiers is not None and tier not in tiers:
            continue
        if settings in record:
            progress.already += 1
            continue
        if max_runs is not None and len(progress.trained) >= max_runs:
            progress.not_reached += 1
            continue
        elapsed = clock() - start
        estimate = estimate_seconds(settings, _seconds_per_step(record, device, device_name))
        if max_seconds is not None and (elapsed >= max_seconds or elapsed + (estimate or 0.0) > max_seconds):
            progress.deferred.append(settings)
            continue
        label = _label(settings)
        log(f"[{elapsed:7.1f} s] {tier}: {label} ..." + (f" (about {estimate:.0f} s)" if estimate else ""))
        result = train(settings.kind, settings.spec, settings.seed, settings.config, device)
        record.add(settings, result, provenance(device))
        progress.trained.append(settings.key)
        log(
            f"[{clock() - start:7.1f} s]   {label}: {result.steps_done} steps, peak accuracy "
            f"{result.peak_accuracy:.3f}, {result.seconds:.1f} s -> {record.path}"
        )
    return progress


def _label(settings: RunSettings) -> str:
    return (
        f"{settings.task} {settings.length} {settings.kind} seed {settings.seed} "
        f"lr {settings.config.lr:g} ({settings.config.steps} steps)"
    )


# --------------------------------------------------------------------------- status


@dataclasses.dataclass
class GridStatus:
    """A plan against its record.

    Attributes:
        plan: the plan.
        record: the record.
        rows: one dict per (tier, task, length, mechanism): ``seeds`` planned, ``recorded``
            seeds, ``steps`` per run, ``peak`` (mean peak held-out accuracy of the recorded seeds,
            None when none), ``transition`` (each recorded seed's :func:`transition_step`, None
            where it never got there), ``chance``.
        runs: the recorded runs of the plan, as :class:`~kdalib.tasks.report_grid.GridRun` (for
            :func:`~kdalib.tasks.report_grid.peak_accuracy` and ``accuracy_curves``).
        missing: ``(tier name, settings)`` of the runs not recorded yet, in priority order.
        other_runs: recorded runs that are not runs of the plan under the current code (another
            code version or other settings); they are kept but not used.
        per_step: seconds per step by length used for the estimates, and where they come from.
    """

    plan: GridPlan
    record: GridRecord
    rows: list[dict[str, Any]]
    runs: list[GridRun]
    missing: list[tuple[str, RunSettings]]
    other_runs: int
    per_step: dict[int, float]
    per_step_source: str

    @property
    def complete_tiers(self) -> list[str]:
        """The tiers with every run recorded."""
        missing = {tier for tier, _ in self.missing}
        return [tier.name for tier in self.plan.tiers if tier.name not in missing]

    def missing_seconds(self, tier: str | None = None) -> float | None:
        """Estimated wall seconds of the missing runs (of ``tier``), None without a timing."""
        total = 0.0
        for name, settings in self.missing:
            if tier is None or name == tier:
                estimate = estimate_seconds(settings, self.per_step)
                if estimate is None:
                    return None
                total += estimate
        return total

    def unlearned_cells(self, tier: str) -> list[tuple[str, int]]:
        """(task, length) cells of ``tier`` whose runs are all recorded and none of which passed its
        transition: either no mechanism can learn the task there or the steps are too few."""
        cells: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for row in self.rows:
            if row["tier"] == tier:
                cells.setdefault((row["task"], row["length"]), []).append(row)
        return [
            cell
            for cell, rows in cells.items()
            if all(row["recorded"] == row["seeds"] for row in rows)
            and not any(step is not None for row in rows for step in row["transition"])
        ]

    def summary(self, next_runs: int = 6) -> list[str]:
        """What is recorded and what is missing, one line each; the first ``next_runs`` missing
        runs of the first incomplete tier (what the next command trains) are listed."""
        from kdalib.repro import book_root

        plan, lines = self.plan, []
        recorded = sum(row["recorded"] for row in self.rows)
        path = self.record.path.resolve()
        shown = path.relative_to(book_root()) if path.is_relative_to(book_root()) else path
        other = (
            f"; {self.other_runs} other run(s) there (other settings or code) are not used" if self.other_runs else ""
        )
        lines.append(f"plan {plan.name}: {recorded} of {recorded + len(self.missing)} runs recorded in {shown}{other}")
        listed = False
        for tier in plan.tiers:
            missing = [settings for name, settings in self.missing if name == tier.name]
            if not missing:
                lines.append(f"- tier {tier.name!r}: complete")
                continue
            seconds = self.missing_seconds(tier.name)
            estimate = f", about {seconds / 60:.0f} min at the step times below" if seconds is not None else ""
            lines.append(f"- tier {tier.name!r}: {len(missing)} run(s) missing{estimate}")
            if not listed:
                listed = True
                lines.extend(f"    next: {_label(settings)}" for settings in missing[:next_runs])
                if len(missing) > next_runs:
                    lines.append(f"    ... and {len(missing) - next_runs} more")
        for tier in plan.tiers:
            for task, length in self.unlearned_cells(tier.name):
                lines.append(
                    f"- {task} at {length} tokens (tier {tier.name!r}): no run passed its learning transition "
                    f"in {plan.steps_at(length)} steps"
                )
        if self.per_step:
            times = ", ".join(f"{length}: {1e3 * s:.1f}" for length, s in sorted(self.per_step.items()))
            lines.append(f"ms per step by length ({self.per_step_source}): {times}")
        return lines

    def table(self) -> str:
        """The rows as a fixed-width text table."""
        head = f"{'tier':<17} {'task':<10} {'tokens':>6} {'mechanism':<15} {'seeds':>5} {'steps':>6} {'peak':>6}  transition step per seed"
        lines = [head, "-" * len(head)]
        for row in self.rows:
            peak = "-" if row["peak"] is None else f"{row['peak']:.3f}"
            transitions = ", ".join("never" if step is None else str(step) for step in row["transition"]) or "-"
            lines.append(
                f"{row['tier']:<17} {row['task']:<10} {row['length']:>6} {row['kind']:<15} "
                f"{row['recorded']}/{row['seeds']:<3} {row['steps']:>6} {peak:>6}  {transitions}"
            )
        return "\n".join(lines)


def grid_status(
    plan: GridPlan, record: GridRecord, device: str | None = None, fallback_ms_per_step: dict[int, float] | None = None
) -> GridStatus:
    """Compares ``record`` with ``plan`` (on ``device``, default the plan's) under the current code.

    Args:
        plan: the grid.
        record: its record.
        device: the device the runs are meant for.
        fallback_ms_per_step: milliseconds per step by length to estimate the missing runs with
            while the record holds no run on ``device`` (e.g. a recorded step-time measurement).
    """
    device = device or plan.device
    planned = plan.runs(device)
    keys = {settings.key for _, settings in planned}
    rows: dict[tuple, dict[str, Any]] = {}
    runs, missing = [], []
    for tier, settings in planned:
        cell = (tier, settings.task, settings.length, settings.kind, settings.config.lr)
        row = rows.setdefault(
            cell,
            {
                "tier": tier,
                "task": settings.task,
                "length": settings.length,
                "kind": settings.kind,
                "lr": settings.config.lr,
                "seeds": 0,
                "recorded": 0,
                "steps": settings.config.steps,
                "chance": settings.spec.chance,
                "peaks": [],
                "transition": [],
            },
        )
        row["seeds"] += 1
        if settings in record:
            result = record.result(settings.key)
            runs.append(GridRun(settings.task, settings.length, result))
            row["recorded"] += 1
            row["peaks"].append(result.peak_accuracy)
            row["transition"].append(transition_step(result.curve, settings.spec.chance))
        else:
            missing.append((tier, settings))
    table = []
    for row in rows.values():
        peaks = row.pop("peaks")
        row["peak"] = statistics.fmean(peaks) if peaks else None
        table.append(row)
    per_step = _seconds_per_step(record, device, None)
    source = f"recorded runs on {device}"
    if not per_step and fallback_ms_per_step:
        per_step = {length: ms / 1e3 for length, ms in fallback_ms_per_step.items()}
        source = "fallback step times, training only"
    other = sum(1 for key in record.runs if key not in keys)
    return GridStatus(plan, record, table, runs, missing, other, per_step, source)


def recorded_step_ms(
    stem: str = "05_synthetic_tasks", path: str = "triton_graph", root: Path | None = None
) -> dict[int, float]:
    """Milliseconds per KDA training step by length along ``path`` from notebook 05's recorded GPU
    run (``step_ms_<path>_<length>``), for estimates before the grid has timed anything itself."""
    from kdalib.repro import load_recorded

    data = load_recorded(stem, "cuda", root)
    if data is None:
        return {}
    prefix = f"step_ms_{path}_"
    return {
        int(key.removeprefix(prefix)): float(value)
        for key, value in data["values"].items()
        if key.startswith(prefix) and key.removeprefix(prefix).isdigit()
    }

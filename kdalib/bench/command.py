"""``kdalib bench``: its handler (the arguments are parsed in :mod:`kdalib.cli`)."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import torch

from kdalib.bench.first_call import FIRST_CALL_LABELS, first_call_rows
from kdalib.bench.measure import run_suite
from kdalib.bench.methods import MethodUnavailable, load_peer
from kdalib.bench.report import check_targets, format_breakdowns, format_table, listing, write_result
from kdalib.bench.suites import SUITES
from kdalib.environment import provenance


def cmd_bench(args) -> int:
    """Handler of ``kdalib bench`` (arguments parsed in :mod:`kdalib.cli`). Exit 0, or 2 on unusable input."""
    if args.list:
        print(listing())
        return 0
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device == "cuda" and not torch.cuda.is_available():
        print("kdalib bench: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    name = ("gpu" if device == "cuda" else "cpu") if args.suite == "default" else args.suite
    if name not in SUITES:
        print(f"kdalib bench: unknown --suite {name!r}; choose from {', '.join(SUITES)} (see --list)", file=sys.stderr)
        return 2
    suite = SUITES[name]
    methods = getattr(args, "methods", None)
    if methods is not None:
        chosen = tuple(m.strip() for m in methods.split(",") if m.strip())
        unknown = [m for m in chosen if m not in suite.methods]
        if not chosen or unknown:
            print(
                f"kdalib bench: --methods {methods!r}: suite {name!r} times {', '.join(suite.methods)}"
                + (f"; not {', '.join(unknown)}" if unknown else ""),
                file=sys.stderr,
            )
            return 2
        suite = replace(suite, methods=tuple(dict.fromkeys(chosen)))
    rows = getattr(args, "rows", None)
    if rows is not None:
        parts = tuple(part.strip() for part in rows.split(",") if part.strip())
        shapes = tuple(shape for shape in suite.shapes if any(part in shape.label for part in parts))
        if not shapes:
            labels = ", ".join(shape.label for shape in suite.shapes)
            print(
                f"kdalib bench: --rows {rows!r} matches no row of suite {name!r}; its rows: {labels}", file=sys.stderr
            )
            return 2
        suite = replace(suite, shapes=shapes)
    if getattr(args, "first_call", None) is not None and device != "cuda":
        print(
            "kdalib bench: --first-call times the Triton kernels' compilation: it needs --device cuda", file=sys.stderr
        )
        return 2
    if suite.device != device:
        print(f"kdalib bench: suite {name!r} runs on {suite.device}, not {device}", file=sys.stderr)
        return 2
    if args.repeats < 1:
        print(f"kdalib bench: --repeats must be >= 1, got {args.repeats}", file=sys.stderr)
        return 2
    threads = getattr(args, "threads", None)
    if threads is not None:
        if threads < 1:
            print(f"kdalib bench: --threads must be >= 1, got {threads}", file=sys.stderr)
            return 2
        torch.set_num_threads(threads)
    peer = None
    if "peer" in suite.methods:
        try:
            peer = load_peer(args.fla_path)
        except MethodUnavailable as error:
            if args.fla_path is not None:
                print(f"kdalib bench: {error}", file=sys.stderr)
                return 2
            print(f"kdalib bench: peer unavailable, its rows are skipped: {error}", file=sys.stderr)
    print(f"kdalib bench: suite {name} on {device}, best of {args.repeats}, {torch.get_num_threads()} CPU threads")
    out = Path(args.json or f"bench-{device}.json")
    header = dict(provenance(device), suite=name, methods=list(suite.methods), repeats=args.repeats)
    if rows is not None:
        header["rows_asked"] = rows

    # the first calls come before the suite (each in a process of its own with a cold cache), so that
    # a run cut short still records them
    first_call = getattr(args, "first_call", None)
    if first_call is not None:
        labels = {"forward": FIRST_CALL_LABELS[:1], "train": FIRST_CALL_LABELS[1:], "both": FIRST_CALL_LABELS}
        header["first_call"] = first_call_rows(labels[first_call])
        write_result(out, dict(header, complete=False, rows=[]))

    def save_partial(partial: dict) -> None:  # rows so far, marked incomplete until the suite ends
        write_result(out, dict(header, complete=False, **partial))

    result = dict(
        header,
        complete=True,
        **run_suite(suite, device, args.repeats, peer, on_shape=save_partial, breakdown=args.breakdown),
    )
    print(format_table(result))
    if args.breakdown:
        print(format_breakdowns(result))
    for line in check_targets(result):
        print(line)
    write_result(out, result)
    print(f"wrote {out}")
    return 0

"""The first-call rows of ``kdalib bench --first-call``: seconds from a cold Triton cache to the
first finished call, per method, each measured in a fresh process whose ``TRITON_CACHE_DIR`` is a
new empty folder (what a user pays at every new shape: compilation, and autotuning where a
library autotunes). Run as ``python -m kdalib.bench.first_call METHOD LABEL`` it measures one call
and prints one JSON line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

# The rows the first-call times are taken on: the forward and the training step of the middle
# prefill shape with the bounded gate, kdalib's Triton paths against flash-linear-attention.
FIRST_CALL_LABELS = ("B2-T16384-H32-K128-V128-bfloat16-bounded", "train-B2-T16384-H32-K128-V128-bfloat16-bounded")
FIRST_CALL_METHODS = ("triton", "fla")


def _measure(method: str, label: str) -> dict:
    import torch

    from kdalib.bench.measure import make_problem, training_step
    from kdalib.bench.methods import resolve_method
    from kdalib.bench.suites import shape_from_label

    shape = shape_from_label(label)
    problem = make_problem(shape, "cuda")
    fn = resolve_method(method, None)
    call = training_step(fn, problem) if shape.train else torch.no_grad()(lambda: fn(**problem)[0])
    torch.cuda.synchronize()
    start = time.perf_counter()
    call()
    torch.cuda.synchronize()
    return dict(method=method, label=label, first_call_s=time.perf_counter() - start)


def measure_command(method: str, label: str) -> list[str]:
    """The command that measures one first call: this module run by the same Python."""
    return [sys.executable, "-m", "kdalib.bench.first_call", method, label]


def first_call_rows(
    labels: tuple[str, ...],
    log: Callable[[str], None] = print,
    timeout: float = 900.0,
    methods: tuple[str, ...] = FIRST_CALL_METHODS,
    command: Callable[[str, str], list[str]] = measure_command,
) -> list[dict]:
    """One row per (label, method), each from a fresh process (``command(method, label)``, whose
    last line of output is the row as JSON) with an empty Triton cache; a method that fails or runs
    past ``timeout`` seconds gets an ``error``: the last line it wrote to stderr, or the timeout."""
    rows = []
    for label in labels:
        for method in methods:
            with tempfile.TemporaryDirectory(prefix="kdalib-first-call-") as cache:
                env = dict(os.environ, TRITON_CACHE_DIR=cache)
                env.pop("TRITON_CACHE_AUTOTUNING", None)
                try:
                    done = subprocess.run(
                        command(method, label), env=env, capture_output=True, text=True, timeout=timeout
                    )
                except subprocess.TimeoutExpired:
                    row = dict(method=method, label=label, error=f"no result within {timeout:.0f} s")
                else:
                    lines = done.stdout.strip().splitlines()
                    if done.returncode == 0 and lines:
                        row = json.loads(lines[-1])
                    else:
                        row = dict(method=method, label=label, error=(done.stderr.strip().splitlines() or ["?"])[-1])
            log(
                f"  first call {label:<40} {method:<8} "
                + (f"{row['first_call_s']:.1f} s" if "error" not in row else row["error"])
            )
            rows.append(row)
    return rows


if __name__ == "__main__":
    print(json.dumps(_measure(sys.argv[1], sys.argv[2])))

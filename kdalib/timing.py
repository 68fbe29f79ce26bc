"""Best-of-N wall time of a call, the one timing rule of ``kdalib bench`` and the notebooks.

The minimum, not the mean, because on a shared machine noise only ever adds time. CUDA
work is timed with CUDA events around each call (then synchronised), CPU work with
``time.perf_counter``. torch is imported only for CUDA timing.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def _wall_seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _cuda_seconds(fn: Callable[[], object]) -> float:
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3


def measure_seconds(
    fn: Callable[[], object],
    repeats: int = 5,
    warmup: int = 1,
    device: str = "cpu",
    slow_seconds: float | None = None,
) -> float:
    """Best-of-``repeats`` time of ``fn()`` in seconds, after ``warmup`` untimed calls.

    Args:
        fn: the call to time (its result is discarded).
        repeats: timed calls; the fastest is returned.
        warmup: calls before timing (compilation, caches, allocator).
        device: ``"cuda"`` times with CUDA events; anything else with the wall clock.
        slow_seconds: when a warm-up call alone takes longer than this, its time is returned
            without further calls (a multi-second call is not worth repeating).

    Raises:
        ValueError: if ``repeats`` < 1 or ``warmup`` < 0.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(
            f"measure_seconds: need repeats >= 1 and warmup >= 0, got repeats = {repeats}, warmup = {warmup}"
        )
    clock = _cuda_seconds if device == "cuda" else _wall_seconds
    for _ in range(warmup):
        seconds = clock(fn)
        if slow_seconds is not None and seconds > slow_seconds:
            return seconds
    return min(clock(fn) for _ in range(repeats))

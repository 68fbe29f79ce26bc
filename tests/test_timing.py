"""kdalib.timing.measure_seconds: warm-up, best of N, the slow-call shortcut, argument checks."""

from __future__ import annotations

import itertools

import pytest

from kdalib import timing


def _fake_clock(monkeypatch, durations):
    """Makes time.perf_counter report calls lasting ``durations`` seconds, in order."""
    ticks = [0.0]
    for seconds in durations:
        ticks += [ticks[-1], ticks[-1] + seconds]
    clock = iter(ticks[1:])
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(clock))


def test_warmup_is_untimed_and_the_best_repeat_wins(monkeypatch):
    _fake_clock(monkeypatch, [9.0, 0.5, 0.3, 0.4])
    calls = []
    assert timing.measure_seconds(lambda: calls.append(1), repeats=3, warmup=1) == pytest.approx(0.3)
    assert len(calls) == 4


def test_a_slow_warmup_is_the_result(monkeypatch):
    _fake_clock(monkeypatch, [3.0])
    calls = []
    assert timing.measure_seconds(lambda: calls.append(1), repeats=5, slow_seconds=2.0) == pytest.approx(3.0)
    assert len(calls) == 1


def test_real_clock_counts_every_call():
    counter = itertools.count()
    seconds = timing.measure_seconds(lambda: next(counter), repeats=3, warmup=2)
    assert next(counter) == 5 and 0 <= seconds < 0.1


@pytest.mark.parametrize("arguments", [dict(repeats=0), dict(warmup=-1)])
def test_bad_arguments_are_named(arguments):
    with pytest.raises(ValueError, match="repeats >= 1 and warmup >= 0"):
        timing.measure_seconds(lambda: None, **arguments)

"""The synthetic-task grid: profiles, what they cut, step planning, and the Figure 4 reductions."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from kdalib.tasks.mqar import MQARSpec
from kdalib.tasks.palindrome import PalindromeSpec
from kdalib.tasks.report_grid import (
    PROFILES,
    REPORT_LEARNING_RATES,
    STEP_PATHS,
    GridRun,
    accuracy_curves,
    cuts,
    highest_everywhere,
    mean_along_curve,
    peak_accuracy,
    plan_steps,
    run_grid,
    step_times,
    task_spec,
)
from kdalib.tasks.stack import StackSpec
from kdalib.tasks.train import TrainResult

TINY = dataclasses.replace(
    PROFILES["smoke"],
    tasks=("palindrome", "stack"),
    kinds=("kda", "mamba2"),
    lengths=(12,),
    curve_length=12,
    max_steps=4,
    min_steps=2,
    evaluations=2,
    d_model=16,
    head_dim=8,
    batch_size=2,
)


def test_the_full_profile_is_the_reports_setting_except_what_cuts_names():
    full = PROFILES["full"]
    assert (full.num_layers, full.num_heads, full.head_dim) == (2, 2, 128)
    assert full.lengths == (256, 512, 1024, 2048) and full.curve_length == 1024
    assert set(full.kinds) == {"linear", "deltanet", "gated_deltanet", "kda", "mamba2"}
    assert set(full.learning_rates) <= set(REPORT_LEARNING_RATES) and len(full.seeds) >= 2
    lines = cuts(full, steps=300)
    assert lines[0] == "steps: 300 per run instead of up to 20,000"
    assert any(line.startswith("learning rates: 0.001 only; not searched: 5e-05, 0.0001, 0.0005") for line in lines)
    assert len(lines) == 2  # tasks, lengths, curve length and model are the report's
    assert cuts(dataclasses.replace(full, learning_rates=REPORT_LEARNING_RATES), steps=20_000) == []


def test_the_smoke_profile_says_it_is_not_the_reports_size():
    text = "\n".join(cuts(PROFILES["smoke"], steps=40))
    for fragment in (
        "steps: 40 per run",
        "lengths: 16, 32 tokens",
        "curves at 32 tokens instead of 1024",
        "model: 1 layer(s), 2 heads of dimension 16",
        "stack task: 2 stacks instead of 64",
    ):
        assert fragment in text


def test_task_specs_follow_the_profile():
    full = PROFILES["full"]
    assert task_spec("palindrome", 256, full) == PalindromeSpec(256, 66)
    assert task_spec("mqar", 2048, full) == MQARSpec(2048, 128, 513, "separated")
    assert task_spec("stack", 1024, full) == StackSpec(1024, num_stacks=64, num_elements=64)
    with pytest.raises(ValueError, match="task: expected one of palindrome, mqar, stack"):
        task_spec("copy", 256, full)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"tasks": ("copy",)}, "GridProfile.tasks"),
        ({"kinds": ()}, "GridProfile.kinds"),
        ({"curve_length": 64}, "GridProfile.curve_length"),
        ({"budget_s": 0.0}, "GridProfile.budget_s"),
        ({"min_steps": 50}, "min_steps <= max_steps"),
        ({"operator_dtype": "bf16"}, "GridProfile.operator_dtype"),
        ({"matmul_precision": "tf32"}, "GridProfile.matmul_precision"),
    ],
)
def test_bad_profiles_are_named(changes, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(PROFILES["smoke"], **changes)


def test_runs_take_the_profiles_precision_and_graph_only_on_cuda():
    full = PROFILES["full"]
    on_cpu, on_cuda = full.config(10, 1e-3, "cpu"), full.config(10, 1e-3, "cuda")
    assert (on_cpu.operator_dtype, on_cpu.matmul_precision) == ("bfloat16", "high")
    assert not on_cpu.cuda_graph and on_cuda.cuda_graph
    assert STEP_PATHS["triton_bf16_graph"] == {
        "use_triton": None,
        "cuda_graph": True,
        "operator_dtype": full.operator_dtype,
        "matmul_precision": full.matmul_precision,
    }  # the path step_times labels as the grid's is the one the full profile trains on


def test_step_times_on_the_cpu_time_the_pytorch_form_at_every_length():
    times = step_times(TINY, probe_steps=1)
    assert sorted(times) == [("pytorch", length) for length in sorted(TINY.lengths)]
    assert all(seconds > 0 for seconds in times.values())


def test_plan_steps_fits_the_budget_within_bounds():
    assert plan_steps(TINY) == 4  # no budget: exactly max_steps
    assert plan_steps(dataclasses.replace(TINY, budget_s=1e6), probe_steps=1) == 4
    assert plan_steps(dataclasses.replace(TINY, budget_s=1e-6), probe_steps=1) == 2


def _result(kind: str, seed: int, lr: float, curve: list[float]) -> TrainResult:
    steps = [10 * (i + 1) for i in range(len(curve))]
    return TrainResult(kind, PalindromeSpec(16), seed, curve[-1], curve=list(zip(steps, curve)), lr=lr)


def test_peak_accuracy_takes_each_seeds_peak_and_the_best_learning_rate():
    runs = [
        GridRun("palindrome", 16, result)
        for result in (
            _result("kda", 0, 1e-3, [0.2, 0.9, 0.7]),
            _result("kda", 1, 1e-3, [0.3, 0.5, 0.6]),  # peaks 0.9, 0.6
            _result("kda", 0, 1e-4, [0.1, 0.8, 0.8]),
            _result("kda", 1, 1e-4, [0.1, 0.2, 0.6]),  # peaks 0.8, 0.6
            _result("mamba2", 0, 1e-3, [0.1, 0.1, 0.1]),
            _result("mamba2", 1, 1e-3, [0.1, 0.3, 0.2]),
            _result("mamba2", 0, 1e-4, [0.1, 0.4, 0.1]),
            _result("mamba2", 1, 1e-4, [0.2, 0.2, 0.4]),
        )
    ]
    table = peak_accuracy(runs)
    assert table[("palindrome", "kda", 16)] == pytest.approx(
        {"peak": 0.75, "low": 0.6, "high": 0.9, "lr": 1e-3, "seeds": 2}
    )
    assert table[("palindrome", "mamba2", 16)] == pytest.approx(
        {"peak": 0.4, "low": 0.4, "high": 0.4, "lr": 1e-4, "seeds": 2}
    )
    curves = accuracy_curves(runs, 16)
    assert curves[("palindrome", "kda")] == ([10, 20, 30], pytest.approx([0.25, 0.7, 0.65]))
    assert curves[("palindrome", "mamba2")] == ([10, 20, 30], pytest.approx([0.15, 0.3, 0.25]))
    assert accuracy_curves(runs, 32) == {}
    assert highest_everywhere(table, "palindrome")
    assert not highest_everywhere(table, "palindrome", kind="mamba2")
    assert highest_everywhere(table, "palindrome", kind="mamba2", margin=0.4)
    with pytest.raises(ValueError, match="task 'stack': no runs"):
        highest_everywhere(table, "stack")


def test_run_grid_trains_every_configuration_with_an_accuracy_curve():
    torch.manual_seed(0)
    runs = run_grid(TINY, steps=4, progress=False)
    assert [(run.task, run.result.kind) for run in runs] == [
        ("palindrome", "kda"),
        ("palindrome", "mamba2"),
        ("stack", "kda"),
        ("stack", "mamba2"),
    ]
    for run in runs:
        assert [step for step, _ in run.result.curve] == [2, 4]
        assert all(0.0 <= accuracy <= 1.0 for _, accuracy in run.result.curve)
        assert run.result.curve[-1][1] == run.result.accuracy and len(run.result.losses) == 4
    table = peak_accuracy(runs)
    assert set(table) == {(task, kind, 12) for task in TINY.tasks for kind in TINY.kinds}


def test_mean_along_curve_prefers_the_curve_that_rises_first():
    curves = {
        ("mqar", "kda"): ([10, 20, 30, 40], [0.2, 0.9, 1.0, 1.0]),
        ("mqar", "gated_deltanet"): ([10, 20, 30, 40], [0.1, 0.2, 0.9, 1.0]),
    }
    assert mean_along_curve(curves, "mqar", "kda") == pytest.approx(0.775)
    assert mean_along_curve(curves, "mqar", "kda") > mean_along_curve(curves, "mqar", "gated_deltanet")


def test_chance_is_one_over_the_possible_answers():
    full = PROFILES["full"]
    assert task_spec("palindrome", 256, full).chance == 1 / 64
    assert task_spec("mqar", 256, full).chance == 1 / 256
    assert task_spec("stack", 256, full).chance == 1 / 64

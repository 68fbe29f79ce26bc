"""Resumable grids: the plans, their priority order, skipping recorded runs, resuming after an
interruption, the time budget, the status table, the command line and the Figure-4 claims."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from kdalib.cli import main
from kdalib.tasks import grid as grid_module
from kdalib.tasks.grid import (
    DECIDING_KINDS,
    FIGURE4_STEPS,
    PLANS,
    GridPlan,
    Tier,
    estimate_seconds,
    grid_status,
    recorded_step_ms,
    run_plan,
)
from kdalib.tasks.record import GridRecord
from kdalib.tasks.report_grid import PROFILES, REPORT_LENGTHS, transition_step
from kdalib.tasks.train import TrainResult

ROOT = Path(__file__).resolve().parents[2]
TINY_PROFILE = dataclasses.replace(
    PROFILES["smoke"],
    tasks=("palindrome", "stack"),
    kinds=("kda", "mamba2"),
    lengths=(12, 24),
    curve_length=12,
    seeds=(0, 1),
    d_model=16,
    head_dim=8,
    batch_size=2,
)
TINY = GridPlan(
    name="tiny",
    profile=TINY_PROFILE,
    steps=((12, 4), (24, 6)),
    tiers=(Tier("first", ("kda",), (0,)), Tier("second", ("kda", "mamba2"), (0, 1))),
    device="cpu",
    eval_every=2,
)


class FakeTraining:
    """Stands in for train_recall_model: a deterministic curve per run, calls counted; raises
    KeyboardInterrupt at call number ``interrupt_at`` (1-based), as a killed command would stop."""

    def __init__(self, interrupt_at: int | None = None, learns: bool = True, seconds: float = 0.5) -> None:
        self.calls: list[tuple] = []
        self.interrupt_at, self.learns, self.seconds = interrupt_at, learns, seconds

    def __call__(self, kind, spec, seed, config, device):
        self.calls.append((kind, spec.seq_len, seed))
        if self.interrupt_at is not None and len(self.calls) == self.interrupt_at:
            raise KeyboardInterrupt
        top = 0.95 if self.learns and kind == "kda" else spec.chance
        curve = [(step, top if step == config.steps else spec.chance) for step in range(2, config.steps + 1, 2)]
        return TrainResult(
            kind, spec, seed, curve[-1][1], [1.0] * config.steps, self.seconds, curve, config.lr, config.steps
        )


def test_the_figure4_plan_is_the_reports_grid_with_the_deciding_runs_first():
    plan = PLANS["figure4"]
    profile = plan.profile
    assert (profile.num_layers, profile.num_heads, profile.head_dim) == (2, 2, 128)
    assert profile.lengths == REPORT_LENGTHS and profile.curve_length == 1024 and profile.stacks == 64
    assert plan.device == "cuda" and plan.stop_fraction is None
    steps = dict(FIGURE4_STEPS)
    assert steps[256] >= 600 and [steps[n] for n in REPORT_LENGTHS] == sorted(steps[n] for n in REPORT_LENGTHS)
    runs = plan.runs(code="x")
    assert len(runs) == 3 * 5 * 4 * 3  # tasks x mechanisms x lengths x seeds, each once
    deciding = [settings for tier, settings in runs if tier == "deciding"]
    assert len(deciding) == 3 * 3 * 4 * 2 and runs[: len(deciding)] == [("deciding", s) for s in deciding]
    assert {s.kind for s in deciding} == set(DECIDING_KINDS) and {s.seed for s in deciding} == {0, 1}
    assert [s.length for s in deciding] == sorted(s.length for s in deciding)  # 256 first, 2048 last
    first_cell = deciding[:6]  # both seeds of every deciding mechanism before the next cell
    assert {(s.task, s.length) for s in first_cell} == {("palindrome", 256)}
    assert {(s.kind, s.seed) for s in first_cell} == {(k, seed) for k in DECIDING_KINDS for seed in (0, 1)}
    assert all(s.config.steps == steps[s.length] and s.config.eval_every == 25 for _, s in runs)
    assert all(s.config.cuda_graph and s.config.operator_dtype == "bfloat16" for _, s in runs)
    assert [tier for tier, _ in runs][-1] == "third seed"


def test_the_transition_plan_stops_each_run_past_the_transition():
    plan = PLANS["transition"]
    runs = plan.runs(code="x")
    assert plan.device == "cpu" and {s.kind for _, s in runs} == {"kda"}
    assert {s.length for _, s in runs} == {256, 512}
    for _, settings in runs:
        chance = settings.spec.chance
        assert settings.config.stop_accuracy == pytest.approx(chance + 0.9 * (1 - chance))
        assert settings.spec == dataclasses.replace(settings.spec)  # the figure4 problems at these lengths
    figure4 = {(s.task, s.length): s.spec for _, s in PLANS["figure4"].runs(code="x")}
    assert all(s.spec == figure4[(s.task, s.length)] for _, s in runs)
    model = ("d_model", "num_layers", "num_heads", "head_dim")
    width = {name: getattr(PLANS["figure4"].profile, name) for name in model}
    assert {name: getattr(plan.profile, name) for name in model} == width  # the transition depends on it
    narrow = PLANS["transition_narrow"].profile
    assert narrow.head_dim < plan.profile.head_dim and narrow.batch_size == plan.profile.batch_size


def test_bad_plans_are_named():
    with pytest.raises(ValueError, match="steps must give a positive count for each length"):
        dataclasses.replace(TINY, steps=((12, 4),))
    with pytest.raises(ValueError, match="tier 'x' uses kinds, seeds or lengths outside the profile"):
        dataclasses.replace(TINY, tiers=(Tier("x", ("deltanet",), (0,)),))
    with pytest.raises(ValueError, match="tier 'x' uses kinds, seeds or lengths outside the profile"):
        dataclasses.replace(TINY, tiers=(Tier("x", ("kda",), (0,), (48,)),))
    with pytest.raises(ValueError, match="tier names must differ"):
        dataclasses.replace(TINY, tiers=(Tier("x", ("kda",), (0,)), Tier("x", ("kda",), (1,))))
    with pytest.raises(ValueError, match="stop_fraction"):
        dataclasses.replace(TINY, stop_fraction=1.5)


def test_a_recorded_run_is_skipped_and_an_interrupted_grid_resumes(tmp_path):
    path = tmp_path / "grid.json"
    interrupted = FakeTraining(interrupt_at=3)
    with pytest.raises(KeyboardInterrupt):
        run_plan(TINY, GridRecord(path), log=lambda line: None, train=interrupted)
    record = GridRecord(path)  # what the killed command left: the two runs it finished
    assert len(record) == 2 and len(interrupted.calls) == 3
    planned = [settings for _, settings in TINY.runs()]
    assert [settings in record for settings in planned][:3] == [True, True, False]
    resumed = FakeTraining()
    progress = run_plan(TINY, record, log=lambda line: None, train=resumed)
    assert progress.already == 2 and len(progress.trained) == len(planned) - 2
    assert resumed.calls[0] == interrupted.calls[2]  # it starts where the other stopped
    assert len(GridRecord(path)) == len(planned)
    again = FakeTraining()
    progress = run_plan(TINY, GridRecord(path), log=lambda line: None, train=again)
    assert again.calls == [] and progress.already == len(planned) and progress.trained == []


def test_runs_train_in_priority_order_and_each_once(tmp_path):
    calls = FakeTraining()
    record = GridRecord(tmp_path / "grid.json")
    run_plan(TINY, record, log=lambda line: None, train=calls)
    # tier "first": kda seed 0 at both lengths and tasks; then "second" without those runs again
    assert calls.calls[:4] == [("kda", 12, 0), ("kda", 12, 0), ("kda", 24, 0), ("kda", 24, 0)]
    assert len(calls.calls) == len(set(k for k in record.runs)) == 2 * 2 * 2 * 2


def test_commands_given_different_tiers_share_one_record(tmp_path):
    path = tmp_path / "grid.json"
    first, second = GridRecord(path), GridRecord(path)  # two commands, each with its own copy
    run_plan(TINY, first, tiers=("first",), log=lambda line: None, train=FakeTraining())
    trained = FakeTraining()
    run_plan(TINY, second, tiers=("second",), log=lambda line: None, train=trained)
    assert len(trained.calls) == len(TINY.runs()) - 4  # the first tier's runs are not trained twice
    assert len(GridRecord(path)) == len(TINY.runs())  # neither command wrote over the other's runs
    with pytest.raises(ValueError, match="has no tier 'third'"):
        run_plan(TINY, second, tiers=("third",), log=lambda line: None, train=trained)


def test_the_time_budget_stops_between_runs(tmp_path):
    ticks = iter(range(0, 10_000, 100))  # every reading of the clock is 100 s later

    progress = run_plan(
        TINY,
        GridRecord(tmp_path / "grid.json"),
        max_seconds=150,
        log=lambda line: None,
        clock=lambda: next(ticks),
        train=FakeTraining(),
    )
    assert len(progress.trained) == 1 and len(progress.deferred) == len(TINY.runs()) - 1
    assert len(GridRecord(tmp_path / "grid.json")) == 1


def test_a_run_estimated_to_overrun_the_budget_is_left_for_a_later_call(tmp_path):
    path = tmp_path / "grid.json"
    slow = FakeTraining(seconds=40.0)  # 4 steps at 12 tokens: 10 s per step
    run_plan(TINY, GridRecord(path), max_runs=1, log=lambda line: None, train=slow)
    ticks = iter(range(0, 10_000, 10))  # every reading of the clock is 10 s later
    progress = run_plan(
        TINY, GridRecord(path), max_seconds=50, log=lambda line: None, clock=lambda: next(ticks), train=slow
    )
    # the next 12-token run: 10 s elapsed + 40 s fits; the one after: 30 + 40 > 50;
    # 24-token runs: 6 steps at twice the time per step, 120 s each
    assert len(progress.trained) == 1 and progress.already == 1
    assert {s.length for s in progress.deferred} == {12, 24}


def test_estimates_scale_with_length_from_the_longest_shorter_timing():
    settings = {s.length: s for _, s in TINY.runs(code="x")}
    assert estimate_seconds(settings[12], {12: 0.5}) == pytest.approx(2.0)  # 4 steps
    assert estimate_seconds(settings[24], {12: 0.5}) == pytest.approx(6 * 1.0)  # 6 steps, twice as long
    assert estimate_seconds(settings[12], {24: 1.0}) is None


def test_the_status_table_says_what_is_recorded_and_what_is_missing(tmp_path):
    path = tmp_path / "grid.json"
    run_plan(TINY, GridRecord(path), max_runs=5, log=lambda line: None, train=FakeTraining())
    status = grid_status(TINY, GridRecord(path))
    assert len(status.runs) == 5 and len(status.missing) == len(TINY.runs()) - 5
    assert status.complete_tiers == ["first"]
    rows = {(r["tier"], r["task"], r["length"], r["kind"]): r for r in status.rows}
    first = rows[("first", "palindrome", 12, "kda")]
    assert (first["seeds"], first["recorded"], first["steps"], first["peak"]) == (1, 1, 4, 0.95)
    assert first["transition"] == [4]  # the fake curve jumps at its last step
    mamba = rows[("second", "palindrome", 12, "mamba2")]
    assert (mamba["seeds"], mamba["recorded"], mamba["peak"], mamba["transition"]) == (
        2,
        1,
        pytest.approx(0.25),
        [None],
    )
    assert rows[("second", "stack", 24, "mamba2")]["peak"] is None
    text = "\n".join(status.summary())
    assert f"5 of {len(TINY.runs())} runs recorded" in text
    assert "tier 'first': complete" in text and "tier 'second': " in text and "next: palindrome 12 kda seed 1" in text
    assert "ms per step by length (recorded runs on cpu): 12: 125.0" in text
    table = status.table()
    assert "first" in table and "never" in table and "1/2" in table


def test_the_status_flags_cells_no_mechanism_learned_and_runs_of_other_code(tmp_path):
    path = tmp_path / "grid.json"
    run_plan(TINY, GridRecord(path), log=lambda line: None, train=FakeTraining(learns=False))
    status = grid_status(TINY, GridRecord(path))
    assert sorted(status.unlearned_cells("second")) == [
        ("palindrome", 12),
        ("palindrome", 24),
        ("stack", 12),
        ("stack", 24),
    ]
    assert "palindrome at 12 tokens (tier 'second'): no run passed its learning transition in 4 steps" in "\n".join(
        status.summary()
    )
    other_code = [settings for _, settings in TINY.runs(code="another version")]
    assert all(settings not in GridRecord(path) for settings in other_code)
    stale = grid_status(dataclasses.replace(TINY, steps=((12, 8), (24, 6))), GridRecord(path))
    assert stale.other_runs == 8 and len(stale.missing) == 8  # the 12-token runs at 4 steps are not these


def test_the_transition_is_the_first_evaluation_halfway_from_chance():
    curve = [(100, 0.01), (200, 0.02), (300, 0.40), (400, 0.55), (500, 0.99), (600, 0.2)]
    assert transition_step(curve, chance=0.0) == 400
    assert transition_step(curve, chance=0.2) == 500  # halfway from 0.2 is 0.6
    assert transition_step(curve, chance=0.0, fraction=0.3) == 300
    assert transition_step(curve[:3], chance=0.0) is None
    with pytest.raises(ValueError, match="fraction"):
        transition_step(curve, chance=0.0, fraction=0.0)


def test_a_tiny_plan_trains_for_real_and_records_curves(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "grid.json"
    plan = dataclasses.replace(TINY, tiers=(Tier("only", ("kda", "mamba2"), (0,)),), steps=((12, 4), (24, 4)))
    run_plan(plan, GridRecord(path), max_runs=2, log=lambda line: None)
    record = GridRecord(path)
    assert len(record) == 2
    for key, entry in record.runs.items():
        assert [step for step, _ in entry["result"]["curve"]] == [2, 4]
        assert entry["provenance"]["device"] == "cpu" and entry["result"]["steps_done"] == 4
        assert record.result(key).peak_accuracy <= 1


def _cli(monkeypatch, tmp_path, *args) -> int:
    monkeypatch.setitem(grid_module.PLANS, "tiny", TINY)
    monkeypatch.setattr("kdalib.tasks.grid.train_recall_model", FakeTraining())
    return main(["tasks", "grid", "--plan", "tiny", "--record", str(tmp_path / "grid.json"), *args])


def test_the_command_trains_within_its_limits_and_prints_the_status(monkeypatch, tmp_path, capsys):
    assert _cli(monkeypatch, tmp_path, "--max-runs", "3") == 0
    out = capsys.readouterr().out
    assert "trained 3 run(s); 0 were recorded before" in out and "3 of 16 runs recorded" in out
    assert _cli(monkeypatch, tmp_path, "--status") == 0
    out = capsys.readouterr().out
    assert "3 of 16 runs recorded" in out and "transition step per seed" in out
    assert len(GridRecord(tmp_path / "grid.json")) == 3  # --status trains nothing


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--plan", "nope"], "unknown --plan 'nope'"),
        (["--max-seconds", "0"], "--max-seconds must be positive"),
        (["--tier", "third"], "--tier: plan 'tiny' has the tiers ['first', 'second']"),
    ],
)
def test_the_command_names_bad_arguments(monkeypatch, tmp_path, capsys, args, message):
    monkeypatch.setitem(grid_module.PLANS, "tiny", TINY)
    assert main(["tasks", "grid", "--plan", "tiny", "--record", str(tmp_path / "g.json"), *args]) == 2
    assert message in capsys.readouterr().err


def test_the_command_refuses_a_damaged_record(monkeypatch, tmp_path, capsys):
    (tmp_path / "grid.json").write_text("{")
    assert _cli(monkeypatch, tmp_path, "--status") == 2
    assert "unreadable grid record" in capsys.readouterr().err


def test_gpu_estimates_fall_back_on_notebook_05s_recorded_step_times():
    times = recorded_step_ms(root=ROOT)
    recorded = json.loads((ROOT / "notebooks/results/cuda/05_synthetic_tasks.json").read_text())["values"]
    assert times == {n: recorded[f"step_ms_triton_graph_{n}"] for n in REPORT_LENGTHS}


FIGURE4_CLAIMS = (
    "kda.synthetic.kda_highest_accuracy",
    "kda.synthetic.kda_converges_faster",
    "kda.synthetic.mamba2_fails",
)


def test_figure4_claims_get_a_verdict_only_from_a_complete_deciding_tier():
    """A Figure-4 claim may leave ``verified`` (reproduced, contradicted, refuted) only when the
    recorded GPU grid holds every deciding run and each task was learned at some length."""
    from kdalib.sources.loader import load_document

    claims = load_document(ROOT / "sources.yaml").claims
    record = GridRecord(ROOT / "notebooks/results/cuda/05_synthetic_figure4.json")
    status = grid_status(PLANS["figure4"], record)
    deciding_missing = [s for tier, s in status.missing if tier == "deciding"]
    learned = {row["task"] for row in status.rows if any(step is not None for step in row["transition"])}
    for name in FIGURE4_CLAIMS:
        claim = claims[name]
        if claim.status == "verified":  # no verdict yet: the notes say where the evidence will come from
            assert "kdalib tasks grid --plan figure4" in claim.text_notes, name
            assert "notebooks/results/cuda/05_synthetic_figure4.json" in claim.text_notes, name
            continue
        assert not deciding_missing, f"{name} is {claim.status}, but {len(deciding_missing)} deciding runs are missing"
        assert learned == set(PLANS["figure4"].profile.tasks), f"{name} is {claim.status}, but a task was never learned"


def test_a_recorded_grid_is_shown_with_its_status_table_and_figure(tmp_path, monkeypatch):
    pytest.importorskip("pandas")
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    from kdalib.tasks.grid_view import _markdown, grid_figure, load_grid, status_frame

    (tmp_path / "notebooks").mkdir()
    assert load_grid("figure4", root=tmp_path).runs == []  # nothing recorded: the status still says what is planned
    plan = PLANS["figure4"]
    record = GridRecord(tmp_path / "notebooks/results/cuda/05_synthetic_figure4.json")
    monkeypatch.setattr("kdalib.environment.provenance", lambda device: {"device": device, "device_name": "a GPU"})
    run_plan(plan, record, device="cuda", max_runs=7, log=lambda line: None, train=FakeTraining())
    status = load_grid("figure4", root=tmp_path)
    assert len(status.runs) == 7 and len(status.missing) == len(plan.runs()) - 7
    frame = status_frame(status)
    assert frame.loc[("deciding", "palindrome", 256, "KDA"), "seeds"] == "2/2"
    assert frame.loc[("deciding", "mqar", 256, "KDA"), "seeds"] == "1/2"  # the 7th run
    assert frame.loc[("deciding", "stack", 2048, "Mamba-2 rule"), "seeds"] == "0/2"
    fig = grid_figure(status)
    assert len(fig.axes) == 2 * 2  # palindrome and mqar have runs; peak by length and curve per task
    text = _markdown(status.summary())
    assert "- tier 'deciding': " in text and "\n  - next: mqar 256" in text

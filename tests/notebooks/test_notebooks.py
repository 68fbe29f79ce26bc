"""Execute each notebook in the smoke profile on the CPU, as the book build does, and check its results.

Runs through ``kdalib.repro.runner.execute_notebook``, so the recorded-result contract (JSON keys,
figures, glued values) is exercised end to end. The two slowest notebooks are marked
``slow``; every notebook stays under a minute on two cores.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import nbformat
import pytest

from kdalib.repro.runner import execute_notebook

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
CONTRACT_KEYS = {
    "notebook",
    "device",
    "device_name",
    "torch",
    "triton",
    "python",
    "threads",
    "commit",
    "worktree",
    "date",
    "wall_time_s",
    "profile",
    "values",
    "figures",
}


def _run(stem: str, tmp_path: Path) -> dict:
    result = execute_notebook(NOTEBOOKS / f"{stem}.ipynb", "cpu", "smoke", tmp_path, timeout=300)
    on_disk = json.loads((tmp_path / f"{stem}.json").read_text())
    assert on_disk == result
    assert set(result) == CONTRACT_KEYS
    assert result["device"] == "cpu" and result["profile"] == "smoke"
    assert result["notebook"] == f"notebooks/{stem}.ipynb"
    assert result["wall_time_s"] < 120
    for figure in result["figures"]:
        assert figure.startswith(f"{stem}-") and (tmp_path / figure).stat().st_size > 1000
    values = result["values"]
    assert values, "the notebook recorded nothing"
    assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in values.values())
    assert set(values) <= _glued_names(tmp_path / f"{stem}.ipynb"), "every recorded value is glued for the book"
    return values


def _glued_names(executed: Path) -> set[str]:
    notebook = nbformat.read(executed, as_version=4)
    return {
        output["metadata"]["scrapbook"]["name"]
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if "scrapbook" in output.get("metadata", {})
    }


def test_kda_from_scratch(tmp_path):
    values = _run("01_kda_from_scratch", tmp_path)
    for exact in (
        "views_max_abs_err",
        "view_a_vs_kdalib_max_abs_err",
        "delta_rule_recall_err",
        "chunk_by_hand_max_abs_err",
        "chunk_kda_float64_max_abs_err",
        "chunk_kda_float64_state_max_abs_err",
    ):
        assert values[exact] < 1e-12, exact
    assert values["chunk_kda_float32_rel_rms_err"] < 1e-5
    assert values["kda_device_rel_rms_err"] < 1e-5
    assert values["linear_attention_recall_err"] > 0.1  # the un-erased old value is still there
    assert values["half_life_shortest_tokens"] < values["half_life_scalar_tokens"] < values["half_life_longest_tokens"]


@pytest.mark.slow
def test_kernel_speed(tmp_path):
    values = _run("02_kernel_speed", tmp_path)
    # Timings on a shared CPU are too noisy for orderings between operators; check what is robust.
    for name in (
        "chunk_tokens_per_s_longest",
        "attention_tokens_per_s_longest",
        "fused_tokens_per_s",
        "copy_bandwidth_gb_per_s",
        "chunk_speedup_over_naive",
    ):
        assert values[name] > 0, name
    assert values["longest_tokens"] == 1024 and values["naive_max_tokens"] == 1024
    assert 0 < values["chunk_time_exponent"] < 2.5


def test_kv_cache_decoding(tmp_path):
    values = _run("03_kv_cache_decoding", tmp_path)
    assert values["kv_cache_reduction_limit_pct"] == pytest.approx(100 * 20 / 27)
    assert values["kv_cache_reduction_4k_pct"] < values["kv_cache_reduction_pct"]
    assert 73 < values["kv_cache_reduction_pct"] < values["kv_cache_reduction_limit_pct"] < 75
    assert values["kv_cache_reduction_design_pct"] == 75
    assert values["kv_cache_hybrid_gib_1m"] < values["kv_cache_all_mla_gib_1m"] / 3.5
    assert values["decode_mla_growth"] > 1.5  # 32x more cache to read; loose because the CPU is shared
    assert 0 < values["decode_attention_speedup_longest"] < values["decode_attention_speedup_bound"]


@pytest.mark.slow
def test_synthetic_recall(tmp_path):
    values = _run("04_synthetic_recall", tmp_path)
    assert values["runs"] == 4 * 3 * 1
    assert values["training_steps"] == 120  # fixed in the smoke profile: the same seeded run everywhere
    assert values["chance_accuracy"] == pytest.approx(1 / 8)
    for kind in ("linear", "deltanet", "gated_deltanet", "kda"):
        for suffix in ("mean", "longest", "most_pairs"):
            assert 0 <= values[f"acc_{kind}_{suffix}"] <= 1
        # Every model learns: ~0.85-0.97 here, against 0.125 for guessing.
        assert values[f"acc_{kind}_mean"] > 3 * values["chance_accuracy"], kind
    assert values["acc_kda_mean"] > 4 * values["chance_accuracy"]


@pytest.mark.slow
def test_synthetic_tasks(tmp_path):
    values = _run("05_synthetic_tasks", tmp_path)
    kinds, tasks, lengths = (
        ("linear", "deltanet", "gated_deltanet", "kda", "mamba2"),
        ("palindrome", "mqar", "stack"),
        (16, 32),
    )
    assert values["runs"] == len(kinds) * len(tasks) * len(lengths)
    assert values["training_steps"] == 40 and values["seeds"] == 1 and values["curve_length"] == 32
    peaks = {
        (task, kind, length): values[f"peak_{task}_{kind}_{length}"]
        for task in tasks
        for kind in kinds
        for length in lengths
    }
    assert all(0 <= peak <= 1 for peak in peaks.values())
    # something is learned: the best mechanism on each task beats guessing among the answers by a margin
    for task in tasks:
        assert max(peak for (t, _, _), peak in peaks.items() if t == task) > 1.5 * values[f"chance_{task}"], task
    for task in tasks:
        assert values[f"kda_highest_{task}"] in (0, 1)
        assert all(0 <= values[f"curve_mean_{task}_{kind}"] <= peaks[(task, kind, 32)] + 1e-12 for kind in kinds)
    assert (values["chance_palindrome"], values["chance_mqar"], values["chance_stack"]) == (1 / 4, 1 / 8, 1 / 4)


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_notebooks_are_stored_clean_and_use_the_shared_settings(path):
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(not cell.get("outputs") and cell.get("execution_count") is None for cell in code), (
        f"{path.name}: clear the outputs before committing"
    )
    source = "\n".join(cell.source for cell in code)
    assert "settings()" in source, f"{path.name}: read KDALIB_DEVICE / KDALIB_PROFILE through kdalib.repro.settings()"
    assert f'show_recorded(\n    "{path.stem}",' in source or f'show_recorded("{path.stem}"' in source, (
        f"{path.name}: show the recorded GPU run"
    )
    assert notebook.cells[0].cell_type == "markdown" and notebook.cells[0].source.startswith("# ")


@pytest.mark.parametrize("path", sorted((NOTEBOOKS / "results").rglob("*.txt")), ids=lambda p: p.name)
def test_recorded_test_logs_name_no_path_of_the_machine_that_ran_them(path):
    """A recorded pytest log says where it ran as "(the repository root)", not as that machine's
    folder, and names no interpreter path in its platform line."""
    for number, line in enumerate(path.read_text().splitlines(), 1):
        assert not line.startswith("rootdir: /"), f"{path.name}:{number}: {line}"
        assert not (line.startswith("platform ") and " -- /" in line), f"{path.name}:{number}: {line}"

"""kdalib.repro: settings, record/save_figure, recorded-result loading, and ``kdalib repro`` itself."""

from __future__ import annotations

import json
import subprocess

import nbformat
import numpy as np
import pytest
import torch
from nbformat.v4 import new_code_cell, new_notebook

from kdalib import repro
from kdalib.cli import main


@pytest.fixture
def collect(tmp_path, monkeypatch):
    monkeypatch.setenv(repro.COLLECT_ENV, str(tmp_path))
    return tmp_path


def test_settings_default_to_smoke_and_resolve_auto(monkeypatch):
    monkeypatch.delenv(repro.PROFILE_ENV, raising=False)
    monkeypatch.setenv(repro.DEVICE_ENV, "auto")
    run = repro.settings()
    assert run.profile == "smoke" and not run.full
    assert run.device == ("cuda" if torch.cuda.is_available() else "cpu")
    assert run.pick(smoke=1, full=2) == 1


def test_progress_bars_only_for_full_runs():
    assert not repro.Settings(device="cpu", profile="smoke").show_progress
    assert repro.Settings(device="cuda", profile="full").show_progress


def test_recorded_table_shows_reader_names_units_and_rounding_not_keys():
    data = {
        "values": {"b_ms": 0.1234567, "a<tag>": 2, "flag": True, "note": "text", "unshown": 5.0},
        "device_name": "GPU & co",
        "device": "cuda",
        "profile": "full",
        "commit": "abcdef0123456",
        "date": "2026-11-30",
        "torch": "2.13.0",
    }
    shown = {
        "a<tag>": repro.Shown("count <of> things"),
        "b_ms": repro.Shown("one step", "ms", 2),
        "absent": repro.Shown("x"),
    }
    bundle = repro.recorded_table(data, shown)
    page = bundle["text/html"]
    assert "<td>count &lt;of&gt; things</td><td>2</td>" in page and "<td>one step</td><td>0.12 ms</td>" in page
    assert "<caption>Recorded run of this notebook: recorded on GPU &amp; co (cuda)" in page
    for internal in ("b_ms", "a&lt;tag&gt;", "unshown", "flag", ">text<", "absent", "|"):
        assert internal not in page, internal
    assert page.index("count &lt;of&gt;") < page.index("one step")  # in the order given
    plain = bundle["text/plain"].splitlines()
    assert plain[0].startswith(
        "Recorded run of this notebook: recorded on GPU & co (cuda), profile full, commit abcdef0123"
    )
    assert plain[1:] == ["count <of> things  2", "one step           0.12 ms"]
    with pytest.raises(ValueError, match="none of"):
        repro.recorded_table(data, {"renamed": repro.Shown("gone")})


def test_a_run_from_a_modified_tree_is_never_shown_as_the_clean_commit():
    data = {"values": {"x": 1.0}, "commit": "abcdef0123456", "worktree": "modified"}
    assert "abcdef0123 with uncommitted changes" in repro.provenance(data)
    changes = repro.CodeChanges("abcdef0", ("kdalib/ops",), (), modified=True)
    assert "has not changed since" in changes.sentence() and "uncommitted changes" in changes.sentence()


@pytest.mark.parametrize(
    ("value", "digits", "text"),
    [(722922.6, 3, "723,000"), (0.70322, 2, "0.70"), (1.66e-16, 2, "1.7e-16"), (5.184, 3, "5.18"), (40, 3, "40"),
     (0.0036, 2, "0.0036"), (4167.97, 3, "4,170"), (128.08, 3, "128")],
)  # fmt: skip
def test_significant_figures(value, digits, text):
    assert repro.significant(value, digits) == text


def _git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True)


def test_code_changes_since_a_recorded_commit(tmp_path, monkeypatch):
    for variable in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL"):
        monkeypatch.setenv(variable, "test@example.org")
    _git(tmp_path, "init", "-q")
    (tmp_path / "kdalib" / "ops").mkdir(parents=True)
    (tmp_path / "notes.md").write_text("a")
    (tmp_path / "kdalib" / "ops" / "chunk.py").write_text("a")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "first")
    recorded = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    (tmp_path / "notes.md").write_text("b")
    _git(tmp_path, "commit", "-qam", "prose only")
    assert repro.code_changes_since(recorded, root=tmp_path).commits == ()
    (tmp_path / "kdalib" / "ops" / "NOTES.md").write_text("measured")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "the code's measurement notes")
    assert repro.code_changes_since(recorded, root=tmp_path).commits == ()
    (tmp_path / "kdalib" / "ops" / "chunk.py").write_text("b")
    _git(tmp_path, "commit", "-qam", "faster kernel")
    changes = repro.code_changes_since(recorded, root=tmp_path)
    assert len(changes.commits) == 1 and changes.commits[0].endswith("faster kernel")
    assert "has changed since: 1 commit, latest" in changes.sentence()
    unknown = repro.code_changes_since("0123456789abcdef", root=tmp_path)
    assert unknown.commits is None and "not in this clone's history" in unknown.sentence()
    outside = tmp_path.parent / f"{tmp_path.name}-copy"
    outside.mkdir()
    copied = repro.code_changes_since(recorded, root=outside)
    assert copied.commits is None and "no git history" in copied.sentence()
    assert repro.code_changes_since(None, root=tmp_path).commits is None


@pytest.mark.parametrize(("variable", "value"), [(repro.PROFILE_ENV, "huge"), (repro.DEVICE_ENV, "tpu")])
def test_settings_name_the_bad_variable(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=variable):
        repro.settings()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cuda_without_a_gpu_is_an_error():
    with pytest.raises(ValueError, match="no CUDA device"):
        repro.resolve_device("cuda")


def test_record_collects_plain_numbers(collect):
    assert repro.record("a_float", np.float32(0.5)) == 0.5
    assert repro.record("an_int", torch.tensor(7)) == 7
    assert isinstance(repro.record("an_int", 8), int)
    values = json.loads((collect / repro.VALUES_FILE).read_text())
    assert values == {"a_float": 0.5, "an_int": 8}


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("bad name", 1.0, "name must match"),
        ("nan_value", float("nan"), "finite"),
        ("flag", True, "real number"),
        ("text", "12", "real number"),
    ],
)
def test_record_rejects_bad_input(collect, name, value, message):
    with pytest.raises(ValueError, match=message):
        repro.record(name, value)


def test_record_outside_repro_only_glues(monkeypatch, tmp_path):
    monkeypatch.delenv(repro.COLLECT_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert repro.record("x", 1.5) == 1.5
    assert list(tmp_path.iterdir()) == []


def test_save_figure_writes_only_under_repro(collect, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([1, 2], [3, 4])
    path = repro.save_figure(fig, "curve")
    assert path == collect / "curve.png" and path.read_bytes()[:4] == b"\x89PNG"
    monkeypatch.delenv(repro.COLLECT_ENV)
    assert repro.save_figure(fig, "curve") is None
    with pytest.raises(ValueError, match="save_figure"):
        repro.save_figure(fig, "../escape")
    plt.close(fig)


def test_load_recorded_is_defensive(tmp_path, capsys):
    folder = tmp_path / "notebooks" / "results" / "cuda"
    folder.mkdir(parents=True)
    assert repro.load_recorded("missing", root=tmp_path) is None
    (folder / "broken.json").write_text("{not json")
    assert repro.load_recorded("broken", root=tmp_path) is None
    (folder / "novalues.json").write_text(json.dumps({"device": "cuda"}))
    assert repro.load_recorded("novalues", root=tmp_path) is None
    assert "broken.json" in capsys.readouterr().err
    record = {
        "device": "cuda",
        "device_name": "NVIDIA H200",
        "commit": "0123456789abcdef",
        "date": "2026-11-29",
        "profile": "full",
        "torch": "2.9",
        "wall_time_s": 12.3,
        "values": {"x": 1.0},
    }
    (folder / "good.json").write_text(json.dumps(record))
    loaded = repro.load_recorded("good", root=tmp_path)
    assert loaded["values"] == {"x": 1.0}
    line = repro.provenance(loaded)
    assert "NVIDIA H200" in line and "0123456789" in line and "2026-11-29" in line and "full" in line


def test_repro_command_records_a_notebook(tmp_path, capsys):
    notebook = new_notebook(
        cells=[
            new_code_cell("from kdalib.repro import record, settings\nrun = settings()"),
            new_code_cell("record('answer', 42)\nrecord('is_full', int(run.full))"),
        ]
    )
    path = tmp_path / "tiny.ipynb"
    nbformat.write(notebook, path)
    out = tmp_path / "results"
    assert main(["repro", "--device", "cpu", "--profile", "full", "--out", str(out), str(path)]) == 0
    result = json.loads((out / "tiny.json").read_text())
    assert result["values"] == {"answer": 42, "is_full": 1}
    assert result["device"] == "cpu" and result["profile"] == "full" and result["figures"] == []
    assert result["wall_time_s"] > 0 and result["date"].endswith("+00:00")
    assert (out / "tiny.ipynb").is_file()


def test_repro_command_reports_a_failing_cell(tmp_path, capsys):
    path = tmp_path / "broken.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell("raise RuntimeError('boom')")]), path)
    assert main(["repro", "--device", "cpu", "--out", str(tmp_path / "r"), str(path)]) == 1
    assert "boom" in capsys.readouterr().err
    assert (tmp_path / "r" / "broken.ipynb").is_file() and not (tmp_path / "r" / "broken.json").exists()


def test_repro_command_rejects_unknown_notebooks(capsys):
    assert main(["repro", "--device", "cpu", "no_such_notebook.ipynb"]) == 2
    assert "no_such_notebook" in capsys.readouterr().err


def test_results_dir_defaults_to_this_checkout():
    assert repro.results_dir("cuda") == repro.REPO_ROOT / "notebooks" / "results" / "cuda"
    assert repro.book_root() == repro.REPO_ROOT

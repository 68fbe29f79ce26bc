"""kdalib.repro.benchmarks and kdalib.repro.names: recorded bench runs read generically and shown
with reader names."""

from __future__ import annotations

import json

import matplotlib
import pytest

from kdalib.bench import known_methods
from kdalib.repro import benchmarks
from kdalib.repro.names import MECHANISM_NAMES, METHOD_NAMES, STEP_PATH_NAMES
from kdalib.tasks import MIXER_KINDS
from kdalib.tasks.report_grid import STEP_PATHS

matplotlib.use("Agg")


def test_every_internal_name_has_a_reader_name():
    assert set(known_methods()) <= set(METHOD_NAMES)
    assert set(STEP_PATHS) <= set(STEP_PATH_NAMES)
    assert set(MIXER_KINDS) <= set(MECHANISM_NAMES)
    assert all("_" not in name for name in METHOD_NAMES.values() if "chunk_kda" not in name)


def _row(method, ms, batch=1, tokens=4096, gate=None, top_gate=None, train=False, peak=1000.0, dtype="bfloat16"):
    shape = {"batch": batch, "tokens": tokens, "heads": 32, "key_dim": 128, "value_dim": 128, "dtype": dtype}
    shape["train"] = train
    if gate:
        shape["gate"] = gate
    row = {"shape": shape, "method": method, "ms": ms, "peak_extra_mb": peak}
    if top_gate:
        row["gate"] = top_gate
    return row


def _write(folder, name, date, rows, **extra):
    data = {"device_name": "GPU X", "commit": "abcdef0123", "date": date, "suite": "gpu", "rows": rows, **extra}
    (folder / name).write_text(json.dumps(data))


def test_records_are_read_generically_newest_row_wins(tmp_path):
    _write(tmp_path, "bench.json", "2026-12-01T00:00:00+00:00", [_row("triton", 5.0), _row("fla", 4.0)])
    _write(
        tmp_path,
        "bench-gates.json",
        "2026-12-02T00:00:00+00:00",
        [_row("triton", 6.0), _row("triton", 7.0, gate="bounded"), _row("new_kernel", 3.0, top_gate="kimi")],
        worktree="modified",
    )
    (tmp_path / "bench-broken.json").write_text("{")
    (tmp_path / "bench-empty.json").write_text(json.dumps({"rows": []}))
    records, skipped = benchmarks.load_records(tmp_path)
    assert [r.path.name for r in records] == ["bench.json", "bench-gates.json"]
    assert len(skipped) == 2 and any("bench-broken.json" in line for line in skipped)
    assert records[1].describe() == "GPU X, commit abcdef0 with local changes (2026-12-02)"
    rows = {(r["method"], r["gate"]): r for r in benchmarks.tidy_rows(records)}
    assert rows[("triton", None)]["ms"] == 6.0 and rows[("triton", None)]["record"] == 1  # the newer file's row
    assert rows[("triton", "bounded")]["name"] == "kdalib, Triton, bounded gate"
    assert rows[("new_kernel", "kimi")]["name"] == "method new_kernel, Kimi softplus gate"
    assert rows[("fla", None)]["shape"] == "B1 × T4K" and rows[("fla", None)]["peak_gb"] == 1.0


def test_tables_show_reader_names_rounding_and_absent_cells(tmp_path):
    _write(
        tmp_path,
        "bench.json",
        "2026-12-01",
        [
            _row("chunk_pytorch", 28.702272, peak=9528.0),
            _row("fla_bounded", 3.3612, peak=2560.016),
            _row("fla_bounded", 1.4, tokens=8192, peak=5.0),
        ],
    )
    rows = benchmarks.tidy_rows(benchmarks.load_records(tmp_path)[0])
    table = benchmarks.table_html(rows, "prefill", "bfloat16", "Prefill, bf16")
    assert "<caption>Prefill, bf16</caption>" in table
    assert "kdalib, PyTorch" in table and "FLA, bounded gate in kernel" in table
    assert "chunk_pytorch" not in table and "fla_bounded" not in table
    assert "28.7<br>" in table and "9.5 GB" in table and "3.36<br>" in table
    assert "&lt; 0.01 GB" in table and 'class="kdalib-absent"' in table  # PyTorch not timed at T8K
    assert benchmarks.table_html(rows, "training", None, "x") is None


def test_the_picture_has_time_and_memory_for_prefill_and_training(tmp_path):
    prefill = [_row(m, ms) for m, ms in (("triton", 5.0), ("fla", 4.0), ("sdpa_flash", 3.0), ("chunk_pytorch", 30.0))]
    training = [_row(m, 10 * ms, train=True) for m, ms in (("triton", 5.0), ("fla", 4.0), ("sdpa_flash", 3.0))]
    gated = [_row("triton", 9.0, tokens=8192, gate="mild"), _row("triton", 8.0, tokens=8192, gate="bounded")]
    _write(tmp_path, "bench.json", "2026-12-01", prefill + training + gated)
    records, _ = benchmarks.load_records(tmp_path)
    rows = benchmarks.tidy_rows(records)
    assert {r["method"] for r in benchmarks.picture_rows(rows, "prefill")} == {"triton", "fla", "sdpa_flash"}
    assert all(r["gate"] is None for r in benchmarks.picture_rows(rows, "prefill"))  # one gate per method
    figure = benchmarks.speed_picture(rows, records)
    titles = [ax.get_title() for ax in figure.axes]
    assert titles == [
        "prefill on GPU X: time per call",
        "prefill on GPU X: memory above the inputs",
        "training on GPU X: time per call",
        "training on GPU X: memory above the inputs",
    ]
    legend = [text.get_text() for text in figure.legends[0].get_texts()]
    assert legend == ["kdalib, Triton", "FLA", "softmax attention (flash)"]
    assert any("GPU X, commit abcdef0 (2026-12-01)" in text.get_text() for text in figure.texts)
    assert benchmarks.speed_picture([r for r in rows if r["method"] == "chunk_pytorch"], records) is None


def test_time_bars_start_at_the_decade_below_the_fastest_time(tmp_path):
    """On the log time axis every bar starts at one stated origin, the decade below the panel's
    fastest time, so 4 ms against 6 ms reads as the log scale says, not from wherever the axis
    would autoscale."""
    prefill = [
        _row("triton", 6.2),
        _row("fla", 4.3),
        _row("triton", 12.0, tokens=65536),
        _row("fla", 9.8, tokens=65536),
    ]
    training = [_row("triton", 33.5, train=True), _row("fla", 22.7, train=True), _row("sdpa_flash", 13.1, train=True)]
    _write(tmp_path, "bench.json", "2026-12-06", prefill + training)
    records, _ = benchmarks.load_records(tmp_path)
    figure = benchmarks.speed_picture(benchmarks.tidy_rows(records), records)
    prefill_time, _, training_time, _ = figure.axes
    assert prefill_time.get_xlim()[0] == pytest.approx(1.0)
    assert training_time.get_xlim()[0] == pytest.approx(10.0)


@pytest.mark.parametrize(("tokens", "label"), [(1, "1"), (4096, "4K"), (65536, "64K"), (1000, "1000")])
def test_tokens_label(tokens, label):
    assert benchmarks.tokens_label(tokens) == label


def test_rows_of_two_gpus_are_never_merged_or_compared(tmp_path):
    """An older record on one GPU and a newer one on another: each GPU keeps its own rows and
    tables, and each panel of the picture shows one GPU's rows (the newest record's for its kind)."""
    older = [_row("triton", 5.0), _row("fla", 4.0), _row("sdpa_flash", 3.0)]
    older += [_row("triton", 50.0, train=True), _row("fla", 20.0, train=True), _row("sdpa_flash", 9.0, train=True)]
    _write(tmp_path, "bench.json", "2026-12-01", older)
    newer = [_row("triton", 9.0, gate="mild"), _row("fla", 4.5, gate="mild")]
    packed = _row("triton", 3.0, tokens=8192, gate="mild")
    packed["shape"].update(heads=96, packed=[4000, 4192])
    newer.append(packed)
    (tmp_path / "bench-prefill.json").write_text(
        json.dumps({"device_name": "GPU Y", "commit": "1234567", "date": "2026-12-06", "rows": newer})
    )
    records, _ = benchmarks.load_records(tmp_path)
    rows = benchmarks.tidy_rows(records)
    assert benchmarks.devices(rows) == ["GPU X", "GPU Y"]
    triton_prefill = sorted(
        (r["device"], r["gate"], r["ms"]) for r in rows if r["method"] == "triton" and r["kind"] == "prefill"
    )
    assert triton_prefill == [("GPU X", None, 5.0), ("GPU Y", "mild", 3.0), ("GPU Y", "mild", 9.0)]
    x = benchmarks.table_html(rows, "prefill", "bfloat16", "x", device="GPU X")
    y = benchmarks.table_html(rows, "prefill", "bfloat16", "y", device="GPU Y")
    assert "5<br>" in x and "9<br>" not in x and "9<br>" in y and "5<br>" not in y
    assert "<th>B1 × T8K H96, packed</th>" in y  # its own column, named
    assert {(r["device"], r["heads"]) for r in benchmarks.picture_rows(rows, "prefill")} == {("GPU Y", 32)}
    assert {r["device"] for r in benchmarks.picture_rows(rows, "training")} == {"GPU X"}
    figure = benchmarks.speed_picture(rows, records)
    assert [ax.get_title() for ax in figure.axes][::2] == [
        "prefill on GPU Y, mild gate: time per call",
        "training on GPU X: time per call",
    ]
    legend = [text.get_text() for text in figure.legends[0].get_texts()]
    assert legend == ["kdalib, Triton", "FLA", "softmax attention (flash)"]  # from any panel, once


def test_records_of_one_run_are_named_once_under_the_picture(tmp_path):
    """Two files written by one run (same GPU, commit and date) feed the picture; its caption names
    that run once."""
    _write(tmp_path, "bench-prefill.json", "2026-12-06", [_row("triton", 5.0), _row("fla", 4.0)])
    _write(tmp_path, "bench-serving.json", "2026-12-06", [_row("triton", 5.5, tokens=32768)])
    records, _ = benchmarks.load_records(tmp_path)
    figure = benchmarks.speed_picture(benchmarks.tidy_rows(records), records)
    caption = next(text.get_text() for text in figure.texts if text.get_text().startswith("Recorded"))
    assert caption.count("GPU X, commit abcdef0 (2026-12-06)") == 1

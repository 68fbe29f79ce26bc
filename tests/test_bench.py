"""The benchmark's logic on tiny shapes: suites, peer loading, the table and the JSON (no timing asserts)."""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from kdalib import bench
from kdalib.bench import measure
from kdalib.bench.command import cmd_bench
from kdalib.bench.first_call import FIRST_CALL_LABELS
from kdalib.bench.report import format_breakdowns
from kdalib.ops import chunk_kda, naive_recurrent_kda
from kdalib.ops.chunk import chunk_kda_flops

# A stand-in for flash-linear-attention's reference file with the same signature; the
# tests check loading and wiring, so it delegates to our oracle.
PEER_SOURCE = """
from kdalib.ops import naive_recurrent_kda as _oracle

def naive_recurrent_kda(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False):
    return _oracle(q, k, v, g, beta, scale=scale, initial_state=initial_state,
                   output_final_state=output_final_state)
"""


@pytest.fixture()
def peer_tree(tmp_path: Path) -> Path:
    target = tmp_path / "tree" / bench.PEER_FILE
    target.parent.mkdir(parents=True)
    target.write_text(PEER_SOURCE)
    return tmp_path / "tree"


@pytest.fixture()
def peer_wheel(tmp_path: Path) -> Path:
    wheel = tmp_path / "fla_core-0.0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(bench.PEER_FILE.as_posix(), PEER_SOURCE)
    return wheel


def _args(**overrides) -> argparse.Namespace:
    values = dict(
        device="cpu",
        suite="tiny",
        list=False,
        json=None,
        repeats=1,
        fla_path=None,
        threads=None,
        breakdown=False,
        methods=None,
        rows=None,
    )
    values.update(overrides)
    return argparse.Namespace(**values)


@pytest.mark.parametrize("source", ["peer_tree", "peer_wheel"])
def test_peer_loads_by_path_from_tree_or_wheel(source, request):
    peer = bench.load_peer(str(request.getfixturevalue(source)))
    inputs = bench.make_problem(bench.Shape(1, 9, 2, 8, 8), "cpu")
    o_peer, _ = peer(**inputs)
    o_ref, _ = naive_recurrent_kda(**inputs)
    assert torch.equal(o_peer, o_ref)


def test_a_wheel_is_read_in_place(peer_wheel, tmp_path, monkeypatch):
    """Nothing is extracted to disk: the module's code comes straight from the archive."""
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "no-such-folder"))
    source, origin = bench.read_peer_source(str(peer_wheel))
    assert "def naive_recurrent_kda" in source and origin == f"{peer_wheel}!{bench.PEER_FILE.as_posix()}"
    assert callable(bench.load_peer(str(peer_wheel)))


def test_every_suite_method_is_an_operator_a_variant_or_a_comparison():
    for name, suite in bench.SUITES.items():
        for method in suite.methods:
            assert method in bench.known_methods(), (name, method)
        every_shape_runs_something = all(any(bench.applies(m, shape) for m in suite.methods) for shape in suite.shapes)
        assert every_shape_runs_something, name
    with pytest.raises(ValueError, match="unknown name 'nope'"):
        bench.resolve_method("nope", None)


@pytest.mark.parametrize("method", ["naive", "chunk", "chunk_pytorch", "fused_recurrent", "fused_recurrent_pytorch"])
def test_the_cpu_methods_compute_kda(method):
    """What notebook 02 times: every KDA method agrees with the oracle on a bench problem."""
    problem = bench.make_problem(bench.Shape(1, 37, 2, 16, 8, decode=True), "cpu")
    o, state = bench.resolve_method(method, None)(**problem, output_final_state=True)
    o_ref, state_ref = naive_recurrent_kda(**problem, output_final_state=True)
    torch.testing.assert_close(o, o_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(state, state_ref, rtol=1e-4, atol=1e-5)


def test_softmax_attention_is_causal_over_the_same_q_k_v():
    problem = bench.make_problem(bench.Shape(1, 12, 2, 8, 8), "cpu")
    o, state = bench.resolve_method("sdpa", None)(**problem)
    assert state is None and o.shape == (1, 2, 12, 8)  # [B, H, T, V]
    torch.testing.assert_close(o[0, :, 0], problem["v"][0, 0])  # the first token attends to itself only
    assert bench.bytes_moved(problem) == sum(x.numel() * 4 for x in problem.values()) + problem["v"].numel() * 4


def test_missing_peer_is_a_clear_error(tmp_path):
    with pytest.raises(bench.MethodUnavailable, match="naive.py"):
        bench.read_peer_source(str(tmp_path))
    assert cmd_bench(_args(fla_path=str(tmp_path), json=str(tmp_path / "x.json"))) == 2


def test_tiny_suite_writes_well_formed_json(peer_tree, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert cmd_bench(_args(fla_path=str(peer_tree), json=str(out), threads=1)) == 0
    result = json.loads(out.read_text())
    assert result["threads"] == 1
    for key in ("device", "torch", "date", "commit", "suite", "matmul_flops_per_s", "rows"):
        assert key in result
    assert result["device"] == "cpu" and result["suite"] == "tiny"
    suite = bench.SUITES["tiny"]
    assert {(r["label"], r["method"]) for r in result["rows"]} == {
        (shape.label, method) for shape in suite.shapes for method in suite.methods if bench.applies(method, shape)
    }
    train = [r for r in result["rows"] if r["shape"]["train"]]
    assert [r["method"] for r in train] == ["chunk_pytorch"] and train[0]["label"].startswith("train-")
    for row in result["rows"]:
        assert row["ms"] > 0 and row["tokens_per_s"] > 0
        if row["shape"]["train"]:
            continue
        assert row["speedup_vs_peer"] > 0
        if row["method"] != "chunk":
            assert row["rel_rms_vs_chunk"] < 1e-5  # every method computed the same thing
        if row["method"] in bench.CHUNK_SIZES:
            shape = row["shape"]
            assert row["flops"] == chunk_kda_flops(
                shape["tokens"], shape["heads"], shape["key_dim"], shape["value_dim"], row["chunk_size"]
            )
            assert row["x_floor"] == pytest.approx(row["ms"] / row["floor_ms"])
    printed = capsys.readouterr().out
    assert "x floor" in printed and "B1-T40-H2-K16-V16-float32" in printed


def test_methods_time_only_the_chosen_ones_and_an_unknown_one_is_refused(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert cmd_bench(_args(json=str(out), methods="chunk, naive,chunk")) == 0
    result = json.loads(out.read_text())
    assert result["methods"] == ["chunk", "naive"]
    assert {r["method"] for r in result["rows"]} == {"chunk", "naive"}
    capsys.readouterr()
    for bad, named in (("chunk,fla", "; not fla"), (",", "")):
        assert cmd_bench(_args(json=str(tmp_path / "no.json"), methods=bad)) == 2
        error = capsys.readouterr().err
        assert f"--methods {bad!r}: suite 'tiny' times peer, naive" in error and named in error
    assert not (tmp_path / "no.json").exists()


def test_rows_time_only_the_matching_labels_and_no_match_is_refused(tmp_path, capsys):
    """``--rows``: the suite's rows whose label contains one of the parts; the record says what was
    asked; parts that match nothing are refused, listing the labels, and nothing is written."""
    out = tmp_path / "bench.json"
    assert cmd_bench(_args(json=str(out), rows="T100, train-")) == 0
    result = json.loads(out.read_text())
    labels = {r["label"] for r in result["rows"]}
    suite = bench.SUITES["tiny"]
    expected = {s.label for s in suite.shapes if "T100" in s.label or "train-" in s.label}
    assert labels == expected and len(expected) < len(suite.shapes)
    assert result["rows_asked"] == "T100, train-"
    capsys.readouterr()
    assert cmd_bench(_args(json=str(tmp_path / "no.json"), rows="T12345")) == 2
    error = capsys.readouterr().err
    assert "--rows 'T12345' matches no row of suite 'tiny'" in error and suite.shapes[0].label in error
    assert not (tmp_path / "no.json").exists()


def test_a_stopped_run_keeps_the_shapes_it_finished(peer_tree, tmp_path, monkeypatch):
    """The JSON is rewritten (in one step) after every shape and marked complete only at the end,
    so a run stopped by a time limit leaves what it measured, never a half-written file."""
    out = tmp_path / "bench.json"
    suite = bench.SUITES["tiny"]
    first = suite.shapes[0]
    first_rows = sum(bench.applies(method, first) for method in suite.methods)
    made = []
    real_make_problem = bench.make_problem

    def stop_at_the_second_shape(shape, device, seed=0):
        made.append(shape)
        if len(made) > 1:
            raise KeyboardInterrupt  # what a time limit's signal does to the run
        return real_make_problem(shape, device, seed)

    monkeypatch.setattr(measure, "make_problem", stop_at_the_second_shape)
    with pytest.raises(KeyboardInterrupt):
        cmd_bench(_args(fla_path=str(peer_tree), json=str(out), threads=1))
    partial = json.loads(out.read_text())
    assert partial["complete"] is False and partial["suite"] == "tiny"
    assert [row["label"] for row in partial["rows"]] == [first.label] * first_rows
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json", "tree"]  # no temporary left
    monkeypatch.setattr(measure, "make_problem", real_make_problem)
    assert cmd_bench(_args(fla_path=str(peer_tree), json=str(out), threads=1)) == 0
    assert json.loads(out.read_text())["complete"] is True


def test_the_first_calls_are_recorded_before_the_suite_runs(tmp_path, monkeypatch):
    """A run whose suite is cut by a time limit keeps the first-call rows it measured first."""
    import dataclasses

    from kdalib.bench import command

    out = tmp_path / "bench.json"
    asked = []

    def fake_first_calls(labels):
        asked.append(labels)
        return [dict(method="triton", label=labels[0], first_call_s=3.5)]

    def cut(device):
        raise KeyboardInterrupt  # the time limit, as the suite starts

    monkeypatch.setattr(command, "first_call_rows", fake_first_calls)
    monkeypatch.setattr(command, "provenance", lambda device: dict(device=device, device_name="stand-in"))
    monkeypatch.setattr(command.torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(command.SUITES, "tiny", dataclasses.replace(bench.SUITES["tiny"], device="cuda"))
    monkeypatch.setattr(measure, "copy_bandwidth", cut)
    with pytest.raises(KeyboardInterrupt):
        cmd_bench(_args(device="cuda", json=str(out), first_call="train"))
    partial = json.loads(out.read_text())
    assert asked == [FIRST_CALL_LABELS[1:]]
    assert partial["complete"] is False and partial["rows"] == []
    assert partial["first_call"] == [dict(method="triton", label=FIRST_CALL_LABELS[1], first_call_s=3.5)]


def test_the_breakdown_ranks_a_calls_operators_by_their_own_time():
    a = torch.randn(384, 384)
    parts = bench.time_breakdown(lambda: (a @ a @ a).relu_(), "cpu", top=20)
    calls = {p["name"]: p["calls"] for p in parts}
    # which operator measures longest depends on the machine's load, so only counts are asserted
    assert calls.get("aten::mm") == 2 and calls.get("aten::relu_") == 1
    by_name = {p["name"]: p for p in parts}
    # an operator that ran twice lists both calls' own times; one that ran once lists none
    mm = by_name["aten::mm"]
    assert len(mm["launches_ms"]) == 2 and sum(mm["launches_ms"]) == pytest.approx(mm["ms"])
    assert "launches_ms" not in by_name["aten::relu_"]
    assert [p["ms"] for p in parts] == sorted((p["ms"] for p in parts), reverse=True)
    assert len(bench.time_breakdown(lambda: (a @ a @ a).relu_(), "cpu", top=1)) == 1
    assert 0 < sum(p["share"] for p in parts) <= 1 + 1e-9


def test_breakdown_rows_are_recorded_and_printed(peer_tree, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert cmd_bench(_args(fla_path=str(peer_tree), json=str(out), threads=1, breakdown=True)) == 0
    rows = json.loads(out.read_text())["rows"]
    assert all(row["breakdown"] and {"name", "ms", "calls", "share"} <= row["breakdown"][0].keys() for row in rows)
    printed = capsys.readouterr().out
    assert f"{rows[0]['label']} {rows[0]['method']} (" in printed
    part = dict(name="_local_backward_kernel", ms=6.0, calls=3, share=0.5, launches_ms=[3.0, 2.0, 1.0])
    table = format_breakdowns(dict(rows=[dict(label="L", method="triton", ms=12.0, breakdown=[part])]))
    assert table.splitlines()[-1].split() == ["launches:", "3.000,", "2.000,", "1.000", "ms"]


def test_list_and_bad_arguments(capsys, tmp_path):
    assert cmd_bench(_args(list=True)) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("cpu", "cpu-quick", "gpu", "tiny"))
    assert all(f"\n{method} " in listed for method in bench.known_methods())
    assert cmd_bench(_args(suite="nope")) == 2
    assert cmd_bench(_args(repeats=0)) == 2
    assert cmd_bench(_args(threads=0)) == 2
    if not torch.cuda.is_available():
        assert cmd_bench(_args(suite="gpu")) == 2
        assert cmd_bench(_args(device="cuda")) == 2


def test_flop_count_scales_with_chunks_and_heads():
    one = chunk_kda_flops(64, 1, 64, 64)
    assert chunk_kda_flops(128, 1, 64, 64) == 2 * one
    assert chunk_kda_flops(65, 3, 64, 64) == 6 * one


def test_target_check_reports_met_and_not_met():
    rows = [
        dict(label="B1-T8192-H4-K64-V64-float32", method="chunk", speedup_vs_peer=8.0),
        dict(label="B1-T8192-H4-K64-V64-float32", method="chunk-c32", speedup_vs_peer=12.0),
        dict(label="B1-T2048-H32-K128-V128-float32", method="chunk", speedup_vs_peer=2.0),
    ]
    lines = bench.check_targets(dict(rows=rows))
    assert "chunk-c32 12.0x" in lines[0] and lines[0].endswith(": met") and lines[1].endswith("NOT met")


@pytest.mark.parametrize("gate", ["mild", "kimi", "bounded"])
def test_gated_and_packed_problems_agree_between_methods(gate):
    """Each gate's problem gives the chunked and the token-loop operators the same KDA (the bounded
    one computing the gate from its raw projection), on packed sequences too; a training row's
    gradients reach the gate's parameters."""
    from kdalib.bench.measure import make_problem
    from kdalib.bench.methods import resolve_method
    from kdalib.bench.suites import Shape

    shape = Shape(1, 100, 2, 16, 16, gate=gate, packed=(30, 70))
    problem = make_problem(shape, "cpu")
    assert ("A_log" in problem) == (gate == "bounded") and problem["cu_seqlens"].tolist() == [0, 30, 100]
    chunked = resolve_method("chunk", None)(**problem)[0]
    loop = resolve_method("naive", None)(**problem)[0]
    assert torch.allclose(chunked, loop, atol=1e-5)
    assert shape.label.endswith("packed2" if gate == "mild" else f"packed2-{gate}")
    train = make_problem(Shape(1, 40, 2, 16, 16, gate=gate, train=True), "cpu")
    resolve_method("chunk", None)(**train)[0].sum().backward()
    assert all(x.grad is not None for x in train.values())


def test_a_shape_refuses_an_unknown_gate_and_inconsistent_packing():
    from kdalib.bench.suites import Shape

    with pytest.raises(ValueError, match="gate: expected one of mild, kimi, bounded"):
        Shape(1, 10, 2, 16, 16, gate="strong")
    with pytest.raises(ValueError, match="packed: lengths must sum to tokens=10"):
        Shape(1, 10, 2, 16, 16, packed=(3, 4))


def test_shape_from_label_finds_suite_rows_and_names_an_unknown_label():
    from kdalib.bench.first_call import FIRST_CALL_LABELS
    from kdalib.bench.suites import shape_from_label

    assert [shape_from_label(label).label for label in FIRST_CALL_LABELS] == list(FIRST_CALL_LABELS)
    with pytest.raises(ValueError, match="label: no suite has a row 'B3-nothing'"):
        shape_from_label("B3-nothing")


# A stand-in for ``python -m kdalib.bench.first_call METHOD LABEL``: it checks the environment it
# was given (a fresh, empty Triton cache of its own), then behaves as its method name says.
FAKE_MEASUREMENT = """
import json, os, sys, time
method, label = sys.argv[1:]
cache = os.environ["TRITON_CACHE_DIR"]
if not os.path.isdir(cache) or os.listdir(cache) or "TRITON_CACHE_AUTOTUNING" in os.environ:
    sys.exit(f"not a fresh Triton cache: {cache}")
with open(os.path.join(cache, "compiled"), "w"):  # the next method must not see this
    pass
if method == "fails":
    sys.exit("RuntimeError: Found no NVIDIA driver on your system")
if method == "hangs":
    time.sleep(600)
print("compiling ...")
print(json.dumps(dict(method=method, label=label, first_call_s=12.5, cache=cache)))
"""


def _fake_measurement(method: str, label: str) -> list[str]:
    return [sys.executable, "-c", FAKE_MEASUREMENT, method, label]


def test_each_first_call_is_a_row_from_a_fresh_process_and_a_failure_is_its_error(monkeypatch):
    """Each method runs in its own process with its own empty Triton cache; the row is the last
    line it prints, and one that fails becomes a row naming its error, the next one still running."""
    from kdalib.bench.first_call import first_call_rows

    monkeypatch.setenv("TRITON_CACHE_AUTOTUNING", "1")
    lines = []
    rows = first_call_rows(
        ("B1-T64", "B2-T64"), log=lines.append, methods=("works", "fails", "again"), command=_fake_measurement
    )
    assert [(row["method"], row["label"]) for row in rows] == [
        (method, label) for label in ("B1-T64", "B2-T64") for method in ("works", "fails", "again")
    ]
    for row in rows:
        if row["method"] == "fails":
            assert row == dict(
                method="fails", label=row["label"], error="RuntimeError: Found no NVIDIA driver on your system"
            )
        else:
            assert row["first_call_s"] == 12.5 and "error" not in row
    assert len({row["cache"] for row in rows if "cache" in row}) == 4  # a new folder each time
    assert len(lines) == 6 and "12.5 s" in lines[0] and lines[1].endswith("Found no NVIDIA driver on your system")


def test_a_first_call_past_its_timeout_is_a_row_with_that_error():
    from kdalib.bench.first_call import first_call_rows

    rows = first_call_rows(("B1-T64",), log=lambda line: None, timeout=1, methods=("hangs",), command=_fake_measurement)
    assert rows == [dict(method="hangs", label="B1-T64", error="no result within 1 s")]


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the failure path of a process without CUDA")
def test_the_real_first_call_command_without_cuda_is_a_row_with_its_error():
    """``python -m kdalib.bench.first_call`` itself (a fresh Python importing torch and kdalib)."""
    from kdalib.bench import first_call

    rows = first_call.first_call_rows(first_call.FIRST_CALL_LABELS[:1], log=lambda line: None, timeout=120)
    assert [row["method"] for row in rows] == list(first_call.FIRST_CALL_METHODS)
    assert all("error" in row and "first_call_s" not in row for row in rows)


@pytest.mark.parametrize("method", ["verify", "single_steps"])
def test_the_verify_methods_compute_k_decode_steps(method):
    """The serving suite's verify rows: one call over k draft tokens and k single steps agree."""
    shape = bench.Shape(3, 4, 2, 16, 8, decode=True, verify=True)
    assert shape.label == "verify-B3-T4-H2-K16-V8-float32"
    problem = bench.make_problem(shape, "cpu")
    o, state = bench.resolve_method(method, None)(**problem, output_final_state=True)
    o_ref, state_ref = naive_recurrent_kda(**problem, output_final_state=True)
    torch.testing.assert_close(o, o_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(state, state_ref, rtol=1e-4, atol=1e-5)


def test_the_serving_suite_times_verify_rows_and_prefills_with_states():
    suite = bench.SUITES["gpu-serving"]
    verify = [s for s in suite.shapes if s.verify]
    assert {(s.batch, s.tokens) for s in verify} == {(1, 4), (1, 8), (64, 4), (64, 8)}
    for shape in suite.shapes:
        timed = {m for m in suite.methods if bench.applies(m, shape)}
        assert timed == ({"verify", "single_steps"} if shape.verify else {"triton", "triton_states64"})
    for name, other in bench.SUITES.items():  # the other suites time what they timed before
        if name != "gpu-serving":
            assert not any(s.verify for s in other.shapes)
            assert not {"verify", "single_steps", "triton_states64"} & set(other.methods)


def test_the_prefill_with_states_is_the_plain_triton_prefill():
    pytest.importorskip("triton")
    problem = bench.make_problem(bench.Shape(1, 64, 1, 16, 16, "bfloat16"), "cpu")
    o, _ = bench.resolve_method("triton_states64", None)(**problem)
    o_plain, _ = chunk_kda(**problem, use_triton=True)
    assert torch.equal(o, o_plain)

"""``kdalib dev ptxas``: the kernels compiled for sm_90 on the CPU and ptxas' report of them.

The compiled run happens in a fresh Python without ``TRITON_INTERPRET`` (this session's kernels are
the interpreter's when there is no CUDA: tests/conftest.py), on one small kernel configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

from kdalib.ops.triton import interpreting  # noqa: E402
from kdalib.ops.triton.ptxas_report import (  # noqa: E402
    ReportUnavailable,
    Row,
    cmd_ptxas,
    find_ptxas,
    format_table,
    parse_ptxas_info,
)

ROOT = Path(__file__).resolve().parents[2]

# What ptxas -v prints for one kernel (triton 3.6's ptxas, abridged).
PTXAS_OUTPUT = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_chunk_output_kernel' for 'sm_90a'
ptxas info    : Function properties for _chunk_output_kernel
    24 bytes stack frame, 16 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 168 registers, used 1 barriers, 440 bytes cmem[0]
"""


def test_ptxas_output_is_read_into_registers_spills_and_stack():
    usage = parse_ptxas_info(PTXAS_OUTPUT)
    assert usage == dict(registers=168, stack=24, spill_stores=16, spill_loads=12)
    with pytest.raises(ValueError, match="ptxas -v printed no register count"):
        parse_ptxas_info("ptxas fatal   : Unresolved extern function 'foo'")


def test_a_ptxas_that_does_not_run_is_a_clear_error(tmp_path):
    missing = tmp_path / "bin" / "ptxas"
    with pytest.raises(ReportUnavailable, match=f"--ptxas {missing}: no ptxas runs there"):
        find_ptxas(str(missing))


def test_the_table_aligns_its_columns_and_gives_a_failure_its_error():
    rows = [
        Row("forward", "prefill_local._chunk_local_kernel", 4, 3, 255, 1024, 1024, 1056, 32768),
        Row("training", "chunk_scan._scan_forward_kernel", 4, 1, error="CompilationError: at 12:4"),
    ]
    lines = format_table(rows).splitlines()
    assert lines[0].split("  ")[0].strip() == "path" and lines[0].endswith("shared (B)")
    assert lines[1].endswith("32768") and len(lines[1]) == len(lines[0])
    assert lines[2].endswith("CompilationError: at 12:4")


@pytest.mark.skipif(not interpreting(), reason="checks the message under TRITON_INTERPRET=1")
def test_under_the_interpreter_it_says_why_it_cannot_compile(capsys):
    args = argparse.Namespace(
        path=None, kernel=None, dim=16, heads=2, dtype="bfloat16", capability=90, warps=None, stages=None,
        ptxas=None, json=None,
    )  # fmt: skip
    assert cmd_ptxas(args) == 2
    assert "TRITON_INTERPRET is on" in capsys.readouterr().err


def _compiles_for_cuda() -> str | None:
    """Why this machine's triton cannot compile for CUDA, or None."""
    from triton.backends import backends

    if "nvidia" not in backends:
        return "this triton has no CUDA backend"
    try:
        find_ptxas()
    except ReportUnavailable as error:
        return str(error)
    return None


def test_one_kernel_compiled_for_sm90_gives_registers_spills_and_shared_memory(tmp_path):
    reason = _compiles_for_cuda()
    if reason is not None:
        pytest.skip(reason)
    env = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["TRITON_CACHE_DIR"] = str(tmp_path / "triton-cache")  # compiled here, not read from a cache
    out = tmp_path / "ptxas.json"
    command = [sys.executable, "-m", "kdalib", "dev", "ptxas", "--path", "forward", "--kernel", "prefill_output"]
    command += ["--dim", "16", "--heads", "2", "--warps", "2", "--warps", "4", "--json", str(out)]
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [(row["kernel"], row["warps"]) for row in rows] == [
        ("prefill_output._chunk_output_kernel", w) for w in (2, 4)
    ]
    for row in rows:
        assert row["error"] is None and row["registers"] > 0 and row["shared"] > 0
        assert min(row["spill_stores"], row["spill_loads"], row["stack"]) >= 0
    table = done.stdout.splitlines()
    assert (
        table[0].startswith("path")
        and len(table) == 3
        and table[1].split()[:4] == ["forward", rows[0]["kernel"], "2", "3"]
    )
    missing = subprocess.run([*command[:-2], "--ptxas", str(tmp_path / "no-ptxas")], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert missing.returncode == 2 and f"--ptxas {tmp_path / 'no-ptxas'}: no ptxas runs there" in missing.stderr


def test_the_command_line_takes_every_path_and_dtype():
    from kdalib.cli import build_parser
    from kdalib.ops.triton.ptxas_report import DTYPES, PATHS

    for path in PATHS:
        assert build_parser().parse_args(["dev", "ptxas", "--path", path]).path == [path]
    for dtype in DTYPES:
        assert build_parser().parse_args(["dev", "ptxas", "--dtype", dtype]).dtype == dtype

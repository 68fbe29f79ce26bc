"""kdalib.distributed.check, as the README runs it: torchrun with gloo on the CPU, and the NCCL
path in a single process on one GPU (skipped without CUDA)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from distributed_ranks import process_env

from kdalib.distributed.check import sequence_offsets, shard_offsets

ROOT = Path(__file__).resolve().parents[2]


def torchrun(ranks: int, *arguments: str, timeout_s: float = 240.0) -> dict:
    """Runs the check under torchrun (``--standalone`` picks a free port itself) and returns rank 0's report."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"]
    command += ["-m", "kdalib.distributed.check", *arguments]
    # its own process group, so that a hang kills torchrun and its workers together
    launcher = subprocess.Popen(
        command, env=process_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = launcher.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(launcher.pid, signal.SIGKILL)
        stdout, stderr = launcher.communicate()
        pytest.fail(f"torchrun timed out after {timeout_s:.0f} s\n{stdout}\n{stderr}")
    assert launcher.returncode == 0, f"exit {launcher.returncode}\n{stdout}\n{stderr}"
    reports = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert len(reports) == 1, stdout
    return reports[0]


def test_shards_and_sequences():
    assert shard_offsets(10, 3) == [0, 4, 7, 10]
    offsets = sequence_offsets(100, 5, torch.Generator().manual_seed(0))
    assert offsets[0] == 0 and offsets[-1] == 100 and len(offsets) == 6
    assert all(b > a for a, b in zip(offsets, offsets[1:]))
    with pytest.raises(ValueError, match="sequences: expected 1 <= sequences <= tokens = 4, got 5"):
        sequence_offsets(4, 5, torch.Generator())


def test_torchrun_on_the_cpu():
    report = torchrun(2, "--tokens=150", "--heads=2", "--head-dim=16", "--chunk-size=16", "--dtype=float64")
    assert report["passed"] and report["ranks"] == 2 and report["device"] == "cpu"
    assert set(report["max_rel_rms"]) == {
        "o",
        "final_state",
        "initial_state.grad",
        "q.grad",
        "k.grad",
        "v.grad",
        "g.grad",
        "beta.grad",
    }
    assert max(report["max_rel_rms"].values()) < 1e-10


@pytest.mark.gpu
@pytest.mark.skipif(not (torch.cuda.is_available() and dist.is_nccl_available()), reason="needs CUDA and NCCL")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_nccl_single_process(dtype):
    """One process on one GPU over NCCL: the payloads, states and final-state all-reduce on CUDA."""
    report = torchrun(1, "--backend=nccl", "--tokens=1000", "--sequences=4", f"--dtype={dtype}")
    assert report["passed"] and report["device"] == "cuda:0", report

"""Which device a group's tensors travel on: NCCL keeps them on each process's GPU, gloo on the CPU.

The NCCL decisions are checked without a GPU by naming the backend; the NCCL run itself is in
test_distributed_check.py (skipped without CUDA).
"""

from __future__ import annotations

import pytest
import torch

from kdalib.distributed import comm


@pytest.mark.parametrize(
    ("backend", "device", "expected"),
    [
        ("nccl", "cuda:1", "cuda:1"),
        ("cpu:gloo,cuda:nccl", "cuda:2", "cuda:2"),
        ("cpu:gloo,cuda:nccl", "cpu", "cpu"),
        ("gloo", "cuda:0", "cpu"),
        ("gloo", "cpu", "cpu"),
    ],
)
def test_transport_device(monkeypatch, backend, device, expected):
    monkeypatch.setattr(comm, "_backend", lambda group: backend)
    assert comm.transport_device(None, torch.device(device)) == torch.device(expected)


def test_nccl_refuses_cpu_inputs(monkeypatch):
    monkeypatch.setattr(comm, "_backend", lambda group: "nccl")
    assert "moves CUDA tensors only; the inputs are on cpu" in comm.backend_problem(None, torch.device("cpu"))
    assert comm.backend_problem(None, torch.device("cuda", 0)) is None
    monkeypatch.setattr(comm, "_backend", lambda group: "gloo")
    assert comm.backend_problem(None, torch.device("cpu")) is None

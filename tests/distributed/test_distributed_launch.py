"""setup_from_env: torchrun's variables, the backend and the device, checked before anything starts."""

from __future__ import annotations

import pytest
import torch

from kdalib.distributed import setup_from_env


@pytest.fixture
def torchrun_env(monkeypatch):
    for name, value in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")):
        monkeypatch.setenv(name, value)
    return monkeypatch


def test_unknown_backend(torchrun_env):
    with pytest.raises(ValueError, match=r"backend: expected one of \('nccl', 'gloo'\) or None, got 'mpi'"):
        setup_from_env("mpi")


@pytest.mark.parametrize("value", [None, "one", "-1"])
def test_missing_or_malformed_variable(torchrun_env, value):
    if value is None:
        torchrun_env.delenv("LOCAL_RANK")
    else:
        torchrun_env.setenv("LOCAL_RANK", value)
    with pytest.raises(
        ValueError, match=f"environment variable LOCAL_RANK: expected a non-negative integer .*{value!r}"
    ):
        setup_from_env("gloo")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_nccl_without_cuda(torchrun_env):
    with pytest.raises(RuntimeError, match="backend 'nccl' needs CUDA"):
        setup_from_env("nccl")

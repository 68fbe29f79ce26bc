"""One process of a context-parallel job under ``torchrun``: its process group and its device.

``torchrun --nproc-per-node G ...`` starts G processes and sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` for each. :func:`setup_from_env` places the
process on GPU ``LOCAL_RANK`` and joins the NCCL group (one process per GPU), or joins a gloo
group on the CPU where there is no GPU.
"""

from __future__ import annotations

import datetime as dt
import os

import torch
import torch.distributed as dist

BACKENDS = ("nccl", "gloo")


def setup_from_env(backend: str | None = None, timeout_s: float = 600.0) -> torch.device:
    """Joins the default process group from torchrun's environment and returns this process's device.

    Args:
        backend: ``"nccl"`` (CUDA tensors, one GPU per process), ``"gloo"`` (CPU tensors) or None:
            NCCL when CUDA is available, gloo otherwise.
        timeout_s: how long a collective may wait for the other ranks before it fails.

    Returns:
        ``cuda:LOCAL_RANK`` (made the current device) for NCCL, ``cpu`` for gloo.

    Raises:
        ValueError: an unknown backend, or a missing or malformed torchrun variable.
        RuntimeError: NCCL without CUDA, or ``LOCAL_RANK`` beyond the visible GPUs.
    """
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS} or None, got {backend!r}")
    values = {}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        text = os.environ.get(name)
        if text is None or not text.isdigit():
            raise ValueError(
                f"environment variable {name}: expected a non-negative integer (set by torchrun), got {text!r}"
            )
        values[name] = int(text)
    device = torch.device("cpu")
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise RuntimeError("backend 'nccl' needs CUDA, and torch.cuda.is_available() is False")
        if values["LOCAL_RANK"] >= torch.cuda.device_count():
            raise RuntimeError(
                f"LOCAL_RANK {values['LOCAL_RANK']} has no GPU: {torch.cuda.device_count()} are visible "
                "(start at most one process per GPU)"
            )
        device = torch.device("cuda", values["LOCAL_RANK"])
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        options = {"device_id": device} if backend == "nccl" else {}
        dist.init_process_group(
            backend,
            rank=values["RANK"],
            world_size=values["WORLD_SIZE"],
            timeout=dt.timedelta(seconds=timeout_s),
            **options,
        )
    return device

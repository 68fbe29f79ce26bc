"""torch.distributed's collectives, on the device the group's backend can move.

NCCL moves CUDA tensors only (one process per GPU, each on its own device); gloo moves CPU
tensors. :func:`transport_device` picks the device, and every helper here copies a tensor
there and back when it lives elsewhere (CUDA tensors over gloo, for a CPU-only group on a
GPU machine). Ranks are the group's ranks; point-to-point calls translate them to the global
ranks torch.distributed addresses.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def _backend(group) -> str:
    return str(dist.get_backend(group)).lower()


def transport_device(group, device: torch.device) -> torch.device:
    """Where tensors for ``group`` travel: the CUDA device of the inputs (or the current one)
    when the group runs NCCL for them, the CPU otherwise."""
    backend = _backend(group)
    if "nccl" in backend and (device.type == "cuda" or "gloo" not in backend):
        return device if device.type == "cuda" else torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def backend_problem(group, device: torch.device) -> str | None:
    """Why ``group`` cannot move tensors of ``device``'s kind, or None."""
    backend = _backend(group)
    if "nccl" in backend and "gloo" not in backend and device.type != "cuda":
        return f"the process group runs {backend!r}, which moves CUDA tensors only; the inputs are on {device}"
    return None


def _global(group, rank: int) -> int:
    return rank if group is None else dist.get_global_rank(group, rank)


def all_gather_ints(values: list[int], group, device: torch.device | None) -> list[list[int]]:
    """Every rank's list of integers (the same length on every rank), in rank order."""
    where = transport_device(group, device or torch.device("cpu"))
    local = torch.tensor(values, dtype=torch.long, device=where)
    rows = [torch.empty_like(local) for _ in range(dist.get_world_size(group))]
    dist.all_gather(rows, local, group=group)
    return [row.tolist() for row in rows]


def all_gather(tensor: torch.Tensor, group) -> torch.Tensor:
    """``[R, *tensor.shape]``: every rank's tensor, stacked in rank order, on ``tensor``'s device."""
    where = transport_device(group, tensor.device)
    local = tensor.detach().to(where).contiguous()
    rows = [torch.empty_like(local) for _ in range(dist.get_world_size(group))]
    dist.all_gather(rows, local, group=group)
    return torch.stack(rows).to(tensor.device)


def all_reduce_sum(tensor: torch.Tensor, group) -> torch.Tensor:
    """The sum of every rank's ``tensor`` (a new tensor on ``tensor``'s device)."""
    where = transport_device(group, tensor.device)
    total = tensor.detach().to(where, copy=True).contiguous()
    dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)
    return total.to(tensor.device)


def send(tensor: torch.Tensor, to_rank: int, group) -> None:
    """Sends ``tensor`` to group rank ``to_rank`` (returns once it is handed over)."""
    where = transport_device(group, tensor.device)
    dist.send(tensor.detach().to(where).contiguous(), dst=_global(group, to_rank), group=group)


def recv(shape, dtype: torch.dtype, device: torch.device, from_rank: int, group) -> torch.Tensor:
    """Receives a tensor of ``shape`` and ``dtype`` from group rank ``from_rank``, returned on ``device``."""
    where = transport_device(group, device)
    buffer = torch.empty(shape, dtype=dtype, device=where)
    dist.recv(buffer, src=_global(group, from_rank), group=group)
    return buffer.to(device)

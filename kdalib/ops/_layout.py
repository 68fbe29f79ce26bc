"""Moving KDA inputs between the user layout and padded per-sequence chunks.

The user layout is ``[B, T, heads, dim]``, possibly with several sequences packed
into one row by ``cu_seqlens``. The fast operators want one row per sequence,
padded to a whole number of chunks: ``[N, T_pad, heads, dim]``. Padding tokens
carry ``q = k = v = g = beta = 0``, which makes them exact no-ops for the
recurrence (decay ``exp(0) = 1``, no write, nothing read out), so a sequence's
final state is unaffected by the padding behind it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kdalib.ops._validate import KDAShapes


@dataclass(frozen=True)
class PaddedLayout:
    """Where each of the N sequences sits in the input and in the padded layout.

    Attributes:
        padded_length: T_pad, a multiple of the block size, >= the longest sequence.
        gather_index: ``[N, T_pad]`` token index into the packed row (None when unpacked).
        valid: ``[N, T_pad]`` True for real tokens (None when unpacked).
        tokens: T of the input.
    """

    padded_length: int
    gather_index: torch.Tensor | None
    valid: torch.Tensor | None
    tokens: int


def plan_padding(shapes: KDAShapes, block: int, device: torch.device) -> PaddedLayout:
    """Plans the padded layout of a validated call's sequences for a block size."""
    if shapes.sequences is None:
        return PaddedLayout(-(-shapes.tokens // block) * block, None, None, shapes.tokens)
    offsets = shapes.sequences.cu_seqlens.to(device=device, dtype=torch.long)
    starts, lengths = offsets[:-1], offsets[1:] - offsets[:-1]
    padded = -(-shapes.sequences.max_length // block) * block  # from the host copy: no device sync
    position = torch.arange(padded, device=device)
    valid = position.unsqueeze(0) < lengths.unsqueeze(1)
    gather_index = torch.where(valid, starts.unsqueeze(1) + position, torch.zeros_like(position))
    return PaddedLayout(padded, gather_index, valid, shapes.tokens)


def to_padded(x: torch.Tensor, plan: PaddedLayout) -> torch.Tensor:
    """``[B, T, ...]`` -> ``[N, T_pad, ...]`` with zeros in the padding."""
    if plan.gather_index is None:
        pad = plan.padded_length - plan.tokens
        return F.pad(x, (0, 0) * (x.dim() - 2) + (0, pad)) if pad else x
    rows = x[0][plan.gather_index]
    mask = plan.valid.reshape(plan.valid.shape + (1,) * (x.dim() - 2))
    return torch.where(mask, rows, torch.zeros((), dtype=x.dtype, device=x.device))


def from_padded(x: torch.Tensor, plan: PaddedLayout) -> torch.Tensor:
    """``[N, T_pad, ...]`` -> ``[B, T, ...]``, dropping the padding."""
    if plan.gather_index is None:
        return x[:, : plan.tokens]
    return x[plan.valid].unsqueeze(0)


def select_boundary_states(
    kept: list[torch.Tensor], counts: tuple[int, ...], shapes: KDAShapes, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """The states at every N-th token boundary of each sequence, from those of the padded rows.

    Args:
        kept: J tensors ``[N * HV, K, V]``, the states of every padded row after tokens N, 2N, ...,
            JN (a row whose sequence ends before a boundary holds padding there, dropped here).
        counts: boundaries per sequence that lie inside it (:func:`~kdalib.ops._validate.boundary_counts`).
        shapes: the call's sizes.
        dtype, device: of the (possibly empty) result.

    Returns:
        ``[S, HV, K, V]`` with ``S = sum(counts)``, sequence-major: sequence n's states are the rows
        ``sum(counts[:n]) ... sum(counts[:n + 1]) - 1``, in token order.
    """
    heads, key_dim, value_dim = shapes.value_heads, shapes.key_dim, shapes.value_dim
    if not kept or sum(counts) == 0:
        return torch.empty(0, heads, key_dim, value_dim, dtype=dtype, device=device)
    stacked = torch.stack(kept).view(len(kept), shapes.num_sequences, heads, key_dim, value_dim).transpose(0, 1)
    if all(c == len(kept) for c in counts):
        return stacked.reshape(-1, heads, key_dim, value_dim)
    inside = torch.arange(len(kept)).unsqueeze(0) < torch.tensor(counts).unsqueeze(1)
    return stacked[inside.to(device)]

"""From a padded batch with an attention mask to packed sequences (`cu_seqlens`) and back.

KDA is a recurrence: a pad token that enters it decays and overwrites the state of the
real tokens after it. Instead of zeroing pads and hoping their contribution vanishes,
the layer removes them: the valid tokens of every row are packed back to back into one
`[1, total, ...]` sequence with offsets `cu_seqlens`, the operators never see a pad,
and the outputs are scattered back to their padded positions (zeros at pads).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PackedBatch:
    """Where the valid tokens of a padded `[B, T]` batch went.

    Attributes:
        token_index: `[total]` flat indices (row * T + column) of the valid tokens, in order.
        cu_seqlens: `[M + 1]` int64 offsets of the M rows that hold at least one token.
        active_rows: `[M]` row numbers (into B) of those rows.
        batch: B.
        tokens: T.
    """

    token_index: torch.Tensor
    cu_seqlens: torch.Tensor
    active_rows: torch.Tensor
    batch: int
    tokens: int


def check_attention_mask(attention_mask: torch.Tensor, batch: int, tokens: int) -> torch.Tensor:
    """Validates a `[B, T]` padding mask (1/True = token, 0/False = padding) and returns it as bool.

    Raises:
        ValueError: the mask is not `[B, T]` or holds values other than 0 and 1.
    """
    if not isinstance(attention_mask, torch.Tensor) or tuple(attention_mask.shape) != (batch, tokens):
        shape = list(attention_mask.shape) if isinstance(attention_mask, torch.Tensor) else type(attention_mask)
        raise ValueError(
            f"attention_mask: expected shape [B, T] = {[batch, tokens]} (1 = token, 0 = padding), got {shape}"
        )
    if attention_mask.dtype != torch.bool:
        if attention_mask.is_floating_point() or attention_mask.is_complex():
            raise ValueError(f"attention_mask: expected a bool or integer 0/1 tensor, got {attention_mask.dtype}")
        if bool(((attention_mask != 0) & (attention_mask != 1)).any()):
            raise ValueError("attention_mask: expected only 0 (padding) and 1 (token) values")
    return attention_mask.bool()


def pack_mask(mask: torch.Tensor) -> PackedBatch:
    """Packing plan for a bool `[B, T]` mask (see `check_attention_mask`)."""
    batch, tokens = mask.shape
    lengths = mask.sum(dim=1)
    active_rows = torch.nonzero(lengths > 0).flatten()
    cu_seqlens = torch.zeros(active_rows.numel() + 1, dtype=torch.long, device=mask.device)
    cu_seqlens[1:] = lengths[active_rows].cumsum(0)
    token_index = torch.nonzero(mask.flatten()).flatten()
    return PackedBatch(token_index, cu_seqlens, active_rows, batch, tokens)


def pack(x: torch.Tensor, plan: PackedBatch) -> torch.Tensor:
    """`[B, T, ...]` -> `[1, total, ...]`, valid tokens only."""
    return x.reshape(plan.batch * plan.tokens, *x.shape[2:]).index_select(0, plan.token_index).unsqueeze(0)


def unpack(y: torch.Tensor, plan: PackedBatch) -> torch.Tensor:
    """`[1, total, ...]` -> `[B, T, ...]`, zeros at padding."""
    out = y.new_zeros(plan.batch * plan.tokens, *y.shape[2:])
    out = out.index_copy(0, plan.token_index, y[0])
    return out.reshape(plan.batch, plan.tokens, *y.shape[2:])

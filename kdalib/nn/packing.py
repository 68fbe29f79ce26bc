"""From a padded batch with an attention mask to packed sequences (`cu_seqlens`) and back.

A pad must never reach the layer's state. The short convolutions would mix a pad into the
windows of the real tokens after it, so they run over the valid tokens of every row packed
back to back into one `[1, total, ...]` sequence with offsets `cu_seqlens` (one per row, a row
without tokens included). Their results are scattered back to the padded positions with zeros
at the pads, and the KDA operators run on that padded batch: a token with q = k = v = g = beta = 0
decays nothing, writes nothing and reads nothing (notes/kda.md, section ``kda-recurrence``), so a
zeroed pad is an exact no-op wherever it stands, and its output is zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PackedBatch:
    """Where the valid tokens of a padded `[B, T]` batch went.

    Attributes:
        token_index: `[total]` flat indices (row * T + column) of the valid tokens, in order.
        cu_seqlens: `[B + 1]` int64 offsets of every row's valid tokens (equal neighbours for a
            row without tokens).
        batch: B.
        tokens: T.
    """

    token_index: torch.Tensor
    cu_seqlens: torch.Tensor
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
    cu_seqlens = torch.zeros(batch + 1, dtype=torch.long, device=mask.device)
    cu_seqlens[1:] = mask.sum(dim=1).cumsum(0)
    token_index = torch.nonzero(mask.flatten()).flatten()
    return PackedBatch(token_index, cu_seqlens, batch, tokens)


def pack(x: torch.Tensor, plan: PackedBatch) -> torch.Tensor:
    """`[B, T, ...]` -> `[1, total, ...]`, valid tokens only."""
    return x.reshape(plan.batch * plan.tokens, *x.shape[2:]).index_select(0, plan.token_index).unsqueeze(0)


def unpack(y: torch.Tensor, plan: PackedBatch) -> torch.Tensor:
    """`[1, total, ...]` -> `[B, T, ...]`, zeros at padding."""
    out = y.new_zeros(plan.batch * plan.tokens, *y.shape[2:])
    out = out.index_copy(0, plan.token_index, y[0])
    return out.reshape(plan.batch, plan.tokens, *y.shape[2:])

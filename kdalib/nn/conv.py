"""Depthwise causal short convolution over packed sequences, with a carried cache.

KDA passes q, k and v through a depthwise causal convolution of width W (4 in Kimi
Linear) followed by SiLU. Two things make it more than `F.conv1d(padding=W-1)`:

* packed input (`cu_seqlens`): a window must never reach into the previous sequence;
* decoding: each sequence carries its last `W - 1` inputs (the conv cache) from one
  call to the next, so the convolution over a prompt split into pieces equals the
  convolution over the whole prompt.

Both are handled the same way: every sequence is laid out behind its own `W - 1`
cached inputs (zeros for a fresh sequence), and one unpadded convolution runs over the
whole layout. A window that ends on a real token then only ever sees that sequence's
cache and tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _layout_indices(cu_seqlens: torch.Tensor, history: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Where tokens and cache slots go in the extended layout.

    Sequence s occupies `history + len_s` consecutive slots: its cache first, then its tokens.

    Args:
        cu_seqlens: `[N + 1]` token offsets.
        history: W - 1 cached inputs per sequence.

    Returns:
        `(token_slots [T], cache_slots [N, history])`: the slot of every packed token, and the
        slots of each sequence's cache (oldest first).
    """
    device = cu_seqlens.device
    num_sequences = cu_seqlens.numel() - 1
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    sequence_of_token = torch.repeat_interleave(torch.arange(num_sequences, device=device), lengths)
    token_slots = torch.arange(int(cu_seqlens[-1]), device=device) + (sequence_of_token + 1) * history
    segment_starts = cu_seqlens[:-1].long() + torch.arange(num_sequences, device=device) * history
    cache_slots = segment_starts.unsqueeze(1) + torch.arange(history, device=device)
    return token_slots, cache_slots


def short_convolution(
    x: torch.Tensor,
    weight: torch.Tensor,
    cu_seqlens: torch.Tensor | None = None,
    cache: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """SiLU(depthwise causal conv1d(x)), sequence by sequence, continuing from a cache.

    Args:
        x: `[B, T, D]` inputs; with `cu_seqlens`, B must be 1 and the T tokens are the packed
            sequences back to back.
        weight: `[D, W]` (or `[D, 1, W]`, the `nn.Conv1d` layout) kernel; the last tap multiplies
            the current token.
        cu_seqlens: `[N + 1]` offsets of packed sequences, or None for B sequences of T tokens.
        cache: `[N, D, W - 1]` the last W - 1 inputs of each sequence before this call (oldest
            first), or None for fresh sequences (zeros).
        output_final_state: also return the updated cache.

    Returns:
        `(y, new_cache)`: y `[B, T, D]` in x's dtype (or the autocast dtype); new_cache
        `[N, D, W - 1]` in x's dtype, the last W - 1 inputs of each sequence including the
        cached ones when a sequence is shorter than W - 1; None unless requested.

    Raises:
        ValueError: if a shape does not match.
    """
    if x.dim() != 3:
        raise ValueError(f"x: expected shape [B, T, D], got {list(x.shape)}")
    batch, tokens, channels = x.shape
    if weight.dim() == 3:
        weight = weight.squeeze(1)
    if weight.dim() != 2 or weight.shape[0] != channels:
        raise ValueError(f"weight: expected shape [D, W] with D = {channels}, got {list(weight.shape)}")
    history = weight.shape[1] - 1
    if cu_seqlens is None:
        cu_seqlens = torch.arange(batch + 1, device=x.device) * tokens
    elif batch != 1:
        raise ValueError(f"x: packed input (cu_seqlens given) needs B = 1, got B = {batch}")
    num_sequences = cu_seqlens.numel() - 1
    if cache is not None and tuple(cache.shape) != (num_sequences, channels, history):
        raise ValueError(
            f"cache: expected shape [N, D, W - 1] = {[num_sequences, channels, history]}, got {list(cache.shape)}"
        )

    flat = x.reshape(batch * tokens, channels)
    token_slots, cache_slots = _layout_indices(cu_seqlens, history)
    layout = flat.new_zeros(batch * tokens + num_sequences * history, channels)
    layout = layout.index_copy(0, token_slots, flat)
    if cache is not None and history > 0:
        layout = layout.index_copy(0, cache_slots.reshape(-1), cache.transpose(1, 2).reshape(-1, channels).to(x.dtype))

    # Window i of the unpadded convolution covers slots i .. i + W - 1, so the output for the
    # token in slot s is window s - (W - 1): it ends on the token and starts inside its segment.
    windows = F.conv1d(layout.t().unsqueeze(0), weight.unsqueeze(1), groups=channels)
    y = F.silu(windows[0].t().index_select(0, token_slots - history))
    y = y.reshape(batch, tokens, channels)

    new_cache = None
    if output_final_state:
        # The last W - 1 slots of each segment end on its last token.
        segment_ends = cu_seqlens[1:].long() + torch.arange(1, num_sequences + 1, device=x.device) * history
        last_slots = segment_ends.unsqueeze(1) - history + torch.arange(history, device=x.device)
        new_cache = layout.index_select(0, last_slots.reshape(-1)).reshape(num_sequences, history, channels)
        new_cache = new_cache.transpose(1, 2).contiguous()
    return y, new_cache

"""The short convolutions' boundary tokens, exchanged between ranks.

A causal convolution of width W reads the W - 1 tokens before each token. For the first tokens
of a shard those belong to earlier ranks: the *halo*. Every rank contributes its last W - 1
tokens to one all-gather, and each rank picks the halo of its head's sequence from them
(:meth:`kdalib.distributed.layout.ShardLayout.halo_sources`); the tokens may come from several
ranks when shards are shorter than W - 1, and slots before the sequence's first token stay
zero, as for a fresh sequence. The backward sums the halo's gradients back onto the tokens they
came from with one all-reduce.
"""

from __future__ import annotations

import torch

from kdalib.distributed import comm
from kdalib.distributed.layout import ShardLayout


class ExchangeHalo(torch.autograd.Function):
    """``tail [B, W - 1, D]`` (this rank's last W - 1 tokens) -> ``halo [B, W - 1, D]`` (the W - 1
    tokens before this rank's first one, zeros outside its sequence)."""

    @staticmethod
    def forward(ctx, layout: ShardLayout, group, tail):
        history = tail.shape[1]
        gathered = comm.all_gather(tail, group)  # [R, B, W - 1, D]
        halo = torch.zeros_like(tail)
        sources = layout.halo_sources(history)
        for slot, rank, index in sources:
            halo[:, slot] = gathered[rank, :, index]
        ctx.layout, ctx.group, ctx.sources = layout, group, sources
        return halo

    @staticmethod
    def backward(ctx, grad_halo):
        layout: ShardLayout = ctx.layout
        buffer = grad_halo.new_zeros((layout.world_size, *grad_halo.shape))
        for slot, rank, index in ctx.sources:
            buffer[rank, :, index] += grad_halo[:, slot]
        return None, None, comm.all_reduce_sum(buffer, ctx.group)[layout.rank]


def exchange_halo(x: torch.Tensor, layout: ShardLayout, history: int, group) -> torch.Tensor:
    """The ``history`` tokens of x's stream before this rank's shard (a collective).

    Args:
        x: ``[B, T_r, D]`` this rank's tokens.
        layout: the gathered shard layout.
        history: W - 1.
        group: the process group.

    Returns:
        ``[B, history, D]``: oldest first, zeros where the window leaves the head's sequence (and
        everywhere on a rank without a head).
    """
    tail = x[:, -history:] if history else x[:, :0]
    if tail.shape[1] < history:  # a shard shorter than the window
        tail = torch.cat([tail.new_zeros(x.shape[0], history - tail.shape[1], x.shape[2]), tail], dim=1)
    if history == 0:
        return tail
    return ExchangeHalo.apply(layout, group, tail)

"""A :class:`kdalib.nn.KimiDeltaAttention` layer over a sequence split across ranks.

:class:`ContextParallelKDA` wraps a layer (its parameters are the layer's: checkpoints load
into the layer as usual) and runs it on each rank's shard of the tokens. Two things cross rank
boundaries, everything else is per token:

* the short convolutions read the W - 1 tokens before each token: the hidden states of the
  shard's halo are exchanged (:mod:`kdalib.distributed.halo`, hidden size d per token, fewer
  than the three projected inputs) and projected locally, and their projections become the
  convolutions' cache for the head's sequence;
* the recurrence runs as :func:`kdalib.distributed.chunk.run_context_parallel`.

The projections and convolutions are the layer's own modules; the gates and the output are the
layer's own :meth:`~kdalib.nn.KimiDeltaAttention.token_gates` and
:meth:`~kdalib.nn.KimiDeltaAttention.output` (notes/kda.md, section ``kda-gate``).
"""

from __future__ import annotations

import torch
from torch import nn

from kdalib.distributed import comm
from kdalib.distributed.chunk import DTYPE_CODES, DTYPE_LEGEND, run_context_parallel
from kdalib.distributed.halo import exchange_halo
from kdalib.distributed.layout import gather_layout, require_group
from kdalib.nn import KimiDeltaAttention


class ContextParallelKDA(nn.Module):
    """Runs ``layer`` with each rank of ``group`` holding a contiguous shard of the tokens.

    Args:
        layer: the layer; the same parameters on every rank (as data parallelism keeps them).
        group: the torch.distributed process group (None: the default group).

    Each rank's parameter gradients are its tokens' share: the sum over the group is the
    single-device gradient (the all-reduce of data-parallel training adds them up, over the
    context-parallel ranks as over the data-parallel ones). The layer always runs the chunked
    operator (its ``mode`` is not used) and keeps no decoding cache.
    """

    def __init__(self, layer: KimiDeltaAttention, group=None) -> None:
        super().__init__()
        if not isinstance(layer, KimiDeltaAttention):
            raise TypeError(f"layer: expected a kdalib.nn.KimiDeltaAttention, got {type(layer).__name__}")
        self.layer = layer
        self.group = group

    def forward(self, hidden_states: torch.Tensor, cu_seqlens: torch.Tensor | None = None) -> torch.Tensor:
        """This rank's ``[B, T_r, d]`` outputs for its ``[B, T_r, d]`` shard (a collective).

        Args:
            hidden_states: this rank's tokens; rank 0 holds the first ones.
            cu_seqlens: ``[N + 1]`` offsets of packed sequences in the whole stream (B = 1), the
                same on every rank; None for B sequences split at the same places.

        Raises:
            ValueError: on any rank's wrong shape, or sizes and offsets that differ between ranks
                (raised on every rank).
        """
        layer = self.layer
        require_group(self.group)
        if hidden_states.dim() != 3 or hidden_states.shape[-1] != layer.hidden_size or hidden_states.numel() == 0:
            problem = f"hidden_states: expected shape [B, T_r, {layer.hidden_size}] with B, T_r > 0, got {list(hidden_states.shape)}"
        else:
            problem = comm.backend_problem(self.group, hidden_states.device)
        signature = {
            "the layer's hidden_size": layer.hidden_size,
            "the layer's num_heads": layer.num_heads,
            "the layer's num_v_heads": layer.num_v_heads,
            "the layer's head_dim": layer.head_dim,
            "the layer's conv_size": layer.conv_size,
            f"dtype of hidden_states ({DTYPE_LEGEND})": DTYPE_CODES.get(hidden_states.dtype, 9),
        }
        batch, tokens = (hidden_states.shape[0], hidden_states.shape[1]) if problem is None else (0, 0)
        layout = gather_layout(
            tokens, batch, cu_seqlens, self.group, hidden_states.device, signature=signature, problem=problem
        )
        history = layer.conv_size - 1
        x = hidden_states
        halo = exchange_halo(x, layout, history, self.group)  # [B, W - 1, d]
        offsets = layout.local_offsets
        local_cu = None if offsets is None else torch.tensor(offsets, dtype=torch.long, device=x.device)
        pieces = batch if offsets is None else len(offsets) - 1

        def convolve(projection: nn.Linear, convolution: nn.Module, heads: int) -> torch.Tensor:
            cache = projection(halo).transpose(1, 2)  # the head's cache; zeros on a rank without one
            if pieces > cache.shape[0]:  # packed: the other pieces start fresh
                cache = torch.cat([cache, cache.new_zeros(pieces - cache.shape[0], *cache.shape[1:])])
            out, _ = convolution(projection(x), local_cu, cache)
            return out.reshape(batch, tokens, heads, layer.head_dim)

        q = convolve(layer.q_proj, layer.q_conv1d, layer.num_heads)
        k = convolve(layer.k_proj, layer.k_conv1d, layer.num_heads)
        v = convolve(layer.v_proj, layer.v_conv1d, layer.num_v_heads)
        g, beta, gate = layer.token_gates(x)
        with torch.autocast(device_type=x.device.type, enabled=False):  # the states stay float32
            o, _ = run_context_parallel(layout, self.group, q, k, v, g, beta, use_qk_l2norm_in_kernel=True)
        return layer.output(o, gate, v.dtype)

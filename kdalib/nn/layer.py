"""KimiDeltaAttention: the token mixer of Kimi Linear's KDA layers.

The math is in notes/kda.md, sections ``kda-gate`` (the gate and the per-token scalars) and
``kda-complexity`` (decoding from a fixed-size state).

Per token x (hidden size d), with H heads of dimension K = V:

    q, k, v = SiLU(ShortConv(W_q x)), SiLU(ShortConv(W_k x)), SiLU(ShortConv(W_v x))
    g       = kda_gate(W_f↑ W_f↓ x, A_log, dt_bias, lower_bound)      per key channel, fp32
    beta    = sigmoid(W_b x)                                           per head, fp32
    o       = KDA(L2Norm(q), L2Norm(k), v, g, beta)                    kdalib.ops
    y       = W_o( RMSNorm_head(o) · w · sigmoid(W_g↑ W_g↓ x) )

Parameter names follow the original Kimi-Linear checkpoints (separate `q_conv1d`,
`k_conv1d`, `v_conv1d`; `f_a_proj`/`f_b_proj`; `g_a_proj`/`g_b_proj`); `load_state_dict`
also accepts transformers' `KimiLinearDeltaAttention` layout and flash-linear-attention's
(see `kdalib.nn.checkpoint`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from kdalib import ops
from kdalib.nn.cache import KDACache, KDALayerState
from kdalib.nn.checkpoint import to_native_state_dict
from kdalib.nn.conv import short_convolution
from kdalib.nn.packing import PackedBatch, check_attention_mask, pack, pack_mask, unpack
from kdalib.ops import compute_dtype
from kdalib.ops.gate import check_lower_bound
from kdalib.ops.registry import BACKENDS


class ShortConvolution(nn.Module):
    """Depthwise causal convolution + SiLU over `channels` features (see `kdalib.nn.conv`).

    The weight is stored `[channels, 1, kernel_size]`, the `nn.Conv1d` depthwise layout that
    checkpoints use.
    """

    def __init__(self, channels: int, kernel_size: int, device=None, dtype=None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(channels, 1, kernel_size, device=device, dtype=dtype))
        nn.init.uniform_(self.weight, -1 / math.sqrt(kernel_size), 1 / math.sqrt(kernel_size))

    def forward(self, x, cu_seqlens=None, cache=None, output_final_state=False):
        """`[B, T, C]` -> (`[B, T, C]`, new cache `[N, C, kernel_size - 1]` or None)."""
        return short_convolution(x, self.weight, cu_seqlens, cache, output_final_state)


class GatedRMSNorm(nn.Module):
    """RMSNorm over the last dimension (one head), scaled by `weight` and by sigmoid(gate).

    Computed in float32 (float64 for float64 input), returned in the input dtype.
    """

    def __init__(self, dim: int, eps: float = 1e-5, device=None, dtype=None) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """x, gate: `[..., dim]` -> `[..., dim]` in x's dtype."""
        dtype = compute_dtype(x)
        wide = x.to(dtype)
        normed = wide * torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + self.eps)
        return (normed * self.weight.to(dtype) * torch.sigmoid(gate.to(dtype))).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


def _check_positive_int(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"KimiDeltaAttention: {name} must be a positive int, got {value!r}")


def _convert_checkpoint(module, state_dict, prefix, *args) -> None:
    """load_state_dict pre-hook: rewrites `state_dict` (load_state_dict's own copy) in place."""
    converted = to_native_state_dict(state_dict, module, prefix)
    state_dict.clear()
    state_dict.update(converted)


class KimiDeltaAttention(nn.Module):
    """Kimi Delta Attention layer with padding masks and a decode cache.

    Args:
        hidden_size: model width d.
        num_heads: heads H (query/key heads = value heads).
        head_dim: head dimension K = V (128 in Kimi Linear, independent of d / H).
        conv_size: width W of the short convolutions on q, k and v.
        lower_bound: None for the softplus forget gate of Kimi-Linear-48B-A3B; a negative
            number L for the bounded form `g = L · sigmoid(exp(A_log) · (W_f x + dt_bias))`.
        norm_eps: epsilon of the per-head output RMSNorm.
        layer_idx: key of this layer's state in a shared `KDACache`.
        mode: the `backend` of `kdalib.ops.kda`: "auto" runs the recurrent form when every
            sequence brings a single token (decode) and the chunked form otherwise (prefill,
            training); an operator name of `kdalib.ops.registry.OPERATORS` ("naive",
            "naive_chunk", "chunk", "fused_recurrent", "fla", ...) forces that one.
        device, dtype: for the parameters.

    Raises:
        ValueError: on a non-positive size, `lower_bound >= 0`, a `norm_eps` that is not finite and
            positive, or an unknown mode.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        head_dim: int,
        conv_size: int = 4,
        lower_bound: float | None = None,
        norm_eps: float = 1e-5,
        layer_idx: int = 0,
        mode: str = "auto",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        for name, value in (
            ("hidden_size", hidden_size),
            ("num_heads", num_heads),
            ("head_dim", head_dim),
            ("conv_size", conv_size),
        ):
            _check_positive_int(name, value)
        try:
            check_lower_bound(lower_bound)
        except ValueError as error:
            raise ValueError(f"KimiDeltaAttention: {error}") from None
        if isinstance(norm_eps, bool) or not isinstance(norm_eps, (int, float)) or not 0 < norm_eps < math.inf:
            raise ValueError(f"KimiDeltaAttention: norm_eps must be a positive number and finite, got {norm_eps!r}")
        if mode not in BACKENDS:
            raise ValueError(f"KimiDeltaAttention: mode must be one of {BACKENDS}, got {mode!r}")
        self.hidden_size, self.num_heads, self.head_dim = hidden_size, num_heads, head_dim
        self.conv_size, self.lower_bound, self.norm_eps = conv_size, lower_bound, norm_eps
        self.layer_idx, self.mode = layer_idx, mode
        inner = num_heads * head_dim
        factory = {"device": device, "dtype": dtype}

        self.q_proj = nn.Linear(hidden_size, inner, bias=False, **factory)
        self.k_proj = nn.Linear(hidden_size, inner, bias=False, **factory)
        self.v_proj = nn.Linear(hidden_size, inner, bias=False, **factory)
        self.q_conv1d = ShortConvolution(inner, conv_size, **factory)
        self.k_conv1d = ShortConvolution(inner, conv_size, **factory)
        self.v_conv1d = ShortConvolution(inner, conv_size, **factory)
        self.f_a_proj = nn.Linear(hidden_size, head_dim, bias=False, **factory)
        self.f_b_proj = nn.Linear(head_dim, inner, bias=False, **factory)
        self.A_log = nn.Parameter(torch.empty(num_heads, device=device, dtype=torch.float32))
        self.dt_bias = nn.Parameter(torch.empty(inner, device=device, dtype=torch.float32))
        self.b_proj = nn.Linear(hidden_size, num_heads, bias=False, **factory)
        self.g_a_proj = nn.Linear(hidden_size, head_dim, bias=False, **factory)
        self.g_b_proj = nn.Linear(head_dim, inner, bias=False, **factory)
        self.o_norm = GatedRMSNorm(head_dim, eps=norm_eps, **factory)
        self.o_proj = nn.Linear(inner, hidden_size, bias=False, **factory)
        self.reset_gate_parameters()
        # Checkpoints in transformers' or flash-linear-attention's layout are renamed on load.
        self.register_load_state_dict_pre_hook(_convert_checkpoint)

    @classmethod
    def from_config(cls, config, layer_idx: int = 0, **kwargs) -> KimiDeltaAttention:
        """A layer sized like the KDA layers of `config`.

        Args:
            config: a `kdalib.nn.KimiLinearConfig`, or a transformers `KimiLinearConfig`
                (`linear_num_heads`, `linear_head_dim`, `linear_conv_kernel_dim`, `rms_norm_eps`).
            layer_idx: this layer's key in a `KDACache`.
            **kwargs: passed on (`lower_bound`, `mode`, `device`, `dtype`).
        """
        if hasattr(config, "linear_num_heads"):
            sizes = dict(
                hidden_size=config.hidden_size,
                num_heads=config.linear_num_heads,
                head_dim=config.linear_head_dim,
                conv_size=config.linear_conv_kernel_dim,
                norm_eps=config.rms_norm_eps,
            )
        else:
            sizes = dict(
                hidden_size=config.hidden_size,
                num_heads=config.kda_num_heads,
                head_dim=config.kda_head_dim,
                conv_size=config.conv_size,
                norm_eps=config.rms_norm_eps,
            )
        return cls(**sizes, layer_idx=layer_idx, **kwargs)

    def reset_gate_parameters(self) -> None:
        """Initial gates: A = exp(A_log) uniform in [1, 16], softplus(dt_bias) log-uniform in
        [1e-3, 1e-1] (the Mamba-style range, so initial per-token decays span slow to fast)."""
        with torch.no_grad():
            self.A_log.copy_(torch.empty_like(self.A_log).uniform_(1.0, 16.0).log())
            dt = torch.empty_like(self.dt_bias).uniform_(math.log(1e-3), math.log(1e-1)).exp().clamp_min(1e-4)
            self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse of softplus

    def extra_repr(self) -> str:
        bound = "" if self.lower_bound is None else f", lower_bound={self.lower_bound}"
        return (
            f"hidden_size={self.hidden_size}, num_heads={self.num_heads}, head_dim={self.head_dim}, "
            f"conv_size={self.conv_size}{bound}, layer_idx={self.layer_idx}, mode={self.mode!r}"
        )

    # ----- forward ---------------------------------------------------------------------

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: KDACache | None = None,
        cu_seqlens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mixes tokens of `hidden_states`, continuing from and updating `cache` if given.

        Args:
            hidden_states: `[B, T, d]`.
            attention_mask: `[B, T]`, 1/True for tokens, 0/False for padding (left, right or
                anywhere). The convolutions skip the pads and the recurrence sees them as zero
                tokens (`kdalib.nn.packing`), so they never touch the state; their outputs are zeros.
            cache: states of earlier calls (prefill, then one or more tokens per call); updated
                in place. Its rows are the B batch rows (or the N packed sequences).
            cu_seqlens: `[N + 1]` offsets when `hidden_states` already holds N packed
                sequences (B = 1); exclusive with `attention_mask`.

        Returns:
            `[B, T, d]` in the dtype of the output projection (the autocast dtype under autocast).

        Raises:
            ValueError: on a wrong shape, mask, or a cache holding a different number of sequences.
        """
        if hidden_states.dim() != 3 or hidden_states.shape[-1] != self.hidden_size:
            raise ValueError(
                f"hidden_states: expected shape [B, T, {self.hidden_size}], got {list(hidden_states.shape)}"
            )
        batch, tokens, _ = hidden_states.shape
        if batch == 0 or tokens == 0:
            raise ValueError(f"hidden_states: expected at least one row and one token, got {list(hidden_states.shape)}")
        self._check_dtype(hidden_states)
        sequences = None
        if cu_seqlens is not None:  # once, before the convolutions index with it; the operators reuse it
            sequences = ops.validate_cu_seqlens(cu_seqlens, batch, tokens, hidden_states.device)
        plan = None
        if attention_mask is not None:
            if cu_seqlens is not None:
                raise ValueError("attention_mask and cu_seqlens are exclusive: pass one way of marking sequences")
            mask = check_attention_mask(attention_mask, batch, tokens)
            if not bool(mask.all()):
                plan = pack_mask(mask)
        num_sequences = batch if sequences is None else sequences.num_sequences
        state = self._read_state(cache, num_sequences)

        if plan is None:
            y, new_state = self._mix(hidden_states, state, cache is not None, sequences=sequences)
        elif plan.token_index.numel() == 0:  # nothing but padding: no output, no state change
            y, new_state = hidden_states.new_zeros(batch, tokens, self.hidden_size), state
        else:  # one packing, for the convolutions (kdalib.nn.packing)
            y, new_state = self._mix(pack(hidden_states, plan), state, cache is not None, padded=plan)
        if cache is not None and new_state is not None:  # None: all padding on a fresh cache
            cache.update(self.layer_idx, new_state, tokens)
        return y

    def _check_dtype(self, hidden_states: torch.Tensor) -> None:
        """hidden_states must be floating point, in the weights' dtype unless autocast casts it."""
        if not hidden_states.is_floating_point():
            raise ValueError(f"hidden_states: expected a floating-point tensor, got {hidden_states.dtype}")
        weight = self.q_proj.weight.dtype
        autocast = torch.is_autocast_enabled(hidden_states.device.type)
        if hidden_states.dtype != weight and not autocast:
            raise ValueError(
                f"hidden_states: dtype {hidden_states.dtype} differs from the layer's weights ({weight}); "
                f"cast the input (hidden_states.to({weight})) or the layer (layer.to({hidden_states.dtype}))"
            )

    def _read_state(self, cache, num_sequences) -> KDALayerState | None:
        if cache is None:
            return None
        state = cache.get(self.layer_idx)
        if state is not None and state.num_sequences != num_sequences:
            raise ValueError(
                f"cache: layer {self.layer_idx} holds {state.num_sequences} sequences, the input has {num_sequences}"
            )
        return state

    def _mix(
        self,
        x: torch.Tensor,
        state: KDALayerState | None,
        keep_state: bool,
        sequences: ops.PackedSequences | None = None,
        padded: PackedBatch | None = None,
    ):
        """The layer on `x`: `[B, T, d]`; packed `[1, total, d]` with `sequences` (validated
        `ops.PackedSequences`); or, with `padded`, the valid tokens of that padded batch packed,
        whose recurrence and output run on the padded batch with zeroed pads."""
        batch, tokens, _ = x.shape
        heads, dim = self.num_heads, self.head_dim
        offsets = padded.cu_seqlens if padded is not None else (None if sequences is None else sequences.cu_seqlens)
        conv_q, conv_k, conv_v = (None, None, None) if state is None else (state.q_conv, state.k_conv, state.v_conv)
        q, new_q = self.q_conv1d(self.q_proj(x), offsets, conv_q, keep_state)
        k, new_k = self.k_conv1d(self.k_proj(x), offsets, conv_k, keep_state)
        v, new_v = self.v_conv1d(self.v_proj(x), offsets, conv_v, keep_state)
        q, k, v = (t.reshape(batch, tokens, heads, dim) for t in (q, k, v))

        g = ops.kda_gate(
            self.f_b_proj(self.f_a_proj(x)).reshape(batch, tokens, heads, dim),
            self.A_log,
            self.dt_bias,
            self.lower_bound,
        )
        beta_logits = self.b_proj(x)
        beta = torch.sigmoid(beta_logits.to(compute_dtype(beta_logits)))
        gate = self.g_b_proj(self.g_a_proj(x)).reshape(batch, tokens, heads, dim)
        if padded is not None:  # back to the padded batch, zeros at the pads: exact no-op tokens
            q, k, v, g, beta, gate = (unpack(t, padded) for t in (q, k, v, g, beta, gate))
            batch, tokens = padded.batch, padded.tokens
        # Autocast would run the operators' float32 matmuls in bfloat16 and return a bfloat16 state
        # (notes/kda.md, section ``kda-chunk-output``: the state and the decay stay float32); the
        # operators cast their inputs themselves.
        with torch.autocast(device_type=x.device.type, enabled=False):
            o, recurrent = ops.kda(
                q,
                k,
                v,
                g,
                beta,
                initial_state=None if state is None else state.recurrent,
                output_final_state=keep_state,
                use_qk_l2norm_in_kernel=True,
                cu_seqlens=sequences,
                backend=self.mode,
            )

        normed = self.o_norm(o, gate).to(v.dtype)  # back to the activation dtype for W_o
        y = self.o_proj(normed.reshape(batch, tokens, heads * dim))
        new_state = KDALayerState(new_q, new_k, new_v, recurrent) if keep_state else None
        return y, new_state

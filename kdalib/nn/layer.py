"""KimiDeltaAttention: the token mixer of Kimi Linear's KDA layers.

The math is in notes/kda.md, sections ``kda-gate`` (the gate and the per-token scalars) and
``kda-complexity`` (decoding from a fixed-size state).

Per token x (hidden size d), with H query/key heads and HV value heads (HV = H unless
`num_v_heads` says otherwise), all of dimension K = V:

    q, k, v = SiLU(ShortConv(W_q x)), SiLU(ShortConv(W_k x)), SiLU(ShortConv(W_v x))
    g       = kda_gate(W_f↑ W_f↓ x, A_log, dt_bias, lower_bound)      per value head and key channel, fp32
    beta    = sigmoid(W_b x)                                           per value head, fp32
    o       = KDA(L2Norm(q), L2Norm(k), v, g, beta)                    kdalib.ops
    y       = W_o( RMSNorm_head(o) · w · sigmoid(W_g↑ W_g↓ x) )

Parameter names follow the original Kimi-Linear checkpoints (separate `q_conv1d`,
`k_conv1d`, `v_conv1d`; `f_a_proj`/`f_b_proj`; `g_a_proj`/`g_b_proj`); `load_state_dict`
also accepts transformers' `KimiLinearDeltaAttention` layout and flash-linear-attention's
(see `kdalib.nn.checkpoint`).

Serving (notes/kda.md, section ``kda-serving``): `verify` runs k draft tokens of speculative
decoding in one call and leaves the cache able to keep any accepted prefix (`KDACache.commit`).
The calling conventions of flash-linear-attention's and transformers' layers are accepted too:
`past_key_values=` / `cache_params=` as names of `cache`, and `kdalib.nn.compat`'s adapters for
their return values.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from kdalib import ops
from kdalib.nn.cache import DraftRecord, KDACache, KDALayerState
from kdalib.nn.checkpoint import to_native_state_dict
from kdalib.nn.config import KDALayerConfig
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
        num_heads: query/key heads H.
        head_dim: head dimension K = V (128 in Kimi Linear, independent of d / H).
        num_v_heads: value heads HV, a multiple of H (grouped value attention: each q/k head
            serves HV / H value heads, each with its own gate, beta and state); None for HV = H,
            as in Kimi Linear.
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
        ValueError: on a non-positive size, a `num_v_heads` that is not a multiple of `num_heads`,
            `lower_bound >= 0`, a `norm_eps` that is not finite and positive, or an unknown mode.
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
        num_v_heads: int | None = None,
    ) -> None:
        super().__init__()
        num_v_heads = num_heads if num_v_heads is None else num_v_heads
        for name, value in (
            ("hidden_size", hidden_size),
            ("num_heads", num_heads),
            ("head_dim", head_dim),
            ("conv_size", conv_size),
            ("num_v_heads", num_v_heads),
        ):
            _check_positive_int(name, value)
        if num_v_heads % num_heads:
            raise ValueError(
                f"KimiDeltaAttention: num_v_heads must be a multiple of num_heads = {num_heads}, got {num_v_heads}"
            )
        try:
            check_lower_bound(lower_bound)
        except ValueError as error:
            raise ValueError(f"KimiDeltaAttention: {error}") from None
        if isinstance(norm_eps, bool) or not isinstance(norm_eps, (int, float)) or not 0 < norm_eps < math.inf:
            raise ValueError(f"KimiDeltaAttention: norm_eps must be a positive number and finite, got {norm_eps!r}")
        if mode not in BACKENDS:
            raise ValueError(f"KimiDeltaAttention: mode must be one of {BACKENDS}, got {mode!r}")
        self.hidden_size, self.num_heads, self.head_dim = hidden_size, num_heads, head_dim
        self.num_v_heads = num_v_heads
        self.conv_size, self.lower_bound, self.norm_eps = conv_size, lower_bound, norm_eps
        self.layer_idx, self.mode = layer_idx, mode
        inner, value_inner = num_heads * head_dim, num_v_heads * head_dim
        factory = {"device": device, "dtype": dtype}

        self.q_proj = nn.Linear(hidden_size, inner, bias=False, **factory)
        self.k_proj = nn.Linear(hidden_size, inner, bias=False, **factory)
        self.v_proj = nn.Linear(hidden_size, value_inner, bias=False, **factory)
        self.q_conv1d = ShortConvolution(inner, conv_size, **factory)
        self.k_conv1d = ShortConvolution(inner, conv_size, **factory)
        self.v_conv1d = ShortConvolution(value_inner, conv_size, **factory)
        self.f_a_proj = nn.Linear(hidden_size, head_dim, bias=False, **factory)
        self.f_b_proj = nn.Linear(head_dim, value_inner, bias=False, **factory)
        self.A_log = nn.Parameter(torch.empty(num_v_heads, device=device, dtype=torch.float32))
        self.dt_bias = nn.Parameter(torch.empty(value_inner, device=device, dtype=torch.float32))
        self.b_proj = nn.Linear(hidden_size, num_v_heads, bias=False, **factory)
        self.g_a_proj = nn.Linear(hidden_size, head_dim, bias=False, **factory)
        self.g_b_proj = nn.Linear(head_dim, value_inner, bias=False, **factory)
        self.o_norm = GatedRMSNorm(head_dim, eps=norm_eps, **factory)
        self.o_proj = nn.Linear(value_inner, hidden_size, bias=False, **factory)
        self.reset_gate_parameters()
        # Checkpoints in transformers' or flash-linear-attention's layout are renamed on load.
        self.register_load_state_dict_pre_hook(_convert_checkpoint)

    @classmethod
    def from_config(cls, config, layer_idx: int = 0, **kwargs) -> KimiDeltaAttention:
        """A layer sized like the KDA layers of `config`.

        Args:
            config: a layer preset (`kdalib.nn.KDALayerConfig`, e.g. `KIMI_K3_KDA`), a
                `kdalib.nn.KimiLinearConfig`, or a transformers `KimiLinearConfig`
                (`linear_num_heads`, `linear_head_dim`, `linear_conv_kernel_dim`, `rms_norm_eps`).
            layer_idx: this layer's key in a `KDACache`.
            **kwargs: passed on (`lower_bound`, `mode`, `device`, `dtype`), and overriding the
                config's own sizes (e.g. a smaller `hidden_size` to try a preset's heads on a CPU).
        """
        if isinstance(config, KDALayerConfig):
            sizes = config.layer_arguments()
        elif hasattr(config, "linear_num_heads"):
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
        return cls(**{**sizes, **kwargs}, layer_idx=layer_idx)

    def reset_gate_parameters(self) -> None:
        """Initial gates: A = exp(A_log) uniform in [1, 16], softplus(dt_bias) log-uniform in
        [1e-3, 1e-1] (the Mamba-style range, so initial per-token decays span slow to fast)."""
        with torch.no_grad():
            self.A_log.copy_(torch.empty_like(self.A_log).uniform_(1.0, 16.0).log())
            dt = torch.empty_like(self.dt_bias).uniform_(math.log(1e-3), math.log(1e-1)).exp().clamp_min(1e-4)
            self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse of softplus

    def extra_repr(self) -> str:
        bound = "" if self.lower_bound is None else f", lower_bound={self.lower_bound}"
        if self.num_v_heads != self.num_heads:
            bound += f", num_v_heads={self.num_v_heads}"
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
        *,
        past_key_values: KDACache | None = None,
        cache_params: KDACache | None = None,
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
            past_key_values, cache_params: other names of `cache` (flash-linear-attention's and
                older transformers' keyword), for a `KDACache`; give at most one of the three.

        Returns:
            `[B, T, d]` in the dtype of the output projection (the autocast dtype under autocast).

        Raises:
            ValueError: on a wrong shape, dtype or mask, a cache holding a different number of
                sequences or states of another shape or dtype, two names of the cache, or a
                cache with an uncommitted `verify`.
        """
        cache = _one_cache(cache, past_key_values, cache_params)
        batch, tokens = self._check_input(hidden_states)
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
        state = self._read_state(cache, num_sequences, hidden_states)

        if plan is None:
            y, new_state = self._mix(hidden_states, state, cache is not None, sequences=sequences)
        elif plan.token_index.numel() == 0:  # nothing but padding: no output, no state change
            y, new_state = hidden_states.new_zeros(batch, tokens, self.hidden_size), state
        else:  # one packing, for the convolutions (kdalib.nn.packing)
            y, new_state = self._mix(pack(hidden_states, plan), state, cache is not None, padded=plan)
        if cache is not None and new_state is not None:  # None: all padding on a fresh cache
            cache.update(self.layer_idx, new_state, tokens)
        return y

    def verify(self, hidden_states: torch.Tensor, cache: KDACache) -> torch.Tensor:
        """The verify step of speculative decoding: k draft tokens per sequence in one call.

        Returns the k outputs a decode loop would produce one token at a time, and records in
        `cache` what `cache.commit(accepted)` needs to keep the state after any accepted prefix
        (the recurrent state after every draft token, and the draft's convolution inputs); the
        committed state is left as it was until then (notes/kda.md, section ``kda-serving``).
        The recurrence runs as `kdalib.ops.fused_recurrent_kda` (its Triton kernel on CUDA)
        whatever the layer's `mode`.

        Args:
            hidden_states: `[B, k, d]`, k >= 1 draft tokens for each of the B sequences of `cache`.
            cache: the cache of the sequences (a fresh one starts from zero states).

        Returns:
            `[B, k, d]`, as from `forward` on the same tokens.

        Raises:
            ValueError: on a wrong shape or dtype (k = 0 included), a cache of another batch or
                state shape, or one whose previous `verify` is not committed yet.
        """
        if not isinstance(cache, KDACache):
            raise ValueError(f"cache: verify needs a KDACache, got {type(cache).__name__}")
        batch, draft = self._check_input(hidden_states)
        state = self._read_state(cache, batch, hidden_states)
        y, record = self._mix(hidden_states, state, True, draft=True)
        cache.stage_draft(self.layer_idx, record)
        return y

    def _check_input(self, hidden_states: torch.Tensor) -> tuple[int, int]:
        """`(B, T)` of `hidden_states`: `[B, T, d]` with B, T >= 1, floating point, in the weights'
        dtype unless autocast casts it."""
        if not isinstance(hidden_states, torch.Tensor):
            raise ValueError(f"hidden_states: expected a torch.Tensor, got {type(hidden_states).__name__}")
        if hidden_states.dim() != 3 or hidden_states.shape[-1] != self.hidden_size:
            raise ValueError(
                f"hidden_states: expected shape [B, T, {self.hidden_size}], got {list(hidden_states.shape)}"
            )
        batch, tokens, _ = hidden_states.shape
        if batch == 0 or tokens == 0:
            raise ValueError(f"hidden_states: expected at least one row and one token, got {list(hidden_states.shape)}")
        if not hidden_states.is_floating_point():
            raise ValueError(f"hidden_states: expected a floating-point tensor, got {hidden_states.dtype}")
        weight = self.q_proj.weight.dtype
        autocast = torch.is_autocast_enabled(hidden_states.device.type)
        if hidden_states.dtype != weight and not autocast:
            raise ValueError(
                f"hidden_states: dtype {hidden_states.dtype} differs from the layer's weights ({weight}); "
                f"cast the input (hidden_states.to({weight})) or the layer (layer.to({hidden_states.dtype}))"
            )
        return batch, tokens

    def _read_state(self, cache, num_sequences, hidden_states) -> KDALayerState | None:
        """This layer's state in `cache`, checked against the layer and the input."""
        if cache is None:
            return None
        if not isinstance(cache, KDACache):
            raise ValueError(
                f"cache: expected a kdalib.nn.KDACache, got {type(cache).__name__} "
                "(transformers' and flash-linear-attention's caches go through kdalib.nn.compat's adapters)"
            )
        cache.check_no_draft(self.layer_idx)
        state = cache.get(self.layer_idx)
        if state is None:
            return None
        if state.num_sequences != num_sequences:
            raise ValueError(
                f"cache: layer {self.layer_idx} holds {state.num_sequences} sequences, the input has {num_sequences}"
            )
        heads, dim, history = self.num_v_heads, self.head_dim, self.conv_size - 1
        expected = {
            "q_conv": (num_sequences, self.num_heads * dim, history),
            "k_conv": (num_sequences, self.num_heads * dim, history),
            "v_conv": (num_sequences, heads * dim, history),
            "recurrent": (num_sequences, heads, dim, dim),
        }
        for name, shape in expected.items():
            actual = tuple(getattr(state, name).shape)
            if actual != shape:
                raise ValueError(
                    f"cache: layer {self.layer_idx}'s {name} state has shape {list(actual)}, "
                    f"the layer expects {list(shape)}"
                )
        wanted = ops.compute_dtype(hidden_states)
        if state.recurrent.dtype != wanted:
            raise ValueError(
                f"cache: layer {self.layer_idx}'s recurrent state is {state.recurrent.dtype}, the layer computes "
                f"it in {wanted} for {hidden_states.dtype} inputs (float64 models keep float64 states)"
            )
        return state

    def _mix(
        self,
        x: torch.Tensor,
        state: KDALayerState | None,
        keep_state: bool,
        sequences: ops.PackedSequences | None = None,
        padded: PackedBatch | None = None,
        draft: bool = False,
    ):
        """The layer on `x`: `[B, T, d]`; packed `[1, total, d]` with `sequences` (validated
        `ops.PackedSequences`); or, with `padded`, the valid tokens of that padded batch packed,
        whose recurrence and output run on the padded batch with zeroed pads. With `draft`, the
        verify step: returns `(y, DraftRecord)` instead of `(y, new state)`."""
        batch, tokens, _ = x.shape
        heads, value_heads, dim = self.num_heads, self.num_v_heads, self.head_dim
        offsets = padded.cu_seqlens if padded is not None else (None if sequences is None else sequences.cu_seqlens)
        conv_q, conv_k, conv_v = (None, None, None) if state is None else (state.q_conv, state.k_conv, state.v_conv)
        raw = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        keep_conv = keep_state and not draft
        q, new_q = self.q_conv1d(raw[0], offsets, conv_q, keep_conv)
        k, new_k = self.k_conv1d(raw[1], offsets, conv_k, keep_conv)
        v, new_v = self.v_conv1d(raw[2], offsets, conv_v, keep_conv)
        q, k = (t.reshape(batch, tokens, heads, dim) for t in (q, k))
        v = v.reshape(batch, tokens, value_heads, dim)

        g, beta, gate = self.token_gates(x)
        if padded is not None:  # back to the padded batch, zeros at the pads: exact no-op tokens
            q, k, v, g, beta, gate = (unpack(t, padded) for t in (q, k, v, g, beta, gate))
            batch, tokens = padded.batch, padded.tokens
        initial_state = None if state is None else state.recurrent
        # Autocast would run the operators' float32 matmuls in bfloat16 and return a bfloat16 state
        # (notes/kda.md, section ``kda-chunk-output``: the state and the decay stay float32); the
        # operators cast their inputs themselves.
        with torch.autocast(device_type=x.device.type, enabled=False):
            if draft:
                o, _, per_token = ops.fused_recurrent_kda(
                    q, k, v, g, beta, initial_state=initial_state, use_qk_l2norm_in_kernel=True, output_states_every=1
                )
            else:
                o, recurrent = ops.kda(
                    q,
                    k,
                    v,
                    g,
                    beta,
                    initial_state=initial_state,
                    output_final_state=keep_state,
                    use_qk_l2norm_in_kernel=True,
                    cu_seqlens=sequences,
                    backend=self.mode,
                )

        y = self.output(o, gate, v.dtype)
        if draft:
            if state is None:  # a fresh cache: the draft starts from zero states
                state = self._zero_state(batch, raw[0], per_token.dtype)
            inputs = tuple(t.transpose(1, 2) for t in raw)  # [B, D, k], the layout of the conv caches
            return y, DraftRecord(state, inputs, per_token.view(batch, tokens, value_heads, dim, dim))
        new_state = KDALayerState(new_q, new_k, new_v, recurrent) if keep_state else None
        return y, new_state

    def token_gates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The per-token gates of `x` `[B, T, d]` (notes/kda.md, section ``kda-gate``): the log decay
        `g` `[B, T, HV, K]` (`ops.kda_gate`), the step size `beta` `[B, T, HV]` (both float32, float64
        for float64 `x`) and the output gate `[B, T, HV, V]` (in `x`'s dtype)."""
        batch, tokens, _ = x.shape
        value_heads, dim = self.num_v_heads, self.head_dim
        g = ops.kda_gate(
            self.f_b_proj(self.f_a_proj(x)).reshape(batch, tokens, value_heads, dim),
            self.A_log,
            self.dt_bias,
            self.lower_bound,
        )
        beta_logits = self.b_proj(x)
        beta = torch.sigmoid(beta_logits.to(compute_dtype(beta_logits)))
        gate = self.g_b_proj(self.g_a_proj(x)).reshape(batch, tokens, value_heads, dim)
        return g, beta, gate

    def output(self, o: torch.Tensor, gate: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """`[B, T, d]` from the recurrence's output `o` `[B, T, HV, V]`: normed per head, gated by
        `gate` (`token_gates`), back in the activations' `dtype`, and projected by W_o."""
        batch, tokens = o.shape[:2]
        normed = self.o_norm(o, gate).to(dtype)
        return self.o_proj(normed.reshape(batch, tokens, self.num_v_heads * self.head_dim))

    def _zero_state(self, batch: int, x: torch.Tensor, state_dtype: torch.dtype) -> KDALayerState:
        """The state of `batch` fresh sequences: zero convolution caches like `x` (a projection)
        and a zero recurrent state in `state_dtype`."""
        history, dim = self.conv_size - 1, self.head_dim
        conv = [
            x.new_zeros(batch, heads * dim, history) for heads in (self.num_heads, self.num_heads, self.num_v_heads)
        ]
        return KDALayerState(*conv, x.new_zeros(batch, self.num_v_heads, dim, dim, dtype=state_dtype))


def _one_cache(cache, past_key_values, cache_params):
    """The cache under whichever of its names the caller used (at most one)."""
    given = {
        name: c
        for name, c in (("cache", cache), ("past_key_values", past_key_values), ("cache_params", cache_params))
        if c is not None
    }
    if len(given) > 1:
        raise ValueError(f"{' and '.join(given)}: the same cache under two names; pass one")
    return next(iter(given.values()), None)

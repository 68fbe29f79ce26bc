"""A tiny language model whose token mixer is kdalib's KDA operator.

One mixer, five update rules, obtained by restricting the gate ``g`` and
the step size ``beta`` that the KDA operator receives (notes/kda.md, section ``kda-recurrence``):

==================  ==========================  ===========================
kind                decay ``g`` [B, T, H, K]    step ``beta`` [B, T, H]
==================  ==========================  ===========================
``linear``          0 (no forgetting)           ``LINEAR_BETA`` (see below)
``deltanet``        0                           sigmoid(W_b x)
``gated_deltanet``  one value per head,         sigmoid(W_b x)
                    broadcast over K
``kda``             one value per key channel   sigmoid(W_b x)
``mamba2``          one value per head,         ``LINEAR_BETA``
                    broadcast over K
==================  ==========================  ===========================

``mamba2`` is Mamba-2's state update, ``S_t = a_t S_{t-1} + k_t v_t^T`` with one scalar
decay ``a_t`` per head and no delta rule (Gated DeltaNet's decay without the erasure of
notes/kda.md, "Gated DeltaNet: forgetting as weight decay"), written
with the same operator and the same projections, convolution and normalised q, k as the
others, so that a comparison isolates the update rule rather than Mamba-2's block design.

Plain linear attention (``S_t = S_{t-1} + k_t v_t^T``) has no erasure term, which the
delta rule always has: ``S_t = S' + beta k (v - S'^T k)^T``. Feeding ``beta = eps`` and
values ``v / eps`` gives ``S_t = S' + k v^T - eps k k^T S'`` (``S'`` the decayed state):
linear attention, or Mamba-2's rule with a decay, up to an
erasure of relative size ``eps`` per token. With ``eps = 1e-6`` that is below float32
resolution over the sequence lengths used here, and the rounding error of ``v / eps``
is multiplied back by ``eps``, so it stays at float32 precision of ``v``.

Each mixer follows the Kimi Delta Attention layer in miniature: q, k, v projections,
a depthwise causal convolution (kernel 4) and SiLU, L2-normalised q and k, the
operator, and an output projection.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kdalib.ops import chunk_kda, kda_gate

MIXER_KINDS = ("linear", "deltanet", "gated_deltanet", "kda", "mamba2")
DELTA_RULE_KINDS = ("deltanet", "gated_deltanet", "kda")
"""Kinds whose step size is learned (the others use ``LINEAR_BETA``: no erasure)."""
PER_HEAD_DECAY_KINDS = ("gated_deltanet", "mamba2")
"""Kinds with one decay per head; ``kda`` has one per key channel, the rest none."""
LINEAR_BETA = 1e-6
OPERATOR_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""The dtypes the operator may be given, by name (see :class:`RecallMixer`)."""
CONV_SIZE = 4


def _init_decay_parameters(heads: int, channels: int) -> tuple[nn.Parameter, nn.Parameter]:
    """``A_log`` [heads] and ``dt_bias`` [heads * channels]: slow forgetting at initialisation.

    ``exp(A_log)`` is uniform in [1, 2] and ``softplus(dt_bias)`` log-uniform in
    [1e-4, 1e-2], so the initial half-lives range from about 35 to 7,000 tokens. The
    Mamba-2 range ([1, 16] and [1e-3, 1e-1]) starts most channels with memories of a few
    tokens; in the short trainings of a synthetic sweep the gated models would spend
    their budget unlearning that, which would measure the initialisation rather than
    what the gate can express.
    """
    a_log = torch.empty(heads).uniform_(1, 2).log()
    step = torch.exp(torch.empty(heads * channels).uniform_(math.log(1e-4), math.log(1e-2)))
    dt_bias = step + torch.log(-torch.expm1(-step))  # inverse of softplus
    return nn.Parameter(a_log), nn.Parameter(dt_bias)


class RecallMixer(nn.Module):
    """Token mixer: one KDA-operator call with the gate restricted to ``kind``.

    Args:
        d_model: model width.
        num_heads: heads H.
        head_dim: key and value dimension per head (K = V).
        kind: one of :data:`MIXER_KINDS`.
        use_triton: passed to :func:`~kdalib.ops.chunk_kda`: None picks the path by device and
            dtype, False keeps the PyTorch chunk form, True forces the Triton kernels.
        operator_dtype: the dtype of q, k, v and beta as the operator receives them (its output
            comes back in the model's dtype; the gate stays float32, as the operator's contract
            has it); None passes them in the model's dtype. bfloat16 on a GPU takes the operator's
            16-bit training kernels.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        head_dim: int,
        kind: str,
        use_triton: bool | None = None,
        operator_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if kind not in MIXER_KINDS:
            raise ValueError(f"kind: expected one of {', '.join(MIXER_KINDS)}, got {kind!r}")
        if use_triton is not None and not isinstance(use_triton, bool):
            raise ValueError(f"use_triton: expected None, True or False, got {use_triton!r}")
        if operator_dtype is not None and operator_dtype not in OPERATOR_DTYPES.values():
            raise ValueError(f"operator_dtype: expected None or one of {list(OPERATOR_DTYPES)}, got {operator_dtype!r}")
        self.kind, self.num_heads, self.head_dim = kind, num_heads, head_dim
        self.use_triton, self.operator_dtype = use_triton, operator_dtype
        width = num_heads * head_dim
        self.qkv_proj = nn.Linear(d_model, 3 * width, bias=False)
        self.conv = nn.Conv1d(3 * width, 3 * width, CONV_SIZE, groups=3 * width, padding=CONV_SIZE - 1, bias=False)
        self.o_proj = nn.Linear(width, d_model, bias=False)
        if kind in DELTA_RULE_KINDS:
            self.b_proj = nn.Linear(d_model, num_heads, bias=False)
        if kind == "kda" or kind in PER_HEAD_DECAY_KINDS:
            channels = head_dim if kind == "kda" else 1
            self.f_proj = nn.Linear(d_model, num_heads * channels, bias=False)
            self.A_log, self.dt_bias = _init_decay_parameters(num_heads, channels)

    def gates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decay and step size for this mixer's kind.

        Args:
            x: ``[B, T, d_model]`` input.

        Returns:
            ``(g [B, T, H, K] float32 <= 0, beta [B, T, H])``.
        """
        batch, tokens, _ = x.shape
        shape = (batch, tokens, self.num_heads, self.head_dim)
        if self.kind in DELTA_RULE_KINDS:
            beta = torch.sigmoid(self.b_proj(x))
        else:
            beta = x.new_full(shape[:3], LINEAR_BETA)
        if self.kind in ("linear", "deltanet"):
            return x.new_zeros(shape, dtype=torch.float32), beta
        raw = self.f_proj(x).view(batch, tokens, self.num_heads, -1)
        g = kda_gate(raw, self.A_log, self.dt_bias)  # [B, T, H, 1] with one decay per head, [B, T, H, K] for KDA
        return g.expand(shape), beta

    def operator_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Everything the KDA operator receives for input ``x``.

        Args:
            x: ``[B, T, d_model]``.

        Returns:
            ``(q, k, v, g, beta)``: q, k ``[B, T, H, K]`` unit-norm; v ``[B, T, H, V]``
            (divided by ``LINEAR_BETA`` for the kinds without the delta rule); g ``[B, T, H, K]``;
            beta ``[B, T, H]``.
        """
        batch, tokens, _ = x.shape
        qkv = self.conv(self.qkv_proj(x).transpose(1, 2))[..., :tokens].transpose(1, 2)
        q, k, v = F.silu(qkv).view(batch, tokens, 3, self.num_heads, self.head_dim).unbind(dim=2)
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        g, beta = self.gates(x)
        if self.kind not in DELTA_RULE_KINDS:
            v = v / LINEAR_BETA
        return q, k, v, g, beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mixes tokens causally.

        Args:
            x: ``[B, T, d_model]``.

        Returns:
            ``[B, T, d_model]``.
        """
        batch, tokens, _ = x.shape
        # Short sequences waste work in 64-token chunks; 32 is cheaper there and exact either way.
        q, k, v, g, beta = self.operator_inputs(x)
        if self.operator_dtype is not None:
            q, k, v, beta = (t.to(self.operator_dtype) for t in (q, k, v, beta))
        o, _ = chunk_kda(q, k, v, g, beta, chunk_size=64 if tokens >= 256 else 32, use_triton=self.use_triton)
        return self.o_proj(o.to(x.dtype).reshape(batch, tokens, -1))


class Block(nn.Module):
    """One pre-norm residual block: ``x + mixer(norm(x))``, then ``x + mlp(norm(x))``.

    Args:
        d_model: model width.
        mixer: the token mixer, ``[B, T, d_model] -> [B, T, d_model]``.
        mlp_ratio: hidden width of the MLP as a multiple of ``d_model``.
    """

    def __init__(self, d_model: int, mixer: nn.Module, mlp_ratio: int = 2) -> None:
        super().__init__()
        self.mixer_norm = nn.RMSNorm(d_model)
        self.mixer = mixer
        self.mlp_norm = nn.RMSNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, mlp_ratio * d_model), nn.GELU(), nn.Linear(mlp_ratio * d_model, d_model)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, d_model]`` -> ``[B, T, d_model]``."""
        x = x + self.mixer(self.mixer_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class TinyRecallModel(nn.Module):
    """Embedding, ``num_layers`` pre-norm :class:`Block` s (mixer + MLP), tied read-out.

    Args:
        vocab_size: tokens in the vocabulary.
        kind: mixer kind, one of :data:`MIXER_KINDS`.
        d_model: model width.
        num_layers: blocks.
        num_heads: mixer heads.
        head_dim: mixer head dimension (K = V); defaults to ``d_model // num_heads``.
        use_triton: which KDA operator path the mixers take (see :class:`RecallMixer`).
        operator_dtype: the dtype the mixers' operator works in (see :class:`RecallMixer`).
    """

    def __init__(
        self,
        vocab_size: int,
        kind: str,
        d_model: int = 64,
        num_layers: int = 2,
        num_heads: int = 2,
        head_dim: int | None = None,
        use_triton: bool | None = None,
        operator_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        for name, value in (
            ("vocab_size", vocab_size),
            ("d_model", d_model),
            ("num_layers", num_layers),
            ("num_heads", num_heads),
        ):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        head_dim = head_dim or d_model // num_heads
        self.kind = kind
        self.embed = nn.Embedding(vocab_size, d_model)
        # The read-out is tied to the embedding; unit-norm rows keep the initial logits O(1).
        nn.init.normal_(self.embed.weight, std=d_model**-0.5)
        self.blocks = nn.ModuleList(
            Block(d_model, RecallMixer(d_model, num_heads, head_dim, kind, use_triton, operator_dtype))
            for _ in range(num_layers)
        )
        self.final_norm = nn.RMSNorm(d_model)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Next-token logits.

        Args:
            tokens: ``[B, T]`` int64 token ids.

        Returns:
            ``[B, T, vocab_size]`` logits.
        """
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        return self.final_norm(x) @ self.embed.weight.T

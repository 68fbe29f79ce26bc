"""Architecture description of Kimi Linear models and their decode-time cache sizes.

`KimiLinearConfig` is a frozen record of the figures that decide how much memory a
sequence costs at decode time: which layers are KDA (constant-size fp32 state plus
short-convolution caches) and which are MLA (a latent KV cache that grows with every
token). `KIMI_LINEAR_48B_A3B` holds the figures of the released Kimi-Linear-48B-A3B
checkpoints, taken from the defaults of transformers' `KimiLinearConfig` (5.x) and the
published `config.json` (whose `linear_attn_config` lists the 1-based layer indices).

Fields whose value a reader of the book sees carry a `claim` id in their metadata
(`claim_ids()` lists them), bound to the claim of that id in `sources.yaml`; a test
checks that every bound figure equals its claim's value. The claims' status says where
each figure stands: the tech report and readme state the head dimension, the ratio, the
experts, the parameter counts and the context length; hidden size, depth, head counts
and the MLA layer numbers come from the checkpoint's config.json (not archived, so
`unverified`).

`KDALayerConfig` sizes one KDA layer instead: `KIMI_LINEAR_48B_A3B_KDA` and `KIMI_K3_KDA` (Kimi
K3's, from the archived K3 card) list which figures a source states (`claims`) and which are
assumptions (`assumptions`, each with its reason); notes/kda.md, section ``kda-serving``, shows
the two side by side.

Example:
    >>> from kdalib.nn.config import KIMI_LINEAR_48B_A3B as cfg
    >>> cfg.kda_layer_numbers[:4]
    (1, 2, 3, 5)
    >>> cfg.kda_state_bytes_per_layer() // 2**20   # fp32 state: 32 x 128 x 128 x 4 B
    2
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

DTypeLike = torch.dtype | str

_DTYPE_NAMES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float64": torch.float64,
    "fp8": torch.float8_e4m3fn,
    "float8_e4m3fn": torch.float8_e4m3fn,
}


def dtype_bytes(dtype: DTypeLike) -> int:
    """Bytes per element of `dtype`.

    Args:
        dtype: a `torch.dtype` or one of the names "float32"/"fp32", "bfloat16"/"bf16",
            "float16"/"fp16"/"half", "float64", "fp8"/"float8_e4m3fn".

    Returns:
        The element size in bytes.

    Raises:
        ValueError: `dtype` is neither a torch dtype nor a known name.
    """
    if isinstance(dtype, str):
        if dtype not in _DTYPE_NAMES:
            raise ValueError(f"dtype: unknown name {dtype!r}; expected one of {sorted(_DTYPE_NAMES)}")
        dtype = _DTYPE_NAMES[dtype]
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"dtype: expected a torch.dtype or a name, got {type(dtype).__name__}")
    return torch.empty((), dtype=dtype).element_size()


def _claim(claim_id: str, **kwargs):
    """A dataclass field whose value is bound to the book claim `claim_id`."""
    return field(metadata={"claim": claim_id}, **kwargs)


@dataclass(frozen=True)
class KimiLinearConfig:
    """Layer pattern and dimensions of a Kimi Linear (KDA + MLA hybrid) model.

    Layer numbers are 1-based, as in the checkpoints' `linear_attn_config`
    (`full_attn_layers`, `kda_layers`); every layer not listed as MLA is KDA.

    Attributes:
        name: model name, for tables and plots.
        hidden_size: model width d.
        num_layers: decoder layers (KDA + MLA).
        mla_layer_numbers: 1-based numbers of the full-attention (MLA, NoPE) layers.
        design_ratio: the published KDA : MLA ratio (the actual count is
            `num_kda_layers : num_mla_layers`, see `kda_to_mla_ratio`).
        kda_num_heads: KDA heads H (q/k heads = value heads in Kimi Linear).
        kda_head_dim: KDA key and value head dimension K = V.
        conv_size: kernel width of the depthwise causal convolutions on q, k and v.
        mla_num_heads: MLA query heads.
        kv_lora_rank: width of the MLA compressed KV latent (what the MLA cache stores).
        qk_rope_head_dim: per-token shared key part stored next to the latent (kept in the
            checkpoint layout even though Kimi Linear's MLA layers use no positional encoding).
        qk_nope_head_dim: per-head query/key dimension without position information.
        v_head_dim: per-head MLA value dimension.
        vocab_size: tokenizer vocabulary.
        num_experts: routed experts per MoE layer.
        num_experts_per_token: routed experts active per token.
        num_shared_experts: always-active shared experts per MoE layer.
        moe_intermediate_size: hidden width of one expert.
        intermediate_size: hidden width of the dense MLP (the first layer).
        first_dense_layers: leading layers with a dense MLP instead of MoE.
        max_context: longest supported context, in tokens.
        total_params_b: total parameters, billions.
        active_params_b: parameters active per token, billions.
        rms_norm_eps: epsilon of every RMSNorm, the KDA output norm included.
    """

    name: str = "Kimi-Linear-48B-A3B"
    hidden_size: int = _claim("linear.arch.hidden_size", default=2304)
    num_layers: int = _claim("linear.arch.layers", default=27)
    mla_layer_numbers: tuple[int, ...] = _claim("linear.arch.mla_layers", default=(4, 8, 12, 16, 20, 24, 27))
    design_ratio: tuple[int, int] = _claim("linear.arch.ratio", default=(3, 1))
    kda_num_heads: int = _claim("linear.arch.kda_heads", default=32)
    kda_head_dim: int = _claim("linear.arch.head_dim", default=128)
    conv_size: int = _claim("linear.arch.conv_size", default=4)
    mla_num_heads: int = _claim("linear.arch.mla_heads", default=32)
    kv_lora_rank: int = _claim("linear.arch.kv_lora_rank", default=512)
    qk_rope_head_dim: int = 64
    qk_nope_head_dim: int = 128
    v_head_dim: int = 128
    vocab_size: int = _claim("linear.arch.vocab_size", default=163840)
    num_experts: int = _claim("linear.arch.experts", default=256)
    num_experts_per_token: int = _claim("linear.arch.active_experts", default=8)
    num_shared_experts: int = _claim("linear.arch.shared_experts", default=1)
    moe_intermediate_size: int = 1024
    intermediate_size: int = 9216
    first_dense_layers: int = 1
    max_context: int = _claim("linear.context.length", default=1_048_576)
    total_params_b: float = _claim("linear.params.total", default=48.0)
    active_params_b: float = _claim("linear.params.active", default=3.0)
    rms_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        positive = (
            "hidden_size",
            "num_layers",
            "kda_num_heads",
            "kda_head_dim",
            "conv_size",
            "mla_num_heads",
            "kv_lora_rank",
            "vocab_size",
            "num_experts",
            "num_experts_per_token",
        )
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"KimiLinearConfig.{name}: expected a positive int, got {value!r}")
        numbers = tuple(self.mla_layer_numbers)
        if list(numbers) != sorted(set(numbers)):
            raise ValueError(f"KimiLinearConfig.mla_layer_numbers: expected strictly increasing numbers, got {numbers}")
        if numbers and (numbers[0] < 1 or numbers[-1] > self.num_layers):
            raise ValueError(
                f"KimiLinearConfig.mla_layer_numbers: 1-based numbers must lie in [1, {self.num_layers}], got {numbers}"
            )
        if self.num_experts_per_token > self.num_experts:
            raise ValueError(
                f"KimiLinearConfig.num_experts_per_token: cannot exceed num_experts = {self.num_experts}, "
                f"got {self.num_experts_per_token}"
            )

    # ----- layer pattern -------------------------------------------------------------

    @property
    def kda_layer_numbers(self) -> tuple[int, ...]:
        """1-based numbers of the KDA layers (all layers that are not MLA)."""
        mla = set(self.mla_layer_numbers)
        return tuple(n for n in range(1, self.num_layers + 1) if n not in mla)

    @property
    def num_kda_layers(self) -> int:
        return self.num_layers - len(self.mla_layer_numbers)

    @property
    def num_mla_layers(self) -> int:
        return len(self.mla_layer_numbers)

    @property
    def layer_types(self) -> list[str]:
        """Per-layer type in transformers' vocabulary, 0-based list order:
        "full_attention" (MLA) or "linear_attention" (KDA)."""
        mla = set(self.mla_layer_numbers)
        return ["full_attention" if n in mla else "linear_attention" for n in range(1, self.num_layers + 1)]

    @property
    def kda_to_mla_ratio(self) -> float:
        """KDA layers per MLA layer (20/7 ≈ 2.86 for the 48B model, whose pattern is 3:1
        with the last layer forced to MLA)."""
        return self.num_kda_layers / self.num_mla_layers if self.num_mla_layers else float("inf")

    # ----- decode-time memory, per sequence ------------------------------------------

    def kda_state_bytes_per_layer(self, dtype: DTypeLike = torch.bfloat16) -> int:
        """Bytes one KDA layer keeps for one sequence, whatever the context length.

        The recurrent state is [H, K, V] in float32 regardless of `dtype` (notes/kda.md, section `kda-chunk-output`);
        the three short-convolution caches (q, k, v) each hold the last `conv_size - 1`
        projected inputs of width H·K in the activation `dtype`.

        Args:
            dtype: activation dtype of the conv caches.

        Returns:
            Bytes per sequence for one KDA layer.
        """
        heads, dim = self.kda_num_heads, self.kda_head_dim
        recurrent = heads * dim * dim * dtype_bytes(torch.float32)
        conv = 3 * heads * dim * (self.conv_size - 1) * dtype_bytes(dtype)
        return recurrent + conv

    def mla_cache_values_per_token(self, compressed: bool = True) -> int:
        """Values one MLA layer caches per token.

        Args:
            compressed: True for the latent cache serving engines keep
                (kv_lora_rank + qk_rope_head_dim); False for the expanded per-head keys
                and values (heads · (qk_nope + qk_rope + v_head_dim)).
        """
        if compressed:
            return self.kv_lora_rank + self.qk_rope_head_dim
        qk_head_dim = self.qk_nope_head_dim + self.qk_rope_head_dim
        return self.mla_num_heads * (qk_head_dim + self.v_head_dim)

    def mla_cache_bytes_per_layer(
        self, context_len: int, dtype: DTypeLike = torch.bfloat16, compressed: bool = True
    ) -> int:
        """Bytes of one MLA layer's KV cache for one sequence of `context_len` tokens."""
        _check_context(context_len)
        return context_len * self.mla_cache_values_per_token(compressed) * dtype_bytes(dtype)

    def kda_state_bytes(self, dtype: DTypeLike = torch.bfloat16) -> int:
        """Bytes all KDA layers keep for one sequence (constant in context length)."""
        return self.num_kda_layers * self.kda_state_bytes_per_layer(dtype)

    def mla_cache_bytes(self, context_len: int, dtype: DTypeLike = torch.bfloat16, compressed: bool = True) -> int:
        """Bytes all MLA layers of this model cache for one sequence of `context_len` tokens."""
        return self.num_mla_layers * self.mla_cache_bytes_per_layer(context_len, dtype, compressed)

    def hybrid_cache_bytes(self, context_len: int, dtype: DTypeLike = torch.bfloat16, compressed: bool = True) -> int:
        """Total decode cache of this hybrid model for one sequence: KDA states + MLA KV cache."""
        return self.kda_state_bytes(dtype) + self.mla_cache_bytes(context_len, dtype, compressed)

    def all_mla_cache_bytes(self, context_len: int, dtype: DTypeLike = torch.bfloat16, compressed: bool = True) -> int:
        """KV cache of the same-depth model with MLA in every layer (the full-attention baseline)."""
        return self.num_layers * self.mla_cache_bytes_per_layer(context_len, dtype, compressed)

    def cache_reduction(self, context_len: int, dtype: DTypeLike = torch.bfloat16, compressed: bool = True) -> float:
        """Fraction of the all-MLA cache the hybrid saves: 1 − hybrid / all-MLA.

        Tends to num_kda_layers / num_layers (20/27 ≈ 0.74 for the 48B model) as the
        context grows; negative for very short contexts, where the fixed KDA state
        outweighs the few cached tokens it replaces.
        """
        return 1.0 - self.hybrid_cache_bytes(context_len, dtype, compressed) / self.all_mla_cache_bytes(
            context_len, dtype, compressed
        )

    # ----- claim bindings ------------------------------------------------------------

    @classmethod
    def claim_ids(cls) -> dict[str, str]:
        """Field name -> book claim id, for every field bound to a claim."""
        return {f.name: f.metadata["claim"] for f in dataclasses.fields(cls) if "claim" in f.metadata}


def _check_context(context_len: int) -> None:
    if not isinstance(context_len, int) or isinstance(context_len, bool) or context_len < 0:
        raise ValueError(f"context_len: expected a non-negative int, got {context_len!r}")


KIMI_LINEAR_48B_A3B = KimiLinearConfig()
"""Kimi-Linear-48B-A3B (Base and Instruct share the architecture)."""


# ----- layer presets -------------------------------------------------------------------


@dataclass(frozen=True)
class KDALayerConfig:
    """The figures that size one `KimiDeltaAttention` layer, and where each comes from.

    `KimiDeltaAttention.from_config(preset)` builds the layer; keyword arguments override a
    figure (e.g. `hidden_size=64` to run a preset's heads on a CPU).

    Attributes:
        name: what the preset describes, for tables.
        hidden_size: model width d.
        num_heads: query/key heads H.
        head_dim: K = V.
        num_v_heads: value heads HV (None: HV = H).
        conv_size: width of the short convolutions.
        lower_bound: None for the softplus gate, a negative number for the bounded gate.
        norm_eps: epsilon of the output RMSNorm.
        claims: `(field, claim id)` pairs: the figures stated by an archived source (sources.yaml).
        assumptions: `(field, why)` pairs: the figures no archived source states, and what they
            are taken from. Every figure of the layer is in one of the two.
    """

    name: str
    hidden_size: int
    num_heads: int
    head_dim: int
    num_v_heads: int | None = None
    conv_size: int = 4
    lower_bound: float | None = None
    norm_eps: float = 1e-5
    claims: tuple[tuple[str, str], ...] = ()
    assumptions: tuple[tuple[str, str], ...] = ()

    def layer_arguments(self) -> dict:
        """The keyword arguments of `KimiDeltaAttention` this preset sets."""
        names = ("hidden_size", "num_heads", "head_dim", "num_v_heads", "conv_size", "lower_bound", "norm_eps")
        return {name: getattr(self, name) for name in names}

    def claim_ids(self) -> dict[str, str]:
        """Field name -> claim id, for the figures an archived source states."""
        return dict(self.claims)

    def state_bytes(self) -> int:
        """Bytes of one sequence's float32 recurrent state in one layer: HV x K x V x 4."""
        heads = self.num_heads if self.num_v_heads is None else self.num_v_heads
        return heads * self.head_dim * self.head_dim * dtype_bytes(torch.float32)


KIMI_LINEAR_48B_A3B_KDA = KDALayerConfig(
    name="Kimi-Linear-48B-A3B",
    hidden_size=KIMI_LINEAR_48B_A3B.hidden_size,
    num_heads=KIMI_LINEAR_48B_A3B.kda_num_heads,
    head_dim=KIMI_LINEAR_48B_A3B.kda_head_dim,
    conv_size=KIMI_LINEAR_48B_A3B.conv_size,
    lower_bound=None,
    norm_eps=KIMI_LINEAR_48B_A3B.rms_norm_eps,
    claims=tuple(
        (field_name, KimiLinearConfig.claim_ids()[source])
        for field_name, source in (
            ("hidden_size", "hidden_size"),
            ("num_heads", "kda_num_heads"),
            ("head_dim", "kda_head_dim"),
            ("conv_size", "conv_size"),
        )
    ),
    assumptions=(
        ("num_v_heads", "no grouped values: the released checkpoints have one value head per q/k head"),
        ("lower_bound", "the softplus gate of the released checkpoints (transformers' and FLA's layers)"),
        ("norm_eps", "the RMSNorm epsilon of transformers' KimiLinearConfig"),
    ),
)
"""A KDA layer of Kimi-Linear-48B-A3B (the layer of `KIMI_LINEAR_48B_A3B`)."""


KIMI_K3_KDA = KDALayerConfig(
    name="Kimi K3",
    hidden_size=7168,
    num_heads=96,
    head_dim=128,
    conv_size=4,
    lower_bound=-5.0,
    norm_eps=1e-5,
    claims=(("hidden_size", "k3.arch.hidden_dim"), ("num_heads", "k3.arch.attention_heads")),
    assumptions=(
        (
            "num_heads",
            "the card gives one head count for its attention; the preset takes it for the KDA layers too",
        ),
        ("head_dim", "not on the card: Kimi Linear's KDA head dimension"),
        ("num_v_heads", "not on the card: one value head per q/k head, as in Kimi Linear"),
        ("conv_size", "not on the card: Kimi Linear's short-convolution width"),
        (
            "lower_bound",
            "not in an archived source: the bound public K3 inference configurations set for the "
            "bounded gate (third-party code, notes/k3.md)",
        ),
        (
            "gate_rank",
            "not on the card: the gate keeps Kimi Linear's low-rank pair (f_a_proj of rank head_dim); "
            "third-party code describes a full-rank projection, which this preset does not model",
        ),
        ("norm_eps", "not on the card: Kimi Linear's RMSNorm epsilon"),
    ),
)
"""A KDA layer sized like Kimi K3's, from the archived K3 card (`k3.arch.*` claims): its hidden
dimension and head count. Everything else is an assumption, listed in ``assumptions`` with its
reason: the head dimension, value heads, convolution width and norm epsilon of Kimi Linear, the
bounded gate with lower bound -5 (what public K3 inference configurations set; no archived source
states it), and Kimi Linear's low-rank gate projection (rank = head_dim)."""

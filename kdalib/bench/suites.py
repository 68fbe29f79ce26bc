"""The benchmark's suites: the problem shapes, the methods each suite times, the speed-up targets."""

from __future__ import annotations

from dataclasses import dataclass, replace

# Speed-up of the chunked form over the peer that the CPU suite is held to: (row label, minimum).
TARGETS = {
    "B1-T8192-H4-K64-V64-float32": 10.0,
    "B1-T2048-H32-K128-V128-float32": 3.0,
}


# Methods that run a registry operator with fixed options: name -> (operator, options).
VARIANTS = {"chunk-c32": ("chunk", {"chunk_size": 32})}


# Chunk size of each chunked method, for the FLOP count of the matmul floor.
CHUNK_SIZES = {"chunk": 64, "chunk-c32": 32}


# Methods that are not KDA operators: name -> what it is.
COMPARISONS = {
    "peer": "flash-linear-attention's pure-PyTorch naive_recurrent_kda, loaded by path (--fla-path)",
    "sdpa_flash": "PyTorch's flash SDPA causal attention at the same shapes (CUDA)",
    "sdpa": "PyTorch's SDPA causal attention at the same shapes, any backend (CPU and CUDA)",
    "fused_recurrent_pytorch": "the recurrent operator's PyTorch token loop only, never the Triton kernel",
    "chunk_pytorch": "the chunk operator's PyTorch form only (chunk_kda(use_triton=False)), never the Triton kernels",
    "triton_states64": "kdalib's Triton forward also returning the float32 state every 64 tokens "
    "(chunk_kda(use_triton=True, output_states_every=64)), for prefix caching",
    "verify": "the verify step of speculative decoding: fused_recurrent_kda over the k draft tokens in one "
    "call, keeping the state after each (output_states_every=1)",
    "single_steps": "k fused_recurrent_kda calls of one token each, the state passed along (and kept) after each",
}


# Methods timed on decode rows (one new token per sequence from a cached state).
DECODE_METHODS = ("fused_recurrent", "fla_fused_recurrent")


# Methods timed on verify rows (k draft tokens per sequence from a cached state).
VERIFY_METHODS = ("verify", "single_steps")


# Methods timed on half-precision prefill rows only (the Triton and flash comparisons).
HALF_PRECISION_METHODS = ("sdpa_flash", "fla", "triton", "triton_states64")


# Methods timed on the mild gate's unpacked rows only: softmax attention has no gate (one row per
# shape says enough) and no packed form here; the PyTorch chunk form is the slow reference.
MILD_ONLY_METHODS = ("sdpa", "sdpa_flash", "chunk_pytorch")


# Methods timed on training rows (forward and backward): kdalib's Triton training path, the PyTorch
# chunk form under autograd, FLA, flash SDPA.
TRAIN_METHODS = ("triton", "chunk_pytorch", "fla", "sdpa_flash")


# The forget gates a row can use (measure.make_problem builds them):
#   mild     logsigmoid(N(0, 1) + 3), a few hundredths per token, precomputed;
#   kimi     kda_gate's softplus form, -exp(A_log) softplus(g_raw) with exp(A_log) ~ U(1, 16) per
#            head (mean log decay about -6 per token), precomputed;
#   bounded  kda_gate's lower-bound form with BOUNDED_LOWER_BOUND, g_raw ~ N(0, 1), A_log ~ U(0, 1)
#            (mean log decay about -3 per token), given as the raw projection: every method computes
#            the gate itself (kdalib's Triton forward and FLA in their kernels).
GATES = ("mild", "kimi", "bounded")
# The lower bound public Kimi K3 inference configurations give the bounded gate.
BOUNDED_LOWER_BOUND = -5.0


@dataclass(frozen=True)
class Shape:
    """One benchmark row's problem: q, k ``[B, T, H, K]``, v ``[B, T, H, V]`` (decode: T new tokens;
    verify: T draft tokens from a cached state, decode too; train: the forward and the backward to
    every input); ``gate`` one of :data:`GATES`; ``packed``: the lengths of sequences packed into
    the B = 1 row (``cu_seqlens``), or empty."""

    batch: int
    tokens: int
    heads: int
    key_dim: int
    value_dim: int
    dtype: str = "float32"
    decode: bool = False
    train: bool = False
    verify: bool = False
    gate: str = "mild"
    packed: tuple[int, ...] = ()

    def __post_init__(self):
        if self.gate not in GATES:
            raise ValueError(f"gate: expected one of {', '.join(GATES)}, got {self.gate!r}")
        if self.packed and (self.batch != 1 or sum(self.packed) != self.tokens):
            raise ValueError(f"packed: lengths must sum to tokens={self.tokens} in a B = 1 row, got {self.packed}")

    @property
    def label(self) -> str:
        kind = "verify-" if self.verify else "decode-" if self.decode else "train-" if self.train else ""
        label = f"{kind}B{self.batch}-T{self.tokens}-H{self.heads}-K{self.key_dim}-V{self.value_dim}-{self.dtype}"
        if self.packed:
            label += f"-packed{len(self.packed)}"
        return label if self.gate == "mild" else f"{label}-{self.gate}"


@dataclass(frozen=True)
class Suite:
    description: str
    device: str
    shapes: tuple[Shape, ...]
    methods: tuple[str, ...]


def _grid(tokens, heads, dim, dtype="float32"):
    return tuple(Shape(1, t, heads, dim, dim, dtype) for t in tokens)


CPU_METHODS = ("peer", "naive", "fused_recurrent", "chunk", "chunk-c32")


# The training rows of the GPU suites: forward and backward, bf16, H32 K=V=128.
TRAIN_SHAPES = tuple(Shape(b, t, 32, 128, 128, "bfloat16", train=True) for b, t in ((8, 4096), (2, 16384), (1, 65536)))
# Kimi K3's head count with six packed sequences of a prefill batch.
PACKED_H96 = Shape(1, 8192, 96, 128, 128, "bfloat16", packed=(1300, 547, 2048, 963, 271, 3063))
# The prefill rows held to the forward's targets, each with every gate.
PREFILL_SHAPES = (
    Shape(8, 4096, 32, 128, 128, "bfloat16"),
    Shape(2, 16384, 32, 128, 128, "bfloat16"),
    Shape(1, 65536, 32, 128, 128, "bfloat16"),
    PACKED_H96,
)


def shape_from_label(label: str) -> Shape:
    """The shape of a suite row with this label.

    Raises:
        ValueError: naming the label, when no suite has it.
    """
    for suite in SUITES.values():
        for shape in suite.shapes:
            if shape.label == label:
                return shape
    raise ValueError(f"label: no suite has a row {label!r} (see kdalib bench --list)")


def with_gates(shapes: tuple[Shape, ...], gates: tuple[str, ...] = GATES) -> tuple[Shape, ...]:
    """Every shape with every gate, shape by shape."""
    return tuple(replace(shape, gate=gate) for shape in shapes for gate in gates)


# The serving rows: verifying k = 4 and 8 draft tokens at B1 and B64, and two prefills whose states
# every 64 tokens are kept (beside the same prefill without them), bf16 H32 K=V=128.
SERVING_SHAPES = tuple(
    Shape(b, k, 32, 128, 128, "bfloat16", decode=True, verify=True) for b in (1, 64) for k in (4, 8)
) + (Shape(1, 32768, 32, 128, 128, "bfloat16"), Shape(8, 4096, 32, 128, 128, "bfloat16"))


SUITES = {
    "cpu": Suite(
        "CPU: T in {512, 2048, 8192} at H4 K=V=64 and T in {512, 2048} at H32 K=V=128, fp32; "
        "naive, fused_recurrent, chunk and flash-linear-attention's naive_recurrent_kda",
        "cpu",
        _grid((512, 2048, 8192), 4, 64) + _grid((512, 2048), 32, 128),
        CPU_METHODS,
    ),
    "cpu-quick": Suite(
        "CPU, a minute: T in {512, 2048} at H4 K=V=64 and T=512 at H32 K=V=128",
        "cpu",
        _grid((512, 2048), 4, 64) + _grid((512,), 32, 128),
        CPU_METHODS,
    ),
    "cpu-targets": Suite(
        "CPU: only the two target rows (T=8192 H4 K=V=64; T=2048 H32 K=V=128), chunk vs peer",
        "cpu",
        _grid((8192,), 4, 64) + _grid((2048,), 32, 128),
        ("peer", "chunk", "chunk-c32"),
    ),
    "tiny": Suite(
        "smoke test: tiny shapes, every CPU method, one training row (used by the tests)",
        "cpu",
        _grid((40, 100), 2, 16) + (Shape(1, 40, 2, 16, 16, train=True),),
        (*CPU_METHODS, "chunk_pytorch"),
    ),
    "gpu": Suite(
        "CUDA, K=V=128: kdalib's Triton forward, chunk (chunk_kda as routed: the Triton forward), the PyTorch "
        "chunk form, flash-linear-attention's chunk_kda and flash SDPA at B8 T4096, B2 T16384, B1 T65536 "
        "(H32) and B1 T8192 H96 with six packed sequences, each with the mild, Kimi and bounded gates, "
        "B1 T2K-32K in bf16 and fp32; decode steps at B in {1, 64}; forward+backward (train rows) at "
        "B8 T4096, B2 T16384, B1 T65536 in bf16 with every gate",
        "cuda",
        with_gates(PREFILL_SHAPES)
        + _grid((2048, 8192, 32768), 32, 128, "bfloat16")
        + _grid((2048, 8192, 32768), 32, 128, "float32")
        + (Shape(1, 1, 32, 128, 128, "bfloat16", True), Shape(64, 1, 32, 128, 128, "bfloat16", True))
        + with_gates(TRAIN_SHAPES),
        ("triton", "chunk", "chunk_pytorch", "fla", "sdpa_flash", "fused_recurrent", "fla_fused_recurrent"),
    ),
    "gpu-prefill": Suite(
        "CUDA, bf16, K=V=128: only the prefill rows held to the forward's targets (B8 T4096, B2 T16384, "
        "B1 T65536 at H32; B1 T8192 H96 packed), each with the mild, Kimi and bounded gates: kdalib's "
        "Triton forward against flash-linear-attention's chunk_kda",
        "cuda",
        with_gates(PREFILL_SHAPES),
        ("triton", "fla"),
    ),
    "gpu-serving": Suite(
        "CUDA, H32 K=V=128, bf16: the verify step of speculative decoding (k = 4 and 8 draft tokens at B1 and "
        "B64: one call keeping every state vs k single steps) and kdalib's Triton forward with and without the "
        "states every 64 tokens (B1 T32768, B8 T4096)",
        "cuda",
        SERVING_SHAPES,
        ("triton", "triton_states64", *VERIFY_METHODS),
    ),
    "gpu-train": Suite(
        "CUDA, H32 K=V=128, bf16: only the gpu suite's forward+backward rows (B8 T4096, B2 T16384, B1 T65536) "
        "with every gate: kdalib's Triton training path, the PyTorch chunk form, flash-linear-attention and "
        "flash SDPA",
        "cuda",
        with_gates(TRAIN_SHAPES),
        TRAIN_METHODS,
    ),
}


def applies(method: str, shape: Shape) -> bool:
    """Verify rows time the verify methods, decode rows the decoding operators, train rows the
    training methods; prefill rows time the rest, with the token-by-token form in float32 only and
    the Triton/flash comparisons in half precision only; softmax attention and the PyTorch chunk
    form on unpacked mild-gate rows only."""
    if shape.verify or method in VERIFY_METHODS:
        return shape.verify and method in VERIFY_METHODS
    if method in MILD_ONLY_METHODS and (shape.gate != "mild" or shape.packed):
        return False
    if shape.train:
        return method in TRAIN_METHODS
    if shape.decode:
        return method in DECODE_METHODS
    if method in DECODE_METHODS:
        return method == "fused_recurrent" and shape.dtype == "float32"
    return not (method in HALF_PRECISION_METHODS and shape.dtype == "float32")

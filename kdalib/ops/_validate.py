"""Input checks shared by every KDA operator.

One function, :func:`validate_kda_inputs`, checks the whole argument set of
``naive_recurrent_kda``, ``chunk_kda``, ``fused_recurrent_kda`` and ``kda`` and
returns the problem sizes. Packed-sequence offsets are checked by :func:`validate_cu_seqlens`,
which reads them to the host once and returns them as :class:`PackedSequences`: a caller that
validated its offsets (the layer) passes that object on as ``cu_seqlens`` and nothing reads
them again. Every failure is a ``ValueError`` that names the
argument and the shape or dtype that was expected, because silently broadcasting
a wrong shape in a recurrence produces plausible-looking garbage.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

VALID_CHUNK_SIZES = (16, 32, 64)

# Dtypes the boundary states of ``output_states_every`` may be returned in.
STATE_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


@dataclass(frozen=True)
class PackedSequences:
    """Validated offsets of N sequences packed into one row.

    Attributes:
        cu_seqlens: ``[N + 1]`` the offsets as given (on the inputs' device).
        offsets: the same values on the host (read once, by :func:`validate_cu_seqlens`).
    """

    cu_seqlens: torch.Tensor
    offsets: tuple[int, ...]

    @property
    def num_sequences(self) -> int:
        """N."""
        return len(self.offsets) - 1

    @property
    def max_length(self) -> int:
        """Tokens of the longest sequence."""
        return max(b - a for a, b in zip(self.offsets, self.offsets[1:]))


@dataclass(frozen=True)
class KDAShapes:
    """Sizes of one validated KDA call.

    Attributes:
        batch: B, the leading dimension of every input.
        tokens: T, tokens per batch row (the packed length when ``cu_seqlens`` is given).
        heads: H, query/key heads.
        value_heads: HV, value heads (a multiple of H).
        key_dim: K, query/key head dimension.
        value_dim: V, value head dimension.
        num_sequences: N, sequences (B, or ``len(cu_seqlens) - 1`` when packed).
        sequences: the validated packed offsets, or None for B sequences of T tokens.
    """

    batch: int
    tokens: int
    heads: int
    value_heads: int
    key_dim: int
    value_dim: int
    num_sequences: int
    sequences: PackedSequences | None = None

    @property
    def cu_seqlens(self) -> torch.Tensor | None:
        """The ``[N + 1]`` offsets tensor, or None when unpacked."""
        return None if self.sequences is None else self.sequences.cu_seqlens

    @property
    def group_size(self) -> int:
        """G = HV / H: value heads that share one query/key head."""
        return self.value_heads // self.heads


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _check_floating(name: str, tensor: torch.Tensor) -> None:
    _expect(isinstance(tensor, torch.Tensor), f"{name}: expected a torch.Tensor, got {type(tensor).__name__}")
    _expect(
        tensor.is_floating_point(),
        f"{name}: expected a floating-point tensor (float16, bfloat16, float32 or float64), got {tensor.dtype}",
    )


def _check_shape(name: str, tensor: torch.Tensor, expected: tuple[int, ...], labels: str) -> None:
    _expect(
        tuple(tensor.shape) == expected,
        f"{name}: expected shape {labels} = {list(expected)}, got {list(tensor.shape)}",
    )


def check_offsets_tensor(cu_seqlens) -> None:
    """Checks that ``cu_seqlens`` is a ``[N + 1]`` integer tensor with N >= 1, without reading it.

    Raises:
        ValueError: naming ``cu_seqlens`` and what was expected.
    """
    _expect(isinstance(cu_seqlens, torch.Tensor), "cu_seqlens: expected a 1-D integer torch.Tensor [N + 1]")
    _expect(
        not cu_seqlens.is_floating_point() and not cu_seqlens.is_complex() and cu_seqlens.dtype != torch.bool,
        f"cu_seqlens: expected an integer tensor (int32 or int64), got {cu_seqlens.dtype}",
    )
    _expect(
        cu_seqlens.dim() == 1 and cu_seqlens.numel() >= 2,
        f"cu_seqlens: expected shape [N + 1] with N >= 1, got {list(cu_seqlens.shape)}",
    )


def check_initial_state(
    initial_state, num_sequences: int | None, value_heads: int, key_dim: int, value_dim: int, device: torch.device
) -> None:
    """Checks an initial state: a floating ``[N, HV, K, V]`` tensor on ``device``.

    Args:
        num_sequences: N, or None where the caller checks N itself (a context-parallel rank, whose
            N is that of the whole stream).

    Raises:
        ValueError: naming ``initial_state`` and the expected shape.
    """
    _check_floating("initial_state", initial_state)
    expected = (num_sequences, value_heads, key_dim, value_dim)
    _expect(
        initial_state.dim() == 4 and all(e is None or n == e for n, e in zip(initial_state.shape, expected)),
        f"initial_state: expected shape [N, HV, K, V] = [{', '.join('N' if e is None else str(e) for e in expected)}], "
        f"got {list(initial_state.shape)}",
    )
    _expect(initial_state.device == device, f"initial_state: expected device {device}, got {initial_state.device}")


def validate_cu_seqlens(
    cu_seqlens: torch.Tensor | PackedSequences, batch: int, tokens: int, device: torch.device | None = None
) -> PackedSequences:
    """Checks packed-sequence offsets and returns them validated.

    Args:
        cu_seqlens: ``[N + 1]`` integer offsets, starting at 0, strictly increasing, ending at T;
            or offsets validated before (:class:`PackedSequences`), which are only checked
            against ``batch``, ``tokens`` and ``device``, without reading them again.
        batch: B of the inputs; packed input must have B == 1.
        tokens: T of the inputs.
        device: the inputs' device, which the offsets must be on (None: not checked).

    Returns:
        The :class:`PackedSequences`.

    Raises:
        ValueError: naming ``cu_seqlens`` and what was expected.
    """
    if isinstance(cu_seqlens, PackedSequences):
        _expect(batch == 1, f"cu_seqlens: packed sequences need batch size B = 1, got B = {batch}")
        _expect(
            cu_seqlens.offsets[-1] == tokens,
            f"cu_seqlens: expected to end at T = {tokens}, got {cu_seqlens.offsets[-1]}",
        )
        _expect(
            device is None or cu_seqlens.cu_seqlens.device == torch.device(device),
            f"cu_seqlens: expected device {device} (the inputs' device), got {cu_seqlens.cu_seqlens.device}",
        )
        return cu_seqlens
    check_offsets_tensor(cu_seqlens)
    _expect(batch == 1, f"cu_seqlens: packed sequences need batch size B = 1, got B = {batch}")
    _expect(
        device is None or cu_seqlens.device == torch.device(device),
        f"cu_seqlens: expected device {device} (the inputs' device), got {cu_seqlens.device}",
    )
    offsets = cu_seqlens.tolist()
    _expect(offsets[0] == 0, f"cu_seqlens: expected to start at 0, got {offsets[0]}")
    _expect(offsets[-1] == tokens, f"cu_seqlens: expected to end at T = {tokens}, got {offsets[-1]}")
    _expect(
        all(b > a for a, b in zip(offsets, offsets[1:])),
        f"cu_seqlens: expected strictly increasing offsets, got {offsets}",
    )
    return PackedSequences(cu_seqlens, tuple(offsets))


def validate_kda_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | PackedSequences | None = None,
    chunk_size: int | None = None,
) -> KDAShapes:
    """Checks the arguments of a KDA operator and returns its sizes.

    Args:
        q: ``[B, T, H, K]`` queries.
        k: ``[B, T, H, K]`` keys.
        v: ``[B, T, HV, V]`` values, HV a multiple of H.
        g: ``[B, T, HV, K]`` log-space decay (a positive value acts as 0 in every form).
        beta: ``[B, T, HV]`` delta-rule step sizes.
        scale: query scale; must be a finite number when given.
        initial_state: ``[N, HV, K, V]`` floating state, N = B or the number of packed sequences.
        cu_seqlens: ``[N + 1]`` integer offsets of packed sequences (B must be 1), or the
            :class:`PackedSequences` of :func:`validate_cu_seqlens`.
        chunk_size: chunk length for the chunked form; one of 16, 32, 64.

    Returns:
        The validated :class:`KDAShapes`.

    Raises:
        ValueError: naming the offending argument and the expected shape or dtype.
    """
    for name, tensor in (("q", q), ("k", k), ("v", v), ("g", g), ("beta", beta)):
        _check_floating(name, tensor)
    _expect(q.dim() == 4, f"q: expected shape [B, T, H, K], got {list(q.shape)}")
    batch, tokens, heads, key_dim = q.shape
    _expect(v.dim() == 4, f"v: expected shape [B, T, HV, V], got {list(v.shape)}")
    _expect(
        batch > 0 and tokens > 0 and heads > 0 and key_dim > 0,
        f"q: expected B, T, H and K to be positive in [B, T, H, K], got {list(q.shape)}",
    )
    value_heads, value_dim = v.shape[2], v.shape[3]
    _check_shape("k", k, (batch, tokens, heads, key_dim), "[B, T, H, K]")
    _check_shape("v", v, (batch, tokens, value_heads, value_dim), "[B, T, HV, V]")
    _expect(
        value_heads > 0 and value_heads % heads == 0,
        f"v: expected HV (dim 2) to be a positive multiple of H = {heads}, got HV = {value_heads}",
    )
    _expect(value_dim > 0, f"v: expected V (dim 3) to be positive, got {list(v.shape)}")
    _check_shape("g", g, (batch, tokens, value_heads, key_dim), "[B, T, HV, K]")
    _check_shape("beta", beta, (batch, tokens, value_heads), "[B, T, HV]")
    devices = {t.device for t in (q, k, v, g, beta)}
    _expect(len(devices) == 1, f"q, k, v, g, beta: expected one device, got {sorted(map(str, devices))}")

    sequences = None if cu_seqlens is None else validate_cu_seqlens(cu_seqlens, batch, tokens, q.device)
    num_sequences = batch if sequences is None else sequences.num_sequences
    if initial_state is not None:
        check_initial_state(initial_state, num_sequences, value_heads, key_dim, value_dim, q.device)
    if scale is not None:
        _expect(
            isinstance(scale, (int, float))
            and not isinstance(scale, bool)
            and float(scale) == float(scale)
            and abs(float(scale)) != float("inf"),
            f"scale: expected a finite number, got {scale!r}",
        )
    if chunk_size is not None:
        _expect(
            type(chunk_size) is int and chunk_size in VALID_CHUNK_SIZES,
            f"chunk_size: expected one of {VALID_CHUNK_SIZES}, got {chunk_size!r}",
        )
    return KDAShapes(batch, tokens, heads, value_heads, key_dim, value_dim, num_sequences, sequences)


@dataclass(frozen=True)
class KDACall:
    """One validated operator call, as the implementations below the entry points take it.

    Attributes:
        q, k, v, g, beta, initial_state: the inputs as given (shapes in :func:`validate_kda_inputs`).
        shapes: their sizes and the validated packed offsets.
        scale: the query scale (``K ** -0.5`` when none was given).
        output_final_state: return the state after the last token.
        use_qk_l2norm: L2-normalise q and k per head before use.
        states_every: return the state after every ``states_every``-th token of each sequence
            (:func:`validate_states_request`), or None.
        states_dtype: the dtype of those states (None: the final state's).
    """

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    g: torch.Tensor
    beta: torch.Tensor
    initial_state: torch.Tensor | None
    shapes: KDAShapes
    scale: float
    output_final_state: bool
    use_qk_l2norm: bool
    states_every: int | None = None
    states_dtype: torch.dtype | None = None

    @property
    def tensors(self) -> tuple[torch.Tensor | None, ...]:
        """``(q, k, v, g, beta, initial_state)``."""
        return self.q, self.k, self.v, self.g, self.beta, self.initial_state


def validate_states_request(
    output_states_every, states_dtype, multiple_of: int
) -> tuple[int | None, torch.dtype | None]:
    """Checks a request for the states at token boundaries inside a call (notes/kda.md, section
    ``kda-serving``).

    Args:
        output_states_every: None, or N, a positive int multiple of ``multiple_of``: the states
            after tokens N, 2N, ... of every sequence are returned.
        states_dtype: their dtype, one of :data:`STATE_DTYPES`, or None for the final state's
            (:func:`kdalib.ops.compute_dtype`).
        multiple_of: what N must be a multiple of (the chunk size of a chunked form, 1 for the
            recurrent form).

    Returns:
        ``(N, states_dtype)``, or ``(None, None)`` when no states are asked for.

    Raises:
        ValueError: naming ``output_states_every`` or ``states_dtype``.
    """
    if output_states_every is None:
        _expect(states_dtype is None, "states_dtype: only meaningful with output_states_every")
        return None, None
    _expect(
        type(output_states_every) is int and output_states_every > 0 and output_states_every % multiple_of == 0,
        f"output_states_every: expected a positive int multiple of {multiple_of}"
        f"{' (the chunk size)' if multiple_of > 1 else ''}, got {output_states_every!r}",
    )
    _expect(
        states_dtype is None or states_dtype in STATE_DTYPES,
        f"states_dtype: expected one of {[str(d) for d in STATE_DTYPES]}, got {states_dtype!r}",
    )
    return output_states_every, states_dtype


def boundary_counts(shapes: KDAShapes, every: int) -> tuple[int, ...]:
    """States per sequence at every ``every``-th token boundary: ``floor(length / every)`` each."""
    if shapes.sequences is None:
        return (shapes.tokens // every,) * shapes.num_sequences
    offsets = shapes.sequences.offsets
    return tuple((b - a) // every for a, b in zip(offsets, offsets[1:]))


def validate_call(
    q,
    k,
    v,
    g,
    beta,
    scale,
    initial_state,
    output_final_state,
    use_qk_l2norm_in_kernel,
    cu_seqlens,
    chunk_size=None,
    output_states_every=None,
    states_dtype=None,
    states_multiple: int = 1,
) -> KDACall:
    """:func:`validate_kda_inputs` and :func:`validate_states_request` (N a multiple of
    ``states_multiple``), and the call's arguments bundled as a :class:`KDACall`."""
    shapes = validate_kda_inputs(q, k, v, g, beta, scale, initial_state, cu_seqlens, chunk_size)
    scale = shapes.key_dim**-0.5 if scale is None else scale
    every, dtype = validate_states_request(output_states_every, states_dtype, states_multiple)
    return KDACall(
        q, k, v, g, beta, initial_state, shapes, scale, output_final_state, use_qk_l2norm_in_kernel, every, dtype
    )

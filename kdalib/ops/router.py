"""Which implementation runs a KDA call: the routing rule of kdalib.ops, in one place.

The chunk form and the recurrent form each have a PyTorch implementation, which runs on every
device and dtype with autograd (:mod:`kdalib.ops.chunk`, :mod:`kdalib.ops.recurrent`), and Triton
kernels for CUDA (:mod:`kdalib.ops.triton`), listed in :data:`TRITON_PATHS`. :func:`triton_path`
picks between them for :func:`chunk_kda`, :func:`fused_recurrent_kda` and
``kda(backend="triton")``, with one rule:

1. ``use_triton=False``, or automatic (``None``) on tensors that are not on CUDA: PyTorch.
2. The Triton path for the form and for whether the call needs gradients; where there is none
   (the recurrent form's gradients) or it cannot serve the tensors
   (:func:`kdalib.ops.triton.triton_unavailable_reason`: no triton, device, dtype, K): PyTorch,
   or a ``RuntimeError`` saying why when ``use_triton=True``.
3. Automatic routing takes the path only for the input dtypes in its ``automatic`` list, and
   never when a float64 state is given (float64 stays exact in PyTorch).

Both entry points validate their inputs once, here, and pass the validated call
(:class:`~kdalib.ops._validate.KDACall`) down; :func:`kdalib.ops.kda` validates and calls
:func:`run_chunk` / :func:`run_recurrent` directly.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import torch

from kdalib.ops._prepare import needs_grad
from kdalib.ops._validate import VALID_CHUNK_SIZES, KDACall, PackedSequences, validate_call
from kdalib.ops.chunk import chunk_kda_pytorch
from kdalib.ops.gate import check_gate_parameters, kda_gate
from kdalib.ops.recurrent import fused_recurrent_pytorch
from kdalib.ops.triton import (
    MAX_KEY_DIM,
    triton_chunk_kda,
    triton_chunk_training,
    triton_fused_recurrent_kda,
    triton_unavailable_reason,
)
from kdalib.ops.triton.runtime import CHUNK, KERNEL_DTYPES


@dataclass(frozen=True)
class TritonPath:
    """One Triton implementation of a form.

    Attributes:
        name: ``"forward"`` (:func:`~kdalib.ops.triton.triton_chunk_kda`), ``"training"``
            (:func:`~kdalib.ops.triton.triton_chunk_training`) or ``"recurrent"``
            (:func:`~kdalib.ops.triton.triton_fused_recurrent_kda`).
        form: ``"chunk"`` or ``"recurrent"``.
        gradients: True for the path of calls that need gradients.
        automatic: q, k, v dtypes for which automatic routing takes it on CUDA.
        max_key_dim: the kernels' limit on K (None: none).
    """

    name: str
    form: str
    gradients: bool
    automatic: tuple[torch.dtype, ...]
    max_key_dim: int | None = None


# Every kernel dtype takes the Triton forward on CUDA: float32 with tf32x3 products stays within
# 4e-7 of float64 (the 1e-5 float32 bar) and takes a quarter to a half of the PyTorch chunk form's
# time (kdalib/ops/triton/NOTES.md, "Float32").
TRITON_PATHS = (
    TritonPath("forward", "chunk", gradients=False, automatic=KERNEL_DTYPES, max_key_dim=MAX_KEY_DIM),
    TritonPath("training", "chunk", gradients=True, automatic=KERNEL_DTYPES, max_key_dim=MAX_KEY_DIM),
    TritonPath("recurrent", "recurrent", gradients=False, automatic=KERNEL_DTYPES),
)


def _triton_path_or_reason(
    form, q, k, v, g, beta, initial_state, states_every=None
) -> tuple[TritonPath | None, str | None]:
    gradients = needs_grad(q, k, v, g, beta, initial_state)
    path = next((p for p in TRITON_PATHS if p.form == form and p.gradients == gradients), None)
    if path is None:
        return None, f"no Triton kernel computes the {form} form's gradients"
    if states_every is not None and path.gradients:
        return path, "the Triton training path returns no boundary states (output_states_every)"
    if states_every is not None and form == "chunk" and states_every % CHUNK:
        return (
            path,
            f"the Triton chunk kernels keep states every {CHUNK} tokens, got output_states_every={states_every}",
        )
    return path, triton_unavailable_reason(q, k, v, g, beta, initial_state, path.max_key_dim)


def triton_unavailable(form: str, q, k, v, g, beta, initial_state=None) -> str | None:
    """Why no Triton path of ``form`` (``"chunk"`` or ``"recurrent"``) can serve this call, or None."""
    return _triton_path_or_reason(form, q, k, v, g, beta, initial_state)[1]


def triton_path(
    form: str, q, k, v, g, beta, initial_state=None, use_triton: bool | None = None, states_every: int | None = None
) -> TritonPath | None:
    """The Triton path that runs this call of ``form``, or None for the PyTorch form (the rule above;
    a call asking for boundary states, ``states_every``, also needs a path that returns them).

    Raises:
        RuntimeError: ``use_triton=True`` and no Triton path can serve the call.
    """
    if use_triton is False or (use_triton is None and not q.is_cuda):
        return None
    path, reason = _triton_path_or_reason(form, q, k, v, g, beta, initial_state, states_every)
    if reason is not None:
        if use_triton:
            raise RuntimeError(f"use_triton=True: {reason}")
        return None
    if use_triton:
        return path
    float64_state = initial_state is not None and initial_state.dtype == torch.float64
    return path if all(t.dtype in path.automatic for t in (q, k, v)) and not float64_state else None


def run_chunk(call: KDACall, chunk_size: int = 64, use_triton: bool | None = None, gate: tuple | None = None):
    """:func:`chunk_kda` on a validated call; ``gate``: ``(A_log, dt_bias, lower_bound)`` when the
    Triton path computes the gate from the raw projection ``call.g`` (callers check it takes one:
    the training path always, the forward when A_log and dt_bias need no gradient)."""
    path = triton_path("chunk", *call.tensors, use_triton, call.states_every)
    if path is None:
        return chunk_kda_pytorch(call, chunk_size)
    if path.gradients:
        return triton_chunk_training(call, chunk_size, gate)
    sequences = call.shapes.sequences
    return triton_chunk_kda(
        *call.tensors[:5],
        call.scale,
        call.initial_state,
        call.output_final_state,
        call.use_qk_l2norm,
        call.shapes.cu_seqlens,
        offsets=None if sequences is None else sequences.offsets,
        **_states_request(call),
        **({} if gate is None else dict(zip(("A_log", "dt_bias", "lower_bound"), gate))),
    )


def _states_request(call: KDACall) -> dict:
    """The boundary-state arguments of the Triton entry points for ``call`` (none when it asks for none)."""
    if call.states_every is None:
        return {}
    return dict(states_every=call.states_every, states_dtype=call.states_dtype or torch.float32)


def run_recurrent(call: KDACall):
    """:func:`fused_recurrent_kda` on a validated call."""
    if triton_path("recurrent", *call.tensors, states_every=call.states_every) is None:
        return fused_recurrent_pytorch(call)
    return triton_fused_recurrent_kda(
        *call.tensors[:5],
        call.scale,
        call.initial_state,
        call.output_final_state,
        call.use_qk_l2norm,
        call.shapes.cu_seqlens,
        **_states_request(call),
    )


def chunk_kda(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    cu_seqlens: torch.Tensor | PackedSequences | None = None,
    chunk_size: int = 64,
    use_triton: bool | None = None,
    output_states_every: int | None = None,
    states_dtype: torch.dtype | None = None,
    *,
    A_log: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    lower_bound: float | None = None,
):
    """Kimi Delta Attention in chunkwise-parallel form (differentiable).

    Args:
        q: ``[B, T, H, K]`` queries.
        k: ``[B, T, H, K]`` keys.
        v: ``[B, T, HV, V]`` values; value head ``hv`` reads q/k head ``hv // (HV // H)``.
        g: ``[B, T, HV, K]`` log-space decay per key channel; a positive value acts as 0 (notes/kda.md, section ``kda-contract``).
        beta: ``[B, T, HV]`` delta-rule step sizes.
        scale: query scale, default ``K ** -0.5``.
        initial_state: ``[N, HV, K, V]`` state before the first token (zeros if None).
        output_final_state: also return the ``[N, HV, K, V]`` state after the last token.
        use_qk_l2norm_in_kernel: L2-normalise q and k per head before use.
        cu_seqlens: ``[N + 1]`` offsets of packed sequences in a B = 1 batch (or the
            :class:`~kdalib.ops.PackedSequences` that :func:`~kdalib.ops.validate_cu_seqlens` returned).
        chunk_size: C, one of 16, 32, 64. T need not be a multiple of C.
        use_triton: None (default) picks as :func:`triton_path` says: the Triton forward kernels
            for CUDA inference in bfloat16, float16 and float32 (float32 with tf32x3 products;
            chunks of 64 whatever ``chunk_size`` says), the
            Triton training path for CUDA training (:mod:`kdalib.ops.triton.training`: the same
            forward kernels and a Triton backward for 16-bit inputs, the Triton scan for float32
            ones), the PyTorch form otherwise. True
            forces the Triton path (a clear error where it cannot run), False the PyTorch form.
        output_states_every: N, a multiple of ``chunk_size`` (of 64 on the Triton forward), to
            also return the state after tokens N, 2N, ... of every sequence (prefix caching,
            notes/kda.md, section ``kda-serving``): passing one as ``initial_state`` of the rest of
            the sequence reproduces the rest of the one call. The Triton forward writes them from
            its float32 state at no cost to a call without them. Gradients flow through them in
            the PyTorch form; the Triton training path returns none, so automatic routing takes
            the PyTorch form for such calls.
        states_dtype: the dtype of those states: float32 (the default; float64 for float64 inputs),
            bfloat16, float16 or float64. Resuming is exact from float32 states (float64 ones for
            float64 inputs); a 16-bit state is rounded.
        A_log, dt_bias, lower_bound: when ``A_log`` is given, ``g`` is the raw gate projection and
            the log decay is :func:`~kdalib.ops.kda_gate` ``(g, A_log, dt_bias, lower_bound)``
            (notes/kda.md, section ``kda-gate``): computed inside the Triton kernels (the forward,
            and for 16-bit inputs the training path's backward too), else in PyTorch before the
            chunk form (gradients reach ``g``, ``A_log`` and ``dt_bias``).

    Returns:
        ``(o, final_state)``: o ``[B, T, HV, V]`` in v's dtype; final_state float64 for
        float64 inputs, float32 otherwise (including bfloat16/float16), or None. With
        ``output_states_every``, ``(o, final_state, states)``: states ``[S, HV, K, V]``,
        sequence-major, sequence n contributing ``length_n // N`` rows in token order (for
        unpacked input ``states.view(B, T // N, HV, K, V)``).

    Warns:
        UserWarning: unpacked inputs with more than one token but fewer tokens than heads, which
            is what ``[B, H, T, K]`` inputs passed as ``[B, T, H, K]`` look like.

    Raises:
        ValueError: on inconsistent shapes, dtypes, offsets or chunk size, gate parameters
            (``dt_bias`` or ``lower_bound`` without ``A_log``; shapes as :func:`kda_gate` checks),
            an ``output_states_every`` that is not a positive multiple of ``chunk_size``, or a
            ``states_dtype`` that is not a floating dtype of the list above.
        RuntimeError: ``use_triton=True`` where the Triton kernels cannot run (including
            boundary states with gradients, or an N that is not a multiple of 64).
    """
    call = validate_call(
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
        chunk_size,
        output_states_every,
        states_dtype,
        states_multiple=chunk_size if chunk_size in VALID_CHUNK_SIZES else 1,
    )
    warn_if_head_first(call)
    if A_log is None:
        if dt_bias is not None or lower_bound is not None:
            raise ValueError("A_log: the gate's dt_bias and lower_bound need A_log (g is then the raw projection)")
        return run_chunk(call, chunk_size, use_triton)
    check_gate_parameters(g, A_log, dt_bias, lower_bound)
    gate = (A_log, dt_bias, lower_bound)
    path = triton_path("chunk", *call.tensors, use_triton, call.states_every)
    if path is not None and (path.gradients or not needs_grad(A_log, dt_bias)):
        return run_chunk(call, chunk_size, use_triton, gate=gate)
    gated = replace(call, g=kda_gate(g, A_log, dt_bias, lower_bound))
    return run_chunk(gated, chunk_size, use_triton)


def warn_if_head_first(call: KDACall) -> None:
    """Warns when unpacked inputs look like ``[B, H, T, K]`` passed as ``[B, T, H, K]`` (more than
    one token but fewer tokens than heads, the check flash-linear-attention's ``chunk_kda`` makes;
    a single token is a decoding step): the operators would run without complaint and return the
    wrong thing."""
    shapes = call.shapes
    if shapes.sequences is None and 1 < shapes.tokens < shapes.heads:
        warnings.warn(
            f"chunk_kda: q has T = {shapes.tokens} tokens and H = {shapes.heads} heads in [B, T, H, K]; "
            "if it is [B, H, T, K], pass q.transpose(1, 2) (and the same for k, v, g, beta)",
            UserWarning,
            stacklevel=3,
        )


def fused_recurrent_kda(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    cu_seqlens: torch.Tensor | PackedSequences | None = None,
    output_states_every: int | None = None,
    states_dtype: torch.dtype | None = None,
):
    """Kimi Delta Attention token by token, all sequences at once (differentiable).

    On CUDA, without gradients and in float16, bfloat16 or float32, the Triton decoding kernel
    runs (:func:`triton_path`); otherwise the PyTorch token loop.

    Args:
        q, k, v, g, beta, scale, output_final_state, use_qk_l2norm_in_kernel, cu_seqlens: as in
            :func:`chunk_kda`.
        initial_state: ``[N, HV, K, V]`` cached state (zeros if None).
        output_states_every: N >= 1 to also return the state after tokens N, 2N, ... of every
            sequence. With N = 1 this is the verify step of speculative decoding
            (notes/kda.md, section ``kda-serving``): k draft tokens in one call give their k
            outputs and the k states, and the state after an accepted prefix of a tokens is
            ``states[a - 1]`` of that sequence (the ``initial_state`` for a = 0).
        states_dtype: their dtype, as in :func:`chunk_kda`.

    Returns:
        ``(o, final_state)``: o ``[B, T, HV, V]`` in v's dtype; final_state float64 for
        float64 inputs, float32 otherwise, or None. With ``output_states_every``, also the
        ``[S, HV, K, V]`` states, laid out as in :func:`chunk_kda` (unpacked:
        ``states.view(B, T // N, HV, K, V)``).

    Raises:
        ValueError: on inconsistent shapes, dtypes or offsets, an ``output_states_every`` that
            is not a positive int, or a ``states_dtype`` outside those :func:`chunk_kda` lists.
    """
    call = validate_call(
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
        output_states_every=output_states_every,
        states_dtype=states_dtype,
    )
    return run_recurrent(call)

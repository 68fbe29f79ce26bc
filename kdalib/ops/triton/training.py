"""The chunk form's training path with Triton (notes/kda.md, sections ``kda-chunkwise`` and
``kda-chunk-backward``).

16-bit inputs run in the token layout of the user's tensors end to end (:class:`_ChunkKDA`):

* forward: the inference forward's kernels (:func:`kdalib.ops.triton.chunk.triton_chunk_kda`,
  with the in-kernel L2 norm, GVA and packed sequences), which also hand over the state entering
  every chunk (bfloat16), the chunk-local scores, the inverse and ``A_kk`` that it computed, and,
  with bfloat16 inputs, its terms ``W``, ``K_out``, ``Q_in`` (bfloat16), ``V_new`` and
  ``exp(G_L)`` in the token layout. Autograd keeps the inputs as given, those states, scores and
  terms (``keep_terms=False``: not the terms; ``keep_scores=False``: the inputs and the states
  only).
* backward, three kernels (four without kept terms): with the terms kept, no chunk-local work again;
  without them, the chunk-local terms again from the kept scores, in the chunk layout
  ``[chunks, HV, 64, *]`` (without the scores, those too) (:mod:`~kdalib.ops.triton.prefill_local`);
  the reverse pass over chunks, which carries only ``dS``
  (:func:`~kdalib.ops.triton.backward_states._states_backward_kernel`); the chunk-parallel
  gradients of the terms (:func:`~kdalib.ops.triton.backward_states._chunk_grads_kernel`, reading
  the kept ``V_new`` or forming it again); the chunk-local backward with the L2 norm's and the gate
  clamp's backward in its epilogue (:mod:`~kdalib.ops.triton.backward_local`; three launches by
  default, or one with ``local_backward_warps`` a number). With shared key heads (GVA) one
  reduction sums dq and dk over the value heads of a group.

Float32 inputs keep the chunk form's layout (:func:`kdalib.ops.chunk.chunk_rows`), the PyTorch
chunk-local terms under autograd and the Triton scan with its backward
(:func:`kdalib.ops.triton.chunk_scan.triton_chunk_scan`), until the float32 GPU grid has run
through the kernels above (kdalib/ops/triton/NOTES.md, "Float32").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
import triton

from kdalib.ops._validate import KDACall
from kdalib.ops.chunk import chunk_local_terms, chunk_rows, from_chunk_rows
from kdalib.ops.gate import kda_gate
from kdalib.ops.triton.backward_local import _local_backward_kernel
from kdalib.ops.triton.backward_states import _chunk_grads_kernel, _states_backward_kernel
from kdalib.ops.triton.chunk import ChunkTable, launch_chunk_local, triton_chunk_kda
from kdalib.ops.triton.chunk_scan import triton_chunk_scan
from kdalib.ops.triton.runtime import (
    CHUNK,
    DOT_SPAN,
    FLOAT64_GATE_FLOOR,
    GATE_FLOOR,
    HALF_DTYPES,
    SUB,
    compute_dtype,
    gate_form,
    interpreting,
)


def chunk_kda_backward(
    inputs: Sequence[torch.Tensor],
    states: torch.Tensor,
    d_out: torch.Tensor | None,
    d_final: torch.Tensor | None,
    table: ChunkTable,
    scale: float,
    cu_seqlens: torch.Tensor | None,
    use_qk_l2norm: bool,
    initial_grad: bool,
    precision: str,
    gate: tuple = (None, None, None),
    local_backward_warps: int | tuple[int, int, int] = (8, 4, 4),
    chunk_grads_launch: tuple[int, int, int] | None = None,
    narrow_key_terms: bool = True,
    local_scores: tuple | None = None,
    local_terms: tuple | None = None,
):
    """Gradients of the chunked KDA forward, in Triton, from the state entering every chunk.

    Args:
        inputs: ``(q, k, v, g, beta)`` in the token layout, contiguous (q, k ``[B, T, H, K]``,
            v ``[B, T, HV, V]``, g ``[B, T, HV, K]`` the log decay, beta ``[B, T, HV]``).
        states: ``[chunks, HV, K, V]`` the state entering each chunk of ``table`` (any float dtype).
        d_out: ``[B, T, HV, V]`` gradient of the output, or None for zeros.
        d_final: ``[N, HV, K, V]`` gradient of the final state, or None for zeros.
        table: where the chunks are (:class:`~kdalib.ops.triton.chunk.ChunkTable`).
        scale, cu_seqlens, use_qk_l2norm: as the forward had them.
        initial_grad: also return the initial state's gradient.
        precision: matrix-product input precision (``ieee`` or ``tf32``).
        gate: ``(A_log, dt_bias, lower_bound)`` when g is the raw gate projection that the forward
            turned into the log decay in its kernel (``A_log`` None: g is the log decay).
        local_backward_warps: the chunk-local backward (:mod:`~kdalib.ops.triton.backward_local`)
            as one launch with that many warps, or as three launches with a warps each (its
            stages: the UT transform and the decayed terms; the scores' gradients, one program per
            16-row block; the epilogue; the default, 8, 4 and 4 warps, measured fastest in NOTES.md).
        chunk_grads_launch: ``(value columns per step, warps, pipeline stages)`` of the
            chunk-gradient kernel (:func:`~kdalib.ops.triton.backward_states._chunk_grads_kernel`),
            which walks the value columns in steps of that many (a power of two of at least 16);
            with more than one stage (only at the head sizes of :func:`pipelined_grads_heads` for
            the kernel's form: reading the kept ``V_new`` with ``local_terms``, forming it
            otherwise), each step's loads are issued while the previous step multiplies. None (the
            default): :func:`chunk_grads_launch_for` of the head sizes and that form.
        narrow_key_terms: with bfloat16 inputs (the default), recompute ``W``, ``K_out`` and
            ``Q_in`` in bfloat16 (the forward's state pass reads them so) and widen them in the
            kernels that read them: the reverse pass over chunks loads half the bytes per step
            (1.96 ms against 4.33 with float32 terms on the H100 at B2 T16384, NOTES.md, training
            v4.5); their gradients then take buffers of their own. False keeps them float32.
        local_scores: ``(scores, inverse, A_kk, norms)`` as the forward kept them
            (:func:`~kdalib.ops.triton.chunk.triton_chunk_kda` with ``keep_local_scores``): only the
            terms are computed again, and these buffers then hold gradients (the call consumes
            them). None: everything chunk-local is computed again.
        local_terms: ``(W, K_out, Q_in, V_new, exp(G_L))`` as the forward kept them
            (:func:`~kdalib.ops.triton.chunk.triton_chunk_kda` with ``keep_local_terms``, the token
            layout), with ``local_scores`` and bfloat16 terms: no chunk-local term is computed
            again, and the chunk gradients read ``V_new`` instead of forming ``U - W S`` (the call
            consumes them too). None: the terms are computed again.

    Returns:
        ``(dq, dk, dv, dg, dbeta, d_initial | None, dA_log | None, ddt_bias | None)``: dq and dk
        float32 (summed over the value heads of a group) with shared key heads, else in the
        inputs' dtypes, like dv, dg (of the raw projection with ``A_log``) and dbeta; d_initial,
        dA_log and ddt_bias float32 (float64 for float64 inputs).
    """
    q, k, v, g, beta = inputs
    B, T, H, K = k.shape
    HV, V = v.shape[2], v.shape[3]
    terms = compute_dtype(*inputs)
    chunks = table.count
    kept = local_terms is not None
    if chunk_grads_launch is None:
        chunk_grads_launch = chunk_grads_launch_for(K, V, kept)
    grads_columns, grads_warps, grads_stages = _checked_grads_launch(chunk_grads_launch, K, V, kept)
    block_k = max(16, triton.next_power_of_2(K))
    # the reverse pass's operands W, K_out and Q_in, in bfloat16 with narrow_key_terms and bfloat16
    # inputs (float16 inputs keep float32 terms: bfloat16's rounding would triple their dv error)
    bf16_inputs = all(x.dtype == torch.bfloat16 for x in (q, k, v))
    narrow = torch.bfloat16 if narrow_key_terms and bf16_inputs and precision == "tf32" else terms
    if local_terms is None:
        w, kg, qg = (q.new_empty(chunks, HV, CHUNK, K, dtype=narrow) for _ in range(3))
        u = q.new_empty(chunks, HV, CHUNK, V, dtype=terms)
        decay = q.new_empty(chunks, HV, K, dtype=terms)
    else:
        w, kg, qg, u, decay = _checked_local_terms(local_terms, local_scores, B * T, chunks, HV, K, V, narrow, terms)
    A_log, dt_bias, lower_bound = gate
    if local_scores is None:
        scores, inverse, scores_kk = (q.new_empty(chunks, HV, CHUNK, CHUNK, dtype=terms) for _ in range(3))
        norms, terms_scale, reverse_scale = None, 1.0, scale
    else:
        scores, inverse, scores_kk, norms = local_scores
        square, rows = (chunks, HV, CHUNK, CHUNK), (chunks, HV, 2, CHUNK)
        expected = [("scores", scores, square), ("inverse", inverse, square), ("A_kk", scores_kk, square)]
        if use_qk_l2norm:
            expected.append(("norms", norms, rows))
        for name, x, shape in expected:
            if x is None or tuple(x.shape) != shape or x.dtype != terms:
                raise ValueError(f"local_scores: {name} must be {terms} {list(shape)} as the forward kept it")
        # the kept scores carry the scale, so the recomputed Q_in must too, and dO meets them unscaled
        terms_scale, reverse_scale = scale, 1.0
    # launched as the forward launches it: the scores, then the inverse and terms (LOCAL_WARPS); the
    # terms alone from the kept scores; the terms unscaled otherwise: the scale reaches them through dO
    if local_terms is None:
        launch_chunk_local(
            inputs, (w, u, qg, kg, decay, scores, inverse, scores_kk), table, terms_scale, gate, use_qk_l2norm,
            precision, as_chunks=True, terms_only=local_scores is not None, norms=norms,
        )  # fmt: skip
    native = not interpreting()
    d_out = v.new_zeros(v.shape) if d_out is None else d_out.contiguous()
    d_final = None if d_final is None else d_final.contiguous()
    dv_new = q.new_empty(chunks, HV, CHUNK, V, dtype=terms)
    d_states = torch.empty_like(states)
    d_initial = q.new_empty(table.sequences, HV, K, V, dtype=terms) if initial_grad else None
    block_v, reverse_warps, reverse_stages = reverse_state_launch(V)
    _states_backward_kernel[(triton.cdiv(V, block_v), table.sequences * HV)](
        w, kg, qg, scores, decay, d_out, d_final, dv_new, d_states, d_initial, cu_seqlens, table.offsets,
        float(reverse_scale), T,
        K=K, V=V, HV=HV, BK=block_k, BV=block_v, CHUNK=CHUNK, IS_VARLEN=table.varlen, PRECISION=precision,
        NATIVE_BF16=native, TOKEN_TERMS=kept, num_warps=reverse_warps, num_stages=reverse_stages,
    )  # fmt: skip
    # the terms the reverse pass read become their gradients' buffers (those of the gradients' dtype);
    # the chunk-gradient kernel walks all value columns as chunk_grads_launch says
    dscores, ddecay = scores, decay
    if narrow == terms and not kept:
        dw, dkg, dqg = w, kg, qg
    else:
        dw, dkg, dqg = (q.new_empty(chunks, HV, CHUNK, K, dtype=terms) for _ in range(3))
    _chunk_grads_kernel[(chunks, HV)](
        w, u, states, d_states, d_out, dv_new, dw, dkg, ddecay, dqg, dscores, table.ends, table.starts,
        float(scale), T, table.nt,
        K=K, V=V, HV=HV, BK=block_k, BV=grads_columns, CHUNK=CHUNK, IS_VARLEN=table.varlen,
        PRECISION=precision, KEPT_V_NEW=kept, num_warps=grads_warps, num_stages=grads_stages,
    )  # fmt: skip
    del w, kg, qg  # the bfloat16 terms (their gradients have buffers of their own) go before the scratch comes
    group = HV // H
    key_grads = terms if group > 1 else q.dtype
    dq = q.new_empty(B, T, HV, K, dtype=key_grads)
    dk = k.new_empty(B, T, HV, K, dtype=terms if group > 1 else k.dtype)
    dv, dg, dbeta = torch.empty_like(v), torch.empty_like(g), torch.empty_like(beta)
    # the local backward's scratch (the cumulative gate; with three launches the G_L gradient that
    # the first hands to the third) in the buffers the last two launches have finished with, where
    # they fit
    scratch = (chunks, HV, CHUNK, K)
    g_sum = _reuse(u, scratch, terms)
    d_rate = None if A_log is None else q.new_empty(chunks, HV, dtype=terms)
    d_bias = None if dt_bias is None else q.new_empty(chunks, HV, K, dtype=terms)
    warps = local_backward_warps
    if isinstance(warps, int):
        launches, dg_end = [(7, (chunks, HV), warps)], None
    elif len(warps) == 3:
        grids = ((chunks, HV), (chunks, HV, CHUNK // SUB), (chunks, HV))
        launches = list(zip((1, 2, 4), grids, warps))
        dg_end = _reuse(d_states, scratch, terms)
    else:
        raise ValueError(f"local_backward_warps: expected a number of warps or three, got {warps!r}")
    del u, d_states  # their memory holds the scratch
    for stages, grid, stage_warps in launches:
        _local_backward_kernel[grid](
            q, k, v, g, beta, A_log, dt_bias, 0.0 if lower_bound is None else float(lower_bound),
            inverse, scores_kk, dw, dv_new, dkg, ddecay, dqg, dscores, g_sum,
            dq, dk, dv, dg, dbeta, d_rate, d_bias, dg_end, table.ends, table.starts, T, table.nt,
            H=H, HV=HV, K=K, V=V, BK=block_k, BV=max(16, triton.next_power_of_2(V)), CHUNK=CHUNK, SUB=SUB,
            DOT_SPAN=DOT_SPAN, FLOOR=FLOAT64_GATE_FLOOR if terms == torch.float64 else GATE_FLOOR,
            IS_VARLEN=table.varlen, USE_QK_L2NORM=use_qk_l2norm, GATE=gate_form(A_log, lower_bound),
            PRECISION=precision, NATIVE_BF16=native, STAGES=stages, num_warps=stage_warps, num_stages=1,
        )  # fmt: skip
    if group > 1:
        dq = dq.view(B, T, H, group, K).sum(3)
        dk = dk.view(B, T, H, group, K).sum(3)
    d_a_log = None if d_rate is None else d_rate.sum(0)
    d_dt_bias = None if d_bias is None else d_bias.sum(0).view(dt_bias.shape)
    return dq, dk, dv, dg, dbeta, d_initial, d_a_log, d_dt_bias


def _checked_local_terms(local_terms, local_scores, tokens, chunks, HV, K, V, narrow, terms) -> tuple:
    """``local_terms`` as the forward keeps them, or a ValueError naming what does not fit."""
    if local_scores is None:
        raise ValueError("local_terms: only with local_scores (the kept terms carry the scores' scale)")
    if narrow != torch.bfloat16:
        raise ValueError("local_terms: only with bfloat16 inputs, tf32 products and narrow_key_terms (bfloat16 terms)")
    if not isinstance(local_terms, tuple) or len(local_terms) != 5:
        raise ValueError(f"local_terms: expected (W, K_out, Q_in, V_new, exp(G_L)), got {type(local_terms).__name__}")
    expected = [
        ("W", (tokens, HV, K), narrow), ("K_out", (tokens, HV, K), narrow), ("Q_in", (tokens, HV, K), narrow),
        ("V_new", (tokens, HV, V), terms), ("exp(G_L)", (chunks, HV, K), terms),
    ]  # fmt: skip
    for (name, shape, dtype), x in zip(expected, local_terms):
        if not isinstance(x, torch.Tensor) or tuple(x.shape) != shape or x.dtype != dtype or not x.is_contiguous():
            raise ValueError(f"local_terms: {name} must be a contiguous {dtype} {list(shape)} as the forward kept it")
    return local_terms


def _checked_grads_launch(launch, K: int, V: int, kept: bool) -> tuple[int, int, int]:
    """``chunk_grads_launch`` as given, or a ValueError naming it: malformed, or pipelined (more than
    one stage) at a head size outside :func:`pipelined_grads_heads` (of the kernel's form, ``kept``
    for the one that reads the forward's ``V_new``), where the GPU's gradients are wrong or were
    never checked."""
    ok = isinstance(launch, tuple) and len(launch) == 3 and all(type(x) is int for x in launch)
    if ok:
        columns, warps, stages = launch
        ok = columns >= 16 and columns & (columns - 1) == 0 and warps in (1, 2, 4, 8, 16) and 1 <= stages <= 4
    if not ok:
        raise ValueError(
            "chunk_grads_launch: expected (value columns, a power of two >= 16; warps, 1 to 16, a power of two;"
            f" pipeline stages, 1 to 4), got {launch!r}"
        )
    heads = pipelined_grads_heads(kept)
    if launch[2] > 1 and (K, V) not in heads:
        form = "reading the forward's V_new" if kept else "forming V_new"
        raise ValueError(
            f"chunk_grads_launch: {launch[2]} pipeline stages at K = {K}, V = {V}: the kernel {form} is pipelined"
            f" only at (K, V) in {sorted(heads)}, the head sizes checked on the GPU (elsewhere Triton 3.6 compiles"
            " it wrongly or it was never checked; NOTES.md, training v5.2 and v5.5); use 1 stage"
        )
    return launch


# Head sizes (K, V) at which the pipelined chunk-gradient kernel was checked on the GPU against
# float64 (tests/ops/test_triton_chunk_scan.py's GPU grid). At K = V = 64 Triton 3.6 compiles the
# pipelined loop wrongly on the H100: dq, dk and dg come out with relative errors of 0.65-0.86
# (NOTES.md, training v5.2), so that size and the ones never checked keep the loop unpipelined.
PIPELINED_GRADS_HEADS = frozenset({(64, 128), (128, 64), (128, 128)})

# The same for the form that reads the forward's V_new (``KEPT_V_NEW``): on the H100 its pipelined
# loop came out wrong at (64, 128) and (128, 64) too (dq, dk and dg relative errors 0.50-0.85;
# NOTES.md, training v5.5), right at (128, 128).
PIPELINED_KEPT_GRADS_HEADS = frozenset({(128, 128)})


def pipelined_grads_heads(kept: bool) -> frozenset[tuple[int, int]]:
    """The head sizes (K, V) at which the chunk-gradient kernel may be pipelined: those checked on
    the GPU for its form that reads the forward's ``V_new`` (``kept``) or forms it again."""
    return PIPELINED_KEPT_GRADS_HEADS if kept else PIPELINED_GRADS_HEADS


def chunk_grads_launch_for(K: int, V: int, kept: bool) -> tuple[int, int, int]:
    """Value columns per step, warps and pipeline stages of the chunk-gradient kernel
    (:func:`~kdalib.ops.triton.backward_states._chunk_grads_kernel`) at key size K, value size V.

    16 columns at 8 warps; three stages at the head sizes of :func:`pipelined_grads_heads` for the
    kernel's form (``kept``: it reads the forward's ``V_new``), the fastest
    timed on the H100 (2.86 ms at B2 T16384 H32 K = V = 128 against 3.93 unpipelined, 3.59 with two
    stages and 2.98 with four; NOTES.md, training v5.2), one stage elsewhere.
    """
    return (16, 8, 3 if (K, V) in pipelined_grads_heads(kept) else 1)


def reverse_state_launch(V: int) -> tuple[int, int, int]:
    """Value columns per program, warps and pipeline stages of the reverse pass over chunks
    (:func:`~kdalib.ops.triton.backward_states._states_backward_kernel`).

    32 columns at 4 warps, unpipelined. Float32 terms: ptxas at K = V = 128, sm_90a, 254
    registers, no spills, 82 KB of shared memory (two stages would need 258 KB, more than an H100
    has). Bfloat16 terms fit two stages (102 KB, 396 bytes of spills), but one stage was faster on
    the H100: 1.96 ms against 2.71 at B2 T16384 (NOTES.md, training v4.5)."""
    return min(32, max(16, triton.next_power_of_2(V))), 4, 1


def _reuse(buffer: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype, after: int = 0) -> torch.Tensor:
    """An uninitialised ``shape`` tensor of ``dtype`` in ``buffer``'s memory, ``after`` elements of
    ``dtype`` from its start, when it fits there (the caller no longer reads ``buffer``), else a new one."""
    count = 1
    for size in shape:
        count *= size
    storage = buffer.untyped_storage()
    if buffer.is_contiguous() and (after + count) * dtype.itemsize <= storage.nbytes():
        return torch.empty(0, dtype=dtype, device=buffer.device).set_(storage, after, shape)
    return buffer.new_empty(shape, dtype=dtype)


class _ChunkKDA(torch.autograd.Function):
    """KDA in the token layout: the inference forward, keeping the inputs as given and the state
    entering every chunk (with ``keep_scores``, also the chunk-local scores, the inverse and
    ``A_kk``; with ``keep_terms`` too and bfloat16 inputs, the terms ``W``, ``K_out``, ``Q_in``,
    ``V_new`` and ``exp(G_L)``), and :func:`chunk_kda_backward`. What is kept serves the first
    backward only, which turns it into gradients and scratch; a later one (``retain_graph``)
    computes it again."""

    @staticmethod
    def forward(
        ctx, q, k, v, g, beta, initial_state, A_log, dt_bias, lower_bound, scale, cu_seqlens, offsets,
        use_qk_l2norm, final_state, keep_scores, keep_terms,
    ):  # fmt: skip
        q, k, v, g, beta = (x.contiguous() for x in (q, k, v, g, beta))
        A_log, dt_bias = (None if x is None else x.contiguous() for x in (A_log, dt_bias))
        table = ChunkTable.of(q.shape[0], q.shape[1], cu_seqlens, offsets)
        # the backward's precision, the forward's too: its kept scores meet the backward's terms
        ctx.precision = "ieee" if torch.float32 in (q.dtype, k.dtype, v.dtype) else "tf32"
        # the forward's terms are bfloat16, the backward's too only for bfloat16 inputs
        keep_terms = keep_terms and keep_scores and all(x.dtype == torch.bfloat16 for x in (q, k, v))
        o, final, states, *local = triton_chunk_kda(
            q, k, v, g, beta, scale, initial_state, final_state, use_qk_l2norm, cu_seqlens,
            A_log=A_log, dt_bias=dt_bias, lower_bound=lower_bound, offsets=offsets, keep_chunk_states=True,
            keep_local_scores=keep_scores, keep_local_terms=keep_terms, chunk_table=table, precision=ctx.precision,
        )  # fmt: skip
        scores, inverse, scores_kk, norms = local[0] if keep_scores else (None,) * 4
        kept_terms = local[1] if keep_terms else (None,) * 5
        ctx.save_for_backward(
            q, k, v, g, beta, states, cu_seqlens, A_log, dt_bias, scores, inverse, scores_kk, norms, *kept_terms
        )
        ctx.terms_kept = keep_terms
        ctx.table, ctx.scale, ctx.use_qk_l2norm, ctx.lower_bound = table, scale, use_qk_l2norm, lower_bound
        ctx.scores_unused = keep_scores
        return o, final

    @staticmethod
    def backward(ctx, d_out, d_final):
        q, k, v, g, beta, states, cu_seqlens, A_log, dt_bias, *local = ctx.saved_tensors
        local_scores = tuple(local[:4]) if ctx.scores_unused else None
        local_terms = tuple(local[4:]) if ctx.scores_unused and ctx.terms_kept else None
        ctx.scores_unused = False
        grads = chunk_kda_backward(
            (q, k, v, g, beta), states, d_out, d_final, ctx.table, ctx.scale, cu_seqlens,
            ctx.use_qk_l2norm, ctx.needs_input_grad[5], ctx.precision, (A_log, dt_bias, ctx.lower_bound),
            local_scores=local_scores, local_terms=local_terms,
        )  # fmt: skip
        return (*grads, None, None, None, None, None, None, None, None)


def chunk_kda_training(
    call: KDACall, gate: tuple = (None, None, None), keep_scores: bool = True, keep_terms: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`kdalib.ops.chunk_kda` with gradients through :class:`_ChunkKDA` (chunks of 64), on a
    validated call; ``gate``: ``(A_log, dt_bias, lower_bound)`` when ``call.g`` is the raw gate
    projection (gradients reach it, ``A_log`` and ``dt_bias``). ``keep_scores``: autograd also
    keeps the forward's chunk-local scores, inverse and ``A_kk`` (three float32 ``64 x 64`` tiles
    per chunk and value head: 768 bytes per token and value head, on top of the 512 of the
    bfloat16 chunk states at K = V = 128), which the backward then does not compute again; a
    step's peak stays the same, since the backward allocated those buffers before (NOTES.md,
    training v5). ``False`` keeps the states only and computes the scores again. ``keep_terms``
    (with ``keep_scores`` and bfloat16 inputs): also the forward's ``W``, ``K_out``, ``Q_in``
    (bfloat16) and ``V_new`` (float32), 1,280 bytes more per token and value head at K = V = 128,
    so that the backward computes no chunk-local term again (NOTES.md, training v5.5)."""
    sequences = call.shapes.sequences
    return _ChunkKDA.apply(
        call.q, call.k, call.v, call.g, call.beta, call.initial_state, *gate, call.scale, call.shapes.cu_seqlens,
        None if sequences is None else sequences.offsets, call.use_qk_l2norm, call.output_final_state, keep_scores,
        keep_terms,
    )  # fmt: skip


def triton_chunk_training(
    call: KDACall, chunk_size: int = 64, gate: tuple | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`kdalib.ops.chunk_kda` with gradients through Triton kernels, on a validated call:
    16-bit inputs through :func:`chunk_kda_training` (chunks of 64 whatever ``chunk_size`` says),
    float32 ones through the chunk form's layout, the PyTorch chunk-local terms and the Triton
    scan (TF32x3 products). ``gate``: ``(A_log, dt_bias, lower_bound)`` when ``call.g`` is the raw
    gate projection: computed and differentiated inside the kernels for 16-bit inputs, by
    :func:`kdalib.ops.kda_gate` under autograd for float32 ones."""
    if all(t.dtype in HALF_DTYPES for t in (call.q, call.k, call.v)):
        return chunk_kda_training(call, (None, None, None) if gate is None else gate)
    if gate is not None:
        call = replace(call, g=kda_gate(call.g, *gate))
    rows = chunk_rows(call, chunk_size)
    terms = chunk_local_terms(rows.q, rows.k, rows.v, rows.g, rows.beta)
    output, final = triton_chunk_scan(*terms, rows.state, call.scale, precision="tf32x3")
    return from_chunk_rows(output, final, rows, call)

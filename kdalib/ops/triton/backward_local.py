"""Backward of the chunk-local terms in Triton (the training backward's last kernel,
:mod:`kdalib.ops.triton.training`): one program per (chunk, value head), in the token layout of
the user's tensors, with the in-kernel L2 norm's and the gate clamp's backward in its epilogue.

The chunk form's chunk-local terms (notes/kda.md, sections ``kda-chunkwise`` and ``kda-chunk-backward``;
:func:`kdalib.ops.chunk.chunk_local_terms` computes them) are, per chunk, with ``G`` the
chunk-local cumulative sum of the log decay ``g`` and ``Γ = exp(G)``::

    A_kk[r, c] = Σ_d k_rd k_cd exp(G_rd - G_cd)    (c < r)
    A_qk[r, c] = Σ_d q_rd k_cd exp(G_rd - G_cd)    (c <= r)
    X = (I + Diag(β) A_kk)^{-1},   T = X Diag(β)
    W = T (K ⊙ Γ),   U = T V,   K_out = K ⊙ exp(G_L - G),   Q_in = Q ⊙ Γ,   exp(G_L)

Given the gradients of W, U, K_out, exp(G_L), Q_in and A_qk
(:mod:`kdalib.ops.triton.backward_states`), this kernel returns those of q, k, v, g and β::

    dT = dW (K ⊙ Γ)ᵀ + dU Vᵀ,   dV = Tᵀ dU,   d(K ⊙ Γ) = Tᵀ dW
    dX = dT Diag(β),   dβ_c += Σ_r dT_rc X_rc
    dL = -Xᵀ dX Xᵀ (strictly lower part),   dA_kk = Diag(β) dL,   dβ_r += Σ_c dL_rc A_kk,rc

and the scores' gradients reach q and k through the same decayed products as the scores. Every
exponent is a difference ``G_r - G_c`` with ``r >= c`` (never positive): the chunk is cut into
16-row blocks, a block pair ``(i, j < i)`` goes through the first row ``r0`` of block ``i``
(``exp(G_r - G_r0)`` and ``exp(G_r0 - G_c)``, both at most 1) as one matrix product. A diagonal
block is one product too while its own decay (its span) is at most ``DOT_SPAN`` (column factors
up to ``exp(span)``), or, past that, while each of its halves decays at most ``DOT_SPAN``: a
product about its middle row (row factors before it and column factors after it up to
``exp(DOT_SPAN)``); past that it is four products by levels of halved row segments, every
entry decayed through a reference row between its column and its row (:func:`_level`), so every
factor is at most 1 and the strongest gates underflow to exact zeros. A log-decay gradient is the sum of ``x ⊙ dx``
over the factors where ``G`` enters with a plus sign, minus those where it enters with a minus
sign; ``dg`` is its reverse cumulative sum over the chunk plus the gradient of ``G_L``. Terms
whose two signs would cancel exactly (the undecayed diagonal of the scores, the last rows of
``K_out`` against ``G_L``) are left out of the sum rather than added and subtracted, so the
gradient of a strongly decayed chunk does not drown in their rounding.

The forward normalised q and k in the kernel (``q_n = q r``, ``r = 1 / sqrt(|q|^2 + 1e-6)``) and
clamped g to ``[-FLOOR, 0]``, or computed g from the raw gate projection (``kda_gate``'s two forms,
:mod:`kdalib.ops.gate`); the epilogue turns ``dq_n`` into ``r (dq_n - q_n (q_n . dq_n))``, zeroes
``dg`` where the clamp held g and takes it through the gate's form (with ``dA_log`` and
``ddt_bias`` summed per chunk, and over chunks by the caller). dq and dk are per value head; with shared key heads
(GVA) the caller sums them over the heads of a group.
"""

from __future__ import annotations

import triton
import triton.language as tl

from kdalib.ops.triton.prefill_local import _gate, _norm, _put_rows
from kdalib.ops.triton.tiles import (
    _block_span,
    _chunk_bounds,
    _put,
    _row,
    _stored_as,
    _tile,
    _vector,
    _widen,
)


@triton.jit
def _middle_reference(g_sum, base_k, i, K, cols_k, mask_k, SUB: tl.constexpr, DOT_SPAN: tl.constexpr):
    """The cumulative log decay at the middle row (row 7) of 16-row block ``i``, and whether the
    block's two halves (rows 1-7 and 8-15) each decay at most ``DOT_SPAN`` in every channel, so a
    product about that row keeps every factor at most ``exp(DOT_SPAN)`` (false for a NaN gate)."""
    first = _vector(g_sum, base_k, i * SUB, K, cols_k, mask_k)
    g_mid = _vector(g_sum, base_k, i * SUB + SUB // 2 - 1, K, cols_k, mask_k)
    last = _vector(g_sum, base_k, i * SUB + SUB - 1, K, cols_k, mask_k)
    return g_mid, (tl.max(first - g_mid, axis=0) <= DOT_SPAN) & (tl.max(g_mid - last, axis=0) <= DOT_SPAN)


@triton.jit
def _level_entries(level: tl.constexpr, SUB: tl.constexpr):
    """The ``[SUB, SUB]`` entries ``(r, c)`` that one level of a diagonal block's products by levels
    serves (:func:`_level`): the block's rows cut into segments of ``SUB >> level``, ``r`` in the
    upper and ``c`` in the lower half of one segment."""
    SEG: tl.constexpr = SUB >> level
    HALF: tl.constexpr = SEG // 2
    sub = tl.arange(0, SUB)
    same = (sub[:, None] // SEG) == (sub[None, :] // SEG)
    return same & ((sub[:, None] % SEG) >= HALF) & ((sub[None, :] % SEG) < HALF)


@triton.jit
def _level(g_sum, base_k, g_b, b, K, cols_k, mask_k, level: tl.constexpr, SUB: tl.constexpr):
    """One level of a diagonal block's products by levels: 16-row block ``b`` (cumulative log decays
    ``g_b``) cut into segments of ``SUB >> level`` rows, each with its reference at its lower half's
    last row ``p``. An entry ``(r, c)`` factors through any row ``p`` with ``c <= p < r`` into
    ``exp(G_r - G_p) exp(G_p - G_c)``, both at most 1; halving the rows recursively (segments of 16,
    8, 4 and 2), every strictly lower entry lies in exactly one segment whose lower half holds ``c``
    and whose upper half holds ``r``, so one product per level covers the block, whatever its span.
    Returns the row factors ``exp(G_r - G_p)`` (upper halves), the column factors ``exp(G_p - G_c)``
    (lower halves), both clamped to at most 1 elsewhere, and the entries ``(r, c)`` they serve: row
    in the upper half and column in the lower half of one segment."""
    SEG: tl.constexpr = SUB >> level
    HALF: tl.constexpr = SEG // 2
    sub = tl.arange(0, SUB)
    reference = (sub // SEG) * SEG + HALF - 1
    tile_sub = (sub < SUB)[:, None] & mask_k[None, :]
    g_p = _tile(g_sum, base_k, b * SUB + reference, cols_k, K, tile_sub)
    row_factor = tl.exp(tl.minimum(g_b - g_p, 0.0))
    column_factor = tl.exp(tl.minimum(g_p - g_b, 0.0))
    return row_factor, column_factor, _level_entries(level, SUB)


@triton.jit
def _scores_grad_row_block(
    q,
    k,
    g_sum,
    dscores,
    d_kk,
    dq,
    dk,
    dg,
    base_k,
    cols_k,
    mask_k,
    i,
    K: tl.constexpr,
    BK: tl.constexpr,
    CHUNK: tl.constexpr,
    SUB: tl.constexpr,
    DOT_SPAN: tl.constexpr,
    PRECISION: tl.constexpr,
    n,
    QK_ROW: tl.constexpr,
    USE_QK_L2NORM: tl.constexpr,
):
    """The scores' gradients reaching the rows of 16-row block ``i`` (q_r and k_r), added to the
    block's rows of dq, dk and dg. ``q`` and ``k`` point at the chunk's first token of the key head
    in the token layout (``n`` tokens, rows ``QK_ROW`` apart), read through :func:`_normed`."""
    sub = tl.arange(0, SUB)
    tile_sub = (sub < SUB)[:, None] & mask_k[None, :]
    rows_i = i * SUB + sub
    g_i = _tile(g_sum, base_k, rows_i, cols_k, K, tile_sub)
    g_ref = _vector(g_sum, base_k, i * SUB, K, cols_k, mask_k)
    acc_q = tl.zeros([SUB, BK], dtype=g_i.dtype)
    acc_k = tl.zeros([SUB, BK], dtype=g_i.dtype)
    for j in range(0, i):
        rows_j = j * SUB + sub
        k_j = _normed(k, rows_j, n, QK_ROW, cols_k, mask_k, USE_QK_L2NORM)
        k_j *= tl.exp(g_ref[None, :] - _tile(g_sum, base_k, rows_j, cols_k, K, tile_sub))
        block = rows_i[:, None] * CHUNK + rows_j[None, :]
        acc_q += tl.dot(tl.load(dscores + block), k_j, input_precision=PRECISION)
        acc_k += tl.dot(tl.load(d_kk + block), k_j, input_precision=PRECISION)
    row_decay = tl.exp(g_i - g_ref[None, :])
    block = rows_i[:, None] * CHUNK + rows_i[None, :]
    below = sub[:, None] > sub[None, :]
    k_i = _normed(k, rows_i, n, QK_ROW, cols_k, mask_k, USE_QK_L2NORM)
    g_mid, middle = _middle_reference(g_sum, base_k, i, K, cols_k, mask_k, SUB, DOT_SPAN)
    if _block_span(g_sum, base_k, i, K, cols_k, mask_k, SUB) <= DOT_SPAN:
        # the diagonal block below its diagonal as one product: column factors <= exp(span)
        k_c = k_i * tl.exp(g_ref[None, :] - g_i)
        acc_q += tl.dot(tl.load(dscores + block, mask=below, other=0.0), k_c, input_precision=PRECISION)
        acc_k += tl.dot(tl.load(d_kk + block), k_c, input_precision=PRECISION)
        acc_q *= row_decay
        acc_k *= row_decay
    elif middle:
        # one product about the block's middle row: row and column factors <= exp(DOT_SPAN)
        acc_q *= row_decay
        acc_k *= row_decay
        k_c = k_i * tl.exp(g_mid[None, :] - g_i)
        mid_decay = tl.exp(g_i - g_mid[None, :])
        dq_mid = tl.dot(tl.load(dscores + block, mask=below, other=0.0), k_c, input_precision=PRECISION)
        acc_q += dq_mid * mid_decay
        acc_k += tl.dot(tl.load(d_kk + block), k_c, input_precision=PRECISION) * mid_decay
    else:
        acc_q *= row_decay
        acc_k *= row_decay
        d_s = tl.load(dscores + block)
        d_kk_i = tl.load(d_kk + block)
        for level in tl.static_range(4):  # the diagonal block below its diagonal, by levels
            row_factor, column_factor, serves = _level(g_sum, base_k, g_i, i, K, cols_k, mask_k, level, SUB)
            k_c = k_i * column_factor
            acc_q += row_factor * tl.dot(tl.where(serves, d_s, 0.0), k_c, input_precision=PRECISION)
            acc_k += row_factor * tl.dot(tl.where(serves, d_kk_i, 0.0), k_c, input_precision=PRECISION)
    q_i = _normed(q, rows_i, n, QK_ROW, cols_k, mask_k, USE_QK_L2NORM)
    # the diagonal q_r . k_r has no decay: it reaches q, not g
    d_q_i = acc_q + tl.load(dscores + rows_i * (CHUNK + 1))[:, None] * k_i
    _put(dq, base_k, rows_i, cols_k, K, tile_sub, _tile(dq, base_k, rows_i, cols_k, K, tile_sub) + d_q_i)
    _put(dk, base_k, rows_i, cols_k, K, tile_sub, _tile(dk, base_k, rows_i, cols_k, K, tile_sub) + acc_k)
    d_g_i = _tile(dg, base_k, rows_i, cols_k, K, tile_sub) + q_i * acc_q + k_i * acc_k
    _put(dg, base_k, rows_i, cols_k, K, tile_sub, d_g_i)


@triton.jit
def _scores_grad_column_block(
    q,
    k,
    g_sum,
    dscores,
    d_kk,
    dq,
    dk,
    dg,
    base_k,
    cols_k,
    mask_k,
    j,
    K: tl.constexpr,
    BK: tl.constexpr,
    CHUNK: tl.constexpr,
    SUB: tl.constexpr,
    DOT_SPAN: tl.constexpr,
    PRECISION: tl.constexpr,
    n,
    QK_ROW: tl.constexpr,
    USE_QK_L2NORM: tl.constexpr,
):
    """The scores' gradients reaching the columns of 16-row block ``j`` (k_c), added to the block's
    rows of dk and dg (``q`` and ``k`` as for :func:`_scores_grad_row_block`)."""
    sub = tl.arange(0, SUB)
    tile_sub = (sub < SUB)[:, None] & mask_k[None, :]
    rows_j = j * SUB + sub
    g_j = _tile(g_sum, base_k, rows_j, cols_k, K, tile_sub)
    acc = tl.zeros([SUB, BK], dtype=g_j.dtype)
    for i in range(j + 1, CHUNK // SUB):
        rows_i = i * SUB + sub
        g_ref = _vector(g_sum, base_k, i * SUB, K, cols_k, mask_k)
        row_decay = tl.exp(_tile(g_sum, base_k, rows_i, cols_k, K, tile_sub) - g_ref[None, :])
        q_i = _normed(q, rows_i, n, QK_ROW, cols_k, mask_k, USE_QK_L2NORM) * row_decay
        k_i = _normed(k, rows_i, n, QK_ROW, cols_k, mask_k, USE_QK_L2NORM) * row_decay
        block = rows_i[:, None] * CHUNK + rows_j[None, :]
        part = tl.dot(tl.trans(tl.load(dscores + block)), q_i, input_precision=PRECISION)
        part += tl.dot(tl.trans(tl.load(d_kk + block)), k_i, input_precision=PRECISION)
        acc += part * tl.exp(g_ref[None, :] - g_j)
    block = rows_j[:, None] * CHUNK + rows_j[None, :]
    g_mid, middle = _middle_reference(g_sum, base_k, j, K, cols_k, mask_k, SUB, DOT_SPAN)
    span = _block_span(g_sum, base_k, j, K, cols_k, mask_k, SUB)
    if (span <= DOT_SPAN) | middle:
        # the diagonal block as one product, its reference the block's first row (row factors
        # <= 1, column factors <= exp(span)) or its middle row (both <= exp(DOT_SPAN))
        if span <= DOT_SPAN:
            g_ref = _vector(g_sum, base_k, j * SUB, K, cols_k, mask_k)
        else:
            g_ref = g_mid
        row_decay = tl.exp(g_j - g_ref[None, :])
        below = sub[:, None] > sub[None, :]
        q_j = _normed(q, rows_j, n, QK_ROW, cols_k, mask_k, USE_QK_L2NORM) * row_decay
        k_j = _normed(k, rows_j, n, QK_ROW, cols_k, mask_k, USE_QK_L2NORM) * row_decay
        part = tl.dot(tl.trans(tl.load(dscores + block, mask=below, other=0.0)), q_j, input_precision=PRECISION)
        part += tl.dot(tl.trans(tl.load(d_kk + block)), k_j, input_precision=PRECISION)
        acc += part * tl.exp(g_ref[None, :] - g_j)
    else:
        d_s = tl.load(dscores + block)
        d_kk_j = tl.load(d_kk + block)
        q_j = _normed(q, rows_j, n, QK_ROW, cols_k, mask_k, USE_QK_L2NORM)
        k_j = _normed(k, rows_j, n, QK_ROW, cols_k, mask_k, USE_QK_L2NORM)
        for level in tl.static_range(4):  # the diagonal block below its diagonal, by levels
            row_factor, column_factor, serves = _level(g_sum, base_k, g_j, j, K, cols_k, mask_k, level, SUB)
            part = tl.dot(tl.trans(tl.where(serves, d_s, 0.0)), q_j * row_factor, input_precision=PRECISION)
            part += tl.dot(tl.trans(tl.where(serves, d_kk_j, 0.0)), k_j * row_factor, input_precision=PRECISION)
            acc += part * column_factor
    # the block's own q and k read again, not held across the branches: holding them spills (ptxas)
    k_j = _normed(k, rows_j, n, QK_ROW, cols_k, mask_k, USE_QK_L2NORM)
    d_k_j = acc + tl.load(dscores + rows_j * (CHUNK + 1))[:, None] * _normed(
        q, rows_j, n, QK_ROW, cols_k, mask_k, USE_QK_L2NORM
    )
    _put(dk, base_k, rows_j, cols_k, K, tile_sub, _tile(dk, base_k, rows_j, cols_k, K, tile_sub) + d_k_j)
    _put(dg, base_k, rows_j, cols_k, K, tile_sub, _tile(dg, base_k, rows_j, cols_k, K, tile_sub) - k_j * acc)


@triton.jit
def _scores_grads_of_block(q, k, g_sum, dscores, d_kk, dq, dk, dg, base_k, cols_k, mask_k, b,
                           K: tl.constexpr, BK: tl.constexpr, CHUNK: tl.constexpr, SUB: tl.constexpr,
                           DOT_SPAN: tl.constexpr, PRECISION: tl.constexpr, n, QK_ROW: tl.constexpr,
                           USE_QK_L2NORM: tl.constexpr):  # fmt: skip
    """Everything the scores' gradients add to the rows of 16-row block ``b``: its row side, then
    its column side. Blocks write disjoint rows, so they may run in any order or in parallel."""
    _scores_grad_row_block(
        q, k, g_sum, dscores, d_kk, dq, dk, dg, base_k, cols_k, mask_k, b, K, BK, CHUNK, SUB, DOT_SPAN, PRECISION,
        n, QK_ROW, USE_QK_L2NORM,
    )  # fmt: skip
    tl.debug_barrier()  # the column side adds to the rows the row side has just written
    _scores_grad_column_block(
        q, k, g_sum, dscores, d_kk, dq, dk, dg, base_k, cols_k, mask_k, b, K, BK, CHUNK, SUB, DOT_SPAN, PRECISION,
        n, QK_ROW, USE_QK_L2NORM,
    )  # fmt: skip


@triton.jit
def _token_rows(ptr, rows, n, stride, cols, mask_k):
    """``[len(rows), len(cols)]`` tile of a token-layout tensor (``ptr`` at the chunk's first token of
    its head, rows ``stride`` apart), zeros past the chunk's ``n`` tokens, widened."""
    mask = (rows < n)[:, None] & mask_k[None, :]
    return _widen(tl.load(ptr + (rows[:, None] * stride + cols[None, :]), mask=mask, other=0.0))


@triton.jit
def _normed(ptr, rows, n, stride, cols, mask_k, USE_QK_L2NORM: tl.constexpr):
    """:func:`_token_rows` of q or k as the forward used them: each row times ``1 / sqrt(|row|^2 +
    1e-6)`` with the in-kernel L2 norm (``cols`` must then span the whole row), else as given."""
    x = _token_rows(ptr, rows, n, stride, cols, mask_k)
    return x * _norm(tl.sum(x * x, axis=1), USE_QK_L2NORM)[:, None]


@triton.jit
def _l2_norm_backward(x, dx_n, USE_QK_L2NORM: tl.constexpr):
    """The gradient of ``x`` from that of ``x_n = x r``, ``r = 1 / sqrt(|x|^2 + 1e-6)`` per row:
    ``r (dx_n - x_n (x_n . dx_n))`` (``dx_n`` itself without the norm)."""
    if USE_QK_L2NORM:
        r = _norm(tl.sum(x * x, axis=1), USE_QK_L2NORM)
        x_n = x * r[:, None]
        return r[:, None] * (dx_n - x_n * tl.sum(x_n * dx_n, axis=1)[:, None])
    return dx_n


@triton.jit
def _gate_backward(
    d_g, g_at, rows, n, cols_k, mask_k, i_hv, a_log, dt_bias, lower_bound, d_rate, d_bias, at,
    G_ROW: tl.constexpr, K: tl.constexpr, GATE: tl.constexpr, FLOOR: tl.constexpr,
):  # fmt: skip
    """The gradient of the raw gate from that of the clamped log decay ``d_g``: zero where the clamp
    to ``[-FLOOR, 0]`` held; through ``kda_gate``'s form when the gate is computed in the kernel
    (``GATE`` 1 or 2), whose ``A_log`` and ``dt_bias`` gradients, summed over the chunk's rows, go
    to ``d_rate[at]`` and ``d_bias[at * K + cols]`` (when given)."""
    mask = (rows < n)[:, None] & mask_k[None, :]
    raw = _widen(tl.load(g_at + (rows[:, None] * G_ROW + cols_k[None, :]), mask=mask, other=0.0))
    if GATE == 0:
        d_raw = tl.where((raw <= 0.0) & (raw >= -FLOOR), d_g, 0.0)
    else:
        x = raw
        if dt_bias is not None:
            x = x + tl.load(dt_bias + i_hv * K + cols_k, mask=mask_k, other=0.0).to(raw.dtype)[None, :]
        rate = tl.exp(tl.load(a_log + i_hv).to(raw.dtype))
        if GATE == 1:  # g = -rate softplus(x)
            gate = -rate * (tl.maximum(x, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(x))))
            slope = -rate * tl.sigmoid(x)
            by_rate = gate
        else:  # g = lower_bound sigmoid(rate x)
            s = tl.sigmoid(rate * x)
            gate = lower_bound * s
            slope = lower_bound * s * (1.0 - s) * rate
            by_rate = slope * x
        d_g = tl.where(mask & (gate <= 0.0) & (gate >= -FLOOR), d_g, 0.0)
        if d_rate is not None:
            tl.store(d_rate + at, tl.sum(tl.sum(d_g * by_rate, axis=1), axis=0))
        d_raw = d_g * slope
        if d_bias is not None:
            tl.store(d_bias + at * K + cols_k, tl.sum(d_raw, axis=0), mask=mask_k)
    return d_raw


@triton.jit
def _local_backward_kernel(
    q,
    k,
    v,
    g,
    beta,
    a_log,
    dt_bias,
    lower_bound,
    inverse,
    scores_kk,
    dw,
    dv_new,
    dkg,
    ddecay,
    dqg,
    dscores,
    g_sum,
    dq,
    dk,
    dv,
    dg,
    dbeta,
    d_rate,
    d_bias,
    dg_end,
    sequence_end,
    chunk_start,
    T,
    NT,
    H: tl.constexpr,
    HV: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    CHUNK: tl.constexpr,
    SUB: tl.constexpr,
    DOT_SPAN: tl.constexpr,
    FLOOR: tl.constexpr,
    IS_VARLEN: tl.constexpr,
    USE_QK_L2NORM: tl.constexpr,
    GATE: tl.constexpr,
    PRECISION: tl.constexpr,
    NATIVE_BF16: tl.constexpr,
    STAGES: tl.constexpr = 7,
):
    """One (chunk, value head). With ``GATE`` 1 or 2, ``g`` is the raw gate projection and the
    kernel computes the log decay from it (``a_log``, ``dt_bias``, ``lower_bound``, as the forward
    did), writes the raw projection's gradient to ``dg`` and this chunk's share of those of
    ``A_log`` and ``dt_bias`` to ``d_rate [chunks, HV]`` and ``d_bias [chunks, HV, K]``. Inputs q, k, v, g, beta and the outputs dq, dk, dv, dg, dbeta are in
    the token layout (dq and dk per value head, ``[tokens, HV, K]``); the terms' gradients, the
    inverse and ``A_kk`` in the chunk layout ``[chunks, HV, 64, *]``. Scratch, in the chunk layout:
    ``g_sum`` (the chunk-local cumulative log decay; q and k as the forward used them, normalised
    when asked, are read from the inputs where needed, :func:`_normed`); ``dqg``, ``dkg`` and
    ``dw`` become the accumulators of the gradients of q, k and g once read, and ``scores_kk``
    that of ``A_kk``.

    ``STAGES``: which of the three stages to run, as bits: 1 the inputs as the forward used them,
    the UT transform and the decayed terms; 2 the scores' gradients; 4 the cumulative sum's, the
    gate's and the L2 norm's backward (7: all, one program per (chunk, value head)). Run as three
    launches, the second has one program per (chunk, value head, 16-row block) (its third index),
    each adding to its block's rows only, and the first hands the gradient reaching ``G`` through
    ``G_L`` to the third in ``dg_end`` (``[chunks, HV, 64, K]``)."""
    i_c, i_hv = tl.program_id(0), tl.program_id(1)
    start, end = _chunk_bounds(i_c, sequence_end, chunk_start, T, NT, IS_VARLEN, CHUNK)
    n = (end - start).to(tl.int32)
    i_h = i_hv // (HV // H)
    block = (i_c * HV + i_hv).to(tl.int64)
    base_k, base_v, base_s = block * CHUNK * K, block * CHUNK * V, block * CHUNK * CHUNK
    rows = tl.arange(0, CHUNK)
    cols_k, cols_v = tl.arange(0, BK), tl.arange(0, BV)
    mask_k, mask_v = cols_k < K, cols_v < V
    tile_k = (rows < CHUNK)[:, None] & mask_k[None, :]
    tile_v = (rows < CHUNK)[:, None] & mask_v[None, :]
    square = rows[:, None] * CHUNK + rows[None, :]  # 32-bit offsets from the chunk's C x C block
    inverse, scores_kk, dscores = inverse + base_s, scores_kk + base_s, dscores + base_s
    strict = rows[:, None] > rows[None, :]
    q_at, k_at = q + start * (H * K) + i_h * K, k + start * (H * K) + i_h * K
    g_at = g + start * (HV * K) + i_hv * K
    v_at = v + start * (HV * V) + i_hv * V
    beta_at = beta + start * HV + i_hv

    if STAGES & 1:
        # ---- the gate as the forward used it, in [-FLOOR, 0], summed over the chunk (q and k
        # normalised are read again where needed: two bfloat16 tiles instead of two float32 ones)
        g_clamped = _gate(
            g_at, rows, rows < n, cols_k, mask_k, i_hv, a_log, dt_bias, lower_bound, HV * K, K, GATE, FLOOR
        )
        g_acc = tl.cumsum(g_clamped.to(g_sum.dtype.element_ty), axis=0)
        _put(g_sum, base_k, rows, cols_k, K, tile_k, g_acc)
        tl.debug_barrier()

        # ---- the UT transform (loads ordered so that few whole-chunk tiles are live at once)
        b = _widen(tl.load(beta_at + rows * HV, mask=rows < n, other=0.0))
        x_inv = tl.load(inverse + square, mask=rows[:, None] >= rows[None, :], other=0.0)
        transform = x_inv * b[None, :]
        d_u = _tile(dv_new, base_v, rows, cols_v, V, tile_v)
        d_v = tl.dot(tl.trans(transform), d_u, input_precision=PRECISION)
        _put_rows(dv + start * (HV * V) + i_hv * V, d_v, rows, rows < n, HV * V, cols_v, mask_v, NATIVE_BF16)
        d_t = tl.dot(d_u, tl.trans(_token_rows(v_at, rows, n, HV * V, cols_v, mask_v)), input_precision=PRECISION)
        gamma = tl.exp(g_acc)
        keys_in = _normed(k_at, rows, n, H * K, cols_k, mask_k, USE_QK_L2NORM) * gamma
        d_w = _tile(dw, base_k, rows, cols_k, K, tile_k)
        d_t += tl.dot(d_w, tl.trans(keys_in), input_precision=PRECISION)
        d_keys_in = tl.dot(tl.trans(transform), d_w, input_precision=PRECISION)
        d_g = d_keys_in * keys_in
        d_keys = d_keys_in * gamma
        d_b = tl.sum(d_t * x_inv, axis=0)
        d_l = -tl.dot(
            tl.dot(tl.trans(x_inv), d_t * b[None, :], input_precision=PRECISION),
            tl.trans(x_inv),
            input_precision=PRECISION,
        )
        d_l = tl.where(strict, d_l, 0.0)
        d_b += tl.sum(d_l * tl.load(scores_kk + square, mask=strict, other=0.0), axis=1)
        tl.debug_barrier()  # A_kk is read: its buffer takes the gradient of A_kk
        tl.store(scores_kk + square, d_l * b[:, None])
        tl.store(
            dbeta + (start * HV + i_hv) + rows * HV, _stored_as(d_b, dbeta.dtype.element_ty, NATIVE_BF16), mask=rows < n
        )

        # ---- queries decayed from the chunk start, keys decayed to its end, the chunk's decay
        # Each buffer of a term's gradient becomes an accumulator as it is read: an element is stored
        # only from values that depend on its own load, so no other thread can still need the old one.
        d_query_in = _tile(dqg, base_k, rows, cols_k, K, tile_k)
        _put(dqg, base_k, rows, cols_k, K, tile_k, d_query_in * gamma)
        d_g += d_query_in * _normed(q_at, rows, n, H * K, cols_k, mask_k, USE_QK_L2NORM) * gamma
        # G_L is the cumulative sum's own last row: summed again in another order it could differ by
        # rounding (a tree sum on the GPU), and exp(G_L - G) would then miss 1 on the last row
        g_last = _row(g_acc, CHUNK - 1, CHUNK)
        decay_out = tl.exp(g_last[None, :] - g_acc)
        d_keys_out = _tile(dkg, base_k, rows, cols_k, K, tile_k)
        d_keys += d_keys_out * decay_out
        # exp(G_L - G_r) reaches g_s for r < s <= L: an exclusive prefix sum over rows (summing it as
        # "all rows minus rows >= s" would cancel the undecayed last rows against themselves)
        through_end = d_keys_out * _normed(k_at, rows, n, H * K, cols_k, mask_k, USE_QK_L2NORM) * decay_out
        d_g_end = tl.dot(tl.where(strict, 1.0, 0.0).to(through_end.dtype), through_end, input_precision=PRECISION)
        d_g_end += (tl.load(ddecay + block * K + cols_k, mask=mask_k, other=0.0) * tl.exp(g_last))[None, :]
        _put(dkg, base_k, rows, cols_k, K, tile_k, d_keys)
        _put(dw, base_k, rows, cols_k, K, tile_k, d_g)
        if not (STAGES & 4):  # the last stage runs as a launch of its own
            _put(dg_end, base_k, rows, cols_k, K, tile_k, d_g_end)
        tl.debug_barrier()

    # ---- the scores' gradients, block by block of 16 rows
    if STAGES == 2:  # one row block per program
        _scores_grads_of_block(
            q_at, k_at, g_sum, dscores, scores_kk, dqg, dkg, dw, base_k, cols_k, mask_k, tl.program_id(2),
            K, BK, CHUNK, SUB, DOT_SPAN, PRECISION, n, H * K, USE_QK_L2NORM,
        )  # fmt: skip
    elif STAGES & 2:
        for b in tl.static_range(CHUNK // SUB):
            _scores_grads_of_block(
                q_at, k_at, g_sum, dscores, scores_kk, dqg, dkg, dw, base_k, cols_k, mask_k, b,
                K, BK, CHUNK, SUB, DOT_SPAN, PRECISION, n, H * K, USE_QK_L2NORM,
            )  # fmt: skip
            tl.debug_barrier()

    if STAGES & 4:
        # ---- G is the cumulative sum of g, G_L the sum over the chunk; the clamp of g, the L2 norm
        if not (STAGES & 1):
            d_g_end = _tile(dg_end, base_k, rows, cols_k, K, tile_k)
        d_g = tl.cumsum(_tile(dw, base_k, rows, cols_k, K, tile_k), axis=0, reverse=True) + d_g_end
        d_g = _gate_backward(
            d_g, g_at, rows, n, cols_k, mask_k, i_hv, a_log, dt_bias, lower_bound, d_rate, d_bias, block,
            HV * K, K, GATE, FLOOR,
        )  # fmt: skip
        key_out = start * (HV * K) + i_hv * K
        _put_rows(dg + key_out, d_g, rows, rows < n, HV * K, cols_k, mask_k, NATIVE_BF16)
        x = _token_rows(q_at, rows, n, H * K, cols_k, mask_k)
        d_x = _l2_norm_backward(x, _tile(dqg, base_k, rows, cols_k, K, tile_k), USE_QK_L2NORM)
        _put_rows(dq + key_out, d_x, rows, rows < n, HV * K, cols_k, mask_k, NATIVE_BF16)
        x = _token_rows(k_at, rows, n, H * K, cols_k, mask_k)
        d_x = _l2_norm_backward(x, _tile(dkg, base_k, rows, cols_k, K, tile_k), USE_QK_L2NORM)
        _put_rows(dk + key_out, d_x, rows, rows < n, HV * K, cols_k, mask_k, NATIVE_BF16)

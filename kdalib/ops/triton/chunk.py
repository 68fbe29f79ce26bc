"""Chunked KDA forward in Triton: prefill and inference, outputs and final state.

The math is the chunkwise form of notes/kda.md (section "The chunkwise algorithm"); measured
versions and what moved them are in NOTES.md beside this file.

1. Intra-chunk kernels, one program per (chunk, value head), all in parallel. They build the two
   C x C matrices a chunk needs that do not depend on the state,

   * ``M = (I + Diag(beta) A_kk)^{-1}`` (the WY/UT transform), so that the delta rule's
     corrections of the whole chunk are ``V_new = M Diag(beta) (V - K_in S)``,
   * ``A = scale * A_qk``, the decay-weighted causal scores (diagonal included),

   and store the queries and keys decayed from the chunk start (``Q_in``, ``K_in``) and to the
   chunk end (``K_out``), and the chunk's decay ``exp(G_L)``.

   ``_chunk_intra_kernel`` serves chunks under mild decay: all factors are decayed towards the
   chunk's first row, the row factor ``exp(G - G_0) <= 1`` and the column factor
   ``exp(G_0 - G) <= exp(span)``, so the scores are two matrix products per key slice when the
   chunk's span (its largest total decay after the first row) is at most ``DOT_SPAN``. It marks
   the other chunks, and ``_chunk_intra_strong_kernel`` builds theirs from 16-row sub-blocks: an
   off-diagonal block (rows in block i, columns in block j < i) is one product of factors decayed
   towards the first row r0 of block i, ``(X_i * exp(G_i - G_r0)) (K_j * exp(G_r0 - G_j))^T``,
   with both exponents <= 0 because the cumulative log decay G never increases; a diagonal block
   is a product when its own span is small and otherwise built column by column, exactly, with
   the exponent masked to -inf above the diagonal before the exp. So the strongest gates
   (g = -1000 per token) underflow to exact zeros instead of overflowing, and typical gates take
   the fast path. The inverse of the unit lower-triangular ``I + Diag(beta) A_kk`` comes from
   forward substitution inside each 16 x 16 diagonal block and block forward substitution
   (products of 16 x 16 blocks) for the rest.

2. ``_chunk_state_kernel``, one program per (sequence, value head, block of value columns),
   walks the sequence chunk by chunk with its slice of the state in float32 registers::

       X     = Diag(beta) (V - K_in S)            what the decayed state fails to predict
       V_new = M X                                the delta rule's corrections (WY form)
       O     = Q_in S + A V_new                   read-out, written straight to the output
       S     = exp(G_L) * S + K_out^T V_new

   The output is produced in the same pass as the state, so the per-chunk states never travel
   through device memory.

Gates follow the operators' contract: ``g <= 0``; a positive log decay is treated as 0.
Cumulative sums of the gates and the state are float32 for every input dtype. Float32 inputs
multiply in IEEE float32; for 16-bit inputs the state's products are bfloat16 products of a
state split into two bfloat16 parts against operands stored as bfloat16 pairs (~16 bits on both
sides), and the other products use TF32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kdalib.ops.triton import MAX_KEY_DIM, interpreting

CHUNK = 64  # tokens per chunk (C)
SUB = 16  # rows per sub-block of the intra-chunk matrices
# Largest total decay (sum of -g over a 16-row block, any channel) for which a diagonal block is
# computed by matrix products: exp(60) ~ 1e26 leaves float32 (max ~3e38) ample headroom.
DOT_SPAN = 60.0
# Key channels per slice in the intra-chunk kernel (keeps its tiles in registers).
KEY_SLICE = 16


@triton.jit
def _load_rows(ptr, rows, row_mask, stride, cols, col_mask):
    """``[len(rows), len(cols)]`` float32 tile: row r at ``ptr + rows[r] * stride + cols``."""
    offsets = rows.to(tl.int64)[:, None] * stride + cols[None, :]
    return tl.load(ptr + offsets, mask=row_mask[:, None] & col_mask[None, :], other=0.0).to(tl.float32)


@triton.jit
def _load_gate(g_ptr, rows, row_mask, stride, cols, col_mask):
    """A tile of log decays as the operators' contract reads them: a positive entry (+inf too)
    counts as 0, and NaN stays NaN."""
    g = _load_rows(g_ptr, rows, row_mask, stride, cols, col_mask)
    return tl.minimum(g, 0.0, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _l2_normalize_rows(x):
    return x / tl.sqrt(tl.sum(x * x, axis=1) + 1e-6)[:, None]


@triton.jit
def _row(x, index, SIZE: tl.constexpr):
    """Row ``index`` of a ``[SIZE, N]`` register tile, as an ``[N]`` vector."""
    rows = tl.arange(0, SIZE)
    return tl.sum(tl.where(rows[:, None] == index, x, 0.0), axis=0)


@triton.jit
def _diagonal_block(xq, xk, gam, SUB: tl.constexpr):
    """Exact scores of one 16-row diagonal block.

    ``A_qk[r, c] = sum_d xq[r, d] xk[c, d] exp(gam[r, d] - gam[c, d])`` for ``c <= r`` and
    ``A_kk`` the same with ``xk`` rows and ``c < r``; both zero above the diagonal.
    """
    rows = tl.arange(0, SUB)
    a_qk = tl.zeros([SUB, SUB], dtype=tl.float32)
    a_kk = tl.zeros([SUB, SUB], dtype=tl.float32)
    for c in range(SUB):
        k_c = _row(xk, c, SUB)
        gam_c = _row(gam, c, SUB)
        on_or_below = rows >= c
        exponent = tl.where(on_or_below[:, None], tl.minimum(gam - gam_c[None, :], 0.0), float("-inf"))
        weighted = tl.exp(exponent) * k_c[None, :]
        col_qk = tl.sum(xq * weighted, axis=1)
        col_kk = tl.where(rows > c, tl.sum(xk * weighted, axis=1), 0.0)
        a_qk = tl.where(rows[None, :] == c, col_qk[:, None], a_qk)
        a_kk = tl.where(rows[None, :] == c, col_kk[:, None], a_kk)
    return a_qk, a_kk


@triton.jit
def _diagonal_block_by_dot(xq, xk, gam, PRECISION: tl.constexpr, SUB: tl.constexpr):
    """The same scores as :func:`_diagonal_block` through two matrix products.

    Factors are decayed towards the block's first row: the row factor ``exp(gam - gam_0)`` is
    at most 1 and the column factor ``exp(gam_0 - gam)`` at most ``exp(span)``, where span is
    the block's largest total decay. Callers take this path only when span is small enough
    (``DOT_SPAN``) for every factor and product to stay far inside float32's range.
    """
    rows = tl.arange(0, SUB)
    ref = _row(gam, 0, SUB)
    row_factor = tl.exp(tl.minimum(gam - ref[None, :], 0.0))
    columns = tl.trans(xk * tl.exp(tl.maximum(ref[None, :] - gam, 0.0)))
    a_qk = tl.where(rows[:, None] >= rows[None, :], _dot(xq * row_factor, columns, PRECISION), 0.0)
    a_kk = tl.where(rows[:, None] > rows[None, :], _dot(xk * row_factor, columns, PRECISION), 0.0)
    return a_qk, a_kk


@triton.jit
def _scores_diagonal(xq, xk, gam, PRECISION: tl.constexpr, SUB: tl.constexpr, DOT_SPAN: tl.constexpr):
    """Diagonal-block scores: by matrix products under mild decay, else exactly, column by column."""
    span = tl.max(_row(gam, 0, SUB) - _row(gam, SUB - 1, SUB), axis=0)
    if span <= DOT_SPAN:
        a_qk, a_kk = _diagonal_block_by_dot(xq, xk, gam, PRECISION, SUB)
    else:
        a_qk, a_kk = _diagonal_block(xq, xk, gam, SUB)
    return a_qk, a_kk


@triton.jit
def _unit_lower_inverse(lower, SUB: tl.constexpr):
    """``(I + lower)^{-1}`` of one 16 x 16 block, ``lower`` strictly lower-triangular."""
    rows = tl.arange(0, SUB)
    inverse = tl.where(rows[:, None] == rows[None, :], 1.0, 0.0)
    for r in range(1, SUB):
        coefficients = _row(lower, r, SUB)  # zero at columns >= r
        update = tl.sum(coefficients[:, None] * inverse, axis=0)  # rows < r are final
        inverse = tl.where(rows[:, None] == r, inverse - update[None, :], inverse)
    return inverse


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr):
    return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def _chunk_bounds(i_c, sequence_end, chunk_start, T, NT, IS_VARLEN: tl.constexpr, CHUNK: tl.constexpr):
    """First token and one-past-last token of global chunk ``i_c``."""
    if IS_VARLEN:
        start = tl.load(chunk_start + i_c).to(tl.int64)
        end = tl.minimum(start + CHUNK, tl.load(sequence_end + i_c).to(tl.int64))
    else:
        i_n = (i_c // NT).to(tl.int64)
        start = i_n * T + (i_c % NT).to(tl.int64) * CHUNK
        end = tl.minimum(start + CHUNK, (i_n + 1) * T)
    return start, end


@triton.jit
def _off_block(xq_i, xk_i, gam_i, ref, kj, gam_j, PRECISION: tl.constexpr):
    """Scores of rows in block i against columns in an earlier block j, through reference row ``ref``."""
    left = tl.exp(tl.minimum(gam_i - ref[None, :], 0.0))
    right = tl.trans(kj * tl.exp(tl.minimum(ref[None, :] - gam_j, 0.0)))
    return _dot(xq_i * left, right, PRECISION), _dot(xk_i * left, right, PRECISION)


@triton.jit
def _store_block(ptr, block, i: tl.constexpr, j: tl.constexpr, SUB: tl.constexpr, CHUNK: tl.constexpr):
    rows = tl.arange(0, SUB)
    tl.store(ptr + (i * SUB + rows)[:, None] * CHUNK + (j * SUB + rows)[None, :], block)


@triton.jit
def _inverse_row_norms(
    x, rows, row_mask, stride, K: tl.constexpr, BK: tl.constexpr, BKS: tl.constexpr, SUB: tl.constexpr
):
    """``1 / sqrt(sum(x**2) + 1e-6)`` per row, summed over the key dimension slice by slice."""
    total = tl.zeros([SUB], dtype=tl.float32)
    for s0 in range(0, BK, BKS):
        cols = s0 + tl.arange(0, BKS)
        tile = _load_rows(x, rows, row_mask, stride, cols, cols < K)
        total += tl.sum(tile * tile, axis=1)
    return 1.0 / tl.sqrt(total + 1e-6)


@triton.jit
def _store_rows(ptr, tile, rows, row_mask, stride, cols, col_mask):
    offsets = rows.to(tl.int64)[:, None] * stride + cols[None, :]
    tl.store(ptr + offsets, tile.to(ptr.dtype.element_ty), mask=row_mask[:, None] & col_mask[None, :])


@triton.jit
def _store_operand(ptr, tile, rows, row_mask, stride, cols, col_mask, PLANE, PLANES: tl.constexpr):
    """Stores a float32 tile: as float32 (PLANES = 0), as bfloat16 (1), or as a bfloat16 pair (2),
    the high part at ``ptr`` and the remainder one ``PLANE`` further (~16 bits together)."""
    if PLANES == 0:
        _store_rows(ptr, tile, rows, row_mask, stride, cols, col_mask)
    else:
        high = tile.to(tl.bfloat16)
        _store_rows(ptr, high, rows, row_mask, stride, cols, col_mask)
        if PLANES == 2:
            _store_rows(ptr + PLANE, tile - high.to(tl.float32), rows, row_mask, stride, cols, col_mask)


@triton.jit
def _store_decayed(
    q_in, k_in, k_out, xq, xk, gam, gam_last, rows, row_mask, stride, cols, col_mask, scale, PLANE, PLANES: tl.constexpr
):
    """The state kernel's operands for one sub-block: queries and keys decayed from the chunk
    start, keys decayed to the chunk end (every exponent <= 0)."""
    decay_in = tl.exp(gam)
    _store_operand(q_in, xq * decay_in * scale, rows, row_mask, stride, cols, col_mask, PLANE, PLANES)
    _store_operand(k_in, xk * decay_in, rows, row_mask, stride, cols, col_mask, PLANE, PLANES)
    _store_operand(
        k_out,
        xk * tl.exp(tl.minimum(gam_last[None, :] - gam, 0.0)),
        rows,
        row_mask,
        stride,
        cols,
        col_mask,
        PLANE,
        PLANES,
    )


@triton.jit
def _load_block(ptr, i: tl.constexpr, j: tl.constexpr, SUB: tl.constexpr, CHUNK: tl.constexpr):
    rows = tl.arange(0, SUB)
    return tl.load(ptr + (i * SUB + rows)[:, None] * CHUNK + (j * SUB + rows)[None, :])


@triton.jit
def _gamma(g_ptr, rows, row_mask, stride, cols, col_mask, carry):
    """Chunk-local cumulative log decay of one sub-block slice, and the carry past it."""
    g = _load_gate(g_ptr, rows, row_mask, stride, cols, col_mask)
    return tl.cumsum(g, axis=0) + carry[None, :], carry + tl.sum(g, axis=0)


@triton.jit
def _row_block_scores(
    i: tl.constexpr,
    q_ptr,
    k_ptr,
    g_ptr,
    qi_ptr,
    ki_ptr,
    ko_ptr,
    decay_ptr,
    start,
    end,
    scale,
    PLANE,
    QK_STRIDE: tl.constexpr,
    G_STRIDE: tl.constexpr,
    K: tl.constexpr,
    BK: tl.constexpr,
    BKS: tl.constexpr,
    SUB: tl.constexpr,
    DOT_SPAN: tl.constexpr,
    USE_QK_L2NORM: tl.constexpr,
    PRECISION: tl.constexpr,
    PLANES: tl.constexpr,
):
    """Scores of the rows of sub-block ``i`` against sub-blocks ``0..i``, summed over key slices.

    Also stores the state kernel's decayed operands for the rows of sub-block ``i`` (and, for
    ``i == 0``, the whole chunk's decay). Returns ``(aq_i0..aq_i3, ak_i0..ak_i3)``; blocks
    with ``j > i`` are zero.
    """
    sub = tl.arange(0, SUB)
    rows0, rows1, rows2, rows3 = start + sub, start + SUB + sub, start + 2 * SUB + sub, start + 3 * SUB + sub
    m0, m1, m2, m3 = rows0 < end, rows1 < end, rows2 < end, rows3 < end
    rows_i = start + i * SUB + sub
    m_i = rows_i < end
    if USE_QK_L2NORM:
        nq = _inverse_row_norms(q_ptr, rows_i, m_i, QK_STRIDE, K, BK, BKS, SUB)
        nk0 = _inverse_row_norms(k_ptr, rows0, m0, QK_STRIDE, K, BK, BKS, SUB)
        nk1 = _inverse_row_norms(k_ptr, rows1, m1, QK_STRIDE, K, BK, BKS, SUB)
        nk2 = _inverse_row_norms(k_ptr, rows2, m2, QK_STRIDE, K, BK, BKS, SUB)
        nk3 = _inverse_row_norms(k_ptr, rows3, m3, QK_STRIDE, K, BK, BKS, SUB)
    else:
        nq = tl.full([SUB], 1.0, dtype=tl.float32)
        nk0, nk1, nk2, nk3 = nq, nq, nq, nq
    aq0 = tl.zeros([SUB, SUB], dtype=tl.float32)
    aq1, aq2, aq3, ak0, ak1, ak2, ak3 = aq0, aq0, aq0, aq0, aq0, aq0, aq0
    for s0 in range(0, BK, BKS):
        cols = s0 + tl.arange(0, BKS)
        cm = cols < K
        gam0, carry = _gamma(g_ptr, rows0, m0, G_STRIDE, cols, cm, tl.zeros([BKS], dtype=tl.float32))
        gam1, carry = _gamma(g_ptr, rows1, m1, G_STRIDE, cols, cm, carry)
        gam2, carry = _gamma(g_ptr, rows2, m2, G_STRIDE, cols, cm, carry)
        gam3, gam_last = _gamma(g_ptr, rows3, m3, G_STRIDE, cols, cm, carry)
        if i == 0:
            gam_i, nk_i = gam0, nk0
        elif i == 1:
            gam_i, nk_i = gam1, nk1
        elif i == 2:
            gam_i, nk_i = gam2, nk2
        else:
            gam_i, nk_i = gam3, nk3
        x_k = _load_rows(k_ptr, rows_i, m_i, QK_STRIDE, cols, cm) * nk_i[:, None]
        x_q = _load_rows(q_ptr, rows_i, m_i, QK_STRIDE, cols, cm) * nq[:, None]
        sq, sk = _scores_diagonal(x_q, x_k, gam_i, PRECISION, SUB, DOT_SPAN)
        ref = _row(gam_i, 0, SUB)
        if i == 0:
            aq0, ak0 = aq0 + sq, ak0 + sk
            tl.store(decay_ptr + cols, tl.exp(gam_last), mask=cm)
        else:
            k0 = _load_rows(k_ptr, rows0, m0, QK_STRIDE, cols, cm) * nk0[:, None]
            oq, ok = _off_block(x_q, x_k, gam_i, ref, k0, gam0, PRECISION)
            aq0, ak0 = aq0 + oq, ak0 + ok
            if i == 1:
                aq1, ak1 = aq1 + sq, ak1 + sk
            else:
                k1 = _load_rows(k_ptr, rows1, m1, QK_STRIDE, cols, cm) * nk1[:, None]
                oq, ok = _off_block(x_q, x_k, gam_i, ref, k1, gam1, PRECISION)
                aq1, ak1 = aq1 + oq, ak1 + ok
                if i == 2:
                    aq2, ak2 = aq2 + sq, ak2 + sk
                else:
                    k2 = _load_rows(k_ptr, rows2, m2, QK_STRIDE, cols, cm) * nk2[:, None]
                    oq, ok = _off_block(x_q, x_k, gam_i, ref, k2, gam2, PRECISION)
                    aq2, ak2 = aq2 + oq, ak2 + ok
                    aq3, ak3 = aq3 + sq, ak3 + sk
        _store_decayed(
            qi_ptr, ki_ptr, ko_ptr, x_q, x_k, gam_i, gam_last, rows_i, m_i, G_STRIDE, cols, cm, scale, PLANE, PLANES
        )
    return aq0, aq1, aq2, aq3, ak0, ak1, ak2, ak3


@triton.jit
def _store_row_block(
    p_ptr,
    a_ptr,
    beta,
    i: tl.constexpr,
    start,
    end,
    HV: tl.constexpr,
    i_hv,
    scale,
    aq0,
    aq1,
    aq2,
    aq3,
    ak0,
    ak1,
    ak2,
    ak3,
    SUB: tl.constexpr,
    CHUNK: tl.constexpr,
):
    """Stores row block ``i`` of ``scale * A_qk`` and of ``L = Diag(beta) A_kk`` (blocks 0..i)."""
    rows = start + i * SUB + tl.arange(0, SUB)
    b = tl.load(beta + rows.to(tl.int64) * HV + i_hv, mask=rows < end, other=0.0).to(tl.float32)[:, None]
    _store_block(a_ptr, aq0 * scale, i, 0, SUB, CHUNK)
    _store_block(p_ptr, ak0 * b, i, 0, SUB, CHUNK)
    if i >= 1:
        _store_block(a_ptr, aq1 * scale, i, 1, SUB, CHUNK)
        _store_block(p_ptr, ak1 * b, i, 1, SUB, CHUNK)
    if i >= 2:
        _store_block(a_ptr, aq2 * scale, i, 2, SUB, CHUNK)
        _store_block(p_ptr, ak2 * b, i, 2, SUB, CHUNK)
    if i >= 3:
        _store_block(a_ptr, aq3 * scale, i, 3, SUB, CHUNK)
        _store_block(p_ptr, ak3 * b, i, 3, SUB, CHUNK)


@triton.jit
def _chunk_span(
    g_ptr, start, end, G_STRIDE: tl.constexpr, K: tl.constexpr, BK: tl.constexpr, BKS: tl.constexpr, CHUNK: tl.constexpr
):
    """The chunk's largest total decay after its first row, over all key channels."""
    rows = start + tl.arange(0, CHUNK)
    span = 0.0
    for s0 in range(0, BK, BKS):
        cols = s0 + tl.arange(0, BKS)
        g = _load_gate(g_ptr, rows, rows < end, G_STRIDE, cols, cols < K)
        tail = tl.sum(tl.where(rows[:, None] > start, -g, 0.0), axis=0)
        span = tl.maximum(span, tl.max(tail, axis=0))
    return span


@triton.jit
def _chunk_scores_by_dot(
    q_ptr,
    k_ptr,
    g_ptr,
    qi_ptr,
    ki_ptr,
    ko_ptr,
    decay_ptr,
    p_ptr,
    a_ptr,
    beta,
    i_hv,
    start,
    end,
    scale,
    PLANE,
    QK_STRIDE: tl.constexpr,
    G_STRIDE: tl.constexpr,
    HV: tl.constexpr,
    K: tl.constexpr,
    BK: tl.constexpr,
    BKS: tl.constexpr,
    CHUNK: tl.constexpr,
    USE_QK_L2NORM: tl.constexpr,
    PRECISION: tl.constexpr,
    PLANES: tl.constexpr,
):
    """Scores of the whole chunk by two matrix products per key slice, for mild decay.

    All factors are decayed towards the chunk's first row: the row factor ``exp(G - G_0)`` is
    at most 1 and the column factor ``exp(G_0 - G)`` at most ``exp(span)``; callers take this
    path only when the chunk's span is at most ``DOT_SPAN``. Stores ``scale * A_qk`` and
    ``L = Diag(beta) A_kk`` for the whole chunk, and the decayed operands.
    """
    idx = tl.arange(0, CHUNK)
    rows = start + idx
    m = rows < end
    if USE_QK_L2NORM:
        nq = _inverse_row_norms(q_ptr, rows, m, QK_STRIDE, K, BK, BKS, CHUNK)
        nk = _inverse_row_norms(k_ptr, rows, m, QK_STRIDE, K, BK, BKS, CHUNK)
    else:
        nq = tl.full([CHUNK], 1.0, dtype=tl.float32)
        nk = nq
    a_qk = tl.zeros([CHUNK, CHUNK], dtype=tl.float32)
    a_kk = tl.zeros([CHUNK, CHUNK], dtype=tl.float32)
    for s0 in range(0, BK, BKS):
        cols = s0 + tl.arange(0, BKS)
        cm = cols < K
        g = _load_gate(g_ptr, rows, m, G_STRIDE, cols, cm)
        gam = tl.cumsum(g, axis=0)
        gam_last = tl.sum(g, axis=0)
        ref = _row(gam, 0, CHUNK)
        x_k = _load_rows(k_ptr, rows, m, QK_STRIDE, cols, cm) * nk[:, None]
        x_q = _load_rows(q_ptr, rows, m, QK_STRIDE, cols, cm) * nq[:, None]
        row_factor = tl.exp(tl.minimum(gam - ref[None, :], 0.0))
        columns = tl.trans(x_k * tl.exp(tl.maximum(ref[None, :] - gam, 0.0)))
        a_qk += _dot(x_q * row_factor, columns, PRECISION)
        a_kk += _dot(x_k * row_factor, columns, PRECISION)
        _store_decayed(
            qi_ptr, ki_ptr, ko_ptr, x_q, x_k, gam, gam_last, rows, m, G_STRIDE, cols, cm, scale, PLANE, PLANES
        )
        tl.store(decay_ptr + cols, tl.exp(gam_last), mask=cm)
    b = tl.load(beta + rows.to(tl.int64) * HV + i_hv, mask=m, other=0.0).to(tl.float32)
    square = idx[:, None] * CHUNK + idx[None, :]
    tl.store(a_ptr + square, tl.where(idx[:, None] >= idx[None, :], a_qk * scale, 0.0))
    tl.store(p_ptr + square, tl.where(idx[:, None] > idx[None, :], a_kk * b[:, None], 0.0))


@triton.jit
def _chunk_scores_by_blocks(
    q_ptr,
    k_ptr,
    g_ptr,
    qi_ptr,
    ki_ptr,
    ko_ptr,
    decay_ptr,
    p_ptr,
    a_ptr,
    beta,
    i_hv,
    start,
    end,
    scale,
    PLANE,
    H: tl.constexpr,
    HV: tl.constexpr,
    K: tl.constexpr,
    BK: tl.constexpr,
    BKS: tl.constexpr,
    CHUNK: tl.constexpr,
    SUB: tl.constexpr,
    DOT_SPAN: tl.constexpr,
    USE_QK_L2NORM: tl.constexpr,
    PRECISION: tl.constexpr,
    PLANES: tl.constexpr,
):
    """Scores one 16-row block at a time, for any decay (see :func:`_row_block_scores`)."""
    aq0, aq1, aq2, aq3, ak0, ak1, ak2, ak3 = _row_block_scores(
        0,
        q_ptr,
        k_ptr,
        g_ptr,
        qi_ptr,
        ki_ptr,
        ko_ptr,
        decay_ptr,
        start,
        end,
        scale,
        PLANE,
        H * K,
        HV * K,
        K,
        BK,
        BKS,
        SUB,
        DOT_SPAN,
        USE_QK_L2NORM,
        PRECISION,
        PLANES,
    )
    _store_row_block(
        p_ptr, a_ptr, beta, 0, start, end, HV, i_hv, scale, aq0, aq1, aq2, aq3, ak0, ak1, ak2, ak3, SUB, CHUNK
    )
    aq0, aq1, aq2, aq3, ak0, ak1, ak2, ak3 = _row_block_scores(
        1,
        q_ptr,
        k_ptr,
        g_ptr,
        qi_ptr,
        ki_ptr,
        ko_ptr,
        decay_ptr,
        start,
        end,
        scale,
        PLANE,
        H * K,
        HV * K,
        K,
        BK,
        BKS,
        SUB,
        DOT_SPAN,
        USE_QK_L2NORM,
        PRECISION,
        PLANES,
    )
    _store_row_block(
        p_ptr, a_ptr, beta, 1, start, end, HV, i_hv, scale, aq0, aq1, aq2, aq3, ak0, ak1, ak2, ak3, SUB, CHUNK
    )
    aq0, aq1, aq2, aq3, ak0, ak1, ak2, ak3 = _row_block_scores(
        2,
        q_ptr,
        k_ptr,
        g_ptr,
        qi_ptr,
        ki_ptr,
        ko_ptr,
        decay_ptr,
        start,
        end,
        scale,
        PLANE,
        H * K,
        HV * K,
        K,
        BK,
        BKS,
        SUB,
        DOT_SPAN,
        USE_QK_L2NORM,
        PRECISION,
        PLANES,
    )
    _store_row_block(
        p_ptr, a_ptr, beta, 2, start, end, HV, i_hv, scale, aq0, aq1, aq2, aq3, ak0, ak1, ak2, ak3, SUB, CHUNK
    )
    aq0, aq1, aq2, aq3, ak0, ak1, ak2, ak3 = _row_block_scores(
        3,
        q_ptr,
        k_ptr,
        g_ptr,
        qi_ptr,
        ki_ptr,
        ko_ptr,
        decay_ptr,
        start,
        end,
        scale,
        PLANE,
        H * K,
        HV * K,
        K,
        BK,
        BKS,
        SUB,
        DOT_SPAN,
        USE_QK_L2NORM,
        PRECISION,
        PLANES,
    )
    _store_row_block(
        p_ptr, a_ptr, beta, 3, start, end, HV, i_hv, scale, aq0, aq1, aq2, aq3, ak0, ak1, ak2, ak3, SUB, CHUNK
    )


@triton.jit
def _invert_chunk(p_ptr, SUB: tl.constexpr, CHUNK: tl.constexpr, PRECISION: tl.constexpr):
    """Replaces L = Diag(beta) A_kk in the P buffer by M = (I + L)^{-1}, row block by row block:
    ``M_ii = (I + L_ii)^{-1}``, ``M_ij = -M_ii sum_{j <= m < i} L_im M_mj``."""
    d0 = _unit_lower_inverse(_load_block(p_ptr, 0, 0, SUB, CHUNK), SUB)
    _store_block(p_ptr, d0, 0, 0, SUB, CHUNK)
    tl.debug_barrier()
    d1 = _unit_lower_inverse(_load_block(p_ptr, 1, 1, SUB, CHUNK), SUB)
    m10 = -_dot(d1, _dot(_load_block(p_ptr, 1, 0, SUB, CHUNK), d0, PRECISION), PRECISION)
    tl.debug_barrier()
    _store_block(p_ptr, d1, 1, 1, SUB, CHUNK)
    _store_block(p_ptr, m10, 1, 0, SUB, CHUNK)
    tl.debug_barrier()
    l20, l21 = _load_block(p_ptr, 2, 0, SUB, CHUNK), _load_block(p_ptr, 2, 1, SUB, CHUNK)
    d2 = _unit_lower_inverse(_load_block(p_ptr, 2, 2, SUB, CHUNK), SUB)
    m21 = -_dot(d2, _dot(l21, d1, PRECISION), PRECISION)
    m20 = -_dot(d2, _dot(l20, d0, PRECISION) + _dot(l21, m10, PRECISION), PRECISION)
    tl.debug_barrier()
    _store_block(p_ptr, d2, 2, 2, SUB, CHUNK)
    _store_block(p_ptr, m21, 2, 1, SUB, CHUNK)
    _store_block(p_ptr, m20, 2, 0, SUB, CHUNK)
    tl.debug_barrier()
    l30, l31, l32 = (
        _load_block(p_ptr, 3, 0, SUB, CHUNK),
        _load_block(p_ptr, 3, 1, SUB, CHUNK),
        _load_block(p_ptr, 3, 2, SUB, CHUNK),
    )
    d3 = _unit_lower_inverse(_load_block(p_ptr, 3, 3, SUB, CHUNK), SUB)
    m32 = -_dot(d3, _dot(l32, d2, PRECISION), PRECISION)
    m31 = -_dot(d3, _dot(l31, d1, PRECISION) + _dot(l32, m21, PRECISION), PRECISION)
    m30 = -_dot(d3, _dot(l30, d0, PRECISION) + _dot(l31, m10, PRECISION) + _dot(l32, m20, PRECISION), PRECISION)
    tl.debug_barrier()
    _store_block(p_ptr, d3, 3, 3, SUB, CHUNK)
    _store_block(p_ptr, m32, 3, 2, SUB, CHUNK)
    _store_block(p_ptr, m31, 3, 1, SUB, CHUNK)
    _store_block(p_ptr, m30, 3, 0, SUB, CHUNK)


@triton.jit
def _intra_pointers(
    q,
    k,
    g,
    p_out,
    a_out,
    q_in,
    k_in,
    k_out,
    decay_out,
    i_c,
    i_hv,
    H: tl.constexpr,
    HV: tl.constexpr,
    K: tl.constexpr,
    CHUNK: tl.constexpr,
):
    i_h = i_hv // (HV // H)
    block = (i_c * HV + i_hv).to(tl.int64) * CHUNK * CHUNK
    return (
        q + i_h * K,
        k + i_h * K,
        g + i_hv * K,
        q_in + i_hv * K,
        k_in + i_hv * K,
        k_out + i_hv * K,
        decay_out + (i_c * HV + i_hv).to(tl.int64) * K,
        p_out + block,
        a_out + block,
    )


@triton.jit
def _chunk_intra_kernel(
    q,
    k,
    g,
    beta,
    p_out,
    a_out,
    q_in,
    k_in,
    k_out,
    decay_out,
    strong,
    sequence_end,
    chunk_start,
    scale,
    T,
    NT,
    PLANE,
    H: tl.constexpr,
    HV: tl.constexpr,
    K: tl.constexpr,
    BK: tl.constexpr,
    BKS: tl.constexpr,
    CHUNK: tl.constexpr,
    SUB: tl.constexpr,
    DOT_SPAN: tl.constexpr,
    IS_VARLEN: tl.constexpr,
    USE_QK_L2NORM: tl.constexpr,
    PRECISION: tl.constexpr,
    PLANES: tl.constexpr,
):
    """Chunks under mild decay: whole-chunk score products, then the inverse. Chunks with a
    larger span are only marked in ``strong`` for :func:`_chunk_intra_strong_kernel`."""
    i_c, i_hv = tl.program_id(0), tl.program_id(1)
    start, end = _chunk_bounds(i_c, sequence_end, chunk_start, T, NT, IS_VARLEN, CHUNK)
    q_ptr, k_ptr, g_ptr, qi_ptr, ki_ptr, ko_ptr, decay_ptr, p_ptr, a_ptr = _intra_pointers(
        q, k, g, p_out, a_out, q_in, k_in, k_out, decay_out, i_c, i_hv, H, HV, K, CHUNK
    )
    span = _chunk_span(g_ptr, start, end, HV * K, K, BK, BKS, CHUNK)
    is_strong = span > DOT_SPAN
    tl.store(strong + i_c * HV + i_hv, is_strong.to(tl.int32))
    if not is_strong:
        _chunk_scores_by_dot(
            q_ptr,
            k_ptr,
            g_ptr,
            qi_ptr,
            ki_ptr,
            ko_ptr,
            decay_ptr,
            p_ptr,
            a_ptr,
            beta,
            i_hv,
            start,
            end,
            scale,
            PLANE,
            H * K,
            HV * K,
            HV,
            K,
            BK,
            BKS,
            CHUNK,
            USE_QK_L2NORM,
            PRECISION,
            PLANES,
        )
        tl.debug_barrier()
        _invert_chunk(p_ptr, SUB, CHUNK, PRECISION)


@triton.jit
def _chunk_intra_strong_kernel(
    q,
    k,
    g,
    beta,
    p_out,
    a_out,
    q_in,
    k_in,
    k_out,
    decay_out,
    strong,
    sequence_end,
    chunk_start,
    scale,
    T,
    NT,
    PLANE,
    H: tl.constexpr,
    HV: tl.constexpr,
    K: tl.constexpr,
    BK: tl.constexpr,
    BKS: tl.constexpr,
    CHUNK: tl.constexpr,
    SUB: tl.constexpr,
    DOT_SPAN: tl.constexpr,
    IS_VARLEN: tl.constexpr,
    USE_QK_L2NORM: tl.constexpr,
    PRECISION: tl.constexpr,
    PLANES: tl.constexpr,
):
    """The chunks :func:`_chunk_intra_kernel` marked: scores one 16-row block at a time (exact
    for any decay), then the inverse. Other programs return at once."""
    i_c, i_hv = tl.program_id(0), tl.program_id(1)
    if tl.load(strong + i_c * HV + i_hv) != 0:
        start, end = _chunk_bounds(i_c, sequence_end, chunk_start, T, NT, IS_VARLEN, CHUNK)
        q_ptr, k_ptr, g_ptr, qi_ptr, ki_ptr, ko_ptr, decay_ptr, p_ptr, a_ptr = _intra_pointers(
            q, k, g, p_out, a_out, q_in, k_in, k_out, decay_out, i_c, i_hv, H, HV, K, CHUNK
        )
        _chunk_scores_by_blocks(
            q_ptr,
            k_ptr,
            g_ptr,
            qi_ptr,
            ki_ptr,
            ko_ptr,
            decay_ptr,
            p_ptr,
            a_ptr,
            beta,
            i_hv,
            start,
            end,
            scale,
            PLANE,
            H,
            HV,
            K,
            BK,
            BKS,
            CHUNK,
            SUB,
            DOT_SPAN,
            USE_QK_L2NORM,
            PRECISION,
            PLANES,
        )
        tl.debug_barrier()
        _invert_chunk(p_ptr, SUB, CHUNK, PRECISION)


@triton.jit
def _dot_operand(a, b, b_low, PRECISION: tl.constexpr, PLANES: tl.constexpr, NATIVE_BF16: tl.constexpr):
    """``a @ b`` for a float32 ``a`` computed here and a ``b`` read from the intra-chunk kernel.

    With bfloat16 operands (PLANES = 1, or 2 for a pair ``(b, b_low)``) ``a`` is split into a
    bfloat16 high part and remainder, so it keeps ~16 bits through bfloat16 products (the
    low x low term is below float32's own rounding). Without NATIVE_BF16 (Triton's CPU
    interpreter, whose bfloat16 products are unreliable) the same bfloat16 values are multiplied
    in float32, which is exact for products of bfloat16s.
    """
    if PLANES == 0:
        return _dot(a, b, PRECISION)
    else:
        high = a.to(tl.bfloat16)
        low = (a - high.to(tl.float32)).to(tl.bfloat16)
        if NATIVE_BF16:
            result = tl.dot(high, b) + tl.dot(low, b)
            if PLANES == 2:
                result += tl.dot(high, b_low)
        else:
            high, low, b, b_low = high.to(tl.float32), low.to(tl.float32), b.to(tl.float32), b_low.to(tl.float32)
            result = tl.dot(high, b, input_precision="ieee") + tl.dot(low, b, input_precision="ieee")
            if PLANES == 2:
                result += tl.dot(high, b_low, input_precision="ieee")
        return result


@triton.jit
def _load_operand(ptr, offsets, mask, PLANE, PLANES: tl.constexpr):
    high = tl.load(ptr + offsets, mask=mask, other=0.0)
    if PLANES == 2:
        low = tl.load(ptr + PLANE + offsets, mask=mask, other=0.0)
    else:
        low = high
    return high, low


@triton.jit
def _chunk_state_kernel(
    q_in,
    k_in,
    k_out,
    decay,
    v,
    beta,
    m_in,
    a_in,
    o,
    h0,
    ht,
    cu_seqlens,
    chunk_offsets,
    T,
    PLANE,
    HV: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    CHUNK: tl.constexpr,
    USE_INITIAL_STATE: tl.constexpr,
    STORE_FINAL_STATE: tl.constexpr,
    IS_VARLEN: tl.constexpr,
    PRECISION: tl.constexpr,
    PLANES: tl.constexpr,
    NATIVE_BF16: tl.constexpr,
):
    # Everything here is transposed (value columns first): the values computed in the loop are
    # the left operands of the products and the tiles read from memory the right ones.
    i_v, i_nh = tl.program_id(0), tl.program_id(1)
    i_n, i_hv = i_nh // HV, i_nh % HV
    if IS_VARLEN:
        bos = tl.load(cu_seqlens + i_n).to(tl.int64)
        eos = tl.load(cu_seqlens + i_n + 1).to(tl.int64)
        first_chunk = tl.load(chunk_offsets + i_n).to(tl.int64)
    else:
        bos = i_n.to(tl.int64) * T
        eos = bos + T
        first_chunk = i_n.to(tl.int64) * tl.cdiv(T, CHUNK)
    cols_k = tl.arange(0, BK)
    cols_v = i_v * BV + tl.arange(0, BV)
    mask_k, mask_v = cols_k < K, cols_v < V
    rows = tl.arange(0, CHUNK)
    causal_t = rows[None, :] >= rows[:, None]  # the causal (lower) triangle, transposed

    state_offsets = (i_n * HV + i_hv).to(tl.int64) * K * V + cols_k[None, :] * V + cols_v[:, None]
    state_mask = mask_k[None, :] & mask_v[:, None]
    state_t = tl.zeros([BV, BK], dtype=tl.float32)  # S^T
    if USE_INITIAL_STATE:
        state_t += tl.load(h0 + state_offsets, mask=state_mask, other=0.0).to(tl.float32)

    num_chunks = tl.cdiv(eos - bos, CHUNK)
    for c in range(0, num_chunks):
        tokens = bos + c * CHUNK + rows
        valid = tokens < eos
        chunk = (first_chunk + c) * HV + i_hv
        square = chunk * CHUNK * CHUNK + rows[None, :] * CHUNK + rows[:, None]  # [C, C] read transposed
        operand_t = tokens.to(tl.int64)[None, :] * (HV * K) + i_hv * K + cols_k[:, None]  # [BK, C]
        operand_t_mask = valid[None, :] & mask_k[:, None]
        values_offsets = tokens.to(tl.int64)[None, :] * (HV * V) + i_hv * V + cols_v[:, None]  # [BV, C]
        values_mask = valid[None, :] & mask_v[:, None]

        keys_in, keys_in_low = _load_operand(k_in, operand_t, operand_t_mask, PLANE, PLANES)
        values_t = tl.load(v + values_offsets, mask=values_mask, other=0.0).to(tl.float32)
        b = tl.load(beta + tokens * HV + i_hv, mask=valid, other=0.0).to(tl.float32)
        correction_t = (values_t - _dot_operand(state_t, keys_in, keys_in_low, PRECISION, PLANES, NATIVE_BF16)) * b[
            None, :
        ]
        inverse_t = tl.load(m_in + square, mask=causal_t, other=0.0)
        v_new_t = _dot(correction_t, inverse_t, PRECISION)  # (M X)^T

        queries_in, queries_in_low = _load_operand(q_in, operand_t, operand_t_mask, PLANE, PLANES)
        scores_t = tl.load(a_in + square, mask=causal_t, other=0.0)
        out_t = _dot_operand(state_t, queries_in, queries_in_low, PRECISION, PLANES, NATIVE_BF16) + _dot(
            v_new_t, scores_t, PRECISION
        )
        tl.store(o + values_offsets, out_t.to(o.dtype.element_ty), mask=values_mask)

        keys_out, keys_out_low = _load_operand(k_out, tl.trans(operand_t), tl.trans(operand_t_mask), PLANE, PLANES)
        decay_last = tl.load(decay + chunk * K + cols_k, mask=mask_k, other=0.0)
        state_t = state_t * decay_last[None, :] + _dot_operand(
            v_new_t, keys_out, keys_out_low, PRECISION, PLANES, NATIVE_BF16
        )

    if STORE_FINAL_STATE:
        tl.store(ht + state_offsets, state_t, mask=state_mask)


def _chunk_tables(cu_seqlens: torch.Tensor, chunk: int):
    """Per packed sequence: its first global chunk; per chunk: its first token and its sequence's end."""
    offsets = cu_seqlens.tolist()
    starts, ends, firsts = [], [], [0]
    for bos, eos in zip(offsets, offsets[1:]):
        chunk_starts = list(range(bos, eos, chunk))
        starts += chunk_starts
        ends += [eos] * len(chunk_starts)
        firsts.append(firsts[-1] + len(chunk_starts))
    device = cu_seqlens.device
    as_tensor = lambda xs: torch.tensor(xs, dtype=torch.int64, device=device)  # noqa: E731
    return as_tensor(firsts), as_tensor(starts), as_tensor(ends)


def triton_chunk_kda(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    scale: float,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    *,
    block_v: int | None = None,
    intra_warps: int = 4,
    state_warps: int | None = None,
    state_stages: int | None = None,
    precision: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Chunked KDA forward with the Triton kernels. Inputs must already be validated.

    Args:
        q: ``[B, T, H, K]`` queries, K <= 256.
        k: ``[B, T, H, K]`` keys.
        v: ``[B, T, HV, V]`` values, ``HV`` a multiple of ``H``.
        g: ``[B, T, HV, K]`` log-space decay (``<= 0``; positive entries count as 0).
        beta: ``[B, T, HV]`` delta-rule step sizes.
        scale: multiplies ``q``.
        initial_state: ``[N, HV, K, V]`` state per sequence, or None for zeros.
        output_final_state: also return the ``[N, HV, K, V]`` float32 state after the last token.
        use_qk_l2norm_in_kernel: L2-normalise ``q`` and ``k`` per head inside the kernels.
        cu_seqlens: ``[N + 1]`` offsets of packed sequences when ``B == 1``, or None.
        precision: matrix products: "ieee" (the default for float32 inputs), "tf32x3",
            "tf32" (the default for 16-bit inputs: their products with the state are bfloat16
            products of a split state and operands stored as bfloat16 pairs) or "bf16" (the same
            with single bfloat16 operands: half their memory traffic, less accurate).
        block_v, intra_warps, state_warps, state_stages: launch settings of the two kernels
            (value columns per state-kernel program, a power of two; warps; pipeline stages);
            the defaults suit the H200.

    Returns:
        ``(o, final_state)``: ``o`` is ``[B, T, HV, V]`` in ``v``'s dtype; ``final_state`` is
        float32 or None.
    """
    B, T, H, K = k.shape
    HV, V = v.shape[2], v.shape[3]
    if K > MAX_KEY_DIM:
        raise ValueError(f"q: the Triton chunk kernel supports K <= {MAX_KEY_DIM}, got K = {K}")
    q, k, v, g, beta = (x.contiguous() for x in (q, k, v, g, beta))
    if precision is None:
        precision = "ieee" if torch.float32 in (q.dtype, k.dtype, v.dtype) else "tf32"
    if cu_seqlens is None:
        N, per_sequence = B, triton.cdiv(T, CHUNK)
        num_chunks = N * per_sequence
        chunk_offsets = chunk_starts = chunk_ends = None
    else:
        N, per_sequence = cu_seqlens.numel() - 1, 0
        chunk_offsets, chunk_starts, chunk_ends = _chunk_tables(cu_seqlens, CHUNK)
        num_chunks = chunk_starts.numel()
    block_k = max(16, triton.next_power_of_2(K))
    if block_v is None:
        block_v = min(64, max(16, triton.next_power_of_2(V)))
    # Products with the state: float32 operands for float32 inputs (or "ieee"/"tf32x3"); for
    # 16-bit inputs the decayed queries and keys are stored as bfloat16 pairs ("tf32", the default)
    # or single bfloat16s ("bf16") and meet a state split into two bfloat16 parts.
    if precision not in ("ieee", "tf32x3", "tf32", "bf16"):
        raise ValueError(f"precision: expected 'ieee', 'tf32x3', 'tf32' or 'bf16', got {precision!r}")
    planes = 0 if q.dtype == torch.float32 or precision in ("ieee", "tf32x3") else (1 if precision == "bf16" else 2)
    precision = "tf32" if precision == "bf16" else precision  # products that do not meet the state
    inverse = q.new_empty(num_chunks, HV, CHUNK, CHUNK, dtype=torch.float32)
    scores = torch.empty_like(inverse)
    queries_in, keys_in, keys_out = (
        q.new_empty(max(planes, 1), B * T, HV, K, dtype=torch.bfloat16 if planes else torch.float32) for _ in range(3)
    )
    plane = B * T * HV * K
    decay_last = q.new_empty(num_chunks, HV, K, dtype=torch.float32)
    strong = q.new_empty(num_chunks, HV, dtype=torch.int32)
    intra_args = (
        q,
        k,
        g,
        beta,
        inverse,
        scores,
        queries_in,
        keys_in,
        keys_out,
        decay_last,
        strong,
        chunk_ends,
        chunk_starts,
        float(scale),
        T,
        max(per_sequence, 1),
        plane,
    )
    intra_constants = dict(
        H=H,
        HV=HV,
        K=K,
        BK=block_k,
        BKS=min(block_k, KEY_SLICE),
        CHUNK=CHUNK,
        SUB=SUB,
        DOT_SPAN=DOT_SPAN,
        IS_VARLEN=cu_seqlens is not None,
        USE_QK_L2NORM=use_qk_l2norm_in_kernel,
        PRECISION=precision,
        PLANES=planes,
    )
    _chunk_intra_kernel[(num_chunks, HV)](*intra_args, **intra_constants, num_warps=intra_warps)
    _chunk_intra_strong_kernel[(num_chunks, HV)](*intra_args, **intra_constants, num_warps=4)
    o = torch.empty_like(v)
    final_state = v.new_empty(N, HV, K, V, dtype=torch.float32) if output_final_state else None
    if initial_state is not None:
        initial_state = initial_state.contiguous()
    _chunk_state_kernel[(triton.cdiv(V, block_v), N * HV)](
        queries_in,
        keys_in,
        keys_out,
        decay_last,
        v,
        beta,
        inverse,
        scores,
        o,
        initial_state,
        final_state,
        cu_seqlens,
        chunk_offsets,
        T,
        plane,
        HV=HV,
        K=K,
        V=V,
        BK=block_k,
        BV=block_v,
        CHUNK=CHUNK,
        USE_INITIAL_STATE=initial_state is not None,
        STORE_FINAL_STATE=output_final_state,
        IS_VARLEN=cu_seqlens is not None,
        PRECISION=precision,
        PLANES=planes,
        NATIVE_BF16=not interpreting(),
        num_warps=state_warps or 4,
        num_stages=state_stages or 1,  # two stages exceed the shared memory at K = V = 128
    )
    return o, final_state

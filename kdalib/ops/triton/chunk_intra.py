"""The intra-chunk kernels of the Triton chunked forward (see :mod:`kdalib.ops.triton.chunk`):
per (chunk, value head), the inverse ``M = (I + Diag(beta) A_kk)^{-1}``, the scores ``A``, and the
decayed operands the state kernel reads."""

import triton
import triton.language as tl

from kdalib.ops.triton.tiles import (
    _dot,
    _inverse_row_norms,
    _load_block,
    _load_gate,
    _load_rows,
    _row,
    _store_block,
    _store_rows,
)


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
def _off_block(xq_i, xk_i, gam_i, ref, kj, gam_j, PRECISION: tl.constexpr):
    """Scores of rows in block i against columns in an earlier block j, through reference row ``ref``."""
    left = tl.exp(tl.minimum(gam_i - ref[None, :], 0.0))
    right = tl.trans(kj * tl.exp(tl.minimum(ref[None, :] - gam_j, 0.0)))
    return _dot(xq_i * left, right, PRECISION), _dot(xk_i * left, right, PRECISION)


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
def _gamma(g_ptr, rows, row_mask, stride, cols, col_mask, carry, SUB: tl.constexpr):
    """Chunk-local cumulative log decay of one sub-block slice, and the carry past it: its own last
    row, so the next block and G_L continue the very same sums (a sum in another order, such as
    the GPU's tree reduction, can differ by rounding, and exp(G_L - G) would then miss 1 on the last
    row by up to ~2e-3 with the strongest gates)."""
    g = _load_gate(g_ptr, rows, row_mask, stride, cols, col_mask)
    gam = tl.cumsum(g, axis=0) + carry[None, :]
    return gam, _row(gam, SUB - 1, SUB)


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
        gam0, carry = _gamma(g_ptr, rows0, m0, G_STRIDE, cols, cm, tl.zeros([BKS], dtype=tl.float32), SUB)
        gam1, carry = _gamma(g_ptr, rows1, m1, G_STRIDE, cols, cm, carry, SUB)
        gam2, carry = _gamma(g_ptr, rows2, m2, G_STRIDE, cols, cm, carry, SUB)
        gam3, gam_last = _gamma(g_ptr, rows3, m3, G_STRIDE, cols, cm, carry, SUB)
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
        gam_last = _row(gam, CHUNK - 1, CHUNK)  # the cumulative sum's own last row (see _gamma)
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
    for i in tl.static_range(4):
        aq0, aq1, aq2, aq3, ak0, ak1, ak2, ak3 = _row_block_scores(
            i,
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
            p_ptr, a_ptr, beta, i, start, end, HV, i_hv, scale, aq0, aq1, aq2, aq3, ak0, ak1, ak2, ak3, SUB, CHUNK
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
    STRONG_PASS: tl.constexpr,
):
    """The intra-chunk work of one (chunk, value head), launched twice over the same grid.

    The first launch (``STRONG_PASS`` false) takes chunks under mild decay: whole-chunk score
    products, then the inverse; it marks chunks with a larger span in ``strong``. The second
    launch takes only the marked chunks: scores one 16-row block at a time (exact for any decay),
    then the inverse; its other programs return at once.
    """
    i_c, i_hv = tl.program_id(0), tl.program_id(1)
    start, end = _chunk_bounds(i_c, sequence_end, chunk_start, T, NT, IS_VARLEN, CHUNK)
    q_ptr, k_ptr, g_ptr, qi_ptr, ki_ptr, ko_ptr, decay_ptr, p_ptr, a_ptr = _intra_pointers(
        q, k, g, p_out, a_out, q_in, k_in, k_out, decay_out, i_c, i_hv, H, HV, K, CHUNK
    )
    if STRONG_PASS:
        if tl.load(strong + i_c * HV + i_hv) != 0:
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
    else:
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

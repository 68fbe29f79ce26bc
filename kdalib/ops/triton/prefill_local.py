"""Chunk-local work of the Triton chunked forward (see :mod:`kdalib.ops.triton.chunk`): one program
per (chunk, value head), all chunks in parallel, nothing that depends on the state.

For a chunk of C = 64 tokens with cumulative log decay ``G`` (from the chunk start, its own token
included; notes/kda.md, "The chunkwise algorithm") the program writes

* ``A = scale * A_qk``, the causal decay-weighted scores, diagonal included (float32),
* ``W = M Diag(beta) (K * exp(G))`` and ``U = M Diag(beta) V`` with the WY/UT inverse
  ``M = (I + Diag(beta) A_kk)^{-1}``, so that the chunk's corrections are ``V_new = U - W S``,
* ``Q_g = scale * Q * exp(G)`` (queries decayed from the chunk start),
* ``K_g = K * exp(G_L - G)`` (keys decayed to the chunk end) and ``exp(G_L)``.

Scores are built in 16-row blocks. An off-diagonal block (rows in block i, columns in an
earlier block j) is one matrix product of factors decayed towards the row just before block i:
``(X_i * exp(G_i - c_i)) (K_j * exp(c_i - G_j))^T``, both exponents <= 0 because the cumulative
log decay never increases; the column factors are kept in registers and decayed block by block.
A diagonal block is one product as well while its own total decay (its *span*) is at most
``DIAG_SPAN`` (:mod:`kdalib.ops.triton.runtime`): the column factor ``exp(c_i - G)`` is then at most ``exp(80)``, far inside
float32's range. This covers the bounded gate of Kimi models (``lower_bound=-5``: 16 tokens
decay at most 80), mild gates and most of the Kimi softplus gate; blocks with a larger span are
built exactly, channel slice by channel slice, from ``exp(min(G_r - G_c, 0))``. So no exponent
that could overflow is formed, and the gate's strength changes only which blocks take the exact
path, never the whole chunk.

Gates follow the operators' contract (``g <= 0``; a positive entry counts as 0) and are floored
at ``-GATE_FLOOR`` per token: ``exp(-GATE_FLOOR)`` is zero in float32, so the floor changes no
float32 decay factor, keeps ``g = -inf`` from producing ``inf - inf``, and bounds the magnitude
of the cumulative sums whose differences the kernel forms. Suffix sums such as ``G_L - G`` are
taken as reverse cumulative sums of the following tokens' gates, not as differences of prefix
sums, so they keep full float32 precision whatever decay came before them.

The gate may also be computed here from the raw projection (``kda_gate``'s two forms, see
:mod:`kdalib.ops.gate`): ``-exp(A_log) softplus(g_raw + dt_bias)`` or
``L sigmoid(exp(A_log) (g_raw + dt_bias))``.
"""

from __future__ import annotations

import triton
import triton.language as tl

from kdalib.ops.triton.inverse import _invert_chunk
from kdalib.ops.triton.tiles import _chunk_bounds, _dot, _row, _stored_as, _widen


@triton.jit
def _gate(
    g_ptr,
    rows,
    row_mask,
    cols,
    col_mask,
    i_hv,
    a_log,
    dt_bias,
    lower_bound,
    G_ROW: tl.constexpr,
    K: tl.constexpr,
    GATE: tl.constexpr,
    FLOOR: tl.constexpr,
):
    """``[len(rows), len(cols)]`` log decays of value head ``i_hv`` for the chunk's rows ``rows``
    (``g_ptr`` points at the chunk's first token of that head, rows ``G_ROW`` apart; 0 where
    masked), in ``[-FLOOR, 0]`` (NaN stays NaN)."""
    mask = row_mask[:, None] & col_mask[None, :]
    raw = tl.load(g_ptr + (rows[:, None] * G_ROW + cols[None, :]), mask=mask, other=0.0)
    raw = _widen(raw)
    if GATE == 0:
        g = raw
    else:
        x = raw
        if dt_bias is not None:
            x = x + tl.load(dt_bias + i_hv * K + cols, mask=col_mask, other=0.0).to(raw.dtype)[None, :]
        rate = tl.exp(tl.load(a_log + i_hv).to(raw.dtype))
        if GATE == 1:
            # -rate * softplus(x), softplus computed without overflow
            g = -rate * (tl.maximum(x, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(x))))
        else:
            g = lower_bound * tl.sigmoid(rate * x)
        g = tl.where(mask, g, 0.0)
    g = tl.minimum(g, 0.0, propagate_nan=tl.PropagateNan.ALL)
    return tl.maximum(g, -FLOOR, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _rows_of(ptr, rows, row_mask, stride, cols, col_mask):
    """``[len(rows), len(cols)]`` tile, widened (16-bit to float32), row r at ``ptr + rows[r] * stride + cols`` (``ptr``
    points at the chunk's first token, so the offsets are small 32-bit integers)."""
    mask = row_mask[:, None] & col_mask[None, :]
    return _widen(tl.load(ptr + (rows[:, None] * stride + cols[None, :]), mask=mask, other=0.0))


@triton.jit
def _put_rows(ptr, tile, rows, row_mask, stride, cols, col_mask, NATIVE_BF16: tl.constexpr):
    mask = row_mask[:, None] & col_mask[None, :]
    value = _stored_as(tile, ptr.dtype.element_ty, NATIVE_BF16)
    tl.store(ptr + (rows[:, None] * stride + cols[None, :]), value, mask=mask)


@triton.jit
def _inverse_norm(x, USE_QK_L2NORM: tl.constexpr):
    """Per row: ``1 / sqrt(sum(x^2) + 1e-6)`` with the in-kernel L2 norm, else 1."""
    if USE_QK_L2NORM:
        return 1.0 / tl.sqrt(tl.sum(x * x, axis=1) + 1e-6)
    return tl.full([x.shape[0]], 1.0, dtype=x.dtype)


@triton.jit
def _exact_diagonal(
    q_ptr,
    k_ptr,
    g_ptr,
    rows,
    row_mask,
    nq,
    nk,
    i_hv,
    a_log,
    dt_bias,
    lower_bound,
    QK_STRIDE: tl.constexpr,
    G_ROW: tl.constexpr,
    K: tl.constexpr,
    BK: tl.constexpr,
    BKS: tl.constexpr,
    SUB: tl.constexpr,
    GATE: tl.constexpr,
    FLOOR: tl.constexpr,
):
    """Scores of one diagonal block for any decay: ``A_qk[r, c] = sum_d q_rd k_cd exp(G_rd - G_cd)``
    for ``c <= r`` (``A_kk`` the same with key rows, ``c < r``), every exponent masked to ``<= 0``
    before the exp, summed over key slices of ``BKS`` channels."""
    sub = tl.arange(0, SUB)
    lower = sub[:, None] >= sub[None, :]
    a_qk = tl.zeros([SUB, SUB], dtype=nq.dtype)
    a_kk = tl.zeros([SUB, SUB], dtype=nq.dtype)
    for s0 in tl.static_range(0, BK, BKS):
        cols = s0 + tl.arange(0, BKS)
        cm = cols < K
        gam = tl.cumsum(
            _gate(g_ptr, rows, row_mask, cols, cm, i_hv, a_log, dt_bias, lower_bound, G_ROW, K, GATE, FLOOR), axis=0
        )
        xq = _rows_of(q_ptr, rows, row_mask, QK_STRIDE, cols, cm) * nq[:, None]
        xk = _rows_of(k_ptr, rows, row_mask, QK_STRIDE, cols, cm) * nk[:, None]
        exponent = gam[:, None, :] - gam[None, :, :]
        weight = tl.exp(tl.where(lower[:, :, None], tl.minimum(exponent, 0.0), float("-inf")))
        weighted = weight * xk[None, :, :]
        a_qk += tl.sum(xq[:, None, :] * weighted, axis=2)
        a_kk += tl.sum(xk[:, None, :] * weighted, axis=2)
    return a_qk, tl.where(sub[:, None] > sub[None, :], a_kk, 0.0)


@triton.jit
def _square_block(ptr, block, i: tl.constexpr, j: tl.constexpr, SUB: tl.constexpr, CHUNK: tl.constexpr):
    """Stores a ``[SUB, SUB]`` tile as block ``(i, j)`` of a ``[CHUNK, CHUNK]`` matrix."""
    sub = tl.arange(0, SUB)
    tl.store(ptr + (i * SUB + sub)[:, None] * CHUNK + (j * SUB + sub)[None, :], block)


@triton.jit
def _chunk_local_kernel(
    q,
    k,
    v,
    g,
    beta,
    a_log,
    dt_bias,
    lower_bound,
    w_out,
    u_out,
    qg_out,
    kg_out,
    decay_out,
    a_out,
    p_out,
    kk_out,
    sequence_end,
    chunk_start,
    scale,
    T,
    NT,
    H: tl.constexpr,
    HV: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BK: tl.constexpr,
    BKS: tl.constexpr,
    BV: tl.constexpr,
    CHUNK: tl.constexpr,
    SUB: tl.constexpr,
    DIAG_SPAN: tl.constexpr,
    FLOOR: tl.constexpr,
    IS_VARLEN: tl.constexpr,
    USE_QK_L2NORM: tl.constexpr,
    GATE: tl.constexpr,
    PRECISION: tl.constexpr,
    NATIVE_BF16: tl.constexpr,
    TERMS_AS_CHUNKS: tl.constexpr,
    QK_ROW: tl.constexpr,
    G_ROW: tl.constexpr,
    V_ROW: tl.constexpr,
    BETA_ROW: tl.constexpr,
    OUT_K_ROW: tl.constexpr,
    OUT_V_ROW: tl.constexpr,
    COMPUTE: tl.constexpr,
):
    """The chunk-local terms of one (chunk, value head); see the module docstring.

    ``TERMS_AS_CHUNKS``: the terms in the chunk layout of the training path's backward
    (``[chunks, HV, C, *]``, each chunk's rows contiguous, rows past a sequence's end written as
    zeros, :mod:`kdalib.ops.triton.training`), else in the token layout of the user's tensors; the
    inputs are always in the token layout. ``kk_out`` (optional): also store the strictly lower
    ``A_kk`` there. ``*_ROW``: the distance between a chunk's consecutive tokens in q and k, in g,
    in v and in beta, then in the key-sized and the value-sized outputs. ``COMPUTE``: float32,
    or float64 for float64 inputs (the training kernels' float64 tests), with ``FLOOR`` at
    float64's underflow.

    Three phases: the scores row block by row block (``A`` stored, ``Diag(beta) A_kk`` into the
    ``p_out`` scratch, ``Q_g``, ``K_g``, ``exp(G_L)`` stored, ``Diag(beta) K exp(G)`` parked in
    ``w_out``); the inverse ``M`` in place of ``p_out``; then ``W`` and ``U`` as products of ``M``
    with whole-chunk tiles.
    """
    i_c, i_hv = tl.program_id(0), tl.program_id(1)
    # every pointer below points at the chunk's first token of its head; offsets are 32-bit
    start, end = _chunk_bounds(i_c, sequence_end, chunk_start, T, NT, IS_VARLEN, CHUNK)
    i_h = i_hv // (HV // H)
    n = (end - start).to(tl.int32)  # tokens in this chunk
    q_ptr, k_ptr = q + start * QK_ROW + i_h * K, k + start * QK_ROW + i_h * K
    g_ptr = g + start * G_ROW + i_hv * K
    beta_ptr = beta + start * BETA_ROW + i_hv
    v_ptr = v + start * V_ROW + i_hv * V
    if TERMS_AS_CHUNKS:
        # every row of the chunk is written, those past its end as the zeros of padding tokens
        n_out = CHUNK
        at = (i_c * HV + i_hv).to(tl.int64) * CHUNK
        key_out, value_out = at * K, at * V
    else:
        n_out = n
        key_out, value_out = start * OUT_K_ROW + i_hv * K, start * OUT_V_ROW + i_hv * V
    w_ptr, qg_ptr, kg_ptr = w_out + key_out, qg_out + key_out, kg_out + key_out
    square = (i_c * HV + i_hv).to(tl.int64) * CHUNK * CHUNK
    a_ptr, p_ptr = a_out + square, p_out + square
    sub = tl.arange(0, SUB)
    cols = tl.arange(0, BK)
    cm = cols < K
    zero_block = tl.zeros([SUB, SUB], dtype=COMPUTE)
    kd0 = tl.zeros([SUB, BK], dtype=COMPUTE)
    kd1, kd2, kd3 = kd0, kd0, kd0
    carry = tl.zeros([BK], dtype=COMPUTE)  # log decay from the chunk start to the current block
    for i in tl.static_range(4):
        rows = i * SUB + sub
        m = rows < n
        g_i = _gate(g_ptr, rows, m, cols, cm, i_hv, a_log, dt_bias, lower_bound, G_ROW, K, GATE, FLOOR)
        gam = tl.cumsum(g_i, axis=0)
        tot = _row(gam, SUB - 1, SUB)
        # exclusive suffix sums inside the block, from the following rows' gates (no cancellation)
        g_next = _gate(
            g_ptr,
            rows + 1,
            (rows + 1 < n) & (sub < SUB - 1),
            cols,
            cm,
            i_hv,
            a_log,
            dt_bias,
            lower_bound,
            G_ROW,
            K,
            GATE,
            FLOOR,
        )
        suffix = tl.cumsum(g_next, axis=0, reverse=True)
        xq = _rows_of(q_ptr, rows, m, QK_ROW, cols, cm)
        xk = _rows_of(k_ptr, rows, m, QK_ROW, cols, cm)
        nq = _inverse_norm(xq, USE_QK_L2NORM)
        nk = _inverse_norm(xk, USE_QK_L2NORM)
        xq = xq * nq[:, None]
        xk = xk * nk[:, None]
        b = _widen(tl.load(beta_ptr + rows * BETA_ROW, mask=m, other=0.0))
        left = tl.exp(gam)
        lq = xq * left
        lk = xk * left
        # diagonal block: one product under the span limit, else exact
        span = tl.max(-tot, axis=0)
        if span <= DIAG_SPAN:
            right = tl.trans(xk * tl.exp(-gam))
            dq = tl.where(sub[:, None] >= sub[None, :], _dot(lq, right, PRECISION), 0.0)
            dk = tl.where(sub[:, None] > sub[None, :], _dot(lk, right, PRECISION), 0.0)
        else:
            dq, dk = _exact_diagonal(
                q_ptr,
                k_ptr,
                g_ptr,
                rows,
                m,
                nq,
                nk,
                i_hv,
                a_log,
                dt_bias,
                lower_bound,
                QK_ROW,
                G_ROW,
                K,
                BK,
                BKS,
                SUB,
                GATE,
                FLOOR,
            )
        for j in tl.static_range(4):
            if j < i:
                if j == 0:
                    kd = kd0
                elif j == 1:
                    kd = kd1
                else:
                    kd = kd2
                aq = _dot(lq, tl.trans(kd), PRECISION)
                ak = _dot(lk, tl.trans(kd), PRECISION)
            elif j == i:
                aq, ak = dq, dk
            else:
                aq, ak = zero_block, zero_block
            _square_block(a_ptr, aq * scale, i, j, SUB, CHUNK)
            _square_block(p_ptr, ak * b[:, None], i, j, SUB, CHUNK)
            if kk_out is not None:
                _square_block(kk_out + square, ak, i, j, SUB, CHUNK)
        decay_in = tl.exp(carry[None, :] + gam)  # from the chunk start, own token included
        _put_rows(qg_ptr, xq * decay_in * scale, rows, rows < n_out, OUT_K_ROW, cols, cm, NATIVE_BF16)
        _put_rows(w_ptr, xk * decay_in * b[:, None], rows, rows < n_out, OUT_K_ROW, cols, cm, NATIVE_BF16)
        # column factors: earlier blocks decay through this block, this block's keys to its end
        step = tl.exp(tot)[None, :]
        kd0, kd1, kd2 = kd0 * step, kd1 * step, kd2 * step
        own = xk * tl.exp(suffix)
        if i == 0:
            kd0 = own
        elif i == 1:
            kd1 = own
        elif i == 2:
            kd2 = own
        else:
            kd3 = own
        carry += tot
    for j in tl.static_range(4):
        if j == 0:
            kd = kd0
        elif j == 1:
            kd = kd1
        elif j == 2:
            kd = kd2
        else:
            kd = kd3
        rows = j * SUB + sub
        _put_rows(kg_ptr, kd, rows, rows < n_out, OUT_K_ROW, cols, cm, NATIVE_BF16)
    tl.store(decay_out + (i_c * HV + i_hv).to(tl.int64) * K + cols, tl.exp(carry), mask=cm)
    tl.debug_barrier()
    _invert_chunk(p_ptr, SUB, CHUNK, PRECISION)
    tl.debug_barrier()
    # W = M (Diag(beta) K exp(G)) and U = M Diag(beta) V, whole-chunk products
    idx = tl.arange(0, CHUNK)
    m = idx < n
    mo = idx < n_out
    inverse = tl.load(p_ptr + idx[:, None] * CHUNK + idx[None, :])
    b = _widen(tl.load(beta_ptr + idx * BETA_ROW, mask=m, other=0.0))
    for s0 in tl.static_range(0, BK, BKS):
        kcols = s0 + tl.arange(0, BKS)
        kcm = kcols < K
        parked = _rows_of(w_ptr, idx, mo, OUT_K_ROW, kcols, kcm)
        tl.debug_barrier()
        _put_rows(w_ptr, _dot(inverse, parked, PRECISION), idx, mo, OUT_K_ROW, kcols, kcm, NATIVE_BF16)
    for s0 in tl.static_range(0, V, BV):
        vcols = s0 + tl.arange(0, BV)
        vcm = vcols < V
        values = _rows_of(v_ptr, idx, m, V_ROW, vcols, vcm) * b[:, None]
        _put_rows(u_out + value_out, _dot(inverse, values, PRECISION), idx, mo, OUT_V_ROW, vcols, vcm, NATIVE_BF16)

"""Chunk-local work of the Triton chunked forward (see :mod:`kdalib.ops.triton.chunk`): one program
per (chunk, value head) or per 16-row block of one, all chunks in parallel, nothing that depends on
the state.

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
A diagonal block is one product as well while its own total decay (its *span*, any channel) is at
most ``DIAG_SPAN`` (:mod:`kdalib.ops.triton.runtime`): the column factor ``exp(c_i - G)`` is then at
most ``exp(80)``, far inside float32's range; this covers mild gates and the bounded gate of Kimi
models (``lower_bound=-5``: 16 tokens decay less than 80). Blocks of stronger decay take a launch
of their own (:func:`_diagonal_kernel`, one program per block, before the others): row by row,
the block's keys are carried decayed to the current row, so every factor is a product of
per-token decays at most 1, whatever the span. No exponent that could overflow is formed
anywhere, and a strong block costs one program of its own instead of slowing its chunk's.

Gates follow the operators' contract (``g <= 0``; a positive entry counts as 0) and are floored
at ``-GATE_FLOOR`` per token: ``exp(-GATE_FLOOR)`` is zero in float32, so the floor changes no
float32 decay factor, keeps ``g = -inf`` from producing ``inf - inf``, and bounds the magnitude
of the cumulative sums whose differences the kernel forms. Suffix sums such as ``G_L - G`` are
taken as reverse cumulative sums of the following tokens' gates, not as differences of prefix
sums, so they keep full float32 precision whatever decay came before them.

The gate may also be computed here from the raw projection: :func:`kdalib.ops.kda_gate`, whose two
forms (:mod:`kdalib.ops.gate`) :func:`_gate` writes in Triton, numbered as
:mod:`kdalib.ops.triton.runtime` numbers them (``GATE_*``).
"""

from __future__ import annotations

import triton
import triton.language as tl

from kdalib.ops.triton.inverse import _invert_chunk
from kdalib.ops.triton.runtime import GATE_BOUNDED, GATE_GIVEN, GATE_SOFTPLUS
from kdalib.ops.triton.tiles import _chunk_bounds, _dot, _row, _stored_as, _widen

# The gate forms of kdalib.ops.triton.runtime as constexprs, the only globals a kernel may read.
_GIVEN, _SOFTPLUS, _BOUNDED = tl.constexpr(GATE_GIVEN), tl.constexpr(GATE_SOFTPLUS), tl.constexpr(GATE_BOUNDED)


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
    masked), in ``[-FLOOR, 0]`` (NaN stays NaN): the given ``g`` (``GATE_GIVEN``), or
    :func:`kdalib.ops.kda_gate` of the raw projection in its softplus or bounded form."""
    mask = row_mask[:, None] & col_mask[None, :]
    raw = tl.load(g_ptr + (rows[:, None] * G_ROW + cols[None, :]), mask=mask, other=0.0)
    raw = _widen(raw)
    if GATE == _GIVEN:
        g = raw
    else:
        x = raw
        if dt_bias is not None:
            x = x + tl.load(dt_bias + i_hv * K + cols, mask=col_mask, other=0.0).to(raw.dtype)[None, :]
        rate = tl.exp(tl.load(a_log + i_hv).to(raw.dtype))
        if GATE == _SOFTPLUS:
            # -rate * softplus(x), softplus computed without overflow
            g = -rate * (tl.maximum(x, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(x))))
        else:
            tl.static_assert(GATE == _BOUNDED)
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
def _block_slice(
    q_ptr,
    k_ptr,
    g_ptr,
    i: tl.constexpr,
    n,
    cols,
    cm,
    i_hv,
    a_log,
    dt_bias,
    lower_bound,
    strong,
    QK_ROW: tl.constexpr,
    G_ROW: tl.constexpr,
    K: tl.constexpr,
    SUB: tl.constexpr,
    GATE: tl.constexpr,
    FLOOR: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """What row block ``i`` of a chunk contributes in one key slice ``cols`` (q and k not yet
    normalised): the row factors ``q exp(gam)`` and ``k exp(gam)`` (``gam`` the log decay from the
    block's start, own token included), its diagonal scores, its total decay ``exp(tot)``, its keys
    decayed to the block's end ``k exp(suffix)``, and the squared norms of its q and k rows in the
    slice. The diagonal block is one product (column factors up to ``exp(DIAG_SPAN)``) unless the
    block is ``strong`` (it spans more than ``DIAG_SPAN``); then it is :func:`_diagonal_kernel`'s
    and the scores returned for it are zeros."""
    sub = tl.arange(0, SUB)
    rows = i * SUB + sub
    m = rows < n
    gates = _gate(g_ptr, rows, m, cols, cm, i_hv, a_log, dt_bias, lower_bound, G_ROW, K, GATE, FLOOR)
    gam = tl.cumsum(gates, axis=0)
    tot = _row(gam, SUB - 1, SUB)
    # exclusive suffix sums inside the block, from the following rows' gates (no cancellation)
    nxt = (rows + 1 < n) & (sub < SUB - 1)
    g_next = _gate(g_ptr, rows + 1, nxt, cols, cm, i_hv, a_log, dt_bias, lower_bound, G_ROW, K, GATE, FLOOR)
    suffix = tl.cumsum(g_next, axis=0, reverse=True)
    xq = _rows_of(q_ptr, rows, m, QK_ROW, cols, cm)
    xk = _rows_of(k_ptr, rows, m, QK_ROW, cols, cm)
    left = tl.exp(gam)
    lq = xq * left
    lk = xk * left
    if strong:
        dq = tl.zeros([SUB, SUB], dtype=lq.dtype)
        dk = tl.zeros([SUB, SUB], dtype=lq.dtype)
    else:
        right = tl.trans(xk * tl.exp(-gam))
        dq = tl.where(sub[:, None] >= sub[None, :], _dot(lq, right, PRECISION), 0.0)
        dk = tl.where(sub[:, None] > sub[None, :], _dot(lk, right, PRECISION), 0.0)
    return lq, lk, dq, dk, tl.exp(tot), xk * tl.exp(suffix), tl.sum(xq * xq, axis=1), tl.sum(xk * xk, axis=1)


@triton.jit
def _off(lq, lk, kd, PRECISION: tl.constexpr):
    """Scores of a row block against an earlier block whose keys ``kd`` are decayed to this
    block's start."""
    right = tl.trans(kd)
    return _dot(lq, right, PRECISION), _dot(lk, right, PRECISION)


@triton.jit
def _norm(sum_of_squares, USE_QK_L2NORM: tl.constexpr):
    """Per row: ``1 / sqrt(sum(x^2) + 1e-6)`` with the in-kernel L2 norm, else 1."""
    if USE_QK_L2NORM:
        return 1.0 / tl.sqrt(sum_of_squares + 1e-6)
    return tl.full(sum_of_squares.shape, 1.0, dtype=sum_of_squares.dtype)


@triton.jit
def _store_scores(a_ptr, p_ptr, kk_ptr, aq, ak, nq, nk, nc, b, i: tl.constexpr, j: tl.constexpr, scale,
                  SUB: tl.constexpr, CHUNK: tl.constexpr):  # fmt: skip
    """Block ``(i, j)`` of the scores, normalised (row norms ``nq``/``nk`` of block i, column norms
    ``nc`` of block j): ``scale * A_qk`` into ``a_ptr``, ``Diag(beta) A_kk`` into ``p_ptr`` and,
    when asked, ``A_kk`` into ``kk_ptr``."""
    _square_block(a_ptr, aq * (nq * scale)[:, None] * nc[None, :], i, j, SUB, CHUNK)
    ak = ak * nk[:, None] * nc[None, :]
    _square_block(p_ptr, ak * b[:, None], i, j, SUB, CHUNK)
    if kk_ptr is not None:
        _square_block(kk_ptr, ak, i, j, SUB, CHUNK)


@triton.jit
def _beta_rows(beta_ptr, rows, n, BETA_ROW: tl.constexpr):
    """beta of the chunk's rows ``rows`` (0 past its ``n`` tokens), widened."""
    return _widen(tl.load(beta_ptr + rows * BETA_ROW, mask=rows < n, other=0.0))


@triton.jit
def _put_blocks(ptr, x0, x1, x2, x3, SUB: tl.constexpr):
    """The four row blocks' ``[SUB]`` vectors one after another from ``ptr``."""
    sub = tl.arange(0, SUB)
    tl.store(ptr + sub, x0)
    tl.store(ptr + SUB + sub, x1)
    tl.store(ptr + 2 * SUB + sub, x2)
    tl.store(ptr + 3 * SUB + sub, x3)


@triton.jit
def _square_block(ptr, block, i: tl.constexpr, j: tl.constexpr, SUB: tl.constexpr, CHUNK: tl.constexpr):
    """Stores a ``[SUB, SUB]`` tile as block ``(i, j)`` of a ``[CHUNK, CHUNK]`` matrix."""
    sub = tl.arange(0, SUB)
    tl.store(ptr + (i * SUB + sub)[:, None] * CHUNK + (j * SUB + sub)[None, :], block)


@triton.jit
def _diagonal_row(q_ptr, k_ptr, g_ptr, row, present, cols, cm, i_hv, a_log, dt_bias, lower_bound,
                  QK_ROW: tl.constexpr, G_ROW: tl.constexpr, K: tl.constexpr, GATE: tl.constexpr,
                  FLOOR: tl.constexpr):  # fmt: skip
    """One row of a diagonal block (``row``, a ``[1]`` index; zeros where not ``present``): its
    gate, ``q`` and ``k``, each ``[1, len(cols)]``."""
    g_r = _gate(g_ptr, row, present, cols, cm, i_hv, a_log, dt_bias, lower_bound, G_ROW, K, GATE, FLOOR)
    return g_r, _rows_of(q_ptr, row, present, QK_ROW, cols, cm), _rows_of(k_ptr, row, present, QK_ROW, cols, cm)


@triton.jit
def _diagonal_kernel(
    q,
    k,
    g,
    beta,
    a_log,
    dt_bias,
    lower_bound,
    a_out,
    p_out,
    kk_out,
    strong_blocks,
    sequence_end,
    chunk_start,
    scale,
    T,
    NT,
    H: tl.constexpr,
    HV: tl.constexpr,
    K: tl.constexpr,
    BK: tl.constexpr,
    CHUNK: tl.constexpr,
    SUB: tl.constexpr,
    DIAG_SPAN: tl.constexpr,
    FLOOR: tl.constexpr,
    IS_VARLEN: tl.constexpr,
    USE_QK_L2NORM: tl.constexpr,
    GATE: tl.constexpr,
    QK_ROW: tl.constexpr,
    G_ROW: tl.constexpr,
    BETA_ROW: tl.constexpr,
    COMPUTE: tl.constexpr,
    PREFETCH: tl.constexpr,
):
    """The diagonal 16 x 16 blocks of a chunk's scores that span more than ``DIAG_SPAN`` (any
    channel's decay across the block), one block per program (program axis 0: chunk x 4 + block,
    axis 1: value head). Each program marks in ``strong_blocks`` whether its block is one of them;
    if so it writes block ``(b, b)`` of ``A = scale * A_qk`` to ``a_out``, of ``Diag(beta) A_kk``
    to ``p_out`` and of ``A_kk`` to ``kk_out`` (when given), upper entries zero, and
    :func:`_chunk_local_kernel`, launched after it, leaves that block alone; it builds the others
    as one product each (a NaN gate reaches the outputs either way).

    Row by row, the block's keys are carried decayed to the current row: at row ``r`` every carried
    key ``c < r`` is multiplied by ``exp(g_r)`` and key ``r`` joins undecayed, so the carried keys
    are ``k_c * exp(G_r - G_c)``, products of factors at most 1 (no exponent is a difference of
    cumulative sums, and none is positive, whatever the span); row ``r`` of ``A_qk`` and ``A_kk``
    is then their product with ``q_r`` and ``k_r``. ``PREFETCH``: each step loads the next row's
    ``q``, ``k`` and gate before it works on its own, so that their latency overlaps its work
    instead of starting it (the same arithmetic in the same order: the same results bit for bit)."""
    i_c, i_b, i_hv = tl.program_id(0) // (CHUNK // SUB), tl.program_id(0) % (CHUNK // SUB), tl.program_id(1)
    start, end = _chunk_bounds(i_c, sequence_end, chunk_start, T, NT, IS_VARLEN, CHUNK)
    first = start + i_b * SUB
    n = (end - first).to(tl.int32)  # this block's tokens (at most 16; none past a short chunk's end)
    i_h = i_hv // (HV // H)
    q_ptr, k_ptr = q + first * QK_ROW + i_h * K, k + first * QK_ROW + i_h * K
    g_ptr = g + first * G_ROW + i_hv * K
    sub = tl.arange(0, SUB)
    cols = tl.arange(0, BK)
    cm = cols < K
    gates = _gate(g_ptr, sub, sub < n, cols, cm, i_hv, a_log, dt_bias, lower_bound, G_ROW, K, GATE, FLOOR)
    strong = tl.max(-tl.sum(gates, axis=0), axis=0) > DIAG_SPAN
    tl.store(strong_blocks + (i_c * HV + i_hv).to(tl.int64) * (CHUNK // SUB) + i_b, strong.to(tl.int8))
    if strong:
        carried = tl.zeros([SUB, BK], dtype=COMPUTE)
        # the block transposed, [column c, row r], so that a row's scores join it without a layout change
        a_qk = tl.zeros([SUB, SUB], dtype=COMPUTE)
        a_kk = tl.zeros([SUB, SUB], dtype=COMPUTE)
        q_sq = tl.zeros([SUB], dtype=COMPUTE)  # the rows' squared norms
        k_sq = tl.zeros([SUB], dtype=COMPUTE)
        if PREFETCH:  # the first row before the loop
            row = tl.zeros([1], dtype=tl.int32)
            g_r, q_r, k_r = _diagonal_row(
                q_ptr, k_ptr, g_ptr, row, row < n, cols, cm, i_hv, a_log, dt_bias, lower_bound, QK_ROW, G_ROW, K,
                GATE, FLOOR,
            )  # fmt: skip
        for r in range(0, SUB):  # a loop, not unrolled: each row's loads stay in their step (or the one before)
            row = tl.zeros([1], dtype=tl.int32) + r
            if PREFETCH:
                g_next, q_next, k_next = _diagonal_row(
                    q_ptr, k_ptr, g_ptr, row + 1, row + 1 < n, cols, cm, i_hv, a_log, dt_bias, lower_bound, QK_ROW,
                    G_ROW, K, GATE, FLOOR,
                )  # fmt: skip
            else:
                g_r, q_r, k_r = _diagonal_row(
                    q_ptr, k_ptr, g_ptr, row, row < n, cols, cm, i_hv, a_log, dt_bias, lower_bound, QK_ROW, G_ROW, K,
                    GATE, FLOOR,
                )  # fmt: skip
            carried = tl.where(sub[:, None] == r, k_r, carried * tl.exp(g_r))
            a_qk = tl.where(sub[None, :] == r, tl.sum(carried * q_r, axis=1)[:, None], a_qk)
            a_kk = tl.where(sub[None, :] == r, tl.sum(carried * k_r, axis=1)[:, None], a_kk)
            q_sq = tl.where(sub == r, tl.sum(q_r * q_r), q_sq)
            k_sq = tl.where(sub == r, tl.sum(k_r * k_r), k_sq)
            if PREFETCH:
                g_r, q_r, k_r = g_next, q_next, k_next
        # causal (c <= r) and strictly lower (c < r) parts, back to [r, c]
        a_qk = tl.trans(tl.where(sub[:, None] <= sub[None, :], a_qk, 0.0))
        a_kk = tl.trans(tl.where(sub[:, None] < sub[None, :], a_kk, 0.0))
        n_k = _norm(k_sq, USE_QK_L2NORM)
        b = _beta_rows(beta + first * BETA_ROW + i_hv, sub, n, BETA_ROW)
        at = (i_c * HV + i_hv).to(tl.int64) * CHUNK * CHUNK + i_b * SUB * (CHUNK + 1)  # block (b, b)
        kk_at = kk_out
        if kk_out is not None:
            kk_at = kk_out + at
        _store_scores(a_out + at, p_out + at, kk_at, a_qk, a_kk, _norm(q_sq, USE_QK_L2NORM), n_k, n_k, b, 0, 0,
                      scale, SUB, CHUNK)  # fmt: skip


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
    norms,
    strong_blocks,
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
    PHASES: tl.constexpr = 7,
):
    """The chunk-local terms of one (chunk, value head); see the module docstring.

    ``TERMS_AS_CHUNKS``: the terms in the chunk layout of the training path's backward
    (``[chunks, HV, C, *]``, each chunk's rows contiguous, rows past a sequence's end written as
    zeros, :mod:`kdalib.ops.triton.training`), else in the token layout of the user's tensors; the
    inputs are always in the token layout. ``kk_out`` (optional): also store the strictly lower
    ``A_kk`` there. ``norms`` (``[chunks, HV, 2, C]``, with ``USE_QK_L2NORM``): the rows' inverse
    L2 norms of q, then of k, which the scores' phase stores and the terms' phase reads. ``*_ROW``: the distance between a chunk's consecutive tokens in q and k, in g,
    in v and in beta, then in the key-sized and the value-sized outputs. ``COMPUTE``: float32,
    or float64 for float64 inputs (the training kernels' float64 tests), with ``FLOOR`` at
    float64's underflow.

    ``strong_blocks`` (``[chunks, HV, 4]``, from :func:`_diagonal_kernel`, launched first): the
    diagonal blocks that launch has written, which this kernel leaves alone; None when no block can
    span more than ``DIAG_SPAN`` (then this kernel builds them all).

    Three phases: the ten lower 16 x 16 score blocks but the strong diagonal ones, key slice by key
    slice (``A`` stored, ``Diag(beta) A_kk`` into the ``p_out`` scratch); the inverse ``M`` in place
    of ``p_out``; then, from whole-chunk key slices, ``Q_g``, ``K_g``, ``exp(G_L)`` and ``W``, and
    ``U`` by value slices.
    ``PHASES``: which of the three to run, as bits (1 the scores, 2 the inverse, 4 the terms; 7 all):
    several launches may share the work, each with its own number of warps, a later one reading
    what an earlier one wrote to ``p_out`` and ``a_out``.
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
    if PHASES & 1:  # the scores
        zero_block = tl.zeros([SUB, SUB], dtype=COMPUTE)
        zero_rows = tl.zeros([SUB], dtype=COMPUTE)
        # phase 1: the scores of the ten lower blocks, key slice by key slice (small tiles, no spills),
        # the diagonal blocks of strong decay left to _diagonal_kernel; q and k are normalised
        # afterwards, the scores being bilinear in them
        if strong_blocks is not None:
            at = strong_blocks + (i_c * HV + i_hv).to(tl.int64) * (CHUNK // SUB)
            mark0, mark1, mark2, mark3 = tl.load(at), tl.load(at + 1), tl.load(at + 2), tl.load(at + 3)
        else:
            mark0, mark1, mark2, mark3 = 0, 0, 0, 0
        q00, q10, q11, q20, q21, q22, q30, q31, q32, q33 = (zero_block,) * 10
        k00, k10, k11, k20, k21, k22, k30, k31, k32, k33 = (zero_block,) * 10
        sq0, sq1, sq2, sq3, sk0, sk1, sk2, sk3 = (zero_rows,) * 8
        for s0 in range(0, BK, BKS):
            cols = s0 + tl.arange(0, BKS)
            cm = cols < K
            lq, lk, dq, dk, step, kd0, nq, nk = _block_slice(
                q_ptr, k_ptr, g_ptr, 0, n, cols, cm, i_hv, a_log, dt_bias, lower_bound, mark0 != 0,
                QK_ROW, G_ROW, K, SUB, GATE, FLOOR, PRECISION,
            )  # fmt: skip
            q00, k00, sq0, sk0 = q00 + dq, k00 + dk, sq0 + nq, sk0 + nk
            lq, lk, dq, dk, step, kd1, nq, nk = _block_slice(
                q_ptr, k_ptr, g_ptr, 1, n, cols, cm, i_hv, a_log, dt_bias, lower_bound, mark1 != 0,
                QK_ROW, G_ROW, K, SUB, GATE, FLOOR, PRECISION,
            )  # fmt: skip
            aq, ak = _off(lq, lk, kd0, PRECISION)
            q10, k10, q11, k11, sq1, sk1 = q10 + aq, k10 + ak, q11 + dq, k11 + dk, sq1 + nq, sk1 + nk
            kd0 = kd0 * step[None, :]
            lq, lk, dq, dk, step, kd2, nq, nk = _block_slice(
                q_ptr, k_ptr, g_ptr, 2, n, cols, cm, i_hv, a_log, dt_bias, lower_bound, mark2 != 0,
                QK_ROW, G_ROW, K, SUB, GATE, FLOOR, PRECISION,
            )  # fmt: skip
            aq, ak = _off(lq, lk, kd0, PRECISION)
            q20, k20 = q20 + aq, k20 + ak
            aq, ak = _off(lq, lk, kd1, PRECISION)
            q21, k21, q22, k22, sq2, sk2 = q21 + aq, k21 + ak, q22 + dq, k22 + dk, sq2 + nq, sk2 + nk
            kd0, kd1 = kd0 * step[None, :], kd1 * step[None, :]
            lq, lk, dq, dk, step, kd3, nq, nk = _block_slice(
                q_ptr, k_ptr, g_ptr, 3, n, cols, cm, i_hv, a_log, dt_bias, lower_bound, mark3 != 0,
                QK_ROW, G_ROW, K, SUB, GATE, FLOOR, PRECISION,
            )  # fmt: skip
            aq, ak = _off(lq, lk, kd0, PRECISION)
            q30, k30 = q30 + aq, k30 + ak
            aq, ak = _off(lq, lk, kd1, PRECISION)
            q31, k31 = q31 + aq, k31 + ak
            aq, ak = _off(lq, lk, kd2, PRECISION)
            q32, k32, q33, k33, sq3, sk3 = q32 + aq, k32 + ak, q33 + dq, k33 + dk, sq3 + nq, sk3 + nk
        nq0, nq1, nq2, nq3 = (
            _norm(sq0, USE_QK_L2NORM),
            _norm(sq1, USE_QK_L2NORM),
            _norm(sq2, USE_QK_L2NORM),
            _norm(sq3, USE_QK_L2NORM),
        )
        nk0, nk1, nk2, nk3 = (
            _norm(sk0, USE_QK_L2NORM),
            _norm(sk1, USE_QK_L2NORM),
            _norm(sk2, USE_QK_L2NORM),
            _norm(sk3, USE_QK_L2NORM),
        )
        b0 = _beta_rows(beta_ptr, sub, n, BETA_ROW)
        b1 = _beta_rows(beta_ptr, SUB + sub, n, BETA_ROW)
        b2 = _beta_rows(beta_ptr, 2 * SUB + sub, n, BETA_ROW)
        b3 = _beta_rows(beta_ptr, 3 * SUB + sub, n, BETA_ROW)
        if USE_QK_L2NORM:  # the rows' inverse norms, for the terms: q's, then k's
            at = norms + (i_c * HV + i_hv).to(tl.int64) * 2 * CHUNK
            _put_blocks(at, nq0, nq1, nq2, nq3, SUB)
            _put_blocks(at + CHUNK, nk0, nk1, nk2, nk3, SUB)
        kk_ptr = kk_out
        if kk_out is not None:
            kk_ptr = kk_out + square
        if mark0 == 0:
            _store_scores(a_ptr, p_ptr, kk_ptr, q00, k00, nq0, nk0, nk0, b0, 0, 0, scale, SUB, CHUNK)
        if mark1 == 0:
            _store_scores(a_ptr, p_ptr, kk_ptr, q11, k11, nq1, nk1, nk1, b1, 1, 1, scale, SUB, CHUNK)
        if mark2 == 0:
            _store_scores(a_ptr, p_ptr, kk_ptr, q22, k22, nq2, nk2, nk2, b2, 2, 2, scale, SUB, CHUNK)
        if mark3 == 0:
            _store_scores(a_ptr, p_ptr, kk_ptr, q33, k33, nq3, nk3, nk3, b3, 3, 3, scale, SUB, CHUNK)
        _store_scores(a_ptr, p_ptr, kk_ptr, q10, k10, nq1, nk1, nk0, b1, 1, 0, scale, SUB, CHUNK)
        _store_scores(a_ptr, p_ptr, kk_ptr, q20, k20, nq2, nk2, nk0, b2, 2, 0, scale, SUB, CHUNK)
        _store_scores(a_ptr, p_ptr, kk_ptr, q21, k21, nq2, nk2, nk1, b2, 2, 1, scale, SUB, CHUNK)
        _store_scores(a_ptr, p_ptr, kk_ptr, q30, k30, nq3, nk3, nk0, b3, 3, 0, scale, SUB, CHUNK)
        _store_scores(a_ptr, p_ptr, kk_ptr, q31, k31, nq3, nk3, nk1, b3, 3, 1, scale, SUB, CHUNK)
        _store_scores(a_ptr, p_ptr, kk_ptr, q32, k32, nq3, nk3, nk2, b3, 3, 2, scale, SUB, CHUNK)
        for i in tl.static_range(4):
            for j in tl.static_range(4):
                if j > i:
                    _square_block(a_ptr, zero_block, i, j, SUB, CHUNK)
                    _square_block(p_ptr, zero_block, i, j, SUB, CHUNK)
                    if kk_out is not None:
                        _square_block(kk_ptr, zero_block, i, j, SUB, CHUNK)
    if PHASES & 2:  # the inverse
        if PHASES & 1:
            tl.debug_barrier()
        _invert_chunk(p_ptr, SUB, CHUNK, PRECISION)
    if PHASES & 4:  # the terms
        if PHASES & 3:
            tl.debug_barrier()
        # phase 3: whole-chunk tiles, key slice by key slice: Q_g, K_g, W = M Diag(beta) K exp(G),
        # exp(G_L); then U = M Diag(beta) V
        idx = tl.arange(0, CHUNK)
        m = idx < n
        mo = idx < n_out  # rows written (past the chunk's end as zeros in the chunk layout)
        inverse = tl.load(p_ptr + idx[:, None] * CHUNK + idx[None, :])
        b = _beta_rows(beta_ptr, idx, n, BETA_ROW)
        if USE_QK_L2NORM:  # as the scores' phase stored them
            at = norms + (i_c * HV + i_hv).to(tl.int64) * 2 * CHUNK + idx
            nq = tl.load(at)
            nk = tl.load(at + CHUNK)
        else:
            nq = tl.full([CHUNK], 1.0, dtype=COMPUTE)
            nk = tl.full([CHUNK], 1.0, dtype=COMPUTE)
        nxt = idx + 1 < n
        for s0 in range(0, BK, BKS):
            kcols = s0 + tl.arange(0, BKS)
            kcm = kcols < K
            gates = _gate(g_ptr, idx, m, kcols, kcm, i_hv, a_log, dt_bias, lower_bound, G_ROW, K, GATE, FLOOR)
            decay_in = tl.exp(tl.cumsum(gates, axis=0))  # from the chunk start, own token included
            g_next = _gate(g_ptr, idx + 1, nxt, kcols, kcm, i_hv, a_log, dt_bias, lower_bound, G_ROW, K, GATE, FLOOR)
            decay_out_rows = tl.exp(tl.cumsum(g_next, axis=0, reverse=True))  # to the chunk end
            xq = _rows_of(q_ptr, idx, m, QK_ROW, kcols, kcm)
            xk = _rows_of(k_ptr, idx, m, QK_ROW, kcols, kcm) * nk[:, None]
            _put_rows(qg_ptr, xq * (nq * scale)[:, None] * decay_in, idx, mo, OUT_K_ROW, kcols, kcm, NATIVE_BF16)
            _put_rows(kg_ptr, xk * decay_out_rows, idx, mo, OUT_K_ROW, kcols, kcm, NATIVE_BF16)
            w = _dot(inverse, xk * b[:, None] * decay_in, PRECISION)
            _put_rows(w_ptr, w, idx, mo, OUT_K_ROW, kcols, kcm, NATIVE_BF16)
            tl.store(decay_out + (i_c * HV + i_hv).to(tl.int64) * K + kcols, tl.exp(tl.sum(gates, axis=0)), mask=kcm)
        for s0 in tl.static_range(0, V, BV):
            vcols = s0 + tl.arange(0, BV)
            vcm = vcols < V
            values = _rows_of(v_ptr, idx, m, V_ROW, vcols, vcm) * b[:, None]
            _put_rows(u_out + value_out, _dot(inverse, values, PRECISION), idx, mo, OUT_V_ROW, vcols, vcm, NATIVE_BF16)

"""The scores of the chunk-local work, one program per (chunk, value head, 16-row block): the
first launch of the chunk-local work when its scores are built row block by row block
(:func:`kdalib.ops.triton.chunk.launch_chunk_local`); the inverse and the terms follow in
:mod:`~kdalib.ops.triton.prefill_local` (its second phase), which reads what this kernel writes.

Row block ``i`` (rows ``16 i .. 16 i + 15`` of a chunk) owns rows ``16 i ..`` of the chunk's
``scale * A_qk`` and ``Diag(beta) A_kk`` (notes/kda.md, "The chunkwise algorithm"), with the
decays factored around the row just before the block, as in :mod:`~kdalib.ops.triton.prefill_local`:

* against every earlier row ``c < 16 i``, one matrix product per key slice:
  ``(X_i * exp(gam_i)) (K_c * exp(R_c))^T``, where ``gam_i`` is the log decay from the block's
  start (own token included) and ``R_c`` the sum of the gates of the rows ``c + 1 .. 16 i - 1``,
  taken as a reverse cumulative sum of the following rows' gates (no differences of prefix sums);
  both exponents are <= 0;
* the diagonal block as in :func:`kdalib.ops.triton.prefill_local._block_slice`: one product while
  its span is at most ``DIAG_SPAN``, else exact column by column.

So each program holds two ``[16, 64]`` accumulators instead of a chunk's twenty ``[16, 16]`` ones,
and a chunk's four row blocks run as four programs.
"""

from __future__ import annotations

import triton
import triton.language as tl

from kdalib.ops.triton.prefill_local import _block_slice, _gate, _norm, _rows_of
from kdalib.ops.triton.tiles import _chunk_bounds, _dot, _widen


@triton.jit
def _chunk_scores_kernel(
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
    sequence_end,
    chunk_start,
    scale,
    T,
    NT,
    H: tl.constexpr,
    HV: tl.constexpr,
    K: tl.constexpr,
    BK: tl.constexpr,
    BKS: tl.constexpr,
    CHUNK: tl.constexpr,
    SUB: tl.constexpr,
    DIAG_SPAN: tl.constexpr,
    FLOOR: tl.constexpr,
    IS_VARLEN: tl.constexpr,
    USE_QK_L2NORM: tl.constexpr,
    GATE: tl.constexpr,
    PRECISION: tl.constexpr,
    QK_ROW: tl.constexpr,
    G_ROW: tl.constexpr,
    BETA_ROW: tl.constexpr,
    COMPUTE: tl.constexpr,
):
    """Rows ``16 i .. 16 i + 15`` (``i`` the program's third index) of one (chunk, value head)'s
    ``a_out = scale * A_qk``, ``p_out = Diag(beta) A_kk`` and, when given, ``kk_out = A_kk``
    (``[chunks, HV, 64, 64]``, float32; zeros above the diagonal); q and k normalised per row
    when ``USE_QK_L2NORM``. Arguments as :func:`kdalib.ops.triton.prefill_local._chunk_local_kernel`'s."""
    i_c, i_hv, i = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    start, end = _chunk_bounds(i_c, sequence_end, chunk_start, T, NT, IS_VARLEN, CHUNK)
    i_h = i_hv // (HV // H)
    n = (end - start).to(tl.int32)
    q_ptr, k_ptr = q + start * QK_ROW + i_h * K, k + start * QK_ROW + i_h * K
    g_ptr = g + start * G_ROW + i_hv * K
    sub = tl.arange(0, SUB)
    rows = tl.arange(0, CHUNK)
    first = i * SUB  # this block's first row
    earlier = rows < first
    nxt = (rows + 1 < first) & (rows + 1 < n)
    acc_q = tl.zeros([SUB, CHUNK], dtype=COMPUTE)
    acc_k = tl.zeros([SUB, CHUNK], dtype=COMPUTE)
    diag_q = tl.zeros([SUB, SUB], dtype=COMPUTE)
    diag_k = tl.zeros([SUB, SUB], dtype=COMPUTE)
    sq = tl.zeros([SUB], dtype=COMPUTE)
    sk = tl.zeros([SUB], dtype=COMPUTE)
    sc = tl.zeros([CHUNK], dtype=COMPUTE)  # squared norms of the earlier key rows
    for s0 in range(0, BK, BKS):
        cols = s0 + tl.arange(0, BKS)
        cm = cols < K
        # this block: left factors, diagonal scores, row norms (block index as a tensor: no unrolling)
        lq, lk, dq, dk, _, _, nq, nk = _block_slice(
            q_ptr, k_ptr, g_ptr, i, n, cols, cm, i_hv, a_log, dt_bias, lower_bound,
            QK_ROW, G_ROW, K, SUB, DIAG_SPAN, GATE, FLOOR, PRECISION,
        )  # fmt: skip
        diag_q, diag_k, sq, sk = diag_q + dq, diag_k + dk, sq + nq, sk + nk
        if i > 0:
            # the earlier rows' keys decayed to this block's start: exp(sum of the gates after them)
            g_after = _gate(g_ptr, rows + 1, nxt, cols, cm, i_hv, a_log, dt_bias, lower_bound, G_ROW, K, GATE, FLOOR)
            xk = _rows_of(k_ptr, rows, earlier & (rows < n), QK_ROW, cols, cm)
            right = tl.trans(xk * tl.exp(tl.cumsum(g_after, axis=0, reverse=True)))
            acc_q += _dot(lq, right, PRECISION)
            acc_k += _dot(lk, right, PRECISION)
            sc += tl.sum(xk * xk, axis=1)
    nq, nk, nc = _norm(sq, USE_QK_L2NORM), _norm(sk, USE_QK_L2NORM), _norm(sc, USE_QK_L2NORM)
    b = _widen(tl.load(beta + start * BETA_ROW + i_hv + (first + sub) * BETA_ROW, mask=first + sub < n, other=0.0))
    square = (i_c * HV + i_hv).to(tl.int64) * CHUNK * CHUNK
    at = (first + sub)[:, None] * CHUNK + rows[None, :]
    # the block's rows, every column: the earlier columns from the products, zeros from the block on
    off = earlier[None, :]
    a_rows = tl.where(off, acc_q * (nq * scale)[:, None] * nc[None, :], 0.0)
    kk_rows = tl.where(off, acc_k * nk[:, None] * nc[None, :], 0.0)
    tl.store(a_out + square + at, a_rows)
    tl.store(p_out + square + at, kk_rows * b[:, None])
    if kk_out is not None:
        tl.store(kk_out + square + at, kk_rows)
    # then the diagonal block over its zeros
    tl.debug_barrier()
    at = (first + sub)[:, None] * CHUNK + (first + sub)[None, :]
    diag_k = diag_k * nk[:, None] * nk[None, :]
    tl.store(a_out + square + at, diag_q * (nq * scale)[:, None] * nk[None, :])
    tl.store(p_out + square + at, diag_k * b[:, None])
    if kk_out is not None:
        tl.store(kk_out + square + at, diag_k)

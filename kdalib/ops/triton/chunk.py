"""Chunked KDA forward in Triton: prefill and inference, outputs and final state.

The math is the chunkwise form of notes/kda.md (section "The chunkwise algorithm"). Two
kernels share the work:

1. ``_chunk_intra_kernel`` -- one program per (chunk, value head), all in parallel. It builds
   the two C x C matrices a chunk needs that do not depend on the state:

   * ``P = (I + Diag(beta) A_kk)^{-1} Diag(beta)``, the WY/UT transform with beta folded in,
     so that the delta rule's corrections of the whole chunk are ``V_new = P (V - K_in S)``;
   * ``A = scale * A_qk``, the decay-weighted causal scores (diagonal included).

   The scores are built from 16-row sub-blocks. An off-diagonal block (rows in block i,
   columns in block j < i) is one matrix product of two factors decayed towards a reference
   row r0, the first row of block i: ``(X_i * exp(G_i - G_r0)) (K_j * exp(G_r0 - G_j))^T``.
   Both exponents are <= 0 because the cumulative log decay G never increases. A diagonal
   block is a matrix product too when its total decay is mild (at most ``DOT_SPAN`` in every
   channel, so the one growing factor stays below exp(60)); under stronger decay it is built
   column by column, exactly, with the exponent masked to -inf above the diagonal before the
   exp. So the strongest gates (g = -1000 per token) underflow to exact zeros instead of
   overflowing, and typical gates take the fast path.
   The inverse of the unit lower-triangular ``I + Diag(beta) A_kk`` is computed block-wise:
   forward substitution inside each 16 x 16 diagonal block, then the off-diagonal blocks by
   block forward substitution (matrix products of 16 x 16 blocks).

2. ``_chunk_state_kernel`` -- one program per (sequence, value head, block of value
   columns), walking the sequence chunk by chunk with its slice of the state ``S [K, BV]``
   in float32 registers. Per chunk::

       X     = V - (K * exp(G)) S                 what the decayed state fails to predict
       V_new = P X                                the delta rule's corrections (WY form)
       O     = scale (Q * exp(G)) S + A V_new     read-out, written straight to the output
       S     = exp(G_L) * S + (K * exp(G_L - G))^T V_new

   The output is produced in the same pass as the state, so the per-chunk states never
   travel through device memory.

Gates follow the operators' contract: ``g <= 0``; a positive log decay is treated as 0.
Cumulative sums of the gates and the state are float32 for every input dtype; matrix
products take float32 operands (IEEE for float32 inputs, TF32 for 16-bit inputs).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kdalib.ops.triton import MAX_KEY_DIM

CHUNK = 64       # tokens per chunk (C)
SUB = 16         # rows per sub-block of the intra-chunk matrices
# Largest total decay (sum of -g over a 16-row block, any channel) for which a diagonal block is
# computed by matrix products: exp(60) ~ 1e26 leaves float32 (max ~3e38) ample headroom.
DOT_SPAN = 60.0


@triton.jit
def _load_rows(ptr, rows, row_mask, stride, cols, col_mask):
    """``[len(rows), len(cols)]`` float32 tile: row r at ``ptr + rows[r] * stride + cols``."""
    offsets = rows.to(tl.int64)[:, None] * stride + cols[None, :]
    return tl.load(ptr + offsets, mask=row_mask[:, None] & col_mask[None, :], other=0.0).to(tl.float32)


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
        coefficients = _row(lower, r, SUB)                        # zero at columns >= r
        update = tl.sum(coefficients[:, None] * inverse, axis=0)  # rows < r are final
        inverse = tl.where(rows[:, None] == r, inverse - update[None, :], inverse)
    return inverse


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr):
    """Float32 product of float32 tiles; "bf16" rounds the operands to bfloat16 first."""
    if PRECISION == "bf16":
        return tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16))
    else:
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
def _chunk_intra_kernel(
    q, k, g, beta, p_out, a_out, sequence_end, chunk_start,
    scale, T, NT,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, BK: tl.constexpr,
    CHUNK: tl.constexpr, SUB: tl.constexpr, DOT_SPAN: tl.constexpr,
    IS_VARLEN: tl.constexpr, USE_QK_L2NORM: tl.constexpr, PRECISION: tl.constexpr,
):
    i_c, i_hv = tl.program_id(0), tl.program_id(1)
    i_h = i_hv // (HV // H)
    start, end = _chunk_bounds(i_c, sequence_end, chunk_start, T, NT, IS_VARLEN, CHUNK)
    cols = tl.arange(0, BK)
    col_mask = cols < K
    sub_rows = tl.arange(0, SUB)
    qk_base, g_base = i_h * K, i_hv * K

    # The four sub-blocks: keys, queries, chunk-local cumulative log decay, beta.
    rows0 = start + sub_rows
    rows1 = rows0 + SUB
    rows2 = rows1 + SUB
    rows3 = rows2 + SUB
    k0 = _load_rows(k + qk_base, rows0, rows0 < end, H * K, cols, col_mask)
    k1 = _load_rows(k + qk_base, rows1, rows1 < end, H * K, cols, col_mask)
    k2 = _load_rows(k + qk_base, rows2, rows2 < end, H * K, cols, col_mask)
    k3 = _load_rows(k + qk_base, rows3, rows3 < end, H * K, cols, col_mask)
    q0 = _load_rows(q + qk_base, rows0, rows0 < end, H * K, cols, col_mask)
    q1 = _load_rows(q + qk_base, rows1, rows1 < end, H * K, cols, col_mask)
    q2 = _load_rows(q + qk_base, rows2, rows2 < end, H * K, cols, col_mask)
    q3 = _load_rows(q + qk_base, rows3, rows3 < end, H * K, cols, col_mask)
    if USE_QK_L2NORM:
        k0, k1, k2, k3 = _l2_normalize_rows(k0), _l2_normalize_rows(k1), _l2_normalize_rows(k2), _l2_normalize_rows(k3)
        q0, q1, q2, q3 = _l2_normalize_rows(q0), _l2_normalize_rows(q1), _l2_normalize_rows(q2), _l2_normalize_rows(q3)
    g0 = tl.minimum(_load_rows(g + g_base, rows0, rows0 < end, HV * K, cols, col_mask), 0.0)
    g1 = tl.minimum(_load_rows(g + g_base, rows1, rows1 < end, HV * K, cols, col_mask), 0.0)
    g2 = tl.minimum(_load_rows(g + g_base, rows2, rows2 < end, HV * K, cols, col_mask), 0.0)
    g3 = tl.minimum(_load_rows(g + g_base, rows3, rows3 < end, HV * K, cols, col_mask), 0.0)
    gam0 = tl.cumsum(g0, axis=0)
    gam1 = tl.cumsum(g1, axis=0) + tl.sum(g0, axis=0)[None, :]
    gam2 = tl.cumsum(g2, axis=0) + (tl.sum(g0, axis=0) + tl.sum(g1, axis=0))[None, :]
    gam3 = tl.cumsum(g3, axis=0) + (tl.sum(g0, axis=0) + tl.sum(g1, axis=0) + tl.sum(g2, axis=0))[None, :]
    b0 = tl.load(beta + rows0.to(tl.int64) * HV + i_hv, mask=rows0 < end, other=0.0).to(tl.float32)
    b1 = tl.load(beta + rows1.to(tl.int64) * HV + i_hv, mask=rows1 < end, other=0.0).to(tl.float32)
    b2 = tl.load(beta + rows2.to(tl.int64) * HV + i_hv, mask=rows2 < end, other=0.0).to(tl.float32)
    b3 = tl.load(beta + rows3.to(tl.int64) * HV + i_hv, mask=rows3 < end, other=0.0).to(tl.float32)

    # Diagonal blocks.
    aq00, ak00 = _scores_diagonal(q0, k0, gam0, PRECISION, SUB, DOT_SPAN)
    aq11, ak11 = _scores_diagonal(q1, k1, gam1, PRECISION, SUB, DOT_SPAN)
    aq22, ak22 = _scores_diagonal(q2, k2, gam2, PRECISION, SUB, DOT_SPAN)
    aq33, ak33 = _scores_diagonal(q3, k3, gam3, PRECISION, SUB, DOT_SPAN)
    # Off-diagonal blocks through each row block's first row.
    ref1, ref2, ref3 = _row(gam1, 0, SUB), _row(gam2, 0, SUB), _row(gam3, 0, SUB)
    aq10, ak10 = _off_block(q1, k1, gam1, ref1, k0, gam0, PRECISION)
    aq20, ak20 = _off_block(q2, k2, gam2, ref2, k0, gam0, PRECISION)
    aq21, ak21 = _off_block(q2, k2, gam2, ref2, k1, gam1, PRECISION)
    aq30, ak30 = _off_block(q3, k3, gam3, ref3, k0, gam0, PRECISION)
    aq31, ak31 = _off_block(q3, k3, gam3, ref3, k1, gam1, PRECISION)
    aq32, ak32 = _off_block(q3, k3, gam3, ref3, k2, gam2, PRECISION)

    # L = Diag(beta) A_kk; M = (I + L)^{-1} by block forward substitution; P = M Diag(beta).
    d0 = _unit_lower_inverse(ak00 * b0[:, None], SUB)
    d1 = _unit_lower_inverse(ak11 * b1[:, None], SUB)
    d2 = _unit_lower_inverse(ak22 * b2[:, None], SUB)
    d3 = _unit_lower_inverse(ak33 * b3[:, None], SUB)
    l10, l20, l21 = ak10 * b1[:, None], ak20 * b2[:, None], ak21 * b2[:, None]
    l30, l31, l32 = ak30 * b3[:, None], ak31 * b3[:, None], ak32 * b3[:, None]
    m10 = -_dot(d1, _dot(l10, d0, PRECISION), PRECISION)
    m21 = -_dot(d2, _dot(l21, d1, PRECISION), PRECISION)
    m20 = -_dot(d2, _dot(l20, d0, PRECISION) + _dot(l21, m10, PRECISION), PRECISION)
    m32 = -_dot(d3, _dot(l32, d2, PRECISION), PRECISION)
    m31 = -_dot(d3, _dot(l31, d1, PRECISION) + _dot(l32, m21, PRECISION), PRECISION)
    m30 = -_dot(d3, _dot(l30, d0, PRECISION) + _dot(l31, m10, PRECISION) + _dot(l32, m20, PRECISION), PRECISION)

    block = (i_c * HV + i_hv).to(tl.int64) * CHUNK * CHUNK
    p_ptr, a_ptr = p_out + block, a_out + block
    _store_block(p_ptr, d0 * b0[None, :], 0, 0, SUB, CHUNK)
    _store_block(p_ptr, m10 * b0[None, :], 1, 0, SUB, CHUNK)
    _store_block(p_ptr, d1 * b1[None, :], 1, 1, SUB, CHUNK)
    _store_block(p_ptr, m20 * b0[None, :], 2, 0, SUB, CHUNK)
    _store_block(p_ptr, m21 * b1[None, :], 2, 1, SUB, CHUNK)
    _store_block(p_ptr, d2 * b2[None, :], 2, 2, SUB, CHUNK)
    _store_block(p_ptr, m30 * b0[None, :], 3, 0, SUB, CHUNK)
    _store_block(p_ptr, m31 * b1[None, :], 3, 1, SUB, CHUNK)
    _store_block(p_ptr, m32 * b2[None, :], 3, 2, SUB, CHUNK)
    _store_block(p_ptr, d3 * b3[None, :], 3, 3, SUB, CHUNK)
    _store_block(a_ptr, aq00 * scale, 0, 0, SUB, CHUNK)
    _store_block(a_ptr, aq10 * scale, 1, 0, SUB, CHUNK)
    _store_block(a_ptr, aq11 * scale, 1, 1, SUB, CHUNK)
    _store_block(a_ptr, aq20 * scale, 2, 0, SUB, CHUNK)
    _store_block(a_ptr, aq21 * scale, 2, 1, SUB, CHUNK)
    _store_block(a_ptr, aq22 * scale, 2, 2, SUB, CHUNK)
    _store_block(a_ptr, aq30 * scale, 3, 0, SUB, CHUNK)
    _store_block(a_ptr, aq31 * scale, 3, 1, SUB, CHUNK)
    _store_block(a_ptr, aq32 * scale, 3, 2, SUB, CHUNK)
    _store_block(a_ptr, aq33 * scale, 3, 3, SUB, CHUNK)


@triton.jit
def _chunk_state_kernel(
    q, k, v, g, p_in, a_in, o, h0, ht, cu_seqlens, chunk_offsets,
    scale, T,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BK: tl.constexpr, BV: tl.constexpr, CHUNK: tl.constexpr,
    USE_INITIAL_STATE: tl.constexpr, STORE_FINAL_STATE: tl.constexpr,
    IS_VARLEN: tl.constexpr, USE_QK_L2NORM: tl.constexpr, PRECISION: tl.constexpr,
):
    i_v, i_nh = tl.program_id(0), tl.program_id(1)
    i_n, i_hv = i_nh // HV, i_nh % HV
    i_h = i_hv // (HV // H)
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
    causal = rows[:, None] >= rows[None, :]

    state_offsets = (i_n * HV + i_hv).to(tl.int64) * K * V + cols_k[:, None] * V + cols_v[None, :]
    state_mask = mask_k[:, None] & mask_v[None, :]
    state = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_INITIAL_STATE:
        state += tl.load(h0 + state_offsets, mask=state_mask, other=0.0).to(tl.float32)

    num_chunks = tl.cdiv(eos - bos, CHUNK)
    for c in range(0, num_chunks):
        tokens = bos + c * CHUNK + rows
        valid = tokens < eos
        kc = _load_rows(k + i_h * K, tokens, valid, H * K, cols_k, mask_k)
        qc = _load_rows(q + i_h * K, tokens, valid, H * K, cols_k, mask_k)
        if USE_QK_L2NORM:
            kc = _l2_normalize_rows(kc)
            qc = _l2_normalize_rows(qc)
        gc = tl.minimum(_load_rows(g + i_hv * K, tokens, valid, HV * K, cols_k, mask_k), 0.0)
        gam = tl.cumsum(gc, axis=0)
        gam_last = tl.sum(gc, axis=0)
        vc = _load_rows(v + i_hv * V, tokens, valid, HV * V, cols_v, mask_v)
        block = ((first_chunk + c) * HV + i_hv) * CHUNK * CHUNK + rows[:, None] * CHUNK + rows[None, :]
        p = tl.load(p_in + block, mask=causal, other=0.0)
        a = tl.load(a_in + block, mask=causal, other=0.0)

        decay_in = tl.exp(gam)
        x = vc - _dot(kc * decay_in, state, PRECISION)
        v_new = _dot(p, x, PRECISION)
        out = scale * _dot(qc * decay_in, state, PRECISION) + _dot(a, v_new, PRECISION)
        out_offsets = tokens.to(tl.int64)[:, None] * (HV * V) + i_hv * V + cols_v[None, :]
        tl.store(o + out_offsets, out.to(o.dtype.element_ty), mask=valid[:, None] & mask_v[None, :])
        keys_out = kc * tl.exp(tl.minimum(gam_last[None, :] - gam, 0.0))
        state = state * tl.exp(gam_last)[:, None] + _dot(tl.trans(keys_out), v_new, PRECISION)

    if STORE_FINAL_STATE:
        tl.store(ht + state_offsets, state, mask=state_mask)


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
        precision: matrix-product operands: "ieee" (float32; the default for float32 inputs),
            "tf32x3", "tf32" (the default for 16-bit inputs) or "bf16".
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
    transform = q.new_empty(num_chunks, HV, CHUNK, CHUNK, dtype=torch.float32)
    scores = torch.empty_like(transform)
    _chunk_intra_kernel[(num_chunks, HV)](
        q, k, g, beta, transform, scores, chunk_ends, chunk_starts,
        float(scale), T, max(per_sequence, 1),
        H=H, HV=HV, K=K, BK=block_k, CHUNK=CHUNK, SUB=SUB, DOT_SPAN=DOT_SPAN,
        IS_VARLEN=cu_seqlens is not None, USE_QK_L2NORM=use_qk_l2norm_in_kernel, PRECISION=precision,
        num_warps=intra_warps,
    )
    o = torch.empty_like(v)
    final_state = v.new_empty(N, HV, K, V, dtype=torch.float32) if output_final_state else None
    if initial_state is not None:
        initial_state = initial_state.contiguous()
    _chunk_state_kernel[(triton.cdiv(V, block_v), N * HV)](
        q, k, v, g, transform, scores, o, initial_state, final_state, cu_seqlens, chunk_offsets,
        float(scale), T,
        H=H, HV=HV, K=K, V=V, BK=block_k, BV=block_v, CHUNK=CHUNK,
        USE_INITIAL_STATE=initial_state is not None, STORE_FINAL_STATE=output_final_state,
        IS_VARLEN=cu_seqlens is not None, USE_QK_L2NORM=use_qk_l2norm_in_kernel, PRECISION=precision,
        num_warps=state_warps or (8 if block_k * block_v >= 8192 else 4),
        **({} if state_stages is None else {"num_stages": state_stages}),
    )
    return o, final_state

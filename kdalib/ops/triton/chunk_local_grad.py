"""Backward of the chunk-local terms in Triton: one program per chunk and sequence row.

The chunk form's chunk-local terms (notes/kda.md, sections ``kda-chunkwise`` and ``kda-chunk-backward``;
:func:`kdalib.ops.chunk.chunk_local_terms` computes them) are, per chunk, with ``G`` the
chunk-local cumulative sum of the log decay ``g`` and ``Γ = exp(G)``::

    A_kk[r, c] = Σ_d k_rd k_cd exp(G_rd - G_cd)    (c < r)
    A_qk[r, c] = Σ_d q_rd k_cd exp(G_rd - G_cd)    (c <= r)
    X = (I + Diag(β) A_kk)^{-1},   T = X Diag(β)
    W = T (K ⊙ Γ),   U = T V,   K_out = K ⊙ exp(G_L - G),   Q_in = Q ⊙ Γ,   exp(G_L)

Given the gradients of W, U, K_out, exp(G_L), Q_in and A_qk (from the scan's backward), this
kernel returns those of q, k, v, g and β::

    dT = dW (K ⊙ Γ)ᵀ + dU Vᵀ,   dV = Tᵀ dU,   d(K ⊙ Γ) = Tᵀ dW
    dX = dT Diag(β),   dβ_c += Σ_r dT_rc X_rc
    dL = -Xᵀ dX Xᵀ (strictly lower part),   dA_kk = Diag(β) dL,   dβ_r += Σ_c dL_rc A_kk,rc

and the scores' gradients reach q and k through the same decayed products as the scores. Every
exponent is a difference ``G_r - G_c`` with ``r >= c`` (never positive): the chunk is cut into
16-row blocks, a block pair ``(i, j < i)`` goes through the first row ``r0`` of block ``i``
(``exp(G_r - G_r0)`` and ``exp(G_r0 - G_c)``, both at most 1) as one matrix product. A diagonal
block is one product too while its own decay (its span) is at most ``DOT_SPAN`` (column factors
up to ``exp(span)``); past that it is summed column by column with the exponent masked to -inf
above the diagonal, so the strongest gates underflow to exact zeros. A log-decay gradient is the sum of ``x ⊙ dx``
over the factors where ``G`` enters with a plus sign, minus those where it enters with a minus
sign; ``dg`` is its reverse cumulative sum over the chunk plus the gradient of ``G_L``. Terms
whose two signs would cancel exactly (the undecayed diagonal of the scores, the last rows of
``K_out`` against ``G_L``) are left out of the sum rather than added and subtracted, so the
gradient of a strongly decayed chunk does not drown in their rounding.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kdalib.ops.triton.runtime import DOT_SPAN, SUB, compute_dtype
from kdalib.ops.triton.tiles import _block_span, _chunk_tiles, _put, _row, _tile, _vector, _widen


@triton.jit
def _scores_grad_rows(
    q,
    k,
    g_sum,
    dscores,
    d_kk,
    dq,
    dk,
    dg,
    base_k,
    base_s,
    cols_k,
    mask_k,
    K: tl.constexpr,
    BK: tl.constexpr,
    CHUNK: tl.constexpr,
    SUB: tl.constexpr,
    DOT_SPAN: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """The scores' gradients reaching row r of each 16-row block (q_r and k_r), added to dq, dk and dg."""
    sub = tl.arange(0, SUB)
    tile_sub = (sub < SUB)[:, None] & mask_k[None, :]
    for i in tl.static_range(CHUNK // SUB):
        rows_i = i * SUB + sub
        g_i = _tile(g_sum, base_k, rows_i, cols_k, K, tile_sub)
        g_ref = _vector(g_sum, base_k, i * SUB, K, cols_k, mask_k)
        acc_q = tl.zeros([SUB, BK], dtype=g_i.dtype)
        acc_k = tl.zeros([SUB, BK], dtype=g_i.dtype)
        for j in tl.static_range(i):
            rows_j = j * SUB + sub
            k_j = _tile(k, base_k, rows_j, cols_k, K, tile_sub)
            k_j *= tl.exp(g_ref[None, :] - _tile(g_sum, base_k, rows_j, cols_k, K, tile_sub))
            block = base_s + rows_i[:, None] * CHUNK + rows_j[None, :]
            acc_q += tl.dot(tl.load(dscores + block), k_j, input_precision=PRECISION)
            acc_k += tl.dot(tl.load(d_kk + block), k_j, input_precision=PRECISION)
        row_decay = tl.exp(g_i - g_ref[None, :])
        if _block_span(g_sum, base_k, i, K, cols_k, mask_k, SUB) <= DOT_SPAN:
            # the diagonal block below its diagonal as one product: column factors <= exp(span)
            k_i = _tile(k, base_k, rows_i, cols_k, K, tile_sub) * tl.exp(g_ref[None, :] - g_i)
            block = base_s + rows_i[:, None] * CHUNK + rows_i[None, :]
            below = sub[:, None] > sub[None, :]
            acc_q += tl.dot(tl.load(dscores + block, mask=below, other=0.0), k_i, input_precision=PRECISION)
            acc_k += tl.dot(tl.load(d_kk + block), k_i, input_precision=PRECISION)
            acc_q *= row_decay
            acc_k *= row_decay
        else:
            acc_q *= row_decay
            acc_k *= row_decay
            for c in range(SUB):  # the diagonal block below its diagonal, exactly
                col = i * SUB + c
                k_c = _vector(k, base_k, col, K, cols_k, mask_k)
                g_c = _vector(g_sum, base_k, col, K, cols_k, mask_k)
                decay = tl.exp(tl.where((sub > c)[:, None], g_i - g_c[None, :], float("-inf")))
                a_q = tl.load(dscores + base_s + rows_i * CHUNK + col)
                a_k = tl.load(d_kk + base_s + rows_i * CHUNK + col)
                acc_q += a_q[:, None] * k_c[None, :] * decay
                acc_k += a_k[:, None] * k_c[None, :] * decay
        q_i = _tile(q, base_k, rows_i, cols_k, K, tile_sub)
        k_i = _tile(k, base_k, rows_i, cols_k, K, tile_sub)
        # the diagonal q_r . k_r has no decay: it reaches q, not g
        d_q_i = acc_q + tl.load(dscores + base_s + rows_i * (CHUNK + 1))[:, None] * k_i
        _put(dq, base_k, rows_i, cols_k, K, tile_sub, _tile(dq, base_k, rows_i, cols_k, K, tile_sub) + d_q_i)
        _put(dk, base_k, rows_i, cols_k, K, tile_sub, _tile(dk, base_k, rows_i, cols_k, K, tile_sub) + acc_k)
        d_g_i = _tile(dg, base_k, rows_i, cols_k, K, tile_sub) + q_i * acc_q + k_i * acc_k
        _put(dg, base_k, rows_i, cols_k, K, tile_sub, d_g_i)


@triton.jit
def _scores_grad_columns(
    q,
    k,
    g_sum,
    dscores,
    d_kk,
    dq,
    dk,
    dg,
    base_k,
    base_s,
    cols_k,
    mask_k,
    K: tl.constexpr,
    BK: tl.constexpr,
    CHUNK: tl.constexpr,
    SUB: tl.constexpr,
    DOT_SPAN: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """The scores' gradients reaching column c of each 16-row block (k_c), added to dk and dg."""
    sub = tl.arange(0, SUB)
    tile_sub = (sub < SUB)[:, None] & mask_k[None, :]
    for j in tl.static_range(CHUNK // SUB):
        rows_j = j * SUB + sub
        g_j = _tile(g_sum, base_k, rows_j, cols_k, K, tile_sub)
        acc = tl.zeros([SUB, BK], dtype=g_j.dtype)
        for i in tl.static_range(j + 1, CHUNK // SUB):
            rows_i = i * SUB + sub
            g_ref = _vector(g_sum, base_k, i * SUB, K, cols_k, mask_k)
            row_decay = tl.exp(_tile(g_sum, base_k, rows_i, cols_k, K, tile_sub) - g_ref[None, :])
            q_i = _tile(q, base_k, rows_i, cols_k, K, tile_sub) * row_decay
            k_i = _tile(k, base_k, rows_i, cols_k, K, tile_sub) * row_decay
            block = base_s + rows_i[:, None] * CHUNK + rows_j[None, :]
            part = tl.dot(tl.trans(tl.load(dscores + block)), q_i, input_precision=PRECISION)
            part += tl.dot(tl.trans(tl.load(d_kk + block)), k_i, input_precision=PRECISION)
            acc += part * tl.exp(g_ref[None, :] - g_j)
        if _block_span(g_sum, base_k, j, K, cols_k, mask_k, SUB) <= DOT_SPAN:
            # the diagonal block as one product: row factors <= 1, column factors <= exp(span)
            g_ref = _vector(g_sum, base_k, j * SUB, K, cols_k, mask_k)
            row_decay = tl.exp(g_j - g_ref[None, :])
            block = base_s + rows_j[:, None] * CHUNK + rows_j[None, :]
            below = sub[:, None] > sub[None, :]
            q_j = _tile(q, base_k, rows_j, cols_k, K, tile_sub) * row_decay
            k_j = _tile(k, base_k, rows_j, cols_k, K, tile_sub) * row_decay
            part = tl.dot(tl.trans(tl.load(dscores + block, mask=below, other=0.0)), q_j, input_precision=PRECISION)
            part += tl.dot(tl.trans(tl.load(d_kk + block)), k_j, input_precision=PRECISION)
            acc += part * tl.exp(g_ref[None, :] - g_j)
        else:
            for r in range(SUB):  # the diagonal block below its diagonal, exactly
                row = j * SUB + r
                q_r = _vector(q, base_k, row, K, cols_k, mask_k)
                k_r = _vector(k, base_k, row, K, cols_k, mask_k)
                g_r = _vector(g_sum, base_k, row, K, cols_k, mask_k)
                decay = tl.exp(tl.where((sub < r)[:, None], g_r[None, :] - g_j, float("-inf")))
                a_q = tl.load(dscores + base_s + row * CHUNK + rows_j)
                a_k = tl.load(d_kk + base_s + row * CHUNK + rows_j)
                acc += (a_q[:, None] * q_r[None, :] + a_k[:, None] * k_r[None, :]) * decay
        k_j = _tile(k, base_k, rows_j, cols_k, K, tile_sub)
        d_k_j = acc + tl.load(dscores + base_s + rows_j * (CHUNK + 1))[:, None] * _tile(
            q, base_k, rows_j, cols_k, K, tile_sub
        )
        _put(dk, base_k, rows_j, cols_k, K, tile_sub, _tile(dk, base_k, rows_j, cols_k, K, tile_sub) + d_k_j)
        _put(dg, base_k, rows_j, cols_k, K, tile_sub, _tile(dg, base_k, rows_j, cols_k, K, tile_sub) - k_j * acc)


@triton.jit
def _local_backward_kernel(
    q,
    k,
    v,
    g,
    beta,
    inverse,
    scores_kk,
    dw,
    du,
    dkeys_out,
    ddecay_last,
    dquery_in,
    dscores,
    dq,
    dk,
    dv,
    dg,
    dbeta,
    g_sum,
    d_kk,
    K: tl.constexpr,
    V: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    CHUNK: tl.constexpr,
    SUB: tl.constexpr,
    DOT_SPAN: tl.constexpr,
    PRECISION: tl.constexpr,
):
    i_c, base_k, base_v, base_s, rows, cols_k, cols_v, mask_k, tile_k, tile_v = _chunk_tiles(K, V, BK, BV, CHUNK)
    square = base_s + rows[:, None] * CHUNK + rows[None, :]
    strict = rows[:, None] > rows[None, :]

    # ---- the UT transform (loads ordered so that few whole-chunk tiles are live at once)
    b = _widen(tl.load(beta + i_c * CHUNK + rows))
    x_inv = tl.load(inverse + square, mask=rows[:, None] >= rows[None, :], other=0.0)
    transform = x_inv * b[None, :]
    d_u = _tile(du, base_v, rows, cols_v, V, tile_v)
    _put(dv, base_v, rows, cols_v, V, tile_v, tl.dot(tl.trans(transform), d_u, input_precision=PRECISION))
    d_t = tl.dot(d_u, tl.trans(_tile(v, base_v, rows, cols_v, V, tile_v)), input_precision=PRECISION)
    g_acc = tl.cumsum(_tile(g, base_k, rows, cols_k, K, tile_k), axis=0)
    _put(g_sum, base_k, rows, cols_k, K, tile_k, g_acc)
    gamma = tl.exp(g_acc)
    keys_in = _tile(k, base_k, rows, cols_k, K, tile_k) * gamma
    d_w = _tile(dw, base_k, rows, cols_k, K, tile_k)
    d_t += tl.dot(d_w, tl.trans(keys_in), input_precision=PRECISION)
    d_keys_in = tl.dot(tl.trans(transform), d_w, input_precision=PRECISION)
    d_g = d_keys_in * keys_in
    d_keys = d_keys_in * gamma
    d_b = tl.sum(d_t * x_inv, axis=0)
    d_l = -tl.dot(
        tl.dot(tl.trans(x_inv), d_t * b[None, :], input_precision=PRECISION), tl.trans(x_inv), input_precision=PRECISION
    )
    d_l = tl.where(strict, d_l, 0.0)
    d_b += tl.sum(d_l * tl.load(scores_kk + square, mask=strict, other=0.0), axis=1)
    tl.store(dbeta + i_c * CHUNK + rows, d_b)
    tl.store(d_kk + square, d_l * b[:, None])

    # ---- queries decayed from the chunk start, keys decayed to its end, the chunk's decay
    d_query_in = _tile(dquery_in, base_k, rows, cols_k, K, tile_k)
    _put(dq, base_k, rows, cols_k, K, tile_k, d_query_in * gamma)
    d_g += d_query_in * _tile(q, base_k, rows, cols_k, K, tile_k) * gamma
    # G_L is the cumulative sum's own last row: summed again in another order it could differ by
    # rounding (a tree sum on the GPU), and exp(G_L - G) would then miss 1 on the last row
    g_last = _row(g_acc, CHUNK - 1, CHUNK)
    decay_out = tl.exp(g_last[None, :] - g_acc)
    d_keys_out = _tile(dkeys_out, base_k, rows, cols_k, K, tile_k)
    d_keys += d_keys_out * decay_out
    # exp(G_L - G_r) reaches g_s for r < s <= L: an exclusive prefix sum over rows (summing it as
    # "all rows minus rows >= s" would cancel the undecayed last rows against themselves)
    through_end = d_keys_out * _tile(k, base_k, rows, cols_k, K, tile_k) * decay_out
    d_g_end = tl.dot(tl.where(strict, 1.0, 0.0).to(through_end.dtype), through_end, input_precision=PRECISION)
    d_g_end += (tl.load(ddecay_last + i_c * K + cols_k, mask=mask_k, other=0.0) * tl.exp(g_last))[None, :]

    _put(dk, base_k, rows, cols_k, K, tile_k, d_keys)
    _put(dg, base_k, rows, cols_k, K, tile_k, d_g)
    tl.debug_barrier()

    # ---- the scores' gradients, 16-row blocks: first the row side, then the column side
    _scores_grad_rows(
        q, k, g_sum, dscores, d_kk, dq, dk, dg, base_k, base_s, cols_k, mask_k, K, BK, CHUNK, SUB, DOT_SPAN, PRECISION
    )
    tl.debug_barrier()
    _scores_grad_columns(
        q, k, g_sum, dscores, d_kk, dq, dk, dg, base_k, base_s, cols_k, mask_k, K, BK, CHUNK, SUB, DOT_SPAN, PRECISION
    )
    tl.debug_barrier()

    # ---- G is the cumulative sum of g, and G_L the sum over the whole chunk
    d_g = _tile(dg, base_k, rows, cols_k, K, tile_k)
    _put(dg, base_k, rows, cols_k, K, tile_k, tl.cumsum(d_g, axis=0, reverse=True) + d_g_end)


def chunk_local_terms_backward(q, k, v, g, beta, inverse, scores_kk, grads, precision: str):
    """Gradients of q, k, v, g and beta from those of the chunk-local terms.

    Args:
        q, k: ``[NC, M, C, K]``; v: ``[NC, M, C, V]``; g: ``[NC, M, C, K]`` (<= 0); beta:
            ``[NC, M, C]``: the chunk-local terms' inputs (16-bit, float32 or float64, contiguous).
        inverse: ``[NC, M, C, C]`` ``(I + Diag(beta) A_kk)^{-1}`` (lower triangle read).
        scores_kk: ``[NC, M, C, C]`` ``A_kk`` (strictly lower triangle read).
        grads: gradients of ``(w, u, keys_out, decay_last, query_in, scores_qk)``, shaped like them.
        precision: matrix-product input precision (``ieee``, ``tf32x3`` or ``tf32``).

    Returns:
        ``(dq, dk, dv, dg, dbeta)``, float32 for 16-bit inputs.
    """
    chunks, rows, size, key_dim = k.shape
    value_dim = v.shape[-1]
    d_w, d_u, d_keys_out, d_decay, d_query_in, d_scores = (
        torch.zeros_like(x) if x is None else x.contiguous() for x in grads
    )
    dtype = compute_dtype(k)  # gradients are accumulated in place: float32 for 16-bit inputs
    dq, dk, dg, g_sum = (torch.empty_like(x, dtype=dtype) for x in (q, k, g, g))
    dv, dbeta = torch.empty_like(v, dtype=dtype), torch.empty_like(beta, dtype=dtype)
    d_kk = torch.empty_like(inverse)
    _local_backward_kernel[(chunks * rows,)](
        q,
        k,
        v,
        g,
        beta,
        inverse,
        scores_kk,
        d_w,
        d_u,
        d_keys_out,
        d_decay,
        d_query_in,
        d_scores,
        dq,
        dk,
        dv,
        dg,
        dbeta,
        g_sum,
        d_kk,
        K=key_dim,
        V=value_dim,
        BK=max(16, triton.next_power_of_2(key_dim)),
        BV=max(16, triton.next_power_of_2(value_dim)),
        CHUNK=size,
        SUB=min(SUB, size),
        DOT_SPAN=DOT_SPAN,
        PRECISION=precision,
        num_warps=8,
        num_stages=1,
    )
    return dq, dk, dv, dg, dbeta

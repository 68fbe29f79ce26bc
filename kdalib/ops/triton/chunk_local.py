"""The chunk form's chunk-local terms in Triton (the training path's forward): one program per
chunk and sequence row, in the chunk-row layout of :func:`kdalib.ops.chunk.chunk_local_terms`.

Per chunk (notes/kda.md, sections ``kda-chunkwise`` and ``kda-chunk-output``), with ``G`` the
chunk-local cumulative sum of the log decay and ``Γ = exp(G)``::

    A_qk[r, c] = Σ_d q_rd k_cd exp(G_rd - G_cd)  (c <= r),   A_kk the same with keys (c < r)
    X = (I + Diag(β) A_kk)^{-1},   W = X Diag(β) (K ⊙ Γ),   U = X Diag(β) V
    Q_in = Q ⊙ Γ,   K_out = K ⊙ exp(G_L - G),   exp(G_L)

The scores are built in 16-row blocks: a block pair ``(i, j < i)`` is one matrix product of
factors decayed towards the first row ``r0`` of block ``i`` (``exp(G_r - G_r0)`` and
``exp(G_r0 - G_c)``, both at most 1). A diagonal block is one product too while its own decay
(its span) is at most ``DOT_SPAN``, and past that is built column by column with the exponent
masked to -inf above the diagonal. So no exponent above ``DOT_SPAN`` is formed and the strongest
gates underflow to exact zeros, as in the PyTorch form. The inverse is the inference kernels' block
forward substitution (:func:`kdalib.ops.triton.inverse._invert_chunk`), for chunks of 64.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kdalib.ops.triton.inverse import _invert_chunk
from kdalib.ops.triton.runtime import CHUNK, DOT_SPAN, SUB, compute_dtype
from kdalib.ops.triton.tiles import _block_span, _chunk_tiles, _put, _row, _tile, _vector, _widen


@triton.jit
def _local_forward_kernel(
    q,
    k,
    v,
    g,
    beta,
    w,
    u,
    keys_out,
    decay_last,
    query_in,
    scores,
    inverse,
    scores_kk,
    g_sum,
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

    # ---- the decayed operands and the chunk's decay
    gates = _tile(g, base_k, rows, cols_k, K, tile_k)
    g_acc = tl.cumsum(gates, axis=0)
    _put(g_sum, base_k, rows, cols_k, K, tile_k, g_acc)
    gamma = tl.exp(g_acc)
    _put(query_in, base_k, rows, cols_k, K, tile_k, _tile(q, base_k, rows, cols_k, K, tile_k) * gamma)
    g_last = _row(g_acc, CHUNK - 1, CHUNK)  # the cumulative sum's own last row, not a sum in another order
    keys_to_end = _tile(k, base_k, rows, cols_k, K, tile_k) * tl.exp(g_last[None, :] - g_acc)
    _put(keys_out, base_k, rows, cols_k, K, tile_k, keys_to_end)
    tl.store(decay_last + i_c * K + cols_k, tl.exp(g_last), mask=mask_k)
    tl.debug_barrier()

    # ---- the scores, one 16-row block at a time
    sub = tl.arange(0, SUB)
    tile_sub = (sub < SUB)[:, None] & mask_k[None, :]
    for i in tl.static_range(CHUNK // SUB):
        rows_i = i * SUB + sub
        g_i = _tile(g_sum, base_k, rows_i, cols_k, K, tile_sub)
        g_ref = _vector(g_sum, base_k, i * SUB, K, cols_k, mask_k)
        row_decay = tl.exp(g_i - g_ref[None, :])
        q_i = _tile(q, base_k, rows_i, cols_k, K, tile_sub)
        k_i = _tile(k, base_k, rows_i, cols_k, K, tile_sub)
        for j in tl.static_range(i):
            rows_j = j * SUB + sub
            k_j = _tile(k, base_k, rows_j, cols_k, K, tile_sub)
            k_j *= tl.exp(g_ref[None, :] - _tile(g_sum, base_k, rows_j, cols_k, K, tile_sub))
            block = base_s + rows_i[:, None] * CHUNK + rows_j[None, :]
            tl.store(scores + block, tl.dot(q_i * row_decay, tl.trans(k_j), input_precision=PRECISION))
            tl.store(scores_kk + block, tl.dot(k_i * row_decay, tl.trans(k_j), input_precision=PRECISION))
        a_q = tl.zeros([SUB, SUB], dtype=q_i.dtype)
        a_k = tl.zeros([SUB, SUB], dtype=q_i.dtype)
        if _block_span(g_sum, base_k, i, K, cols_k, mask_k, SUB) <= DOT_SPAN:
            # the diagonal block as one product: column factors exp(G_r0 - G_c) <= exp(span)
            k_dec = k_i * tl.exp(g_ref[None, :] - g_i)
            a_q = tl.dot(q_i * row_decay, tl.trans(k_dec), input_precision=PRECISION)
            a_k = tl.dot(k_i * row_decay, tl.trans(k_dec), input_precision=PRECISION)
            a_q = tl.where(sub[:, None] >= sub[None, :], a_q, 0.0)
            a_k = tl.where(sub[:, None] > sub[None, :], a_k, 0.0)
        else:
            for c in range(SUB):  # the diagonal block, exactly
                col = i * SUB + c
                k_c = _vector(k, base_k, col, K, cols_k, mask_k)
                g_c = _vector(g_sum, base_k, col, K, cols_k, mask_k)
                decay = tl.exp(tl.where((sub >= c)[:, None], g_i - g_c[None, :], float("-inf")))
                here = sub[None, :] == c
                a_q = tl.where(here, tl.sum(q_i * k_c[None, :] * decay, axis=1)[:, None], a_q)
                a_k = tl.where(here & (sub[:, None] > c), tl.sum(k_i * k_c[None, :] * decay, axis=1)[:, None], a_k)
        block = base_s + rows_i[:, None] * CHUNK + rows_i[None, :]
        tl.store(scores + block, a_q)
        tl.store(scores_kk + block, a_k)
        for j in tl.static_range(i + 1, CHUNK // SUB):  # zeros above the diagonal
            block = base_s + rows_i[:, None] * CHUNK + (j * SUB + sub)[None, :]
            zeros = tl.zeros([SUB, SUB], dtype=q_i.dtype)
            tl.store(scores + block, zeros)
            tl.store(scores_kk + block, zeros)
    tl.debug_barrier()

    # ---- X = (I + Diag(β) A_kk)^{-1}, then W and U
    square = base_s + rows[:, None] * CHUNK + rows[None, :]
    b = _widen(tl.load(beta + i_c * CHUNK + rows))
    tl.store(inverse + square, tl.load(scores_kk + square) * b[:, None])
    tl.debug_barrier()
    _invert_chunk(inverse + base_s, SUB, CHUNK, PRECISION)
    tl.debug_barrier()
    transform = tl.load(inverse + square, mask=rows[:, None] >= rows[None, :], other=0.0) * b[None, :]
    # keys decayed from the chunk start, reloaded rather than kept live through the score blocks
    keys_in = _tile(k, base_k, rows, cols_k, K, tile_k) * tl.exp(_tile(g_sum, base_k, rows, cols_k, K, tile_k))
    _put(w, base_k, rows, cols_k, K, tile_k, tl.dot(transform, keys_in, input_precision=PRECISION))
    values = _tile(v, base_v, rows, cols_v, V, tile_v)
    _put(u, base_v, rows, cols_v, V, tile_v, tl.dot(transform, values, input_precision=PRECISION))


def chunk_local_terms_forward(q, k, v, g, beta, precision: str):
    """The chunk-local terms and the two C x C factors their backward needs.

    Args:
        q, k: ``[NC, M, 64, K]``; v: ``[NC, M, 64, V]``; g: ``[NC, M, 64, K]`` (<= 0); beta:
            ``[NC, M, 64]`` (16-bit, float32 or float64, contiguous; the terms are float32 for
            16-bit inputs).
        precision: matrix-product input precision (``ieee``, ``tf32x3`` or ``tf32``).

    Returns:
        ``((w, u, keys_out, decay_last, query_in, scores_qk), inverse, scores_kk)`` as
        :func:`kdalib.ops.chunk.chunk_local_terms` and its factors: ``inverse`` the lower triangle
        of ``(I + Diag(beta) A_kk)^{-1}``, ``scores_kk`` the strictly lower ``A_kk``.
    """
    chunks, rows, size, key_dim = k.shape
    if size != CHUNK:
        raise ValueError(f"q: the Triton chunk-local kernel takes chunks of {CHUNK} rows, got {size}")
    value_dim = v.shape[-1]
    dtype = compute_dtype(k)
    w, keys_out, query_in, g_sum = (torch.empty_like(k, dtype=dtype) for _ in range(4))
    u = torch.empty_like(v, dtype=dtype)
    decay_last = k.new_empty(chunks, rows, key_dim, 1, dtype=dtype)
    scores, inverse, scores_kk = (k.new_empty(chunks, rows, size, size, dtype=dtype) for _ in range(3))
    _local_forward_kernel[(chunks * rows,)](
        q,
        k,
        v,
        g,
        beta,
        w,
        u,
        keys_out,
        decay_last,
        query_in,
        scores,
        inverse,
        scores_kk,
        g_sum,
        K=key_dim,
        V=value_dim,
        BK=max(16, triton.next_power_of_2(key_dim)),
        BV=max(16, triton.next_power_of_2(value_dim)),
        CHUNK=CHUNK,
        SUB=SUB,
        DOT_SPAN=DOT_SPAN,
        PRECISION=precision,
        num_warps=8,
        num_stages=1,
    )
    return (w, u, keys_out, decay_last, query_in, scores), inverse, scores_kk

"""The chunk form's chunk-local terms in Triton (the training path's forward), in the chunk-row
layout of :func:`kdalib.ops.chunk.chunk_local_terms`: the forward's chunk-local kernel
(:mod:`kdalib.ops.triton.prefill_local`, its ``CHUNK_ROWS`` layout), which also keeps ``A_kk`` and
the inverse for the backward (:mod:`kdalib.ops.triton.chunk_local_grad`).

Per chunk (notes/kda.md, sections ``kda-chunkwise`` and ``kda-chunk-output``), with ``G`` the
chunk-local cumulative sum of the log decay and ``Γ = exp(G)``::

    A_qk[r, c] = Σ_d q_rd k_cd exp(G_rd - G_cd)  (c <= r),   A_kk the same with keys (c < r)
    X = (I + Diag(β) A_kk)^{-1},   W = X Diag(β) (K ⊙ Γ),   U = X Diag(β) V
    Q_in = Q ⊙ Γ,   K_out = K ⊙ exp(G_L - G),   exp(G_L)
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kdalib.ops.triton.prefill_local import _chunk_local_kernel
from kdalib.ops.triton.runtime import (
    CHUNK,
    DIAG_SPAN,
    FLOAT64_GATE_FLOOR,
    GATE_FLOOR,
    GATE_GIVEN,
    MAX_KEY_DIM,
    SUB,
    compute_dtype,
    interpreting,
)


def chunk_local_terms_forward(q, k, v, g, beta, precision: str):
    """The chunk-local terms and the two C x C factors their backward needs, with the forward's
    chunk-local kernel (:mod:`kdalib.ops.triton.prefill_local`) in the chunk-row layout.

    Args:
        q, k: ``[NC, M, 64, K]``; v: ``[NC, M, 64, V]``; g: ``[NC, M, 64, K]`` (<= 0); beta:
            ``[NC, M, 64]`` (16-bit, float32 or float64, contiguous; the terms are float32 for
            16-bit inputs, float64 for float64 ones).
        precision: matrix-product input precision (``ieee``, ``tf32x3`` or ``tf32``).

    Returns:
        ``((w, u, keys_out, decay_last, query_in, scores_qk), inverse, scores_kk)`` as
        :func:`kdalib.ops.chunk.chunk_local_terms` and its factors: ``inverse`` the lower triangle
        of ``(I + Diag(beta) A_kk)^{-1}``, ``scores_kk`` the strictly lower ``A_kk``.
    """
    chunks, rows, size, key_dim = k.shape
    if size != CHUNK:
        raise ValueError(f"q: the Triton chunk-local kernel takes chunks of {CHUNK} rows, got {size}")
    if key_dim > MAX_KEY_DIM:
        raise ValueError(f"q: the Triton chunk-local kernel supports K <= {MAX_KEY_DIM}, got K = {key_dim}")
    value_dim = v.shape[-1]
    dtype = compute_dtype(k)
    w, keys_out, query_in = (torch.empty_like(k, dtype=dtype) for _ in range(3))
    u = torch.empty_like(v, dtype=dtype)
    decay_last = k.new_empty(chunks, rows, key_dim, 1, dtype=dtype)
    scores, inverse, scores_kk = (k.new_empty(chunks, rows, size, size, dtype=dtype) for _ in range(3))
    block_k = max(16, triton.next_power_of_2(key_dim))
    wide = dtype == torch.float64
    _chunk_local_kernel[(chunks, rows)](
        q, k, v, g, beta,
        None, None, 0.0,  # the gate is given
        w, u, query_in, keys_out, decay_last, scores, inverse, scores_kk,
        None, None, 1.0, size, 1,  # whole chunks; the scale is applied by the scan
        H=rows, HV=rows, K=key_dim, V=value_dim, BK=block_k, BKS=min(block_k, 32),
        BV=min(64, max(16, triton.next_power_of_2(value_dim))), CHUNK=CHUNK, SUB=SUB,
        DIAG_SPAN=DIAG_SPAN, FLOOR=FLOAT64_GATE_FLOOR if wide else GATE_FLOOR,
        IS_VARLEN=False, USE_QK_L2NORM=False, GATE=GATE_GIVEN, PRECISION=precision,
        NATIVE_BF16=not interpreting(), CHUNK_ROWS=True,
        QK_ROW=key_dim, G_ROW=key_dim, K_ROW=key_dim, V_ROW=value_dim, BETA_ROW=1,
        COMPUTE=tl.float64 if wide else tl.float32,
        num_warps=4,
    )  # fmt: skip
    return (w, u, keys_out, decay_last, query_in, scores), inverse, scores_kk

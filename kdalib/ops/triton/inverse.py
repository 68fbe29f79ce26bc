"""The WY/UT inverse of a chunk in Triton: ``M = (I + L)^{-1}`` of the unit lower-triangular
64 x 64 matrix of one chunk (``L = Diag(beta) A_kk``, notes/kda.md, "The chunkwise algorithm"),
by forward substitution inside the four 16 x 16 diagonal blocks (all four at once) and block
forward substitution for the rest. Used by the chunk-local kernel
(:mod:`kdalib.ops.triton.prefill_local`) of the forward and of the training backward."""

import triton
import triton.language as tl

from kdalib.ops.triton.tiles import _dot, _load_block, _store_block


@triton.jit
def _diagonal_inverses(p_ptr, SUB: tl.constexpr, CHUNK: tl.constexpr):
    """Replaces the four 16 x 16 diagonal blocks ``L_ii`` (strictly lower) of the P buffer by
    ``(I + L_ii)^{-1}``, all four at once: forward substitution row by row, each step updating the
    same row of every block, so the dependent chain is 15 steps long instead of 60."""
    blocks = tl.arange(0, CHUNK // SUB)
    rows = tl.arange(0, SUB)
    at = (blocks[:, None, None] * SUB + rows[None, :, None]) * CHUNK + blocks[:, None, None] * SUB + rows[None, None, :]
    lower = tl.load(p_ptr + at)
    inverse = tl.where(rows[None, :, None] == rows[None, None, :], 1.0, 0.0) + tl.zeros_like(lower)
    for r in range(1, SUB):
        coefficients = tl.sum(tl.where(rows[None, :, None] == r, lower, 0.0), axis=1)  # row r, zero at >= r
        update = tl.sum(coefficients[:, :, None] * inverse, axis=1)  # rows < r are final
        inverse = tl.where(rows[None, :, None] == r, inverse - update[:, None, :], inverse)
    tl.store(p_ptr + at, inverse)


@triton.jit
def _invert_chunk(p_ptr, SUB: tl.constexpr, CHUNK: tl.constexpr, PRECISION: tl.constexpr):
    """Replaces L = Diag(beta) A_kk in the P buffer by M = (I + L)^{-1}: the diagonal blocks
    ``M_ii = (I + L_ii)^{-1}`` (:func:`_diagonal_inverses`), then row block by row block
    ``M_ij = -M_ii sum_{j <= m < i} L_im M_mj``."""
    _diagonal_inverses(p_ptr, SUB, CHUNK)
    tl.debug_barrier()
    d0, d1 = _load_block(p_ptr, 0, 0, SUB, CHUNK), _load_block(p_ptr, 1, 1, SUB, CHUNK)
    d2, d3 = _load_block(p_ptr, 2, 2, SUB, CHUNK), _load_block(p_ptr, 3, 3, SUB, CHUNK)
    l10, l20, l21 = (
        _load_block(p_ptr, 1, 0, SUB, CHUNK),
        _load_block(p_ptr, 2, 0, SUB, CHUNK),
        _load_block(p_ptr, 2, 1, SUB, CHUNK),
    )
    l30, l31, l32 = (
        _load_block(p_ptr, 3, 0, SUB, CHUNK),
        _load_block(p_ptr, 3, 1, SUB, CHUNK),
        _load_block(p_ptr, 3, 2, SUB, CHUNK),
    )
    m10 = -_dot(d1, _dot(l10, d0, PRECISION), PRECISION)
    m21 = -_dot(d2, _dot(l21, d1, PRECISION), PRECISION)
    m20 = -_dot(d2, _dot(l20, d0, PRECISION) + _dot(l21, m10, PRECISION), PRECISION)
    m32 = -_dot(d3, _dot(l32, d2, PRECISION), PRECISION)
    m31 = -_dot(d3, _dot(l31, d1, PRECISION) + _dot(l32, m21, PRECISION), PRECISION)
    m30 = -_dot(d3, _dot(l30, d0, PRECISION) + _dot(l31, m10, PRECISION) + _dot(l32, m20, PRECISION), PRECISION)
    tl.debug_barrier()
    _store_block(p_ptr, m10, 1, 0, SUB, CHUNK)
    _store_block(p_ptr, m20, 2, 0, SUB, CHUNK)
    _store_block(p_ptr, m21, 2, 1, SUB, CHUNK)
    _store_block(p_ptr, m30, 3, 0, SUB, CHUNK)
    _store_block(p_ptr, m31, 3, 1, SUB, CHUNK)
    _store_block(p_ptr, m32, 3, 2, SUB, CHUNK)

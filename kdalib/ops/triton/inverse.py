"""The WY/UT inverse of a chunk in Triton: ``M = (I + L)^{-1}`` of the unit lower-triangular
64 x 64 matrix of one chunk (``L = Diag(beta) A_kk``, notes/kda.md, "The chunkwise algorithm"),
by forward substitution inside each 16 x 16 diagonal block and block forward substitution for the
rest. Used by the chunk-local kernel (:mod:`kdalib.ops.triton.prefill_local`) of the forward and of
the training backward."""

import triton
import triton.language as tl

from kdalib.ops.triton.tiles import _dot, _load_block, _row, _store_block


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

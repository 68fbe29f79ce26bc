"""The output of the Triton chunked forward (see :mod:`kdalib.ops.triton.chunk`), chunk-parallel:
``O = Q_g S + A V_new`` per chunk, from the state entering the chunk (notes/kda.md, "The
chunkwise algorithm")."""

from __future__ import annotations

import triton
import triton.language as tl

from kdalib.ops.triton.tiles import _chunk_bounds, _dot, _stored_as


@triton.jit
def _chunk_output_kernel(
    qg,
    states,
    scores,
    v_new,
    o,
    sequence_end,
    chunk_start,
    T,
    NT,
    K: tl.constexpr,
    V: tl.constexpr,
    HV: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    CHUNK: tl.constexpr,
    IS_VARLEN: tl.constexpr,
    PRECISION: tl.constexpr,
    NATIVE_BF16: tl.constexpr,
):
    """One (value block, chunk, value head): ``Q_g`` and the entering state meet in the storage
    dtype (bfloat16 products for 16-bit inputs, ``PRECISION`` for float32 ones); ``A`` and
    ``V_new`` are float32 and meet in ``PRECISION``."""
    i_v, i_c, i_hv = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    start, end = _chunk_bounds(i_c, sequence_end, chunk_start, T, NT, IS_VARLEN, CHUNK)
    idx = tl.arange(0, CHUNK)
    m = idx < (end - start).to(tl.int32)
    cols_k = tl.arange(0, BK)
    cols_v = i_v * BV + tl.arange(0, BV)
    mk = cols_k < K
    mv = cols_v < V
    block = (i_c * HV + i_hv).to(tl.int64)
    q_c = tl.load(
        qg + (start * (HV * K) + i_hv * K) + (idx[:, None] * (HV * K) + cols_k[None, :]),
        mask=m[:, None] & mk[None, :],
        other=0.0,
    )
    s = tl.load(
        states + block * K * V + cols_k[:, None] * V + cols_v[None, :], mask=mk[:, None] & mv[None, :], other=0.0
    )
    a = tl.load(scores + block * CHUNK * CHUNK + idx[:, None] * CHUNK + idx[None, :])
    value_at = start * (HV * V) + i_hv * V  # the chunk's first token; offsets from it are 32-bit
    value_rows = idx[:, None] * (HV * V) + cols_v[None, :]
    mvr = m[:, None] & mv[None, :]
    corrections = tl.load(v_new + value_at + value_rows, mask=mvr, other=0.0)
    if not NATIVE_BF16:  # Triton's interpreter mis-multiplies bfloat16 operands: widen them exactly
        q_c, s = q_c.to(tl.float32), s.to(tl.float32)
    out = _dot(q_c, s, PRECISION) + _dot(a, corrections, PRECISION)
    tl.store(o + value_at + value_rows, _stored_as(out, o.dtype.element_ty, NATIVE_BF16), mask=mvr)

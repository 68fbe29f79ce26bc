"""Tile helpers shared by the Triton chunk kernels: loads and stores of row tiles and blocks,
row extraction, matrix products with a chosen input precision.

Loads widen 16-bit floats to float32 in registers (exactly; float32 and float64 stay as they are),
so the chunk kernels compute in float32 whatever dtype their inputs are stored in, and stores round
to the destination's dtype."""

import triton
import triton.language as tl


@triton.jit
def _widen(x):
    """``x`` in float32 when it is a 16-bit float, else unchanged."""
    if x.dtype.primitive_bitwidth < 32:
        x = x.to(tl.float32)
    return x


@triton.jit
def _tile(ptr, base, rows, cols, row_stride, mask):
    """``[len(rows), len(cols)]`` tile of a matrix at ``ptr + base`` with row stride ``row_stride``
    (zeros where the ``[len(rows), len(cols)]`` mask is false), widened. ``base`` (64-bit) moves the
    pointer once; the tile's own offsets stay 32-bit (64-bit offset tiles cost registers)."""
    return _widen(tl.load(ptr + base + (rows[:, None] * row_stride + cols[None, :]), mask=mask, other=0.0))


@triton.jit
def _put(ptr, base, rows, cols, row_stride, mask, tile):
    tl.store(ptr + base + (rows[:, None] * row_stride + cols[None, :]), tile.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _vector(ptr, base, row, stride, cols, mask):
    """Row ``row`` of a matrix with row stride ``stride`` at ``ptr + base``, as a vector, widened."""
    return _widen(tl.load(ptr + base + row * stride + cols, mask=mask, other=0.0))


@triton.jit
def _block_span(g_sum, base, block, K, cols, mask, SUB: tl.constexpr):
    """The largest decay across 16-row block ``block`` of a chunk's cumulative log decays ``g_sum``
    (any channel): ``max(G_first - G_last)`` >= 0; NaN when a gate is NaN (then the exact path runs
    and carries it)."""
    first = _vector(g_sum, base, block * SUB, K, cols, mask)
    last = _vector(g_sum, base, block * SUB + SUB - 1, K, cols, mask)
    return tl.max(first - last, axis=0)


@triton.jit
def _row(x, index, SIZE: tl.constexpr):
    """Row ``index`` of a ``[SIZE, N]`` register tile, as an ``[N]`` vector."""
    rows = tl.arange(0, SIZE)
    return tl.sum(tl.where(rows[:, None] == index, x, 0.0), axis=0)


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr):
    return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def _store_block(ptr, block, i: tl.constexpr, j: tl.constexpr, SUB: tl.constexpr, CHUNK: tl.constexpr):
    rows = tl.arange(0, SUB)
    tl.store(ptr + (i * SUB + rows)[:, None] * CHUNK + (j * SUB + rows)[None, :], block)


@triton.jit
def _load_block(ptr, i: tl.constexpr, j: tl.constexpr, SUB: tl.constexpr, CHUNK: tl.constexpr):
    rows = tl.arange(0, SUB)
    return tl.load(ptr + (i * SUB + rows)[:, None] * CHUNK + (j * SUB + rows)[None, :])


@triton.jit
def _stored_as(x, dtype: tl.constexpr, NATIVE_BF16: tl.constexpr):
    """``x`` (float32) converted to ``dtype`` with round-to-nearest-even. Compiled kernels convert
    so; Triton's CPU interpreter truncates to bfloat16, so there (``NATIVE_BF16`` false) the
    rounding is done on the bits first and the truncation then keeps it exact."""
    if not NATIVE_BF16 and dtype == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + (0x7FFF + ((bits >> 16) & 1))) & 0xFFFF0000
        x = bits.to(tl.float32, bitcast=True)
    return x.to(dtype)


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
def _sequence_bounds(i_n, cu_seqlens, chunk_offsets, T, IS_VARLEN: tl.constexpr, CHUNK: tl.constexpr):
    """First token, one-past-last token and first global chunk of sequence ``i_n`` (packed
    sequences: from ``cu_seqlens`` and the per-sequence ``chunk_offsets``; else ``T`` tokens each)."""
    if IS_VARLEN:
        bos = tl.load(cu_seqlens + i_n).to(tl.int64)
        eos = tl.load(cu_seqlens + i_n + 1).to(tl.int64)
        first = tl.load(chunk_offsets + i_n).to(tl.int64)
    else:
        bos = i_n.to(tl.int64) * T
        eos = bos + T
        first = i_n.to(tl.int64) * tl.cdiv(T, CHUNK)
    return bos, eos, first


@triton.jit
def _sequence_program(cu_seqlens, chunk_offsets, T, K, V, HV: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                      IS_VARLEN: tl.constexpr, CHUNK: tl.constexpr):  # fmt: skip
    """Index setup of a sequential pass's program, one per (value block, sequence and value head)
    (program axes 0 and 1): the (sequence, value head) index, its value head, the sequence's bounds
    (:func:`_sequence_bounds`), the chunk rows, the key and value columns with their masks, the
    ``[BK, BV]`` state tile's mask and its offsets in a ``[K, V]`` state."""
    i_v, i_nh = tl.program_id(0), tl.program_id(1)
    i_hv = i_nh % HV
    bos, eos, first = _sequence_bounds(i_nh // HV, cu_seqlens, chunk_offsets, T, IS_VARLEN, CHUNK)
    rows = tl.arange(0, CHUNK)
    cols_k = tl.arange(0, BK)
    cols_v = i_v * BV + tl.arange(0, BV)
    mk = cols_k < K
    mv = cols_v < V
    tile = mk[:, None] & mv[None, :]
    state_offsets = cols_k[:, None] * V + cols_v[None, :]
    return i_nh, i_hv, bos, eos, first, rows, cols_k, cols_v, mk, mv, tile, state_offsets

"""The state kernel of the Triton chunked forward (see :mod:`kdalib.ops.triton.chunk`): per
(sequence, value head, block of value columns), the state carried chunk by chunk and the
outputs written in the same pass."""

import triton
import triton.language as tl

from kdalib.ops.triton.tiles import _dot


@triton.jit
def _dot_operand(a, b, b_low, PRECISION: tl.constexpr, PLANES: tl.constexpr, NATIVE_BF16: tl.constexpr):
    """``a @ b`` for a float32 ``a`` computed here and a ``b`` read from the intra-chunk kernel.

    With bfloat16 operands (PLANES = 1, or 2 for a pair ``(b, b_low)``) ``a`` is split into a
    bfloat16 high part and remainder, so it keeps ~16 bits through bfloat16 products (the
    low x low term is below float32's own rounding). Without NATIVE_BF16 (Triton's CPU
    interpreter, whose bfloat16 products are unreliable) the same bfloat16 values are multiplied
    in float32, which is exact for products of bfloat16s.
    """
    if PLANES == 0:
        return _dot(a, b, PRECISION)
    else:
        high = a.to(tl.bfloat16)
        low = (a - high.to(tl.float32)).to(tl.bfloat16)
        if NATIVE_BF16:
            result = tl.dot(high, b) + tl.dot(low, b)
            if PLANES == 2:
                result += tl.dot(high, b_low)
        else:
            high, low, b, b_low = high.to(tl.float32), low.to(tl.float32), b.to(tl.float32), b_low.to(tl.float32)
            result = tl.dot(high, b, input_precision="ieee") + tl.dot(low, b, input_precision="ieee")
            if PLANES == 2:
                result += tl.dot(high, b_low, input_precision="ieee")
        return result


@triton.jit
def _load_operand(ptr, offsets, mask, PLANE, PLANES: tl.constexpr):
    high = tl.load(ptr + offsets, mask=mask, other=0.0)
    if PLANES == 2:
        low = tl.load(ptr + PLANE + offsets, mask=mask, other=0.0)
    else:
        low = high
    return high, low


@triton.jit
def _chunk_state_kernel(
    q_in,
    k_in,
    k_out,
    decay,
    v,
    beta,
    m_in,
    a_in,
    o,
    h0,
    ht,
    cu_seqlens,
    chunk_offsets,
    T,
    PLANE,
    HV: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    CHUNK: tl.constexpr,
    USE_INITIAL_STATE: tl.constexpr,
    STORE_FINAL_STATE: tl.constexpr,
    IS_VARLEN: tl.constexpr,
    PRECISION: tl.constexpr,
    PLANES: tl.constexpr,
    NATIVE_BF16: tl.constexpr,
):
    # Everything here is transposed (value columns first): the values computed in the loop are
    # the left operands of the products and the tiles read from memory the right ones.
    i_v, i_nh = tl.program_id(0), tl.program_id(1)
    i_n, i_hv = i_nh // HV, i_nh % HV
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
    causal_t = rows[None, :] >= rows[:, None]  # the causal (lower) triangle, transposed

    state_offsets = (i_n * HV + i_hv).to(tl.int64) * K * V + cols_k[None, :] * V + cols_v[:, None]
    state_mask = mask_k[None, :] & mask_v[:, None]
    state_t = tl.zeros([BV, BK], dtype=tl.float32)  # S^T
    if USE_INITIAL_STATE:
        state_t += tl.load(h0 + state_offsets, mask=state_mask, other=0.0).to(tl.float32)

    num_chunks = tl.cdiv(eos - bos, CHUNK)
    for c in range(0, num_chunks):
        tokens = bos + c * CHUNK + rows
        valid = tokens < eos
        chunk = (first_chunk + c) * HV + i_hv
        square = chunk * CHUNK * CHUNK + rows[None, :] * CHUNK + rows[:, None]  # [C, C] read transposed
        operand_t = tokens.to(tl.int64)[None, :] * (HV * K) + i_hv * K + cols_k[:, None]  # [BK, C]
        operand_t_mask = valid[None, :] & mask_k[:, None]
        values_offsets = tokens.to(tl.int64)[None, :] * (HV * V) + i_hv * V + cols_v[:, None]  # [BV, C]
        values_mask = valid[None, :] & mask_v[:, None]

        keys_in, keys_in_low = _load_operand(k_in, operand_t, operand_t_mask, PLANE, PLANES)
        values_t = tl.load(v + values_offsets, mask=values_mask, other=0.0).to(tl.float32)
        b = tl.load(beta + tokens * HV + i_hv, mask=valid, other=0.0).to(tl.float32)
        correction_t = (values_t - _dot_operand(state_t, keys_in, keys_in_low, PRECISION, PLANES, NATIVE_BF16)) * b[
            None, :
        ]
        inverse_t = tl.load(m_in + square, mask=causal_t, other=0.0)
        v_new_t = _dot(correction_t, inverse_t, PRECISION)  # (M X)^T

        queries_in, queries_in_low = _load_operand(q_in, operand_t, operand_t_mask, PLANE, PLANES)
        scores_t = tl.load(a_in + square, mask=causal_t, other=0.0)
        out_t = _dot_operand(state_t, queries_in, queries_in_low, PRECISION, PLANES, NATIVE_BF16) + _dot(
            v_new_t, scores_t, PRECISION
        )
        tl.store(o + values_offsets, out_t.to(o.dtype.element_ty), mask=values_mask)

        keys_out, keys_out_low = _load_operand(k_out, tl.trans(operand_t), tl.trans(operand_t_mask), PLANE, PLANES)
        decay_last = tl.load(decay + chunk * K + cols_k, mask=mask_k, other=0.0)
        state_t = state_t * decay_last[None, :] + _dot_operand(
            v_new_t, keys_out, keys_out_low, PRECISION, PLANES, NATIVE_BF16
        )

    if STORE_FINAL_STATE:
        tl.store(ht + state_offsets, state_t, mask=state_mask)

"""The sequential part of the Triton chunked forward (see :mod:`kdalib.ops.triton.chunk`): the state
recurrence across chunks and nothing else.

One program per (sequence, value head, block of value columns) walks its sequence chunk by chunk
with its slice of the state ``S`` in float32 registers (notes/kda.md, "The chunkwise algorithm")::

    store S                       the state entering the chunk, for the output kernel
    V_new = U - W S               the delta rule's corrections (WY form), stored
    S     = exp(G_L) * S + K_g^T V_new

With ``STATES_EVERY = E > 0`` it also writes the float32 ``S`` after every E-th whole chunk of a
sequence to ``boundary_states`` in that buffer's dtype (the states ``output_states_every`` returns,
notes/kda.md, section ``kda-serving``); with E = 0 that code is not compiled.

Everything else (scores, inverse, outputs) is chunk-parallel, so a step is two small products and
the loads of ``W``, ``U`` and ``K_g``. With 16-bit inputs ``W`` and ``K_g`` are bfloat16 and the
float32 ``S`` and ``V_new`` meet them as a bfloat16 head and tail, two bfloat16 products each.
"""

from __future__ import annotations

import triton
import triton.language as tl

from kdalib.ops.triton.tiles import _dot, _sequence_program, _stored_as


@triton.jit
def _split_dot(a, b, PRECISION: tl.constexpr, NATIVE_BF16: tl.constexpr):
    """``a @ b`` for a float32 ``b``. A bfloat16 ``a`` meets ``b`` split into a bfloat16 head and
    tail (two bfloat16 products, ~16 bits of ``b``), so ``a`` stays narrow in registers; a float32
    ``a`` meets ``b`` in ``PRECISION``."""
    if a.dtype == tl.bfloat16:
        head = b.to(tl.bfloat16)
        tail = (b - head.to(tl.float32)).to(tl.bfloat16)
        if NATIVE_BF16:
            return tl.dot(a, head) + tl.dot(a, tail)
        wide = a.to(tl.float32)  # the interpreter mis-multiplies bfloat16 operands
        return _dot(wide, head.to(tl.float32), "ieee") + _dot(wide, tail.to(tl.float32), "ieee")
    return _dot(a.to(tl.float32), b, PRECISION)


@triton.jit
def _chunk_states_kernel(
    w,
    u,
    kg,
    decay,
    states,
    v_new,
    initial_state,
    final_state,
    cu_seqlens,
    chunk_offsets,
    boundary_states,
    boundary_offsets,
    T,
    K: tl.constexpr,
    V: tl.constexpr,
    HV: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    CHUNK: tl.constexpr,
    USE_INITIAL_STATE: tl.constexpr,
    STORE_FINAL_STATE: tl.constexpr,
    IS_VARLEN: tl.constexpr,
    PRECISION: tl.constexpr,
    NATIVE_BF16: tl.constexpr,
    STATES_EVERY: tl.constexpr = 0,
):
    i_nh, i_hv, bos, eos, first, rows, cols_k, cols_v, mk, mv, tile, state_offsets = _sequence_program(
        cu_seqlens, chunk_offsets, T, K, V, HV, BK, BV, IS_VARLEN, CHUNK
    )
    i_n = i_nh // HV
    key_rows = rows[:, None] * (HV * K) + cols_k[None, :]
    value_rows = rows[:, None] * (HV * V) + cols_v[None, :]
    if USE_INITIAL_STATE:
        s = tl.load(initial_state + i_nh.to(tl.int64) * K * V + state_offsets, mask=tile, other=0.0).to(tl.float32)
    else:
        s = tl.zeros([BK, BV], dtype=tl.float32)
    n_chunks = tl.cdiv(eos - bos, CHUNK)
    for c in range(0, n_chunks):
        t0 = bos + c * CHUNK
        m = rows < (eos - t0).to(tl.int32)
        i_c = first + c
        state_at = states + (i_c * HV + i_hv) * K * V
        tl.store(state_at + state_offsets, _stored_as(s, states.dtype.element_ty, NATIVE_BF16), mask=tile)
        key_at = t0 * (HV * K) + i_hv * K  # the chunk's first token; offsets from it are 32-bit
        value_at = t0 * (HV * V) + i_hv * V
        mkr = m[:, None] & mk[None, :]
        mvr = m[:, None] & mv[None, :]
        w_c = tl.load(w + key_at + key_rows, mask=mkr, other=0.0)
        u_c = tl.load(u + value_at + value_rows, mask=mvr, other=0.0).to(tl.float32)
        corrections = u_c - _split_dot(w_c, s, PRECISION, NATIVE_BF16)
        tl.store(v_new + value_at + value_rows, corrections.to(v_new.dtype.element_ty), mask=mvr)
        k_c = tl.load(kg + key_at + key_rows, mask=mkr, other=0.0)
        d = tl.load(decay + (i_c * HV + i_hv) * K + cols_k, mask=mk, other=0.0)
        s = s * d[:, None] + _split_dot(tl.trans(k_c), corrections, PRECISION, NATIVE_BF16)
        if STATES_EVERY > 0:  # the state after chunk c, when that ends a whole E-chunk block
            if (c + 1) % STATES_EVERY == 0 and t0 + CHUNK <= eos:
                if IS_VARLEN:
                    slot = tl.load(boundary_offsets + i_n).to(tl.int64) + (c + 1) // STATES_EVERY - 1
                else:
                    slot = i_n.to(tl.int64) * (T // (STATES_EVERY * CHUNK)) + (c + 1) // STATES_EVERY - 1
                at = boundary_states + (slot * HV + i_hv) * K * V + state_offsets
                tl.store(at, _stored_as(s, boundary_states.dtype.element_ty, NATIVE_BF16), mask=tile)
    if STORE_FINAL_STATE:
        tl.store(final_state + i_nh.to(tl.int64) * K * V + state_offsets, s, mask=tile)

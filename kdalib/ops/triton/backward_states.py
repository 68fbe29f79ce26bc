"""The training backward's state gradients in Triton (:mod:`kdalib.ops.triton.training`): the
reverse pass across chunks and the chunk-parallel gradients of the terms it reads.

The forward (:func:`kdalib.ops.triton.chunk.triton_chunk_kda`) keeps the state ``S`` entering
every chunk; the backward recomputes the chunk-local terms (``W``, ``U``, ``Q_in = Q ⊙ Γ``,
``K_out = K ⊙ exp(G_L - G)``, the scores ``A`` and ``exp(G_L)``, unscaled, in the chunk layout
``[chunks, HV, 64, *]``). Per chunk (notes/kda.md, sections ``kda-chunk-output`` and
``kda-chunk-backward``), with ``dS'`` the gradient reaching the chunk's end state and
``dO_s = scale * dO``::

    dV_new = Aᵀ dO_s + K_out dS'                               (dU = dV_new)
    dS     = exp(G_L) ⊙ dS' + Q_inᵀ dO_s - Wᵀ dV_new

is the only sequential part (:func:`_states_backward_kernel`, one program per sequence, value
head and block of value columns); it stores every chunk's ``dS'`` and ``dV_new``. The rest sums
over value columns and is chunk-parallel (:func:`_chunk_grads_kernel`, one program per chunk and
value head, all value columns, no atomics), with ``V_new = U - W S`` from the kept state::

    dW = -dV_new Sᵀ,   dQ_in = dO_s Sᵀ,   dK_out = V_new dS'ᵀ,
    dA = dO_s V_newᵀ (causal part),   d exp(G_L) = Σ_v S ⊙ dS'

When the forward kept its own terms (``TOKEN_TERMS``, ``KEPT_V_NEW``), both kernels read them in
the token layout ``[tokens, HV, *]`` instead, and ``V_new`` is the one the forward's state pass
formed from its float32 state, not formed again from the bfloat16 kept one.
"""

from __future__ import annotations

import triton
import triton.language as tl

from kdalib.ops.triton.tiles import _chunk_bounds, _sequence_program, _stored_as, _widen


@triton.jit
def _states_backward_kernel(
    w,
    kg,
    qg,
    scores,
    decay,
    do,
    d_final,
    dv_new,
    d_states,
    d_initial,
    cu_seqlens,
    chunk_offsets,
    scale,
    T,
    K: tl.constexpr,
    V: tl.constexpr,
    HV: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    CHUNK: tl.constexpr,
    IS_VARLEN: tl.constexpr,
    PRECISION: tl.constexpr,
    NATIVE_BF16: tl.constexpr,
    TOKEN_TERMS: tl.constexpr = False,
):
    """One (value block, sequence and value head): walks the sequence's chunks backwards carrying
    ``dS`` (starting from ``d_final`` or zeros), stores ``dS'`` per chunk in ``d_states``' dtype
    and ``dV_new``, and writes ``dS`` before the first chunk to ``d_initial`` (when given).
    ``TOKEN_TERMS``: ``W``, ``K_out`` and ``Q_in`` are in the token layout ``[tokens, HV, K]``, as
    the forward kept them, instead of the chunk layout."""
    i_nh, i_hv, bos, eos, first, rows, cols_k, cols_v, mk, mv, tile, state_offsets = _sequence_program(
        cu_seqlens, chunk_offsets, T, K, V, HV, BK, BV, IS_VARLEN, CHUNK
    )
    rows_k = (rows < CHUNK)[:, None] & mk[None, :]
    rows_v = (rows < CHUNK)[:, None] & mv[None, :]
    key_tile = rows[:, None] * (HV * K if TOKEN_TERMS else K) + cols_k[None, :]
    value_rows = rows[:, None] * V + cols_v[None, :]
    causal = rows[:, None] >= rows[None, :]
    compute = decay.dtype.element_ty  # float32, or float64 in the float64 tests
    if d_final is not None:
        d_state = tl.load(d_final + i_nh.to(tl.int64) * K * V + state_offsets, mask=tile, other=0.0).to(compute)
    else:
        d_state = tl.zeros([BK, BV], dtype=compute)
    n_chunks = tl.cdiv(eos - bos, CHUNK)
    for step in range(0, n_chunks):
        c = n_chunks - 1 - step
        t0 = bos + c * CHUNK
        block = (first + c) * HV + i_hv
        tl.store(
            d_states + block * K * V + state_offsets,
            _stored_as(d_state, d_states.dtype.element_ty, NATIVE_BF16),
            mask=tile,
        )
        m = rows < (eos - t0).to(tl.int32)
        d_out = tl.load(
            do + (t0 * (HV * V) + i_hv * V) + (rows[:, None] * (HV * V) + cols_v[None, :]),
            mask=m[:, None] & mv[None, :],
            other=0.0,
        )
        d_out = d_out.to(compute) * scale
        a_c = tl.load(scores + block * CHUNK * CHUNK + rows[:, None] * CHUNK + rows[None, :], mask=causal, other=0.0)
        if TOKEN_TERMS:  # the chunk's first token; offsets from it are 32-bit
            key_at = t0 * (HV * K) + i_hv * K
            key_mask = m[:, None] & mk[None, :]
        else:
            key_at = block * CHUNK * K
            key_mask = rows_k
        k_c = _widen(tl.load(kg + key_at + key_tile, mask=key_mask, other=0.0)).to(compute)
        d_v_new = tl.dot(tl.trans(a_c), d_out, input_precision=PRECISION) + tl.dot(
            k_c, d_state, input_precision=PRECISION
        )
        tl.store(dv_new + block * CHUNK * V + value_rows, d_v_new, mask=rows_v)
        q_c = _widen(tl.load(qg + key_at + key_tile, mask=key_mask, other=0.0)).to(compute)
        w_c = _widen(tl.load(w + key_at + key_tile, mask=key_mask, other=0.0)).to(compute)
        d = tl.load(decay + block * K + cols_k, mask=mk, other=0.0)
        d_state = (
            d_state * d[:, None]
            + tl.dot(tl.trans(q_c), d_out, input_precision=PRECISION)
            - tl.dot(tl.trans(w_c), d_v_new, input_precision=PRECISION)
        )
    if d_initial is not None:
        tl.store(d_initial + i_nh.to(tl.int64) * K * V + state_offsets, d_state, mask=tile)


@triton.jit
def _chunk_grads_of_block(
    w_c, u, states, d_states, do, dv_new, block, i_hv, start, rows, m, cols_k, mk, scale,
    V: tl.constexpr, HV: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, CHUNK: tl.constexpr,
    PRECISION: tl.constexpr, K: tl.constexpr, KEPT_V_NEW: tl.constexpr = False,
):  # fmt: skip
    """The gradients of ``Q_in``, ``W``, ``K_out``, ``A`` (all of it, the caller keeps the causal
    part) and ``exp(G_L)`` of one (chunk, value head) (the module docstring), walking the value
    columns ``BV`` at a time: ``w_c`` is the chunk's ``W`` in the compute dtype, ``block`` the
    (chunk, value head) index, ``start`` the chunk's first token, ``m`` its rows inside the
    sequence. ``KEPT_V_NEW``: ``u`` holds ``V_new`` in the token layout ``[tokens, HV, V]`` as
    the forward's state pass wrote it (``w_c`` is then not read), instead of ``U`` in the chunk
    layout. Returns ``(dQ_in, dW, dK_out, dA, d exp(G_L))``."""
    value_at, state_at = block * CHUNK * V, block * K * V
    d_qg = tl.zeros([CHUNK, BK], dtype=w_c.dtype)
    d_w = tl.zeros([CHUNK, BK], dtype=w_c.dtype)
    d_kg = tl.zeros([CHUNK, BK], dtype=w_c.dtype)
    d_a = tl.zeros([CHUNK, CHUNK], dtype=w_c.dtype)
    d_decay = tl.zeros([BK], dtype=w_c.dtype)
    for v0 in range(0, V, BV):
        cols_v = v0 + tl.arange(0, BV)
        mv = cols_v < V
        tile = mk[:, None] & mv[None, :]
        rows_v = (rows < CHUNK)[:, None] & mv[None, :]
        state_tile = cols_k[:, None] * V + cols_v[None, :]
        state = _widen(tl.load(states + state_at + state_tile, mask=tile, other=0.0)).to(w_c.dtype)
        d_state = _widen(tl.load(d_states + state_at + state_tile, mask=tile, other=0.0)).to(w_c.dtype)
        d_out = tl.load(
            do + (start * (HV * V) + i_hv * V) + (rows[:, None] * (HV * V) + cols_v[None, :]),
            mask=m[:, None] & mv[None, :],
            other=0.0,
        )
        d_out = _widen(d_out).to(w_c.dtype) * scale
        value_rows = rows[:, None] * V + cols_v[None, :]
        d_v_new = tl.load(dv_new + value_at + value_rows, mask=rows_v, other=0.0)
        if KEPT_V_NEW:
            v_new = tl.load(
                u + (start * (HV * V) + i_hv * V) + (rows[:, None] * (HV * V) + cols_v[None, :]),
                mask=m[:, None] & mv[None, :],
                other=0.0,
            ).to(w_c.dtype)
        else:
            v_new = tl.load(u + value_at + value_rows, mask=rows_v, other=0.0) - tl.dot(
                w_c, state, input_precision=PRECISION
            )
        state_t = tl.trans(state)
        d_qg += tl.dot(d_out, state_t, input_precision=PRECISION)
        d_w -= tl.dot(d_v_new, state_t, input_precision=PRECISION)
        d_kg += tl.dot(v_new, tl.trans(d_state), input_precision=PRECISION)
        d_a += tl.dot(d_out, tl.trans(v_new), input_precision=PRECISION)
        d_decay += tl.sum(state * d_state, axis=1)
    return d_qg, d_w, d_kg, d_a, d_decay


@triton.jit
def _chunk_grads_kernel(
    w,
    u,
    states,
    d_states,
    do,
    dv_new,
    dw,
    dkg,
    ddecay,
    dqg,
    dscores,
    sequence_end,
    chunk_start,
    scale,
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
    KEPT_V_NEW: tl.constexpr = False,
):
    """One (chunk, value head), all value columns: the gradients of ``W``, ``K_out``, ``exp(G_L)``,
    ``Q_in`` and ``A`` (the module docstring, :func:`_chunk_grads_of_block`), in the chunk layout.
    ``KEPT_V_NEW``: ``u`` is the forward's ``V_new`` in the token layout, and ``w`` is not read."""
    i_c, i_hv = tl.program_id(0), tl.program_id(1)
    start, end = _chunk_bounds(i_c, sequence_end, chunk_start, T, NT, IS_VARLEN, CHUNK)
    block = (i_c * HV + i_hv).to(tl.int64)
    rows = tl.arange(0, CHUNK)
    m = rows < (end - start).to(tl.int32)
    cols_k = tl.arange(0, BK)
    mk = cols_k < K
    rows_k = (rows < CHUNK)[:, None] & mk[None, :]
    # 64-bit offsets move each pointer to the chunk once; the tiles' own offsets are 32-bit
    key_at = block * CHUNK * K
    key_rows = rows[:, None] * K + cols_k[None, :]
    compute = dw.dtype.element_ty  # float32, or float64 in the float64 tests
    if KEPT_V_NEW:
        w_c = tl.zeros([CHUNK, BK], dtype=compute)  # unread: V_new is kept
    else:
        w_c = _widen(tl.load(w + key_at + key_rows, mask=rows_k, other=0.0)).to(compute)
    d_qg, d_w, d_kg, d_a, d_decay = _chunk_grads_of_block(
        w_c, u, states, d_states, do, dv_new, block, i_hv, start, rows, m, cols_k, mk, scale,
        V, HV, BK, BV, CHUNK, PRECISION, K, KEPT_V_NEW,
    )  # fmt: skip
    causal = rows[:, None] >= rows[None, :]
    tl.store(dqg + key_at + key_rows, d_qg, mask=rows_k)
    tl.store(dw + key_at + key_rows, d_w, mask=rows_k)
    tl.store(dkg + key_at + key_rows, d_kg, mask=rows_k)
    tl.store(dscores + block * CHUNK * CHUNK + rows[:, None] * CHUNK + rows[None, :], tl.where(causal, d_a, 0.0))
    tl.store(ddecay + block * K + cols_k, d_decay, mask=mk)

"""Fused recurrent KDA forward in Triton: one token at a time, the state kept on chip.

This is the decoding path (notes/kda.md, section ``kda-complexity``): per token it costs O(K·V) per value head, whatever
the context length. One program owns one (sequence, value head, block of value columns):
its slice of the state, ``[K, BLOCK_V]`` in float32, stays in registers for the whole
sequence, so the state is read once and written once. Forward only; training uses the
chunked form.

With ``STATES_EVERY = E > 0`` the program also writes its slice of the state after every E-th
token of its sequence (E = 1: after every token, what a speculative-decoding verify step keeps,
notes/kda.md, section ``kda-serving``); with E = 0 that code is not compiled.
"""

from __future__ import annotations

from itertools import accumulate

import torch
import triton
import triton.language as tl


@triton.jit
def _fused_recurrent_kda_fwd_kernel(
    q,
    k,
    v,
    g,
    beta,
    o,
    h0,
    ht,
    cu_seqlens,
    boundary_states,
    boundary_offsets,
    scale,
    T,
    H: tl.constexpr,
    HV: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_V: tl.constexpr,
    USE_INITIAL_STATE: tl.constexpr,
    STORE_FINAL_STATE: tl.constexpr,
    USE_QK_L2NORM: tl.constexpr,
    IS_VARLEN: tl.constexpr,
    STATES_EVERY: tl.constexpr = 0,
):
    i_v, i_nh = tl.program_id(0), tl.program_id(1)
    i_n, i_hv = i_nh // HV, i_nh % HV
    i_h = i_hv // (HV // H)  # grouped value heads read their q/k head
    if IS_VARLEN:
        bos = tl.load(cu_seqlens + i_n).to(tl.int64)
        eos = tl.load(cu_seqlens + i_n + 1).to(tl.int64)
        seq_len = eos - bos
    else:
        bos = i_n.to(tl.int64) * T
        seq_len = T

    o_k = tl.arange(0, BLOCK_K)
    o_v = i_v * BLOCK_V + tl.arange(0, BLOCK_V)
    m_k = o_k < K
    m_v = o_v < V
    m_kv = m_k[:, None] & m_v[None, :]

    state = tl.zeros([BLOCK_K, BLOCK_V], dtype=tl.float32)
    state_offsets = (i_n * HV + i_hv).to(tl.int64) * K * V + o_k[:, None] * V + o_v[None, :]
    if USE_INITIAL_STATE:
        state += tl.load(h0 + state_offsets, mask=m_kv, other=0.0).to(tl.float32)

    for t in range(0, seq_len):
        tok = bos + t
        qk_base = (tok * H + i_h) * K
        vo_base = (tok * HV + i_hv) * V
        b_q = tl.load(q + qk_base + o_k, mask=m_k, other=0.0).to(tl.float32)
        b_k = tl.load(k + qk_base + o_k, mask=m_k, other=0.0).to(tl.float32)
        b_v = tl.load(v + vo_base + o_v, mask=m_v, other=0.0).to(tl.float32)
        b_g = tl.load(g + (tok * HV + i_hv) * K + o_k, mask=m_k, other=0.0).to(tl.float32)
        b_g = tl.minimum(b_g, 0.0, propagate_nan=tl.PropagateNan.ALL)  # g > 0 (+inf too) acts as 0
        b_beta = tl.load(beta + tok * HV + i_hv).to(tl.float32)
        if USE_QK_L2NORM:
            b_q = b_q / tl.sqrt(tl.sum(b_q * b_q) + 1e-6)
            b_k = b_k / tl.sqrt(tl.sum(b_k * b_k) + 1e-6)
        b_q = b_q * scale
        # g <= 0 after the clamp, so exp(g) never overflows: decay each key channel (row) of the state
        state = state * tl.exp(b_g)[:, None]
        prediction = tl.sum(state * b_k[:, None], axis=0)
        delta = b_beta * (b_v - prediction)
        state += b_k[:, None] * delta[None, :]
        b_o = tl.sum(state * b_q[:, None], axis=0)
        tl.store(o + vo_base + o_v, b_o.to(o.dtype.element_ty), mask=m_v)
        if STATES_EVERY > 0:
            if (t + 1) % STATES_EVERY == 0:
                if IS_VARLEN:
                    slot = tl.load(boundary_offsets + i_n).to(tl.int64) + (t + 1) // STATES_EVERY - 1
                else:
                    slot = i_n.to(tl.int64) * (T // STATES_EVERY) + (t + 1) // STATES_EVERY - 1
                at = boundary_states + (slot * HV + i_hv) * K * V + o_k[:, None] * V + o_v[None, :]
                tl.store(at, state.to(boundary_states.dtype.element_ty), mask=m_kv)

    if STORE_FINAL_STATE:
        tl.store(ht + state_offsets, state, mask=m_kv)


def triton_fused_recurrent_kda(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    scale: float,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    states_every: int | None = None,
    states_dtype: torch.dtype = torch.float32,
):
    """Run the KDA recurrence with the Triton kernel. Inputs must already be validated.

    Args:
        q: ``[B, T, H, K]`` queries.
        k: ``[B, T, H, K]`` keys.
        v: ``[B, T, HV, V]`` values, ``HV`` a multiple of ``H``.
        g: ``[B, T, HV, K]`` log-space decay; a positive value acts as 0, as in every form.
        beta: ``[B, T, HV]`` delta-rule step sizes.
        scale: multiplies ``q``.
        initial_state: ``[N, HV, K, V]``, ``N`` = number of sequences, or None for zeros.
        output_final_state: also return the ``[N, HV, K, V]`` float32 state after the last token.
        use_qk_l2norm_in_kernel: L2-normalise ``q`` and ``k`` per head inside the kernel.
        cu_seqlens: ``[N + 1]`` int offsets of packed sequences when ``B == 1``, or None.
        states_every: N >= 1: also return the states after tokens N, 2N, ... of every sequence, or None.
        states_dtype: their dtype (a float64 request is written in float32 and widened).

    Returns:
        ``(o, final_state)``: ``o`` is ``[B, T, HV, V]`` in ``v``'s dtype; ``final_state`` is
        float32 or None; with ``states_every``, also the ``[S, HV, K, V]`` states, sequence-major
        (``S`` = the sum over sequences of ``length // states_every``).
    """
    B, T, H, K = k.shape
    HV, V = v.shape[2], v.shape[3]
    N = B if cu_seqlens is None else cu_seqlens.numel() - 1
    q, k, v, g, beta = (x.contiguous() for x in (q, k, v, g, beta))
    o = torch.empty_like(v)
    final_state = v.new_empty(N, HV, K, V, dtype=torch.float32) if output_final_state else None
    if initial_state is not None:
        initial_state = initial_state.contiguous()
    boundary_states = boundary_offsets = None
    if states_every is not None:
        if cu_seqlens is None:
            counts = [T // states_every] * B
        else:
            bounds = cu_seqlens.tolist()
            counts = [(b - a) // states_every for a, b in zip(bounds, bounds[1:])]
            boundary_offsets = torch.tensor([0, *accumulate(counts[:-1])], dtype=torch.int64, device=v.device)
        stored = states_dtype if states_dtype in (torch.float32, torch.bfloat16, torch.float16) else torch.float32
        boundary_states = v.new_empty(sum(counts), HV, K, V, dtype=stored)
    block_k = triton.next_power_of_2(K)
    # keep the on-chip state slice near 4K floats: enough work per program, no spills
    block_v = min(triton.next_power_of_2(V), max(8, 4096 // block_k))
    grid = (triton.cdiv(V, block_v), N * HV)
    _fused_recurrent_kda_fwd_kernel[grid](
        q,
        k,
        v,
        g,
        beta,
        o,
        initial_state,
        final_state,
        cu_seqlens,
        boundary_states,
        boundary_offsets,
        float(scale),
        T,
        H=H,
        HV=HV,
        K=K,
        V=V,
        BLOCK_K=block_k,
        BLOCK_V=block_v,
        USE_INITIAL_STATE=initial_state is not None,
        STORE_FINAL_STATE=output_final_state,
        USE_QK_L2NORM=use_qk_l2norm_in_kernel,
        IS_VARLEN=cu_seqlens is not None,
        STATES_EVERY=0 if states_every is None else states_every,
        num_warps=4 if block_k * block_v >= 2048 else 2,
    )
    if states_every is None:
        return o, final_state
    return o, final_state, boundary_states.to(states_dtype)

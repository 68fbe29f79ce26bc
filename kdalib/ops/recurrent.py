"""KDA one token at a time from a cached state, in PyTorch: the recurrent form of
:func:`kdalib.ops.fused_recurrent_kda` for decode and short prompts.

Same recurrence as :mod:`kdalib.ops.naive` (notes/kda.md, section ``kda-recurrence``), but every sequence of a
packed batch advances together (shorter ones are padded with no-op tokens), and
each step is three batched matmul-shaped products instead of broadcast-and-sum.
Cost per token is O(HV K V), independent of how long the context already is.

On CUDA, when no gradient is needed, the same recurrence runs as one Triton kernel instead
(:mod:`kdalib.ops.triton.fused_recurrent`, chosen by :mod:`kdalib.ops.router`).
"""

from __future__ import annotations

import torch

from kdalib.ops._layout import from_padded, plan_padding, select_boundary_states, to_padded
from kdalib.ops._prepare import compute_dtype, needs_grad, prepare_inputs
from kdalib.ops._validate import KDACall, boundary_counts


def decode_step(
    state: torch.Tensor,
    q_t: torch.Tensor,
    k_t: torch.Tensor,
    v_t: torch.Tensor,
    g_t: torch.Tensor,
    beta_t: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One KDA token for M independent (sequence, head) rows.

    Args:
        state: ``[M, K, V]`` state before the token.
        q_t: ``[M, K]`` scaled query.
        k_t: ``[M, K]`` key.
        v_t: ``[M, V]`` value.
        g_t: ``[M, K]`` log decay.
        beta_t: ``[M]`` step size.

    Returns:
        ``(o_t [M, V], new_state [M, K, V])``.
    """
    decayed = state * g_t.exp().unsqueeze(-1)
    prediction = torch.bmm(k_t.unsqueeze(1), decayed).squeeze(1)
    correction = beta_t.unsqueeze(-1) * (v_t - prediction)
    new_state = torch.baddbmm(decayed, k_t.unsqueeze(2), correction.unsqueeze(1))
    output = torch.bmm(q_t.unsqueeze(1), new_state).squeeze(1)
    return output, new_state


def decode_step_(
    state: torch.Tensor,
    q_t: torch.Tensor,
    k_t: torch.Tensor,
    v_t: torch.Tensor,
    g_t: torch.Tensor,
    beta_t: torch.Tensor,
) -> torch.Tensor:
    """:func:`decode_step` updating ``state`` in place (no autograd); returns ``o_t [M, V]``.

    Allocating a fresh ``[M, K, V]`` state per token costs more than the token's
    arithmetic once the state is a few megabytes (page faults on every new buffer).
    """
    state.mul_(g_t.exp().unsqueeze(-1))
    prediction = torch.bmm(k_t.unsqueeze(1), state).squeeze(1)
    correction = beta_t.unsqueeze(-1) * (v_t - prediction)
    state.baddbmm_(k_t.unsqueeze(2), correction.unsqueeze(1))
    return torch.bmm(q_t.unsqueeze(1), state).squeeze(1)


def _token_major(x: torch.Tensor) -> torch.Tensor:
    """``[N, T, HV, D]`` -> ``[T, N * HV, D]`` so that each step reads one contiguous slice."""
    n, t, h, d = x.shape
    return x.permute(1, 0, 2, 3).reshape(t, n * h, d)


def fused_recurrent_pytorch(call: KDACall):
    """:func:`kdalib.ops.fused_recurrent_kda` in PyTorch, on a validated call: ``(o, final_state)``,
    and the states after every ``call.states_every``-th token when that is set."""
    shapes, initial_state = call.shapes, call.initial_state
    dtype = compute_dtype(*call.tensors)
    q, k, v, g, beta = prepare_inputs(
        call.q, call.k, call.v, call.g, call.beta, shapes, dtype, call.use_qk_l2norm, call.scale
    )
    plan = plan_padding(shapes, 1, q.device)
    qs, ks, vs, gs = (_token_major(to_padded(x, plan)) for x in (q, k, v, g))
    betas = _token_major(to_padded(beta, plan).unsqueeze(-1)).squeeze(-1)
    rows = shapes.num_sequences * shapes.value_heads
    if initial_state is None:
        state = q.new_zeros(rows, shapes.key_dim, shapes.value_dim)
    else:
        state = initial_state.to(dtype).reshape(rows, shapes.key_dim, shapes.value_dim)

    every, kept = call.states_every, []
    keep_dtype = call.states_dtype or dtype
    outputs = []
    tracked = needs_grad(qs, ks, vs, gs, betas, state)
    if not tracked:
        state = state.clone()  # never write into the caller's initial_state
    for t in range(plan.padded_length):
        if tracked:
            o_t, state = decode_step(state, qs[t], ks[t], vs[t], gs[t], betas[t])
        else:
            o_t = decode_step_(state, qs[t], ks[t], vs[t], gs[t], betas[t])
        outputs.append(o_t)
        if every is not None and (t + 1) % every == 0:
            kept.append(state.to(keep_dtype, copy=not tracked))  # the in-place loop writes on
    output = torch.stack(outputs).view(plan.padded_length, shapes.num_sequences, shapes.value_heads, -1)
    output = from_padded(output.transpose(0, 1), plan)
    final_state = None
    if call.output_final_state:
        final_state = state.view(shapes.num_sequences, shapes.value_heads, shapes.key_dim, shapes.value_dim)
    if every is None:
        return output.to(call.v.dtype), final_state
    states = select_boundary_states(kept, boundary_counts(shapes, every), shapes, keep_dtype, q.device)
    return output.to(call.v.dtype), final_state, states

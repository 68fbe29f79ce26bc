"""The state pass between ranks, forward and backward, as one autograd Function.

Each rank has run its pieces locally (:mod:`kdalib.distributed.chunk`); what is missing is the
state entering its head piece. With notes/kda.md, section ``kda-context-parallel``:

* the head's outputs are ``o = o_0 + S_inᵀ p`` (``o_0`` from a zero incoming state, ``p`` the
  queries carried through the head's transitions) and its end state is ``P S_in + H``;
* rank r receives ``S_in`` from rank r - 1, and sends rank r + 1 either ``P S_in + H`` (its head
  fills the shard) or the end state of its last piece (a sequence that began on this rank).

The backward runs the same chain in reverse: rank r receives ``dL/dS_out`` from rank r + 1, adds
what its own outputs and final states send to ``S_in`` (``Σ_t p_t do_tᵀ + Pᵀ dL/d(P S_in + H)``)
and sends that to rank r - 1. Links that do not cross a sequence are not used at all, so a chain
stops wherever a sequence starts on a rank boundary.

Every communication of a call sits in this one Function (the pass, and the all-reduce that
replicates the final states), whose output is the rank's whole output tensor: the backward
reaches it on every rank that back-propagates through its outputs, and always in the same
order, which is what keeps the ranks' point-to-point calls matched.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdalib.distributed import comm
from kdalib.distributed.layout import ShardLayout


@dataclass(frozen=True)
class CarryPlan:
    """What :class:`CarryStates` needs besides tensors.

    Attributes:
        layout: the ranks' shards and this rank's pieces.
        group: the process group.
        state_shape: ``[rows, HV, K, V]`` of the state crossing a rank boundary (rows = B, or 1 when packed).
        state_dtype: float32, or float64 for float64 inputs.
        output_final_state: also replicate every sequence's final state on every rank.
    """

    layout: ShardLayout
    group: object
    state_shape: tuple[int, int, int, int]
    state_dtype: torch.dtype
    output_final_state: bool


def _head_rows(plan: CarryPlan, device) -> torch.Tensor:
    return torch.tensor(plan.layout.head_sequences, dtype=torch.long, device=device)


class CarryStates(torch.autograd.Function):
    """``(o_base, query_map, transition, contribution, tail_state, finals) -> (o, final_states)``.

    Args (forward):
        plan: a :class:`CarryPlan`.
        o_base: ``[B, T, HV, V]`` the rank's outputs with a zero state entering its head.
        query_map: ``[B, T0, HV, K]`` p for the head's T0 tokens (None without a head).
        transition: ``[rows, HV, K, K]`` the head's P (None without a head).
        contribution: ``[rows, HV, K, V]`` the head's H (None without a head).
        tail_state: ``[rows, HV, K, V]`` the end state of the rest pieces that continue on the
            next rank (None unless such a piece exists).
        finals: ``[N, HV, K, V]`` final states of the rest pieces that end here, zeros elsewhere
            (None unless ``plan.output_final_state``).

    Returns:
        ``o`` ``[B, T, HV, V]``; with ``plan.output_final_state`` also ``[N, HV, K, V]``, the
        final states of all sequences (the same on every rank). Autograd treats that tensor as
        replicated: the gradients every rank sends into it are summed.
    """

    @staticmethod
    def forward(ctx, plan: CarryPlan, o_base, query_map, transition, contribution, tail_state, finals):
        layout = plan.layout
        device = o_base.device
        incoming = None
        head_end = None
        if layout.carried_in:
            incoming = comm.recv(plan.state_shape, plan.state_dtype, device, layout.rank - 1, plan.group)
            head_end = torch.matmul(transition, incoming) + contribution
        if layout.carried_out:
            comm.send(head_end if layout.passes_through else tail_state, layout.rank + 1, plan.group)

        output = o_base
        if layout.carried_in:
            head = layout.head_tokens
            correction = torch.einsum("bthk,bhkv->bthv", query_map.to(plan.state_dtype), incoming)
            output = o_base.clone()
            output[:, :head] = (o_base[:, :head].to(plan.state_dtype) + correction).to(o_base.dtype)

        ctx.plan = plan
        ctx.has = tuple(x is not None for x in (query_map, transition, contribution, tail_state, finals))
        ctx.save_for_backward(query_map, transition, incoming)
        if not plan.output_final_state:
            return output
        if finals is None:  # no rest piece ends here
            shape = (layout.num_sequences, *plan.state_shape[1:])
            collected = torch.zeros(shape, dtype=plan.state_dtype, device=device)
        else:
            collected = finals.clone()
        if layout.head_ends:
            collected.index_add_(0, _head_rows(plan, device), head_end)
        return output, comm.all_reduce_sum(collected, plan.group)

    @staticmethod
    def backward(ctx, grad_output, grad_finals=None):
        plan: CarryPlan = ctx.plan
        layout = plan.layout
        query_map, transition, incoming = ctx.saved_tensors
        device = grad_output.device
        if plan.output_final_state:
            grad_finals = comm.all_reduce_sum(grad_finals, plan.group)

        grad_outgoing = None
        if layout.carried_out:
            grad_outgoing = comm.recv(plan.state_shape, plan.state_dtype, device, layout.rank + 1, plan.group)

        grad_query_map = grad_transition = grad_contribution = grad_tail = None
        if layout.carried_in:
            head = layout.head_tokens
            grad_head = grad_output[:, :head].to(plan.state_dtype)
            grad_head_end = grad_outgoing if layout.passes_through else torch.zeros_like(incoming)
            if plan.output_final_state and layout.head_ends:
                grad_head_end = grad_head_end + grad_finals.index_select(0, _head_rows(plan, device))
            grad_incoming = torch.einsum("bthk,bthv->bhkv", query_map.to(plan.state_dtype), grad_head)
            grad_incoming = grad_incoming + torch.matmul(transition.transpose(-1, -2), grad_head_end)
            comm.send(grad_incoming, layout.rank - 1, plan.group)
            grad_query_map = torch.einsum("bthv,bhkv->bthk", grad_head, incoming).to(query_map.dtype)
            grad_transition = torch.matmul(grad_head_end, incoming.transpose(-1, -2))
            grad_contribution = grad_head_end
        if layout.carried_out and not layout.passes_through:
            grad_tail = grad_outgoing

        has_query, has_transition, has_contribution, has_tail, has_finals = ctx.has
        return (
            None,
            grad_output,
            grad_query_map if has_query else None,
            grad_transition if has_transition else None,
            grad_contribution if has_contribution else None,
            grad_tail if has_tail else None,
            grad_finals if has_finals else None,
        )

"""Context-parallel ``chunk_kda``: one sequence (or packed batch) split across the ranks of a group.

Each rank holds a contiguous shard of the tokens and calls
:func:`context_parallel_chunk_kda` with it; outputs and gradients are those of
:func:`kdalib.ops.chunk_kda` on the whole stream (notes/kda.md, section ``kda-context-parallel``).

How a rank computes its shard, with the public operator only:

1. **Local runs.** Pieces of sequences that begin on this rank run as one packed
   :func:`~kdalib.ops.chunk_kda` call from their initial states. The *head*, the piece of a
   sequence that began on an earlier rank, runs once with its values widened by K zero
   columns and the incoming state ``[0 | I]``: the state's columns evolve independently, so
   the first V columns give the head's outputs ``o_0`` and end state ``H`` for a zero incoming
   state, and the last K columns, whose values are zero, give the product of its transitions
   ``P`` (the end state started from the identity) and the queries carried through the
   transitions ``p`` (the outputs). All of this runs on every rank at once.
2. **Pass.** The state entering the head arrives from the previous rank; the rank adds
   ``S_inᵀ p`` to the head's outputs and sends on ``P S_in + H`` (or the end state of its last
   piece). The backward sends ``dL/dS_in`` back the same way
   (:class:`kdalib.distributed.carry.CarryStates`).

The exchange is a pass of states along the ranks rather than an all-gather of every rank's
(P, H) followed by a local prefix scan. Both take R - 1 sequential steps (a ring all-gather is
R - 1 steps too), but at K = V the map (P, H) is twice a state, so the all-gather moves
``(R - 1)(K² + 2KV)`` elements per head and rank over forward and backward where the pass moves
``2KV`` whatever R, and it holds all R maps at once. The pass also stops at every rank whose
first token starts a sequence. Per value head at K = V = 128 in float32, with HV = 32 heads
for the times (:mod:`kdalib.distributed.cost`; the link is an assumption, alpha = 10 µs per
message, 100 GB/s, 50 TFLOP/s)::

    | ranks | pass: KiB moved per head | all-gather: KiB moved per head | all-gather: buffer KiB per head | steps | pass: µs | all-gather: µs |
    | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
    | 2 | 128 | 192 | 256 | 1 | 67 | 88 |
    | 4 | 128 | 576 | 512 | 3 | 202 | 265 |
    | 8 | 128 | 1,344 | 1,024 | 7 | 471 | 618 |
    | 16 | 128 | 2,880 | 2,048 | 15 | 1,010 | 1,324 |
    | 32 | 128 | 5,952 | 4,096 | 31 | 2,087 | 2,737 |
    | 64 | 128 | 12,096 | 8,192 | 63 | 4,241 | 5,562 |

The R - 1 steps are what grows: beyond a few tens of ranks a log-depth scan (composing maps
pairwise, ``log2 R`` steps of ``K² + KV`` elements) would shorten the critical path.
"""

from __future__ import annotations

import struct

import torch

from kdalib.distributed import comm
from kdalib.distributed.carry import CarryPlan, CarryStates
from kdalib.distributed.layout import ShardLayout, gather_layout, require_group
from kdalib.ops import chunk_kda, compute_dtype, validate_kda_inputs
from kdalib.ops._validate import check_initial_state, check_offsets_tensor

DTYPE_CODES = {torch.float16: 0, torch.bfloat16: 1, torch.float32: 2, torch.float64: 3}
DTYPE_LEGEND = ", ".join(f"{code} {str(dtype).removeprefix('torch.')}" for dtype, code in DTYPE_CODES.items())
#: What must agree between ranks (besides B and the offsets), as named in the error.
SIGNATURE = (
    "H of q and k",
    "K of q and k",
    "HV of v",
    "V of v",
    *(f"dtype of {name} ({DTYPE_LEGEND})" for name in ("q", "k", "v", "g", "beta")),
    "N of initial_state (-1: None)",
    f"dtype of initial_state ({DTYPE_LEGEND}, -1: None)",
    "output_final_state",
    "use_qk_l2norm_in_kernel",
    "chunk_size",
    "scale (its float64 bits, -1: None)",
)


def _signature(q, k, v, g, beta, initial_state, output_final_state, scale, use_qk_l2norm_in_kernel, chunk_size):
    """The integers of :data:`SIGNATURE` for inputs that passed :func:`_check_local`."""
    values = (
        *q.shape[2:],
        *v.shape[2:],
        *(DTYPE_CODES.get(t.dtype, 9) for t in (q, k, v, g, beta)),
        -1 if initial_state is None else initial_state.shape[0],
        -1 if initial_state is None else DTYPE_CODES.get(initial_state.dtype, 9),
        int(bool(output_final_state)),
        int(bool(use_qk_l2norm_in_kernel)),
        chunk_size,
        -1 if scale is None else struct.unpack("<q", struct.pack("<d", float(scale)))[0],
    )
    return dict(zip(SIGNATURE, values))


def _check_local(q, k, v, g, beta, scale, initial_state, cu_seqlens, chunk_size, group) -> str | None:
    """This rank's own input problem (the message chunk_kda would raise), or None: chunk_kda's checks
    of all that does not depend on the other ranks (N and the offsets' values are checked once the
    layout is gathered)."""
    try:
        validate_kda_inputs(q, k, v, g, beta, scale, None, None, chunk_size)
        if cu_seqlens is not None:
            check_offsets_tensor(cu_seqlens)
        if initial_state is not None:
            check_initial_state(initial_state, None, v.shape[2], q.shape[3], v.shape[3], q.device)
    except ValueError as error:
        return str(error)
    return comm.backend_problem(group, q.device)


def context_parallel_chunk_kda(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    chunk_size: int = 64,
    group=None,
    use_triton: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`kdalib.ops.chunk_kda` over a stream split across the ranks of ``group`` (a collective).

    Every rank of the group calls it with its own contiguous shard of the tokens, in rank order
    (rank 0 holds the first tokens); shards may differ in length and must not be empty. The
    arguments are :func:`~kdalib.ops.chunk_kda`'s, for this rank's T_r tokens and with the same
    options on every rank; what differs:

    Args:
        initial_state: ``[N, HV, K, V]``, the same tensor on every rank (or None everywhere). Its
            gradient on a rank holds that rank's share: the sum over the group is the
            single-device gradient, as for the layer's parameters (a data-parallel all-reduce of
            the gradients adds them up).
        output_final_state: the final states are the same on every rank; autograd treats them as
            replicated (the gradients all ranks send into them are summed).
        cu_seqlens: ``[N + 1]`` offsets of packed sequences in the whole stream (B = 1), the same
            tensor on every rank; a sequence may start and end anywhere, span several ranks or lie
            inside one. None: B sequences, each split at the same places.
        group: the torch.distributed process group (None: the default group). With NCCL each
            process holds its tensors on its own GPU; with gloo on the CPU.
        use_triton: as in :func:`~kdalib.ops.chunk_kda`, for the local runs.

    Returns:
        ``(o, final_state)`` as :func:`~kdalib.ops.chunk_kda` returns them, o for this rank's tokens.

    Raises:
        ValueError: on any rank's bad input, or inputs that disagree between ranks (sizes,
            dtypes, options, offsets): raised on every rank, so none is left waiting.
        RuntimeError: without an initialised process group.

    Every rank must back-propagate through its outputs (each rank's loss on its own tokens
    does): the backward is a collective too.
    """
    require_group(group)
    problem = _check_local(q, k, v, g, beta, scale, initial_state, cu_seqlens, chunk_size, group)
    options = dict(scale=scale, use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel, chunk_size=chunk_size)
    signature = dict.fromkeys(SIGNATURE, -1)
    if problem is None:
        signature = _signature(q, k, v, g, beta, initial_state, output_final_state, **options)
    tokens, batch = (q.shape[1], q.shape[0]) if problem is None else (0, 0)
    layout = gather_layout(tokens, batch, cu_seqlens, group, q.device, signature=signature, problem=problem)
    if initial_state is not None and initial_state.shape[0] != layout.num_sequences:
        raise ValueError(
            f"initial_state: expected shape [N, HV, K, V] with N = {layout.num_sequences} sequences, "
            f"got {list(initial_state.shape)}"
        )
    return run_context_parallel(
        layout, group, q, k, v, g, beta, initial_state, output_final_state, use_triton=use_triton, **options
    )


def run_context_parallel(
    layout: ShardLayout,
    group,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    **options,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The local runs and the pass, for inputs already checked against a gathered ``layout``
    (:func:`context_parallel_chunk_kda` checks them; the layer wrapper builds them itself).
    ``options``: the arguments every local :func:`~kdalib.ops.chunk_kda` call takes as they are
    (``scale``, ``use_qk_l2norm_in_kernel``, ``chunk_size``, ``use_triton``)."""
    batch, tokens, value_heads, value_dim = v.shape
    key_dim = q.shape[-1]
    state_dtype = compute_dtype(q, k, v, g, beta, initial_state)
    rows = 1 if layout.packed else batch
    head = layout.head_tokens

    outputs = []
    query_map = transition = contribution = tail_state = finals = None
    if layout.carried_in:
        # [v | 0] from [0 | I]: o_0 and H in the first V columns, p and P in the last K.
        v_head = v[:, :head]
        widened = torch.cat([v_head, v_head.new_zeros(*v_head.shape[:-1], key_dim)], dim=-1)
        start = torch.zeros(rows, value_heads, key_dim, value_dim + key_dim, dtype=state_dtype, device=q.device)
        start[..., value_dim:] = torch.eye(key_dim, dtype=state_dtype, device=q.device)
        o_head, end = chunk_kda(
            q[:, :head], k[:, :head], widened, g[:, :head], beta[:, :head], initial_state=start,
            output_final_state=True, **options,
        )  # fmt: skip
        outputs.append(o_head[..., :value_dim])
        query_map, contribution, transition = o_head[..., value_dim:], end[..., :value_dim], end[..., value_dim:]
    if layout.has_rest:
        sequences = torch.tensor(layout.rest_sequences, dtype=torch.long, device=q.device)
        offsets = layout.rest_offsets
        o_rest, end = chunk_kda(
            q[:, head:], k[:, head:], v[:, head:], g[:, head:], beta[:, head:],
            initial_state=None if initial_state is None else initial_state.index_select(0, sequences),
            output_final_state=output_final_state or layout.carried_out,
            cu_seqlens=None if offsets is None else torch.tensor(offsets, dtype=torch.long, device=q.device),
            **options,
        )  # fmt: skip
        outputs.append(o_rest)
        if layout.rest_continuing:
            tail_state = end[list(layout.rest_continuing)]
        if output_final_state and layout.rest_ending:
            ending = list(layout.rest_ending)
            finals = torch.zeros(
                layout.num_sequences, value_heads, key_dim, value_dim, dtype=state_dtype, device=q.device
            ).index_copy(0, sequences[ending], end[ending])

    o_base = torch.cat(outputs, dim=1) if len(outputs) > 1 else outputs[0]
    plan = CarryPlan(layout, group, (rows, value_heads, key_dim, value_dim), state_dtype, bool(output_final_state))
    result = CarryStates.apply(plan, o_base, query_map, transition, contribution, tail_state, finals)
    if output_final_state:
        return result
    return result, None

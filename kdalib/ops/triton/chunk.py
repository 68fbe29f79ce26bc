"""Chunked KDA forward in Triton: prefill and inference, outputs and final state.

The math is the chunkwise form of notes/kda.md (section "The chunkwise algorithm"); measured
versions and what moved them are in NOTES.md beside this file. Three stages:

1. :mod:`~kdalib.ops.triton.prefill_local`, all chunks in parallel, in three launches: the
   diagonal 16 x 16 blocks of the scores whose decay spans more than ``DIAG_SPAN``, one program
   per block; the other blocks of the scores, one program per (chunk, value head); then the WY/UT
   inverse and with it ``W`` and ``U``, the decayed queries ``Q_g`` and keys ``K_g`` and the
   chunk decay ``exp(G_L)``. Exact for any decay; the gate's strength only decides which launch
   builds a diagonal block.
2. :mod:`~kdalib.ops.triton.prefill_states`, one program per (sequence, value head, block of value
   columns), the only sequential pass: it carries the state and stores it at every chunk start,
   with the corrections ``V_new = U - W S``, written over ``U`` (which nothing reads after).
3. :mod:`~kdalib.ops.triton.prefill_output`, chunk-parallel again: ``O = Q_g S + A V_new``.

Gates follow the operators' contract: ``g <= 0``; a positive log decay is treated as 0; log
decays below ``-GATE_FLOOR`` (zero decay in float32) are taken as that floor. The gate can also
be computed in the first kernel from the raw projection (``kda_gate``'s two forms).

Precision. Cumulative sums of the gates and the carried state are float32 for every input
dtype. Float32 inputs keep every intermediate in float32 and multiply in three TF32 products
(``tf32x3``; IEEE float32 in Triton's CPU interpreter). For
16-bit inputs, the terms whose rounding reaches the output at full weight (``U``, ``V_new``
and ``A``) stay float32 and meet in TF32 products, while ``W``, ``K_g``, ``Q_g`` and the stored
states are bfloat16: each of these enters the output at least ten times more weakly than its
rounding error (measured with float64 simulations of the pipeline, NOTES.md), so the output's
error stays close to that of rounding the exact output to bfloat16.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate

import torch
import triton
import triton.language as tl

from kdalib.ops.triton.prefill_local import _chunk_local_kernel, _diagonal_kernel
from kdalib.ops.triton.prefill_output import _chunk_output_kernel
from kdalib.ops.triton.prefill_states import _chunk_states_kernel
from kdalib.ops.triton.runtime import (
    CHUNK,
    DIAG_SPAN,
    FLOAT64_GATE_FLOOR,
    GATE_BOUNDED,
    GATE_FLOOR,
    MAX_KEY_DIM,
    PRECISIONS,
    SUB,
    float32_precision,
    gate_form,
    interpreting,
)


def _chunk_tables(cu_seqlens: torch.Tensor, chunk: int, offsets: Sequence[int] | None = None):
    """Per packed sequence: its first global chunk; per chunk: its first token and its sequence's end
    (``offsets``: the host copy of ``cu_seqlens`` when the caller has it)."""
    offsets = cu_seqlens.tolist() if offsets is None else offsets
    starts, ends, firsts = [], [], [0]
    for bos, eos in zip(offsets, offsets[1:]):
        chunk_starts = list(range(bos, eos, chunk))
        starts += chunk_starts
        ends += [eos] * len(chunk_starts)
        firsts.append(firsts[-1] + len(chunk_starts))
    device = cu_seqlens.device
    as_tensor = lambda xs: torch.tensor(xs, dtype=torch.int64, device=device)  # noqa: E731
    return as_tensor(firsts), as_tensor(starts), as_tensor(ends)


LOCAL_WARPS = (2, 2)
"""Warps of the chunk-local work's two launches, (scores, terms): the fastest split timed on an H100
(NOTES.md, v4.3); the forward's and the training backward's default."""

DIAGONAL_LAUNCH = (1, True)
"""Warps of the strong diagonal blocks' launch (:func:`~kdalib.ops.triton.prefill_local._diagonal_kernel`)
and whether each of its steps loads the next row ahead (``PREFETCH``): 1 warp, loading ahead, was
the fastest of 1, 2 and 4 warps with and without it on an H100 with the Kimi gate (NOTES.md, v4.6)."""


def state_launch(
    programs: int, multiprocessors: int | None, V: int, block_k: int, narrow: torch.dtype
) -> tuple[int, int]:
    """Value columns per program and pipeline stages of the state kernel, for ``programs``
    (sequence, value head) pairs on a GPU of ``multiprocessors`` (None: not a GPU).

    The pass is sequential along each sequence, so with 16-bit terms (``narrow`` bfloat16) and
    K <= 128 it takes 32 columns at 2 stages when that still gives every multiprocessor a program
    (each chunk step's loads of ``W`` and ``K_g`` then serve twice the columns), else 16 columns,
    twice the programs, at 3 stages. Timed on an H100 (132 multiprocessors; kdalib/ops/triton/NOTES.md,
    v4.4): at 64 pairs, 0.95 ms against 1.16 (16 at 3 stages) and 1.33 (16 at 2); at 32 pairs,
    2.32 ms (16 at 3) against 2.69 (16 at 2) and 2.76 (32 at 2). Float32 terms keep 16 columns at
    2 stages."""
    if narrow != torch.bfloat16 or block_k > 128:
        return 16, 2
    if V <= 16 or (multiprocessors is not None and programs * triton.cdiv(V, 32) < multiprocessors):
        return 16, 3
    return 32, 2


@dataclass(frozen=True)
class ChunkTable:
    """Where the chunks of a call are: ``sequences`` sequences of ``length`` tokens each (unpacked),
    or packed ones (``offsets``: each sequence's first global chunk; ``starts``, ``ends``: each
    chunk's first token and its sequence's end), ``count`` chunks in all."""

    sequences: int
    length: int
    per_sequence: int
    count: int
    offsets: torch.Tensor | None = None
    starts: torch.Tensor | None = None
    ends: torch.Tensor | None = None

    @classmethod
    def of(cls, B: int, T: int, cu_seqlens: torch.Tensor | None, offsets: Sequence[int] | None = None):
        if cu_seqlens is None:
            per_sequence = triton.cdiv(T, CHUNK)
            return cls(B, T, per_sequence, B * per_sequence)
        chunk_offsets, chunk_starts, chunk_ends = _chunk_tables(cu_seqlens, CHUNK, offsets)
        return cls(cu_seqlens.numel() - 1, T, 0, chunk_starts.numel(), chunk_offsets, chunk_starts, chunk_ends)

    @property
    def varlen(self) -> bool:
        return self.starts is not None

    @property
    def nt(self) -> int:
        """The chunk kernels' ``NT``: chunks per sequence of an unpacked call (packed calls read the
        tables instead; then 1)."""
        return max(self.per_sequence, 1)


def launch_chunk_local(
    inputs,
    outputs,
    table: ChunkTable,
    scale: float,
    gate_parameters,
    use_qk_l2norm: bool,
    precision: str,
    as_chunks: bool,
    key_slice: int = 32,
    num_warps: int | tuple[int, int] = LOCAL_WARPS,
    terms_only: bool = False,
    norms: torch.Tensor | None = None,
    diagonal_launch: tuple[int, bool] = DIAGONAL_LAUNCH,
) -> torch.Tensor | None:
    """Runs :mod:`~kdalib.ops.triton.prefill_local` on ``inputs = (q, k, v, g, beta)`` (token layout,
    contiguous), writing ``outputs = (w, u, q_g, k_g, decay, scores, inverse, scores_kk | None)``:
    in the token layout, or with ``as_chunks`` as ``[chunks, HV, 64, *]`` (the training backward's
    layout). ``gate_parameters``: ``(A_log, dt_bias, lower_bound)``, A_log None for a given gate.
    The diagonal blocks of strong decay come first, in a launch of their own (``diagonal_launch``:
    its warps and whether it loads each row ahead, :data:`DIAGONAL_LAUNCH` by default;
    none with a bounded gate whose 16 tokens cannot decay more than ``DIAG_SPAN``);
    then, ``num_warps`` a pair ``(scores, terms)``, the other blocks of the scores, then the inverse
    and the terms, each launch with its own warps (the default, :data:`LOCAL_WARPS`); or, a number, both
    in one launch with that many warps.

    ``terms_only``: ``scores`` and ``inverse`` (and, with the in-kernel L2 norm, ``norms``) hold what
    an earlier run on the same inputs, table, scale and precision wrote; only the terms are
    written (one launch, the terms' warps). Returns the rows' inverse L2 norms, ``[chunks, HV, 2,
    64]`` (q's, then k's; None without the in-kernel L2 norm), in ``norms`` when given."""
    q, k, v, g, beta = inputs
    w, u, qg, kg, decay, scores, inverse, scores_kk = outputs
    A_log, dt_bias, lower_bound = gate_parameters
    H, K = k.shape[2], k.shape[3]
    HV, V = v.shape[2], v.shape[3]
    gate = gate_form(A_log, lower_bound)
    block_k = max(16, triton.next_power_of_2(K))
    wide = w.dtype == torch.float64
    # the launches of the chunk-local kernel: (phase bits, warps)
    if isinstance(num_warps, int):
        launches = [(4 if terms_only else 7, num_warps)]
    elif len(num_warps) == 2:
        launches = [(4, num_warps[1])] if terms_only else [(1, num_warps[0]), (6, num_warps[1])]
    else:
        raise ValueError(f"local_warps: expected a number of warps or a pair (scores, terms), got {num_warps!r}")
    if not (
        isinstance(diagonal_launch, tuple)
        and len(diagonal_launch) == 2
        and type(diagonal_launch[0]) is int
        and diagonal_launch[0] in (1, 2, 4, 8)
        and isinstance(diagonal_launch[1], bool)
    ):
        raise ValueError(f"diagonal_launch: expected (1, 2, 4 or 8 warps, True or False), got {diagonal_launch!r}")
    # the rows' inverse L2 norms (q's, then k's), from the scores' phase to the terms'
    if not use_qk_l2norm:
        norms = None
    elif norms is None:
        if terms_only:
            raise ValueError("norms: the terms alone need the rows' norms that the scores' phase stored")
        norms = q.new_empty(table.count, HV, 2, CHUNK, dtype=torch.float64 if wide else torch.float32)
    common = dict(
        H=H, HV=HV, K=K, BK=block_k, CHUNK=CHUNK, SUB=SUB, FLOOR=FLOAT64_GATE_FLOOR if wide else GATE_FLOOR,
        IS_VARLEN=table.varlen, USE_QK_L2NORM=use_qk_l2norm, GATE=gate, QK_ROW=H * K, G_ROW=HV * K, BETA_ROW=HV,
        COMPUTE=tl.float64 if wide else tl.float32,
    )  # fmt: skip
    bound = 0.0 if lower_bound is None else float(lower_bound)
    # which diagonal blocks span more than DIAG_SPAN, and so are the first launch's; a bounded gate
    # whose bound keeps every block within DIAG_SPAN has none, and no launch marks them
    strong = None
    if not terms_only and not (gate == GATE_BOUNDED and -bound * SUB <= DIAG_SPAN):
        strong = q.new_empty(table.count, HV, CHUNK // SUB, dtype=torch.int8)
        _diagonal_kernel[(table.count * (CHUNK // SUB), HV)](
            q, k, g, beta, A_log, dt_bias, bound, scores, inverse, scores_kk, strong, table.ends, table.starts,
            float(scale), table.length, table.nt, DIAG_SPAN=DIAG_SPAN, PREFETCH=diagonal_launch[1], **common,
            num_warps=diagonal_launch[0],
        )  # fmt: skip
    for phases, warps in launches:
        _chunk_local_kernel[(table.count, HV)](
            q, k, v, g, beta, A_log, dt_bias, bound,
            w, u, qg, kg, decay, scores, inverse, scores_kk, norms, strong,
            table.ends, table.starts, float(scale), table.length, table.nt,
            V=V, BKS=min(block_k, key_slice), BV=min(64, max(16, triton.next_power_of_2(V))), PRECISION=precision,
            NATIVE_BF16=not interpreting(), TERMS_AS_CHUNKS=as_chunks, V_ROW=HV * V,
            OUT_K_ROW=K if as_chunks else HV * K, OUT_V_ROW=V if as_chunks else HV * V, PHASES=phases, **common,
            num_warps=warps,
        )  # fmt: skip
    return norms


def triton_chunk_kda(
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
    *,
    A_log: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    lower_bound: float | None = None,
    precision: str | None = None,
    block_v: int | None = None,
    key_slice: int = 32,
    local_warps: int | tuple[int, int] = LOCAL_WARPS,
    diagonal_launch: tuple[int, bool] = DIAGONAL_LAUNCH,
    state_warps: int = 4,
    state_stages: int | None = None,
    output_warps: int = 4,
    offsets: Sequence[int] | None = None,
    states_every: int | None = None,
    states_dtype: torch.dtype = torch.float32,
    keep_chunk_states: bool = False,
    keep_local_scores: bool = False,
    keep_local_terms: bool = False,
    chunk_table: ChunkTable | None = None,
):
    """Chunked KDA forward with the Triton kernels. Inputs must already be validated.

    Args:
        q: ``[B, T, H, K]`` queries, K <= 256.
        k: ``[B, T, H, K]`` keys.
        v: ``[B, T, HV, V]`` values, ``HV`` a multiple of ``H``.
        g: ``[B, T, HV, K]`` log-space decay (``<= 0``; positive entries count as 0), or, when
            ``A_log`` is given, the raw gate projection that ``kda_gate`` would turn into it.
        beta: ``[B, T, HV]`` delta-rule step sizes.
        scale: multiplies ``q``.
        initial_state: ``[N, HV, K, V]`` state per sequence, or None for zeros.
        output_final_state: also return the ``[N, HV, K, V]`` float32 state after the last token.
        use_qk_l2norm_in_kernel: L2-normalise ``q`` and ``k`` per head inside the kernels.
        cu_seqlens: ``[N + 1]`` offsets of packed sequences when ``B == 1``, or None.
        A_log, dt_bias, lower_bound: compute the gate in the kernel, ``kda_gate(g, A_log,
            dt_bias, lower_bound)`` (``A_log`` ``[HV]``, ``dt_bias`` ``[HV * K]`` or None,
            ``lower_bound`` None for the softplus form or a negative number).
        precision: the products' precision, one of :data:`~kdalib.ops.triton.runtime.PRECISIONS`:
            float32 inputs keep float32 intermediates and take ``tf32x3`` by default (IEEE in
            Triton's CPU interpreter, whatever is asked); 16-bit inputs take ``tf32`` (see the
            module docstring).
        block_v, key_slice, *_warps, state_stages: launch settings (value columns per program of
            the state kernel, key channels per slice of the chunk-local kernel, warps per kernel,
            pipeline stages of the state kernel; ``block_v`` and ``state_stages`` None: as
            :func:`state_launch` picks them). ``local_warps``: the chunk-local work as one launch
            or two ``(scores, terms)``; ``diagonal_launch``: the strong diagonal blocks' launch,
            ``(warps, load each row ahead)`` (:func:`launch_chunk_local`).
        offsets: the values of ``cu_seqlens`` on the host, when the caller has read them already.
        states_every: N, a multiple of 64: also return the states after tokens N, 2N, ... of every
            sequence (written from the float32 state by the state kernel), or None.
        states_dtype: their dtype (a float64 request is written in float32 and widened).
        keep_chunk_states: also return the state entering every chunk, ``[chunks, HV, K, V]``
            (bfloat16 for 16-bit inputs), as the training path's backward reads them (not with
            ``states_every``).
        keep_local_scores: with ``keep_chunk_states``, also return ``(scores, inverse, A_kk,
            norms)``: the chunk-local scores (scaled), the inverse of the UT transform, the
            strictly lower ``A_kk`` (each ``[chunks, HV, 64, 64]``, float32) and the rows'
            inverse L2 norms (:func:`launch_chunk_local`), so that the training backward need not
            compute them again.
        keep_local_terms: with ``keep_local_scores`` and 16-bit inputs (bfloat16 terms), also
            return ``(W, K_out, Q_in, V_new, exp(G_L))`` as the state pass read and wrote them:
            ``W``, ``K_out`` and ``Q_in`` (scaled) ``[B * T, HV, K]`` bfloat16, ``V_new = U - W S``
            ``[B * T, HV, V]`` float32 (the token layout), ``exp(G_L)`` ``[chunks, HV, K]``
            float32, so that the training backward computes no chunk-local term again.
        chunk_table: the call's :class:`ChunkTable`, when the caller has built it already.

    Returns:
        ``(o, final_state)``: ``o`` is ``[B, T, HV, V]`` in ``v``'s dtype; ``final_state`` is
        float32 or None; with ``states_every``, also the ``[S, HV, K, V]`` states, sequence-major
        (``S`` = the sum over sequences of ``length // states_every``).
        With ``keep_chunk_states``, ``(o, final_state, states)``, then the local scores with
        ``keep_local_scores`` and the local terms with ``keep_local_terms``.
    """
    B, T, H, K = k.shape
    HV, V = v.shape[2], v.shape[3]
    if K > MAX_KEY_DIM:
        raise ValueError(f"q: the Triton chunk kernel supports K <= {MAX_KEY_DIM}, got K = {K}")
    q, k, v, g, beta = (x.contiguous() for x in (q, k, v, g, beta))
    wide = torch.float32 in (q.dtype, k.dtype, v.dtype)
    allowed = PRECISIONS if wide else ("ieee", "tf32")
    if precision is not None and precision not in allowed:
        kind = "float32" if wide else "16-bit"
        raise ValueError(f"precision: {kind} inputs take one of {', '.join(allowed)}, got {precision!r}")
    precision = float32_precision(torch.float32, precision) if wide else precision or "tf32"
    if keep_local_scores and not keep_chunk_states:
        raise ValueError("keep_local_scores: only with keep_chunk_states (the training path's forward)")
    if keep_local_terms and (not keep_local_scores or wide or precision == "ieee"):
        raise ValueError("keep_local_terms: only with keep_local_scores and 16-bit inputs at tf32 (bfloat16 terms)")
    table = ChunkTable.of(B, T, cu_seqlens, offsets) if chunk_table is None else chunk_table
    N, num_chunks = table.sequences, table.count
    block_k = max(16, triton.next_power_of_2(K))
    # storage of the intermediates that reach the output weakly (module docstring)
    narrow = torch.float32 if wide or precision == "ieee" else torch.bfloat16
    tokens = B * T
    f32 = torch.float32
    w = q.new_empty(tokens, HV, K, dtype=narrow)
    kg = q.new_empty(tokens, HV, K, dtype=narrow)
    qg = q.new_empty(tokens, HV, K, dtype=narrow)
    u = q.new_empty(tokens, HV, V, dtype=f32)
    decay = q.new_empty(num_chunks, HV, K, dtype=f32)
    scores = q.new_empty(num_chunks, HV, CHUNK, CHUNK, dtype=f32)
    inverse = torch.empty_like(scores)
    scores_kk = torch.empty_like(scores) if keep_local_scores else None
    norms = launch_chunk_local(
        (q, k, v, g, beta),
        (w, u, qg, kg, decay, scores, inverse, scores_kk),
        table,
        scale,
        (A_log, dt_bias, lower_bound),
        use_qk_l2norm_in_kernel,
        precision,
        as_chunks=False,
        key_slice=key_slice,
        num_warps=local_warps,
        diagonal_launch=diagonal_launch,
    )
    local_scores = (scores, inverse, scores_kk, norms) if keep_local_scores else None
    del inverse, scores_kk, norms
    if block_v is None or state_stages is None:
        multiprocessors = torch.cuda.get_device_properties(v.device).multi_processor_count if v.is_cuda else None
        columns, stages = state_launch(N * HV, multiprocessors, V, block_k, narrow)
        block_v = columns if block_v is None else block_v
        state_stages = stages if state_stages is None else state_stages
    states = q.new_empty(num_chunks, HV, K, V, dtype=narrow)
    # the state pass overwrites each chunk's U with its V_new = U - W S: the program that reads a
    # tile of U is the only one, and it writes the same tile after reading it (no buffer of its own)
    v_new = u
    final_state = v.new_empty(N, HV, K, V, dtype=f32) if output_final_state else None
    if initial_state is not None:
        initial_state = initial_state.contiguous()
    boundary_states = boundary_offsets = None
    if states_every is not None:
        if states_every % CHUNK:
            raise ValueError(
                f"output_states_every: expected a multiple of {CHUNK} for the Triton kernels, got {states_every}"
            )
        if cu_seqlens is None:
            counts = [T // states_every] * B
        else:
            bounds = cu_seqlens.tolist() if offsets is None else list(offsets)
            counts = [(b - a) // states_every for a, b in zip(bounds, bounds[1:])]
            boundary_offsets = torch.tensor([0, *accumulate(counts[:-1])], dtype=torch.int64, device=v.device)
        stored = states_dtype if states_dtype in (torch.float32, torch.bfloat16, torch.float16) else torch.float32
        boundary_states = v.new_empty(sum(counts), HV, K, V, dtype=stored)
    _chunk_states_kernel[(triton.cdiv(V, block_v), N * HV)](
        w,
        u,
        kg,
        decay,
        states,
        v_new,
        initial_state,
        final_state,
        cu_seqlens,
        table.offsets,
        boundary_states,
        boundary_offsets,
        T,
        K=K,
        V=V,
        HV=HV,
        BK=block_k,
        BV=block_v,
        CHUNK=CHUNK,
        STATES_EVERY=0 if states_every is None else states_every // CHUNK,
        USE_INITIAL_STATE=initial_state is not None,
        STORE_FINAL_STATE=output_final_state,
        IS_VARLEN=cu_seqlens is not None,
        PRECISION=precision,
        NATIVE_BF16=not interpreting(),
        num_warps=state_warps,
        num_stages=state_stages,
    )
    local_terms = (w, kg, qg, v_new, decay) if keep_local_terms else None
    del w, u, kg, decay
    o = torch.empty_like(v)
    output_block = min(128, max(16, triton.next_power_of_2(V)))
    _chunk_output_kernel[(triton.cdiv(V, output_block), num_chunks, HV)](
        qg,
        states,
        scores,
        v_new,
        o,
        table.ends,
        table.starts,
        T,
        table.nt,
        K=K,
        V=V,
        HV=HV,
        BK=block_k,
        BV=output_block,
        CHUNK=CHUNK,
        IS_VARLEN=cu_seqlens is not None,
        PRECISION=precision,
        NATIVE_BF16=not interpreting(),
        num_warps=output_warps,
    )
    if keep_local_terms:
        return o, final_state, states, local_scores, local_terms
    if keep_local_scores:
        return o, final_state, states, local_scores
    if keep_chunk_states:
        return o, final_state, states
    if states_every is None:
        return o, final_state
    return o, final_state, boundary_states.to(states_dtype)

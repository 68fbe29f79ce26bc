"""Chunked KDA forward in Triton: prefill and inference, outputs and final state.

The math is the chunkwise form of notes/kda.md (section "The chunkwise algorithm"); measured
versions and what moved them are in NOTES.md beside this file.

1. Intra-chunk kernels, one program per (chunk, value head), all in parallel. They build the two
   C x C matrices a chunk needs that do not depend on the state,

   * ``M = (I + Diag(beta) A_kk)^{-1}`` (the WY/UT transform), so that the delta rule's
     corrections of the whole chunk are ``V_new = M Diag(beta) (V - K_in S)``,
   * ``A = scale * A_qk``, the decay-weighted causal scores (diagonal included),

   and store the queries and keys decayed from the chunk start (``Q_in``, ``K_in``) and to the
   chunk end (``K_out``), and the chunk's decay ``exp(G_L)``.

   ``_chunk_intra_kernel``'s first launch serves chunks under mild decay: all factors are decayed towards the
   chunk's first row, the row factor ``exp(G - G_0) <= 1`` and the column factor
   ``exp(G_0 - G) <= exp(span)``, so the scores are two matrix products per key slice when the
   chunk's span (its largest total decay after the first row) is at most ``DOT_SPAN``. It marks
   the other chunks, and its second launch builds theirs from 16-row sub-blocks: an
   off-diagonal block (rows in block i, columns in block j < i) is one product of factors decayed
   towards the first row r0 of block i, ``(X_i * exp(G_i - G_r0)) (K_j * exp(G_r0 - G_j))^T``,
   with both exponents <= 0 because the cumulative log decay G never increases; a diagonal block
   is a product when its own span is small and otherwise built column by column, exactly, with
   the exponent masked to -inf above the diagonal before the exp. So the strongest gates
   (g = -1000 per token) underflow to exact zeros instead of overflowing, and typical gates take
   the fast path. The inverse of the unit lower-triangular ``I + Diag(beta) A_kk`` comes from
   forward substitution inside each 16 x 16 diagonal block and block forward substitution
   (products of 16 x 16 blocks) for the rest.

2. ``_chunk_state_kernel``, one program per (sequence, value head, block of value columns),
   walks the sequence chunk by chunk with its slice of the state in float32 registers::

       X     = Diag(beta) (V - K_in S)            what the decayed state fails to predict
       V_new = M X                                the delta rule's corrections (WY form)
       O     = Q_in S + A V_new                   read-out, written straight to the output
       S     = exp(G_L) * S + K_out^T V_new

   The output is produced in the same pass as the state, so the per-chunk states never travel
   through device memory.

Gates follow the operators' contract: ``g <= 0``; a positive log decay is treated as 0.
Cumulative sums of the gates and the state are float32 for every input dtype. Float32 inputs
multiply in IEEE float32; for 16-bit inputs the state's products are bfloat16 products of a
state split into two bfloat16 parts against operands stored as bfloat16 pairs (~16 bits on both
sides), and the other products use TF32.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton

from kdalib.ops.triton.chunk_intra import _chunk_intra_kernel
from kdalib.ops.triton.chunk_state import _chunk_state_kernel
from kdalib.ops.triton.runtime import CHUNK, DOT_SPAN, MAX_KEY_DIM, SUB, interpreting

# Key channels per slice in the intra-chunk kernel (keeps its tiles in registers).
KEY_SLICE = 16


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
    block_v: int | None = None,
    intra_warps: int = 4,
    state_warps: int | None = None,
    state_stages: int | None = None,
    precision: str | None = None,
    offsets: Sequence[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Chunked KDA forward with the Triton kernels. Inputs must already be validated.

    Args:
        q: ``[B, T, H, K]`` queries, K <= 256.
        k: ``[B, T, H, K]`` keys.
        v: ``[B, T, HV, V]`` values, ``HV`` a multiple of ``H``.
        g: ``[B, T, HV, K]`` log-space decay (``<= 0``; positive entries count as 0).
        beta: ``[B, T, HV]`` delta-rule step sizes.
        scale: multiplies ``q``.
        initial_state: ``[N, HV, K, V]`` state per sequence, or None for zeros.
        output_final_state: also return the ``[N, HV, K, V]`` float32 state after the last token.
        use_qk_l2norm_in_kernel: L2-normalise ``q`` and ``k`` per head inside the kernels.
        cu_seqlens: ``[N + 1]`` offsets of packed sequences when ``B == 1``, or None.
        precision: matrix products: "ieee" (the default for float32 inputs), "tf32x3",
            "tf32" (the default for 16-bit inputs: their products with the state are bfloat16
            products of a split state and operands stored as bfloat16 pairs) or "bf16" (the same
            with single bfloat16 operands: half their memory traffic, less accurate).
        block_v, intra_warps, state_warps, state_stages: launch settings of the two kernels
            (value columns per state-kernel program, a power of two; warps; pipeline stages);
            the defaults suit the H200.
        offsets: the values of ``cu_seqlens`` on the host, when the caller has read them already.

    Returns:
        ``(o, final_state)``: ``o`` is ``[B, T, HV, V]`` in ``v``'s dtype; ``final_state`` is
        float32 or None.
    """
    B, T, H, K = k.shape
    HV, V = v.shape[2], v.shape[3]
    if K > MAX_KEY_DIM:
        raise ValueError(f"q: the Triton chunk kernel supports K <= {MAX_KEY_DIM}, got K = {K}")
    q, k, v, g, beta = (x.contiguous() for x in (q, k, v, g, beta))
    if precision is None:
        precision = "ieee" if torch.float32 in (q.dtype, k.dtype, v.dtype) else "tf32"
    if cu_seqlens is None:
        N, per_sequence = B, triton.cdiv(T, CHUNK)
        num_chunks = N * per_sequence
        chunk_offsets = chunk_starts = chunk_ends = None
    else:
        N, per_sequence = cu_seqlens.numel() - 1, 0
        chunk_offsets, chunk_starts, chunk_ends = _chunk_tables(cu_seqlens, CHUNK, offsets)
        num_chunks = chunk_starts.numel()
    block_k = max(16, triton.next_power_of_2(K))
    if block_v is None:
        block_v = min(64, max(16, triton.next_power_of_2(V)))
    # Products with the state: float32 operands for float32 inputs (or "ieee"/"tf32x3"); for
    # 16-bit inputs the decayed queries and keys are stored as bfloat16 pairs ("tf32", the default)
    # or single bfloat16s ("bf16") and meet a state split into two bfloat16 parts.
    if precision not in ("ieee", "tf32x3", "tf32", "bf16"):
        raise ValueError(f"precision: expected 'ieee', 'tf32x3', 'tf32' or 'bf16', got {precision!r}")
    planes = 0 if q.dtype == torch.float32 or precision in ("ieee", "tf32x3") else (1 if precision == "bf16" else 2)
    precision = "tf32" if precision == "bf16" else precision  # products that do not meet the state
    inverse = q.new_empty(num_chunks, HV, CHUNK, CHUNK, dtype=torch.float32)
    scores = torch.empty_like(inverse)
    queries_in, keys_in, keys_out = (
        q.new_empty(max(planes, 1), B * T, HV, K, dtype=torch.bfloat16 if planes else torch.float32) for _ in range(3)
    )
    plane = B * T * HV * K
    decay_last = q.new_empty(num_chunks, HV, K, dtype=torch.float32)
    strong = q.new_empty(num_chunks, HV, dtype=torch.int32)
    intra_args = (
        q,
        k,
        g,
        beta,
        inverse,
        scores,
        queries_in,
        keys_in,
        keys_out,
        decay_last,
        strong,
        chunk_ends,
        chunk_starts,
        float(scale),
        T,
        max(per_sequence, 1),
        plane,
    )
    intra_constants = dict(
        H=H,
        HV=HV,
        K=K,
        BK=block_k,
        BKS=min(block_k, KEY_SLICE),
        CHUNK=CHUNK,
        SUB=SUB,
        DOT_SPAN=DOT_SPAN,
        IS_VARLEN=cu_seqlens is not None,
        USE_QK_L2NORM=use_qk_l2norm_in_kernel,
        PRECISION=precision,
        PLANES=planes,
    )
    _chunk_intra_kernel[(num_chunks, HV)](*intra_args, **intra_constants, STRONG_PASS=False, num_warps=intra_warps)
    _chunk_intra_kernel[(num_chunks, HV)](*intra_args, **intra_constants, STRONG_PASS=True, num_warps=4)
    o = torch.empty_like(v)
    final_state = v.new_empty(N, HV, K, V, dtype=torch.float32) if output_final_state else None
    if initial_state is not None:
        initial_state = initial_state.contiguous()
    _chunk_state_kernel[(triton.cdiv(V, block_v), N * HV)](
        queries_in,
        keys_in,
        keys_out,
        decay_last,
        v,
        beta,
        inverse,
        scores,
        o,
        initial_state,
        final_state,
        cu_seqlens,
        chunk_offsets,
        T,
        plane,
        HV=HV,
        K=K,
        V=V,
        BK=block_k,
        BV=block_v,
        CHUNK=CHUNK,
        USE_INITIAL_STATE=initial_state is not None,
        STORE_FINAL_STATE=output_final_state,
        IS_VARLEN=cu_seqlens is not None,
        PRECISION=precision,
        PLANES=planes,
        NATIVE_BF16=not interpreting(),
        num_warps=state_warps or 4,
        num_stages=state_stages or 1,  # two stages exceed the shared memory at K = V = 128
    )
    return o, final_state

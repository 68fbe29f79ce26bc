"""The sequential part of the chunk form as a Triton scan with a Triton backward (the training
path of float32 inputs, :mod:`kdalib.ops.triton.training`).

The chunk form splits KDA into chunk-local terms, computed for all chunks at once
(:func:`kdalib.ops.chunk.chunk_local_terms`), and one recurrence
across chunks (notes/kda.md, sections ``kda-chunk-output`` and ``kda-chunk-backward``). Per chunk, with ``S`` the state entering it::

    V_new = U - W S                          the delta rule's corrections
    O     = scale * (Q_in S + A V_new)       A: causal decay-weighted scores (lower, diagonal included)
    S'    = exp(Γ_L) ⊙ S + K_outᵀ V_new

This module runs that recurrence in one Triton program per (sequence row, block of value
columns) and differentiates it with a second program that walks the chunks backwards. With
``dS'`` the gradient reaching the chunk's end state and ``dO_s = scale * dO``::

    dV_new = Aᵀ dO_s + K_out dS'             dU = dV_new,  dW = -dV_new Sᵀ
    dA     = dO_s V_newᵀ (causal part)       dQ_in = dO_s Sᵀ,  dK_out = V_new dS'ᵀ
    dΓ_L   = Σ_v S ⊙ dS'  (gradient of the decay factor exp(Γ_L))
    dS     = Q_inᵀ dO_s + exp(Γ_L) ⊙ dS' - Wᵀ dV_new

The forward stores each chunk's entering state ``S``; the reverse scan keeps only what is
sequential (``dS`` and ``dV_new``) and stores each chunk's ``dS'``. Value-column blocks are
independent in both scans (each block of S's columns only meets the same columns of U and dO).
The gradients that sum over value columns (dW, dQ_in, dK_out, dA, dΓ_L) then come from a
chunk-parallel kernel that walks all value columns of one chunk, so no two programs add into
the same gradient.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kdalib.ops.triton.backward_states import _chunk_grads_of_block
from kdalib.ops.triton.runtime import MAX_KEY_DIM, PRECISIONS, float32_precision
from kdalib.ops.triton.tiles import _put, _tile


@triton.jit
def _scan_tiles(i_v, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, CHUNK: tl.constexpr):
    """Index vectors and masks of one scan program (value block ``i_v``): chunk rows, key and value
    columns, the key mask, the ``[BK, BV]`` state mask, the ``[C, BK]`` and ``[C, BV]`` tile masks
    and the causal ``[C, C]`` mask."""
    rows = tl.arange(0, CHUNK)
    cols_k = tl.arange(0, BK)
    cols_v = i_v * BV + tl.arange(0, BV)
    mask_k, mask_v = cols_k < K, cols_v < V
    state_mask = mask_k[:, None] & mask_v[None, :]
    rows_k = (rows < CHUNK)[:, None] & mask_k[None, :]
    rows_v = (rows < CHUNK)[:, None] & mask_v[None, :]
    causal = rows[:, None] >= rows[None, :]
    return rows, cols_k, cols_v, mask_k, state_mask, rows_k, rows_v, causal


@triton.jit
def _scan_forward_kernel(
    w,
    u,
    keys_out,
    decay_last,
    query_in,
    scores,
    h0,
    o,
    states,
    ht,
    scale,
    NC,
    M,
    K: tl.constexpr,
    V: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    CHUNK: tl.constexpr,
    PRECISION: tl.constexpr,
):
    i_v, i_m = tl.program_id(0), tl.program_id(1)
    rows, cols_k, cols_v, mask_k, state_mask, rows_k, rows_v, causal = _scan_tiles(i_v, K, V, BK, BV, CHUNK)
    state_base = i_m.to(tl.int64) * K * V
    state = _tile(h0, state_base, cols_k, cols_v, V, state_mask)  # [BK, BV]; rows past K are zeros
    for c in range(0, NC):
        chunk = c * M + i_m.to(tl.int64)
        _put(states, chunk * K * V, cols_k, cols_v, V, state_mask, state)
        w_c = _tile(w, chunk * CHUNK * K, rows, cols_k, K, rows_k)
        v_new = _tile(u, chunk * CHUNK * V, rows, cols_v, V, rows_v) - tl.dot(w_c, state, input_precision=PRECISION)
        q_c = _tile(query_in, chunk * CHUNK * K, rows, cols_k, K, rows_k)
        a_c = tl.load(scores + chunk * CHUNK * CHUNK + rows[:, None] * CHUNK + rows[None, :], mask=causal, other=0.0)
        out = tl.dot(q_c, state, input_precision=PRECISION) + tl.dot(a_c, v_new, input_precision=PRECISION)
        _put(o, chunk * CHUNK * V, rows, cols_v, V, rows_v, out * scale)
        k_c = _tile(keys_out, chunk * CHUNK * K, rows, cols_k, K, rows_k)
        decay = tl.load(decay_last + chunk * K + cols_k, mask=mask_k, other=0.0)
        state = state * decay[:, None] + tl.dot(tl.trans(k_c), v_new, input_precision=PRECISION)
    _put(ht, state_base, cols_k, cols_v, V, state_mask, state)


@triton.jit
def _scan_backward_kernel(
    w,
    keys_out,
    decay_last,
    query_in,
    scores,
    do,
    dht,
    du,
    d_states,
    dh0,
    scale,
    NC,
    M,
    K: tl.constexpr,
    V: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    CHUNK: tl.constexpr,
    PRECISION: tl.constexpr,
):
    # The sequential part only: dS' of each chunk (stored) and dV_new; everything else is per chunk.
    i_v, i_m = tl.program_id(0), tl.program_id(1)
    rows, cols_k, cols_v, mask_k, state_mask, rows_k, rows_v, causal = _scan_tiles(i_v, K, V, BK, BV, CHUNK)
    state_base = i_m.to(tl.int64) * K * V
    d_state = _tile(dht, state_base, cols_k, cols_v, V, state_mask)  # dS' of the last chunk
    for step in range(0, NC):
        chunk = (NC - 1 - step) * M + i_m.to(tl.int64)
        _put(d_states, chunk * K * V, cols_k, cols_v, V, state_mask, d_state)
        d_out = _tile(do, chunk * CHUNK * V, rows, cols_v, V, rows_v) * scale
        a_c = tl.load(scores + chunk * CHUNK * CHUNK + rows[:, None] * CHUNK + rows[None, :], mask=causal, other=0.0)
        k_c = _tile(keys_out, chunk * CHUNK * K, rows, cols_k, K, rows_k)
        d_v_new = tl.dot(tl.trans(a_c), d_out, input_precision=PRECISION) + tl.dot(
            k_c, d_state, input_precision=PRECISION
        )
        _put(du, chunk * CHUNK * V, rows, cols_v, V, rows_v, d_v_new)
        q_c = _tile(query_in, chunk * CHUNK * K, rows, cols_k, K, rows_k)
        w_c = _tile(w, chunk * CHUNK * K, rows, cols_k, K, rows_k)
        decay = tl.load(decay_last + chunk * K + cols_k, mask=mask_k, other=0.0)
        d_state = (
            d_state * decay[:, None]
            + tl.dot(tl.trans(q_c), d_out, input_precision=PRECISION)
            - tl.dot(tl.trans(w_c), d_v_new, input_precision=PRECISION)
        )
    _put(dh0, state_base, cols_k, cols_v, V, state_mask, d_state)


@triton.jit
def _chunk_grads_kernel(
    w,
    u,
    states,
    d_states,
    do,
    du,
    dw,
    dkeys_out,
    ddecay_last,
    dquery_in,
    dscores,
    scale,
    K: tl.constexpr,
    V: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    CHUNK: tl.constexpr,
    PRECISION: tl.constexpr,
):
    # One program per chunk (and row), all value columns: the gradients that sum over them.
    chunk = tl.program_id(0).to(tl.int64)
    rows = tl.arange(0, CHUNK)
    cols_k = tl.arange(0, BK)
    mask_k = cols_k < K
    rows_k = (rows < CHUNK)[:, None] & mask_k[None, :]
    causal = rows[:, None] >= rows[None, :]
    w_c = _tile(w, chunk * CHUNK * K, rows, cols_k, K, rows_k)
    # the chunk layout is the token layout of one value head with the chunk's first token at chunk * CHUNK
    d_query_in, d_w, d_keys_out, d_scores, d_decay = _chunk_grads_of_block(
        w_c, u, states, d_states, do, du, chunk, 0, chunk * CHUNK, rows, rows < CHUNK, cols_k, mask_k, scale,
        V, 1, BK, BV, CHUNK, PRECISION, K,
    )  # fmt: skip
    _put(dquery_in, chunk * CHUNK * K, rows, cols_k, K, rows_k, d_query_in)
    _put(dw, chunk * CHUNK * K, rows, cols_k, K, rows_k, d_w)
    _put(dkeys_out, chunk * CHUNK * K, rows, cols_k, K, rows_k, d_keys_out)
    tl.store(dscores + chunk * CHUNK * CHUNK + rows[:, None] * CHUNK + rows[None, :], tl.where(causal, d_scores, 0.0))
    tl.store(ddecay_last + chunk * K + cols_k, d_decay, mask=mask_k)


def _blocks(key_dim: int, value_dim: int) -> tuple[int, int]:
    """Tile sizes: the whole key dimension (at least 16, a power of two) and a block of value columns.

    Narrow value blocks keep the scans' tiles in the register file (at K = 128 and 32 columns the
    reverse scan needs 175 registers and no spills, ptxas for sm_90) and give more programs to the
    GPU (32 heads x 4 blocks at batch 1); every loop runs one pipeline stage, as two overflow
    shared memory.
    """
    block_k = max(16, triton.next_power_of_2(key_dim))
    block_v = min(32 if block_k <= 128 else 16, max(16, triton.next_power_of_2(value_dim)))
    return block_k, block_v


class _ChunkScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, u, keys_out, decay_last, query_in, scores, state, scale, precision):
        chunks, rows, size, key_dim = w.shape
        value_dim = u.shape[-1]
        w, u, keys_out, decay_last, query_in, scores = (
            x.contiguous() for x in (w, u, keys_out, decay_last, query_in, scores)
        )
        state = state.contiguous()
        block_k, block_v = _blocks(key_dim, value_dim)
        out = torch.empty_like(u)
        states = u.new_empty(chunks, rows, key_dim, value_dim)
        final = torch.empty_like(state)
        grid = (triton.cdiv(value_dim, block_v), rows)
        _scan_forward_kernel[grid](
            w,
            u,
            keys_out,
            decay_last,
            query_in,
            scores,
            state,
            out,
            states,
            final,
            scale,
            chunks,
            rows,
            K=key_dim,
            V=value_dim,
            BK=block_k,
            BV=block_v,
            CHUNK=size,
            PRECISION=precision,
            num_warps=4,
            num_stages=1,
        )
        ctx.save_for_backward(w, u, keys_out, decay_last, query_in, scores, states)
        ctx.scale, ctx.precision = scale, precision
        return out, final

    @staticmethod
    def backward(ctx, d_out, d_final):
        w, u, keys_out, decay_last, query_in, scores, states = ctx.saved_tensors
        chunks, rows, size, key_dim = w.shape
        value_dim = u.shape[-1]
        block_k, block_v = _blocks(key_dim, value_dim)
        blocks_v = triton.cdiv(value_dim, block_v)
        d_out = torch.zeros_like(u) if d_out is None else d_out.contiguous()
        shape = (rows, key_dim, value_dim)
        d_final = u.new_zeros(shape) if d_final is None else d_final.contiguous()
        d_u = torch.empty_like(u)
        d_state = u.new_empty(shape)
        d_states = torch.empty_like(states)
        _scan_backward_kernel[(blocks_v, rows)](
            w,
            keys_out,
            decay_last,
            query_in,
            scores,
            d_out,
            d_final,
            d_u,
            d_states,
            d_state,
            ctx.scale,
            chunks,
            rows,
            K=key_dim,
            V=value_dim,
            BK=block_k,
            BV=block_v,
            CHUNK=size,
            PRECISION=ctx.precision,
            num_warps=4,
            num_stages=1,
        )
        d_w, d_keys_out, d_query_in = (torch.empty_like(w) for _ in range(3))
        d_scores, d_decay = torch.empty_like(scores), torch.empty_like(decay_last)
        _chunk_grads_kernel[(chunks * rows,)](
            w,
            u,
            states,
            d_states,
            d_out,
            d_u,
            d_w,
            d_keys_out,
            d_decay,
            d_query_in,
            d_scores,
            ctx.scale,
            K=key_dim,
            V=value_dim,
            BK=block_k,
            BV=block_v,
            CHUNK=size,
            PRECISION=ctx.precision,
            num_warps=8,
            num_stages=1,
        )
        return d_w, d_u, d_keys_out, d_decay, d_query_in, d_scores, d_state, None, None


def _check_scan_inputs(**tensors: torch.Tensor) -> None:
    """Raises ValueError naming the first argument whose shape, dtype or device does not fit."""
    w = tensors["w"]
    if w.dim() != 4:
        raise ValueError(f"w: expected [NC, M, C, K], got shape {tuple(w.shape)}")
    chunks, rows, size, key_dim = w.shape
    value_dim = tensors["u"].shape[-1] if tensors["u"].dim() == 4 else -1
    expected = {
        "w": (chunks, rows, size, key_dim),
        "u": (chunks, rows, size, value_dim),
        "keys_out": (chunks, rows, size, key_dim),
        "decay_last": (chunks, rows, key_dim, 1),
        "query_in": (chunks, rows, size, key_dim),
        "scores": (chunks, rows, size, size),
        "state": (rows, key_dim, value_dim),
    }
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != expected[name]:
            raise ValueError(f"{name}: expected shape {expected[name]} (from w and u), got {tuple(tensor.shape)}")
        if tensor.dtype != w.dtype or tensor.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"{name}: expected float32 or float64 like w ({w.dtype}), got {tensor.dtype}")
        if tensor.device != w.device:
            raise ValueError(f"{name}: expected device {w.device} like w, got {tensor.device}")
    if size < 16 or size & (size - 1):
        raise ValueError(f"w: the chunk length C must be a power of two >= 16, got {size}")
    if key_dim > MAX_KEY_DIM:
        raise ValueError(f"w: the scan supports K <= {MAX_KEY_DIM}, got K = {key_dim}")


def triton_chunk_scan(
    w,
    u,
    keys_out,
    decay_last,
    query_in,
    scores,
    state,
    scale: float = 1.0,
    precision: str | None = None,
):
    """The chunk form's recurrence across chunks, in Triton, differentiable.

    Args:
        w: ``[NC, M, C, K]``, u: ``[NC, M, C, V]``: the WY factors of each chunk.
        keys_out: ``[NC, M, C, K]`` keys decayed to the chunk end.
        decay_last: ``[NC, M, K, 1]`` decay over the whole chunk.
        query_in: ``[NC, M, C, K]`` queries decayed from the chunk start.
        scores: ``[NC, M, C, C]`` causal decay-weighted scores (entries above the diagonal are not read).
        state: ``[M, K, V]`` state before the first chunk.
        scale: factor applied to the output.
        precision: input precision of the matrix products on the GPU, one of ``PRECISIONS``
            (default ``tf32x3``); float64 tensors and Triton's CPU interpreter always use IEEE.

    All tensors share one dtype (float32 or float64) and device; C is a power of two, at least 16,
    and K at most ``MAX_KEY_DIM``. Each chunk's entering state and its gradient ``dS'`` are kept
    in that dtype between the scans and the chunk-gradient kernel.

    Returns:
        ``(o [NC, M, C, V], final_state [M, K, V])``.

    Raises:
        ValueError: for an unknown precision, or tensors whose shapes, dtypes or devices do not fit
            together (the message names the argument).
    """
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    _check_scan_inputs(
        w=w, u=u, keys_out=keys_out, decay_last=decay_last, query_in=query_in, scores=scores, state=state
    )
    precision = float32_precision(u.dtype, precision)
    return _ChunkScan.apply(w, u, keys_out, decay_last, query_in, scores, state, scale, precision)

"""Chunkwise-parallel KDA in pure PyTorch (CPU and CUDA, autograd): the chunk form of
:func:`kdalib.ops.chunk_kda` (:mod:`kdalib.ops.router` decides when it runs; the Triton kernels
of :mod:`kdalib.ops.triton` build on its layout and chunk-local terms).

Each sequence is cut into chunks of C tokens (notes/kda.md, section ``kda-chunkwise``). Everything that does not
depend on the state entering a chunk is computed for all chunks at once; the
sequential part is two batched matmuls per chunk::

    V_new = U - W S                       (the delta rule's correction, WY form)
    S    <- exp(Γ_L) ⊙ S + K_dᵀ V_new     (decay to the chunk end, then write)

and the outputs come from one batched product per group of chunks afterwards:
``O = scale · ((Q ⊙ exp(Γ)) S + A_qk V_new)`` (the scale is applied once, there).

The decay-weighted scores ``A[i, j] = Σ_d x_id k_jd exp(Γ_id - Γ_jd)`` (j < i) are
built in matmul form by halving: at each level the chunk is cut into aligned
blocks of 2h rows; rows i in the lower half and columns j in the upper half meet
through the boundary between the halves,
``exp(Γ_i - Γ_j) = [Π_{m<=t<=i} α_t] · [Π_{j<t<m} α_t]`` with α = exp(g) <= 1.
The levels h = 1, 2, ..., C/2 tile the strictly lower triangle exactly, so every
pair is computed once and nothing is masked. The two factors are products of
decays within aligned blocks, grown from level to level by one multiply (a
doubling scan), so the only exp in the whole chunk form is exp(g): no exponent
is ever positive, no large cumulative sums are subtracted from each other, and
strong gates simply underflow to exact zeros (finite values and gradients). The
top level's products are also exp(Γ_i) and exp(Γ_L - Γ_j), which the state terms
need. The WY factors come from an exact block inverse of the unit lower-triangular
``I + Diag(beta) A_kk``.

Contract: ``g <= 0`` (a decay); positive entries are treated as 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdalib.ops._layout import PaddedLayout, from_padded, plan_padding, select_boundary_states, to_padded
from kdalib.ops._prepare import compute_dtype, needs_grad, prepare_inputs
from kdalib.ops._validate import KDACall, boundary_counts

# Elements of one [chunks, rows, C, K] slab processed at once on the CPU: keeps the
# per-level temporaries in cache. On CUDA one pass over everything is best.
CPU_BLOCK_ELEMENTS = 1 << 19


def _bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` over any leading dims through one ``torch.bmm`` (no copies of transposed operands)."""
    return torch.bmm(a.flatten(0, -3), b.flatten(0, -3)).view(*a.shape[:-1], b.shape[-1])


def _place_blocks(target: torch.Tensor, blocks: torch.Tensor, half: int) -> None:
    """Writes ``blocks [..., P, half, half]`` into the lower-left quarter of each 2*half block of ``target [..., C, C]``."""
    *lead, size, _ = target.shape
    pairs = size // (2 * half)
    view = target.view(*lead, pairs, 2, half, pairs, 2, half)[..., :, 1, :, :, 0, :]  # [..., P, h, P, h]
    torch.diagonal(view, dim1=-4, dim2=-2).copy_(blocks.movedim(-3, -1))


def _grow_blocks(prefix: torch.Tensor, suffix: torch.Tensor, half: int, in_place: bool):
    """Block products for aligned blocks of 2*half rows from those of half rows.

    ``prefix[i]`` is the product of α over its block up to and including i, ``suffix[j]``
    the product over its block after j. Merging two blocks multiplies the second
    half's prefixes by the first half's total, and the first half's suffixes by the
    second half's total.
    """
    shape = (*prefix.shape[:-2], prefix.shape[-2] // (2 * half), 2, half, prefix.shape[-1])
    p, s = prefix.view(shape), suffix.view(shape)
    upper_total, lower_total = p[..., 0, half - 1 :, :], p[..., 1, half - 1 :, :]
    if in_place:
        s[..., 0, :, :].mul_(lower_total)
        p[..., 1, :, :].mul_(upper_total)
        return prefix, suffix
    new_suffix = torch.stack([s[..., 0, :, :] * lower_total, s[..., 1, :, :]], dim=-3)
    new_prefix = torch.stack([p[..., 0, :, :], p[..., 1, :, :] * upper_total], dim=-3)
    return new_prefix.view(prefix.shape), new_suffix.view(suffix.shape)


def intra_chunk_scores(q: torch.Tensor, k: torch.Tensor, g: torch.Tensor):
    """Decay-weighted scores inside each chunk, and the chunk's decay factors.

    Args:
        q: ``[..., C, K]`` queries; C a power of two.
        k: ``[..., C, K]`` keys.
        g: ``[..., C, K]`` log decay (<= 0).

    Returns:
        ``(A_qk, A_kk, decay_in, decay_out)``: ``A_qk[i, j] = Σ_d q_id k_jd exp(Γ_id - Γ_jd)``
        for ``j <= i`` and ``A_kk`` the same with keys for rows and ``j < i`` (zero elsewhere),
        both ``[..., C, C]``; ``decay_in = exp(Γ)`` and ``decay_out = exp(Γ_L - Γ)``, ``[..., C, K]``,
        where Γ is the chunk-local cumulative sum of g.
    """
    *lead, size, dim = k.shape
    in_place = not needs_grad(q, k, g)
    prefix = g.clamp(max=0.0).exp()  # products over blocks of one row
    suffix = torch.ones_like(prefix)
    scores_qk = torch.diag_embed((q * k).sum(-1))  # i == j: no decay
    scores_kk = torch.zeros_like(scores_qk)
    half = 1
    while half < size:
        shape = (*lead, size // (2 * half), 2, half, dim)
        row_decay = prefix.view(shape)[..., 1, :, :]
        if half == 1:  # neighbouring rows: the column factor is 1 and each block is one dot product
            columns = k.reshape(shape)[..., 0, :, :]
            for target, rows in ((scores_qk, q), (scores_kk, k)):
                dots = (rows.reshape(shape)[..., 1, :, :] * row_decay * columns).sum(-1, keepdim=True)
                _place_blocks(target, dots, half)
        else:
            # 3-D operands for bmm; the transposed view of a contiguous [.., h, K] needs no copy.
            columns = (k.reshape(shape)[..., 0, :, :] * suffix.view(shape)[..., 0, :, :]).reshape(-1, half, dim)
            for target, rows in ((scores_qk, q), (scores_kk, k)):
                rows = (rows.reshape(shape)[..., 1, :, :] * row_decay).reshape(-1, half, dim)
                _place_blocks(target, torch.bmm(rows, columns.transpose(1, 2)).view(*shape[:-3], half, half), half)
        prefix, suffix = _grow_blocks(prefix, suffix, half, in_place)
        half *= 2
    return scores_qk, scores_kk, prefix, suffix


def unit_lower_inverse(strict_lower: torch.Tensor) -> torch.Tensor:
    """``(I + A)^{-1}`` for strictly lower-triangular ``A [..., C, C]`` (C a power of two).

    Exact block inversion, bottom-up: inverses of the diagonal blocks of size h are
    merged pairwise, ``[[X11, 0], [-X22 A21 X11, X22]]``, so each level is two
    batched matmuls for every block at once (LAPACK's per-matrix triangular solve is
    slow for thousands of small matrices). Only entries below the diagonal are read.
    """
    *lead, size, _ = strict_lower.shape
    inverse = torch.ones(*lead, size, 1, 1, dtype=strict_lower.dtype, device=strict_lower.device)
    half = 1
    while half < size:
        pairs = size // (2 * half)
        blocks = strict_lower.view(*lead, pairs, 2, half, pairs, 2, half)[..., :, 1, :, :, 0, :]
        lower_left = torch.diagonal(blocks, dim1=-4, dim2=-2).movedim(-1, -3)  # [..., P, h, h]
        upper, lower = inverse[..., 0::2, :, :], inverse[..., 1::2, :, :]
        merged = -lower_left if half == 1 else -_bmm(_bmm(lower, lower_left), upper)  # 1 x 1 blocks are 1
        top = torch.cat([upper, torch.zeros_like(upper)], dim=-1)
        bottom = torch.cat([merged, lower], dim=-1)
        inverse = torch.cat([top, bottom], dim=-2)  # [..., P, 2h, 2h]
        half *= 2
    return inverse.squeeze(-3)


def chunk_local_terms(q, k, v, g, beta):
    """Everything a chunk contributes that does not depend on the incoming state.

    Args:
        q: ``[NC, M, C, K]`` queries (unscaled).
        k: ``[NC, M, C, K]`` keys.
        v: ``[NC, M, C, V]`` values.
        g: ``[NC, M, C, K]`` log decay.
        beta: ``[NC, M, C]`` step sizes.

    Returns:
        ``(w [NC, M, C, K], u [NC, M, C, V], keys_out [NC, M, C, K], decay_last [NC, M, K, 1],
        query_in [NC, M, C, K], scores_qk [NC, M, C, C])``.
    """
    return chunk_local_terms_and_factors(q, k, v, g, beta)[0]


def chunk_local_terms_and_factors(q, k, v, g, beta):
    """:func:`chunk_local_terms`, and the two C x C factors its backward needs: the inverse
    ``(I + Diag(beta) A_kk)^{-1}`` and ``A_kk``."""
    scores_qk, scores_kk, decay_in, decay_out = intra_chunk_scores(q, k, g)
    # (I + Diag(beta) A_kk) [W | U] = Diag(beta) [exp(Γ) ⊙ K | V]  (the UT transform), written as
    # [W | U] = (I + Diag(beta) A_kk)^{-1} Diag(beta) [...]: scaling the C x C inverse is cheaper than the values.
    inverse = unit_lower_inverse(scores_kk * beta.unsqueeze(-1))
    transform = inverse * beta.unsqueeze(-2)
    w = _bmm(transform, k * decay_in)
    u = _bmm(transform, v)
    keys_out = k * decay_out  # row i -> chunk end
    decay_last = decay_in[..., -1:, :].transpose(-1, -2)  # the whole chunk
    return (w, u, keys_out, decay_last, q * decay_in, scores_qk), inverse, scores_kk


def scan_chunk_states(w, u, keys_out, decay_last, query_in, state, read_in_loop: bool | None = None):
    """Carries the state across chunks and reads out each chunk-start state.

    Args:
        w: ``[NC, M, C, K]``, u: ``[NC, M, C, V]`` the WY factors of each chunk.
        keys_out: ``[NC, M, C, K]`` keys decayed to the chunk end.
        decay_last: ``[NC, M, K, 1]`` decay over the whole chunk.
        query_in: ``[NC, M, C, K]`` queries decayed from the chunk start.
        state: ``[M, K, V]`` state before the first chunk.
        read_in_loop: without autograd, read each state out inside the loop (default: on
            the CPU) rather than in one batched product afterwards (default on CUDA).

    Returns:
        ``(inter [NC, M, C, V], v_new [NC, M, C, V], final [M, K, V])``: ``inter`` is
        ``query_in @ S_c``, the output's contribution from the state entering each chunk.
    """
    chunks = w.shape[0]
    tracked = needs_grad(w, u, keys_out, decay_last, query_in, state)
    if read_in_loop is None:
        read_in_loop = not state.is_cuda
    if not tracked and read_in_loop:
        # CPU inference: read each state out while it is in cache and keep only two state
        # buffers, instead of writing the [NC, M, K, V] stack of states to memory and
        # reading it back (worth ~10% at K = V = 128). On CUDA one batched product after
        # the loop is cheaper than a launch per chunk.
        inter, v_new = torch.empty_like(u), torch.empty_like(u)
        current, spare = state.clone(), torch.empty_like(state)
        for c in range(chunks):
            torch.bmm(query_in[c], current, out=inter[c])
            torch.baddbmm(u[c], w[c], current, alpha=-1.0, out=v_new[c])
            torch.mul(current, decay_last[c], out=spare)
            spare.baddbmm_(keys_out[c].transpose(-1, -2), v_new[c])
            current, spare = spare, current
        return inter, v_new, current
    if not tracked:
        starts = state.new_empty((chunks + 1,) + tuple(state.shape))
        v_new = torch.empty_like(u)
        starts[0] = state
        for c in range(chunks):
            torch.baddbmm(u[c], w[c], starts[c], alpha=-1.0, out=v_new[c])
            torch.mul(starts[c], decay_last[c], out=starts[c + 1])
            starts[c + 1].baddbmm_(keys_out[c].transpose(-1, -2), v_new[c])
        return _bmm(query_in, starts[:-1]), v_new, starts[-1].clone()  # the clone frees the stack
    starts, corrections = [], []
    for c in range(chunks):
        starts.append(state)
        correction = torch.baddbmm(u[c], w[c], state, alpha=-1.0)
        state = torch.baddbmm(state * decay_last[c], keys_out[c].transpose(-1, -2), correction)
        corrections.append(correction)
    return _bmm(query_in, torch.stack(starts)), torch.stack(corrections), state


def chunk_kda_core(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    state: torch.Tensor,
    scale: float = 1.0,
    out: torch.Tensor | None = None,
    keep_every: int | None = None,
    keep_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """KDA over whole chunks, one row per (sequence, value head).

    Args:
        q: ``[NC, M, C, K]`` queries (unscaled).
        k: ``[NC, M, C, K]`` keys.
        v: ``[NC, M, C, V]`` values.
        g: ``[NC, M, C, K]`` log decay.
        beta: ``[NC, M, C]`` step sizes.
        state: ``[M, K, V]`` initial state.
        scale: query scale, applied once to the output (q enters it linearly).
        out: optional ``[NC, ...]`` view with M * C * V elements per chunk (e.g. the caller's
            final layout) that each group's output is copied into, instead of concatenating.
        keep_every: also return the state after every ``keep_every``-th chunk (None: not).
        keep_dtype: the dtype those states are kept in (None: the state's).

    Returns:
        ``(o, final_state [M, K, V])``: o is ``out`` when given, else ``[NC, M, C, V]``; with
        ``keep_every``, also the list of the ``NC // keep_every`` kept ``[M, K, V]`` states.
    """
    chunks, rows, size, key_dim = k.shape
    step = chunks if k.is_cuda else max(1, CPU_BLOCK_ELEMENTS // (rows * size * key_dim))
    # groups of chunks end at every kept boundary (the scan is sequential anyway)
    bounds = sorted(set(range(0, chunks, step)) | set(range(0, chunks, keep_every or chunks)) | {chunks})
    outputs, kept = [], []
    for start, end in zip(bounds, bounds[1:]):
        part = slice(start, end)
        w, u, keys_out, decay_last, query_in, scores_qk = chunk_local_terms(
            q[part], k[part], v[part], g[part], beta[part]
        )
        inter, v_new, state = scan_chunk_states(w, u, keys_out, decay_last, query_in, state)
        if keep_every is not None and end % keep_every == 0:
            kept.append(state.to(keep_dtype or state.dtype))  # a fresh tensor: the scan never writes it again
        output = _bmm(scores_qk, v_new).add_(inter).mul_(scale)
        if out is None:
            outputs.append(output)
        else:
            out[part].copy_(output.view(out[part].shape))
    if out is None:
        out = torch.cat(outputs) if len(outputs) > 1 else outputs[0]
    return (out, state) if keep_every is None else (out, state, kept)


def _to_chunk_rows(x: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """``[N, T_pad, HV, D]`` -> ``[NC, N * HV, C, D]`` (chunk-major, so each chunk is contiguous)."""
    n, t, h, d = x.shape
    return (
        x.view(n, t // chunk_size, chunk_size, h, d)
        .permute(1, 0, 3, 2, 4)
        .reshape(t // chunk_size, n * h, chunk_size, d)
    )


@dataclass(frozen=True)
class ChunkRows:
    """A validated call in the chunk form's working layout: one row per (sequence, value head),
    every sequence padded to whole chunks with no-op tokens, chunk-major.

    Attributes:
        q, k, g: ``[NC, M, C, K]`` prepared queries (unscaled), keys and log decays.
        v: ``[NC, M, C, V]`` values.
        beta: ``[NC, M, C]`` step sizes.
        state: ``[M, K, V]`` the state before the first chunk, in the compute dtype.
        plan: where the sequences sit in the padded layout.
    """

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    g: torch.Tensor
    beta: torch.Tensor
    state: torch.Tensor
    plan: PaddedLayout


def chunk_rows(call: KDACall, chunk_size: int) -> ChunkRows:
    """A validated call's inputs in the chunk layout."""
    shapes = call.shapes
    dtype = compute_dtype(*call.tensors)
    # the scale is applied once, to the output (chunk_kda_core), not to every query
    q, k, v, g, beta = prepare_inputs(call.q, call.k, call.v, call.g, call.beta, shapes, dtype, call.use_qk_l2norm)
    plan = plan_padding(shapes, chunk_size, q.device)
    q, k, v, g = (_to_chunk_rows(to_padded(x, plan), chunk_size) for x in (q, k, v, g))
    beta = _to_chunk_rows(to_padded(beta, plan).unsqueeze(-1), chunk_size).squeeze(-1)
    rows_total = shapes.num_sequences * shapes.value_heads
    if call.initial_state is None:
        state = q.new_zeros(rows_total, shapes.key_dim, shapes.value_dim, dtype=dtype)
    else:
        state = call.initial_state.to(dtype).reshape(rows_total, shapes.key_dim, shapes.value_dim)
    return ChunkRows(q, k, v, g, beta, state, plan)


def _user_layout(padded: torch.Tensor, final: torch.Tensor, rows: ChunkRows, call: KDACall):
    """``(o [N, T_pad, HV, V], final [M, K, V])`` -> ``(o [B, T, HV, V] in v's dtype, final_state | None)``."""
    output = from_padded(padded, rows.plan).to(call.v.dtype)
    if not call.output_final_state:
        return output, None
    shapes = call.shapes
    return output, final.reshape(shapes.num_sequences, shapes.value_heads, shapes.key_dim, shapes.value_dim)


def from_chunk_rows(output: torch.Tensor, final: torch.Tensor, rows: ChunkRows, call: KDACall):
    """The result of ``call`` computed as :class:`ChunkRows` (``output [NC, M, C, V]``, ``final
    [M, K, V]``) in the user layout: ``(o [B, T, HV, V], final_state [N, HV, K, V] | None)``."""
    nc, m, c, d = output.shape
    n = call.shapes.num_sequences
    padded = output.view(nc, n, m // n, c, d).permute(1, 0, 3, 2, 4).reshape(n, nc * c, m // n, d)
    return _user_layout(padded, final, rows, call)


def chunk_kda_pytorch(call: KDACall, chunk_size: int = 64):
    """:func:`kdalib.ops.chunk_kda` in PyTorch, on a validated call: ``(o, final_state)``, and the
    boundary states when ``call.states_every`` is set (a multiple of ``chunk_size``)."""
    rows = chunk_rows(call, chunk_size)
    inputs = (rows.q, rows.k, rows.v, rows.g, rows.beta, rows.state)
    every = None if call.states_every is None else call.states_every // chunk_size
    keep = dict(keep_every=every, keep_dtype=call.states_dtype)
    if needs_grad(*inputs):
        output, final, *kept = chunk_kda_core(*inputs, call.scale, **keep)
        return _with_states(from_chunk_rows(output, final, rows, call), kept, call)
    # write each group straight into the [N, T_pad, HV, V] result: no concatenation, no extra copy
    shapes = call.shapes
    padded = rows.q.new_empty(shapes.num_sequences, rows.plan.padded_length, shapes.value_heads, shapes.value_dim)
    by_chunk = padded.view(shapes.num_sequences, -1, chunk_size, shapes.value_heads, shapes.value_dim)
    _, final, *kept = chunk_kda_core(*inputs, call.scale, out=by_chunk.permute(1, 0, 3, 2, 4), **keep)
    return _with_states(_user_layout(padded, final, rows, call), kept, call)


def _with_states(result: tuple, kept: list, call: KDACall) -> tuple:
    """``result``, and the boundary states of ``call`` selected from ``kept`` when it asked for them."""
    if call.states_every is None:
        return result
    dtype = call.states_dtype or compute_dtype(*call.tensors)
    counts = boundary_counts(call.shapes, call.states_every)
    return (*result, select_boundary_states(kept[0], counts, call.shapes, dtype, call.q.device))


def chunk_kda_flops(
    tokens: int, value_heads: int, key_dim: int, value_dim: int, chunk_size: int = 64, sequences: int = 1
) -> int:
    """Floating-point operations of :func:`chunk_kda`'s forward pass (multiply-add = 2).

    Counts the matmul-shaped work per chunk and per (sequence, value head): the
    halving scores (the C(C-1)/2 decayed pairs, for q and k rows), the triangular
    solve for [W | U], the two scan products and the read-out. Elementwise work
    (decays) is not counted, so this is what a perfect matmul engine would need.
    """
    size, k, v = chunk_size, key_dim, value_dim
    per_chunk = (
        2 * size * (size - 1) * k
        + 2 * size * k  # A_qk and A_kk (lower triangles) and the diagonal q.k
        + size * size * (k + v)  # unit lower-triangular solve for [W | U]
        + 4 * size * k * v  # scan: W S and K_dᵀ V_new
        + 2 * size * k * v
        + 2 * size * size * v  # read-out: Q_g S + A_qk V_new
    )
    chunks = -(-tokens // size)
    return per_chunk * chunks * value_heads * sequences

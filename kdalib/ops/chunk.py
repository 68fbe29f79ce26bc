"""Chunkwise-parallel KDA in pure PyTorch (CPU and CUDA, autograd).

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

from kdalib.ops._layout import from_padded, plan_padding, to_padded
from kdalib.ops._prepare import compute_dtype, needs_grad, prepare_inputs
from kdalib.ops._validate import validate_kda_inputs
from kdalib.ops.triton import (
    MAX_KEY_DIM,
    TRITON_LOCAL_CHUNK,
    chunk_local_terms_backward,
    chunk_local_terms_forward,
    triton_chunk_kda,
    triton_chunk_scan,
    triton_unavailable_reason,
)

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
    return _chunk_local_terms_and_factors(q, k, v, g, beta)[0]


def _chunk_local_terms_and_factors(q, k, v, g, beta):
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


class _LocalTermsTriton(torch.autograd.Function):
    """:func:`chunk_local_terms` in Triton (:func:`kdalib.ops.triton.chunk_local_terms_forward`, for
    chunks of 64; other sizes compute them as above, without autograd's saved intermediates), with
    its backward as one Triton kernel (:func:`kdalib.ops.triton.chunk_local_terms_backward`).

    16-bit inputs are saved as they are (the kernels widen them on load), so what autograd keeps
    for the backward is half the size of float32 copies; the terms and the kernels' gradients are
    float32 for them (autograd rounds the gradients to the inputs' dtype)."""

    @staticmethod
    def forward(ctx, q, k, v, g, beta, precision):
        inputs = [x.contiguous() for x in (q, k, v, g, beta)]
        if k.shape[-2] == TRITON_LOCAL_CHUNK:
            terms, inverse, scores_kk = chunk_local_terms_forward(*inputs, precision)
        else:
            terms, inverse, scores_kk = _chunk_local_terms_and_factors(*(x.to(compute_dtype(x)) for x in inputs))
        ctx.save_for_backward(*inputs, inverse, scores_kk)
        ctx.precision = precision
        return tuple(t.contiguous() for t in terms)

    @staticmethod
    def backward(ctx, *grads):
        return (*chunk_local_terms_backward(*ctx.saved_tensors, grads, ctx.precision), None)


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


@dataclass(frozen=True)
class TritonTraining:
    """How :func:`chunk_kda_core` runs on the Triton training path.

    Attributes:
        precision: matrix-product input precision of the Triton kernels (``tf32``, ``tf32x3``, ``ieee``).
        local_terms: compute the chunk-local terms with the Triton kernels
            (:func:`kdalib.ops.triton.chunk_local_terms_forward` for chunks of 64,
            :func:`kdalib.ops.triton.chunk_local_terms_backward`), not with autograd.
        states_dtype: the dtype the scan keeps each chunk's state and its gradient in for the
            backward (None: the terms' dtype; :func:`kdalib.ops.triton.triton_chunk_scan`).
        output_dtype: the dtype the scan writes the output in (None: the terms' dtype).
    """

    precision: str
    local_terms: bool = False
    states_dtype: torch.dtype | None = None
    output_dtype: torch.dtype | None = None

    @classmethod
    def for_inputs(cls, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> TritonTraining:
        """16-bit inputs: TF32 products (as precise as the inputs), the chunk-local terms as Triton
        kernels, which read the inputs as given (autograd saves no float32 copies), the per-chunk
        states kept in bfloat16 for the backward and the output written in v's dtype. float32
        inputs: TF32x3 products and autograd of the chunk-local terms, until the float32 GPU grid
        has run through those kernels (kdalib/ops/triton/NOTES.md, "Float32")."""
        if _half_precision(q, k, v):
            return cls("tf32", local_terms=True, states_dtype=torch.bfloat16, output_dtype=v.dtype)
        return cls("tf32x3")


def chunk_kda_core(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    state: torch.Tensor,
    scale: float = 1.0,
    out: torch.Tensor | None = None,
    triton: TritonTraining | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
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
        triton: when given (the Triton training path), the chunk-local terms of all chunks are
            computed here and the recurrence across chunks runs as the Triton scan with its
            backward, as :class:`TritonTraining` says; ``out`` is then not used.

    Returns:
        ``(o, final_state [M, K, V])``: o is ``out`` when given, else ``[NC, M, C, V]``.
    """
    if triton is not None:
        if triton.local_terms:
            terms = _LocalTermsTriton.apply(q, k, v, g, beta, triton.precision)
        else:
            terms = chunk_local_terms(q, k, v, g, beta)
        return triton_chunk_scan(
            *terms,
            state,
            scale,
            precision=triton.precision,
            states_dtype=triton.states_dtype,
            output_dtype=triton.output_dtype,
        )
    chunks, rows, size, key_dim = k.shape
    step = chunks if k.is_cuda else max(1, CPU_BLOCK_ELEMENTS // (rows * size * key_dim))
    outputs = []
    for c in range(0, chunks, step):
        part = slice(c, c + step)
        w, u, keys_out, decay_last, query_in, scores_qk = chunk_local_terms(
            q[part], k[part], v[part], g[part], beta[part]
        )
        inter, v_new, state = scan_chunk_states(w, u, keys_out, decay_last, query_in, state)
        output = _bmm(scores_qk, v_new).add_(inter).mul_(scale)
        if out is None:
            outputs.append(output)
        else:
            out[part].copy_(output.view(out[part].shape))
    if out is not None:
        return out, state
    return (torch.cat(outputs) if len(outputs) > 1 else outputs[0]), state


def _to_chunk_rows(x: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """``[N, T_pad, HV, D]`` -> ``[NC, N * HV, C, D]`` (chunk-major, so each chunk is contiguous)."""
    n, t, h, d = x.shape
    return (
        x.view(n, t // chunk_size, chunk_size, h, d)
        .permute(1, 0, 3, 2, 4)
        .reshape(t // chunk_size, n * h, chunk_size, d)
    )


def _from_chunk_rows(x: torch.Tensor, sequences: int) -> torch.Tensor:
    """``[NC, N * HV, C, D]`` -> ``[N, T_pad, HV, D]``."""
    nc, m, c, d = x.shape
    return (
        x.view(nc, sequences, m // sequences, c, d).permute(1, 0, 3, 2, 4).reshape(sequences, nc * c, m // sequences, d)
    )


def triton_chunk_unavailable_reason(q, k, v, g, beta, initial_state=None) -> str | None:
    """Why the Triton chunk kernels cannot serve these tensors, or None when they can.

    They need triton, CUDA tensors (or CPU tensors under ``TRITON_INTERPRET=1``), half or
    single precision, and K <= ``MAX_KEY_DIM``.
    """
    reason = triton_unavailable_reason(q, k, v, g, beta, initial_state)
    if reason is None and q.shape[-1] > MAX_KEY_DIM:
        reason = f"the Triton chunk kernel supports K <= {MAX_KEY_DIM}, got K = {q.shape[-1]}"
    return reason


def _half_precision(*tensors: torch.Tensor) -> bool:
    return all(t.dtype in (torch.bfloat16, torch.float16) for t in tensors)


def triton_route(q, k, v, g, beta, initial_state, use_triton: bool | None) -> str | None:
    """Which Triton path :func:`chunk_kda` takes: ``"forward"``, ``"scan"`` or None (the PyTorch form).

    * ``"forward"``: the chunked forward kernels (:func:`kdalib.ops.triton.triton_chunk_kda`), for
      calls that need no gradient.
    * ``"scan"``: the recurrence across chunks as the Triton scan with its Triton backward, for
      calls that need gradients; the chunk-local terms as Triton kernels both ways for 16-bit inputs
      (:func:`kdalib.ops.triton.chunk_local_terms_forward` and ``_backward``), in PyTorch under
      autograd for float32 ones.

    ``use_triton=None`` (automatic) takes the forward kernels for bfloat16/float16 CUDA inference
    and the scan for CUDA training in 16-bit or float32; float32 inference and everything in
    float64 or on the CPU keep the PyTorch form (the forward kernels' float32 state error with the
    strongest gates is above the 1e-5 float32 bar, see kdalib/ops/triton/NOTES.md). ``True``
    forces the Triton path and raises where it cannot run; ``False`` never takes it.

    Raises:
        RuntimeError: ``use_triton=True`` and the kernels cannot run on these tensors.
    """
    if use_triton is False or (use_triton is None and not q.is_cuda):
        return None
    reason = triton_chunk_unavailable_reason(q, k, v, g, beta, initial_state)  # float64 included
    if reason is not None:
        if use_triton:
            raise RuntimeError(f"use_triton=True: {reason}")
        return None
    if needs_grad(q, k, v, g, beta, initial_state):
        return "scan"
    return "forward" if use_triton or _half_precision(q, k, v) else None


def chunk_kda(
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
    use_triton: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Kimi Delta Attention in chunkwise-parallel form (differentiable).

    Args:
        q: ``[B, T, H, K]`` queries.
        k: ``[B, T, H, K]`` keys.
        v: ``[B, T, HV, V]`` values; value head ``hv`` reads q/k head ``hv // (HV // H)``.
        g: ``[B, T, HV, K]`` log-space decay per key channel; a positive value acts as 0 (notes/kda.md, section ``kda-contract``).
        beta: ``[B, T, HV]`` delta-rule step sizes.
        scale: query scale, default ``K ** -0.5``.
        initial_state: ``[N, HV, K, V]`` state before the first token (zeros if None).
        output_final_state: also return the ``[N, HV, K, V]`` state after the last token.
        use_qk_l2norm_in_kernel: L2-normalise q and k per head before use.
        cu_seqlens: ``[N + 1]`` offsets of packed sequences in a B = 1 batch.
        chunk_size: C, one of 16, 32, 64. T need not be a multiple of C.
        use_triton: None (default) picks as :func:`triton_route` says: the Triton forward kernels
            for bfloat16/float16 CUDA inference (chunks of 64 whatever ``chunk_size`` says), the
            Triton scan with its backward for CUDA training, the PyTorch form otherwise. True
            forces the Triton path (a clear error where it cannot run), False the PyTorch form.

    Returns:
        ``(o, final_state)``: o ``[B, T, HV, V]`` in v's dtype; final_state float64 for
        float64 inputs, float32 otherwise (including bfloat16/float16), or None.

    Raises:
        ValueError: on inconsistent shapes, dtypes, offsets or chunk size.
        RuntimeError: ``use_triton=True`` where the Triton kernels cannot run.
    """
    shapes = validate_kda_inputs(q, k, v, g, beta, scale, initial_state, cu_seqlens, chunk_size)
    dtype = compute_dtype(q, k, v, g, beta, initial_state)
    scale = shapes.key_dim**-0.5 if scale is None else scale
    route = triton_route(q, k, v, g, beta, initial_state, use_triton)
    if route == "forward":
        return triton_chunk_kda(
            q, k, v, g, beta, scale, initial_state, output_final_state, use_qk_l2norm_in_kernel, cu_seqlens
        )
    triton = None if route is None else TritonTraining.for_inputs(q, k, v)
    keep_dtypes = triton is not None and triton.local_terms
    output_dtype = v.dtype
    # the scale is applied once, to the output (chunk_kda_core), not to every query
    q, k, v, g, beta = prepare_inputs(q, k, v, g, beta, shapes, dtype, use_qk_l2norm_in_kernel, keep_dtypes=keep_dtypes)

    plan = plan_padding(shapes.tokens, cu_seqlens, chunk_size, q.device)
    rows = [_to_chunk_rows(to_padded(x, plan), chunk_size) for x in (q, k, v, g)]
    beta_rows = _to_chunk_rows(to_padded(beta, plan).unsqueeze(-1), chunk_size).squeeze(-1)
    rows_total = shapes.num_sequences * shapes.value_heads
    if initial_state is None:
        state = q.new_zeros(rows_total, shapes.key_dim, shapes.value_dim, dtype=dtype)
    else:
        state = initial_state.to(dtype).reshape(rows_total, shapes.key_dim, shapes.value_dim)

    tracked = needs_grad(*rows, beta_rows, state)
    if tracked or triton is not None:
        output, final = chunk_kda_core(*rows, beta_rows, state, scale, triton=triton)
        output = _from_chunk_rows(output, shapes.num_sequences)
    else:  # write each group straight into the [N, T_pad, HV, V] result: no concatenation, no extra copy
        output = q.new_empty(shapes.num_sequences, plan.padded_length, shapes.value_heads, shapes.value_dim)
        by_chunk = output.view(shapes.num_sequences, -1, chunk_size, shapes.value_heads, shapes.value_dim)
        _, final = chunk_kda_core(*rows, beta_rows, state, scale, out=by_chunk.permute(1, 0, 3, 2, 4))
    output = from_padded(output, plan)
    final_state = None
    if output_final_state:
        final_state = final.reshape(shapes.num_sequences, shapes.value_heads, shapes.key_dim, shapes.value_dim)
    return output.to(output_dtype), final_state


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

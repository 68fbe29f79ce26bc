"""Chunkwise-parallel KDA in pure PyTorch (CPU and CUDA, autograd).

Each sequence is cut into chunks of C tokens. Inside a chunk everything is a
matmul (KDA.md §3); across chunks only one small affine map is applied per step::

    S_{c+1} = T_c S_c + B_c,   T_c = Diag(exp(Γ_L)) - K_dᵀ W,   B_c = K_dᵀ U

so the sequential part is one batched ``[K, K] @ [K, V]`` product per chunk, and
the outputs of all chunks come from one batched matmul once the chunk-start
states are known: ``O = (Q_g - A_qk W) S_c + A_qk U``.

The intra-chunk decay ``exp(Γ_i - Γ_j)`` is put into matmul form without ever
exponentiating a positive number: the chunk is split into sub-chunks of 16 rows;
for rows of sub-chunk I and columns before it, the reference row r_I (first row
of I) factorises ``exp(Γ_i - Γ_j) = exp(Γ_i - Γ_r) · exp(Γ_r - Γ_j)`` with both
exponents <= 0. The 16x16 diagonal blocks are computed exactly, masked with -inf
before the exp so that gradients stay finite under very strong gates.
"""

from __future__ import annotations

import torch

from kdalib.ops._layout import from_padded, plan_packing, to_padded
from kdalib.ops._validate import compute_dtype, l2_normalize, validate_kda_inputs

SUBCHUNK = 16
# exp() of arguments below about -87 underflows in float32 and takes a slow path on
# x86; contributions below exp(-80) ~ 1.8e-35 are far under float32 resolution.
EXP_FLOOR = -80.0
# Elements of the largest intra-chunk temporary processed at once: keeps the
# working set in cache instead of streaming [T, 16, K] tensors through memory.
BLOCK_ELEMENTS = 1 << 20


def _exp_nonpositive(exponent: torch.Tensor) -> torch.Tensor:
    """``exp(clamp(exponent, EXP_FLOOR, 0))``: never exponentiates a positive number.

    Callers zero the entries whose exponent would be positive (j > i) *after* the
    contraction; since the clamped exp is at most 1 there, no inf can meet a zero
    and gradients stay finite however strong the gates are. In place when no
    gradient is needed, because this runs on the largest temporaries.
    """
    if torch.is_grad_enabled() and exponent.requires_grad:
        return exponent.clamp(EXP_FLOOR, 0.0).exp()
    return exponent.clamp_(EXP_FLOOR, 0.0).exp_()


def intra_chunk_scores(q: torch.Tensor, k: torch.Tensor, gamma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Decay-weighted query-key and key-key scores inside each chunk.

    Args:
        q: ``[..., C, K]`` (scaled) queries.
        k: ``[..., C, K]`` keys.
        gamma: ``[..., C, K]`` chunk-local cumulative log decay Γ (non-increasing down the rows).

    Returns:
        ``(A_qk, A_kk)``, both ``[..., C, C]``: ``A_qk[i, j] = Σ_d q_id k_jd exp(Γ_id - Γ_jd)``
        for ``j <= i`` and ``A_kk[i, j]`` the same with keys for rows and ``j < i``; zero elsewhere.
    """
    *lead, size, dim = k.shape
    sub = min(SUBCHUNK, size)
    blocks = size // sub
    qs, ks, gs = (x.reshape(*lead, blocks, sub, dim) for x in (q, k, gamma))
    device, dtype = k.device, k.dtype

    # Off-diagonal blocks: rows of sub-chunk I against every column before its first row r_I,
    # exp(Γ_i - Γ_j) = exp(Γ_i - Γ_r) exp(Γ_r - Γ_j), both exponents <= 0 where it is kept.
    reference = gs[..., :1, :]                                          # [..., n, 1, K]
    row_decay = _exp_nonpositive(gs - reference)
    columns = k.unsqueeze(-3) * _exp_nonpositive(reference - gamma.unsqueeze(-3))  # [..., n, C, K]
    rows = torch.cat([qs * row_decay, ks * row_decay], dim=-2)          # [..., n, 2*sub, K]
    off = rows @ columns.transpose(-1, -2)                              # [..., n, 2*sub, C]
    column = torch.arange(size, device=device)
    before = column < (torch.arange(blocks, device=device).unsqueeze(1) * sub)  # [n, C]
    off = off * before.unsqueeze(-2).to(dtype)
    qk_off = off[..., :sub, :].reshape(*lead, size, size)
    kk_off = off[..., sub:, :].reshape(*lead, size, size)

    # Diagonal blocks, exactly: exp(Γ_i - Γ_j) per channel, kept for j <= i only.
    decay = _exp_nonpositive(gs.unsqueeze(-2) - gs.unsqueeze(-3))       # [..., n, i, j, K]
    keyed = decay.mul_(ks.unsqueeze(-3)) if not decay.requires_grad else decay * ks.unsqueeze(-3)
    both = keyed @ torch.stack([qs, ks], dim=-1)                       # [..., n, i, j, 2]
    local = torch.arange(sub, device=device)
    lower = (local.unsqueeze(1) >= local.unsqueeze(0)).to(dtype)
    strict = (local.unsqueeze(1) > local.unsqueeze(0)).to(dtype)
    eye = torch.eye(blocks, dtype=dtype, device=device)
    qk_diag = torch.einsum("...Iij,ij,IJ->...IiJj", both[..., 0], lower, eye).reshape(*lead, size, size)
    kk_diag = torch.einsum("...Iij,ij,IJ->...IiJj", both[..., 1], strict, eye).reshape(*lead, size, size)
    return qk_off + qk_diag, kk_off + kk_diag


def scan_chunk_states(
    transition: torch.Tensor, inject: torch.Tensor, state: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Runs ``S_{c+1} = T_c S_c + B_c`` over chunks.

    Args:
        transition: ``[NC, M, K, K]`` per-chunk state transitions T_c.
        inject: ``[NC, M, K, V]`` per-chunk writes B_c.
        state: ``[M, K, V]`` state before the first chunk.

    Returns:
        ``(starts [NC, M, K, V], final [M, K, V])``: the state at each chunk's start, and after the last.
    """
    chunks = transition.shape[0]
    tracked = torch.is_grad_enabled() and any(t.requires_grad for t in (transition, inject, state))
    if not tracked:
        states = state.new_empty((chunks + 1,) + tuple(state.shape))
        states[0] = state
        for c in range(chunks):
            torch.baddbmm(inject[c], transition[c], states[c], out=states[c + 1])
        return states[:-1], states[-1]
    starts = []
    for c in range(chunks):
        starts.append(state)
        state = torch.baddbmm(inject[c], transition[c], state)
    return torch.stack(starts), state


def chunk_local_terms(q, k, v, g, beta):
    """Everything a chunk contributes that does not depend on the incoming state.

    Args:
        q: ``[NC, M, C, K]`` scaled queries.
        k: ``[NC, M, C, K]`` keys.
        v: ``[NC, M, C, V]`` values.
        g: ``[NC, M, C, K]`` log decay.
        beta: ``[NC, M, C]`` step sizes.

    Returns:
        ``(query_state [NC, M, C, K], output_intra [NC, M, C, V], transition [NC, M, K, K],
        inject [NC, M, K, V])`` with ``o = query_state @ S + output_intra`` and
        ``S_next = transition @ S + inject`` for the chunk-start state S.
    """
    key_dim = k.shape[-1]
    gamma = g.cumsum(dim=-2)
    scores_qk, scores_kk = intra_chunk_scores(q, k, gamma)
    scores_kk = scores_kk * beta.unsqueeze(-1)
    decay_in = gamma.exp()                                    # chunk start -> row i, exponent <= 0
    gamma_last = gamma[..., -1:, :]
    decay_out = (gamma_last - gamma).exp()                    # row i -> chunk end, exponent <= 0
    rhs = torch.cat([k * decay_in, v], dim=-1) * beta.unsqueeze(-1)
    # (I + A_kk) [W | U] = Diag(beta) [exp(Γ) ⊙ K | V]; A_kk has a zero diagonal (the UT transform).
    wu = torch.linalg.solve_triangular(scores_kk, rhs, upper=False, unitriangular=True)
    w, u = wu[..., :key_dim], wu[..., key_dim:]
    query_state = q * decay_in - scores_qk @ w
    output_intra = scores_qk @ u
    keys_out = (k * decay_out).transpose(-1, -2)              # [NC, M, K, C]
    transition = torch.diag_embed(gamma_last.squeeze(-2).exp()) - keys_out @ w
    inject = keys_out @ u
    return query_state, output_intra, transition, inject


def chunk_kda_core(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, beta: torch.Tensor, state: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """KDA over whole chunks, one row per (sequence, value head).

    Args:
        q: ``[NC, M, C, K]`` scaled queries.
        k: ``[NC, M, C, K]`` keys.
        v: ``[NC, M, C, V]`` values.
        g: ``[NC, M, C, K]`` log decay.
        beta: ``[NC, M, C]`` step sizes.
        state: ``[M, K, V]`` initial state.

    Returns:
        ``(o [NC, M, C, V], final_state [M, K, V])``.
    """
    chunks, rows, size, key_dim = k.shape
    per_chunk = rows * size * min(SUBCHUNK, size) * key_dim
    step = max(1, BLOCK_ELEMENTS // per_chunk)
    parts = [chunk_local_terms(q[c:c + step], k[c:c + step], v[c:c + step], g[c:c + step], beta[c:c + step])
             for c in range(0, chunks, step)]
    query_state, output_intra, transition, inject = (
        torch.cat(items) if len(items) > 1 else items[0] for items in zip(*parts))
    starts, final = scan_chunk_states(transition, inject, state)
    return torch.baddbmm(output_intra.flatten(0, 1), query_state.flatten(0, 1), starts.flatten(0, 1)).view(
        output_intra.shape), final


def _to_chunk_rows(x: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """``[N, T_pad, HV, D]`` -> ``[NC, N * HV, C, D]`` (chunk-major, so each chunk is contiguous)."""
    n, t, h, d = x.shape
    return x.view(n, t // chunk_size, chunk_size, h, d).permute(1, 0, 3, 2, 4).reshape(t // chunk_size, n * h, chunk_size, d)


def _from_chunk_rows(x: torch.Tensor, sequences: int) -> torch.Tensor:
    """``[NC, N * HV, C, D]`` -> ``[N, T_pad, HV, D]``."""
    nc, m, c, d = x.shape
    return x.view(nc, sequences, m // sequences, c, d).permute(1, 0, 3, 2, 4).reshape(sequences, nc * c, m // sequences, d)


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
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Kimi Delta Attention in chunkwise-parallel form (differentiable).

    Args:
        q: ``[B, T, H, K]`` queries.
        k: ``[B, T, H, K]`` keys.
        v: ``[B, T, HV, V]`` values; value head ``hv`` reads q/k head ``hv // (HV // H)``.
        g: ``[B, T, HV, K]`` log-space decay per key channel (``<= 0``).
        beta: ``[B, T, HV]`` delta-rule step sizes.
        scale: query scale, default ``K ** -0.5``.
        initial_state: ``[N, HV, K, V]`` state before the first token (zeros if None).
        output_final_state: also return the ``[N, HV, K, V]`` state after the last token.
        use_qk_l2norm_in_kernel: L2-normalise q and k per head before use.
        cu_seqlens: ``[N + 1]`` offsets of packed sequences in a B = 1 batch.
        chunk_size: C, one of 16, 32, 64. T need not be a multiple of C.

    Returns:
        ``(o, final_state)``: o ``[B, T, HV, V]`` in v's dtype; final_state float64 for
        float64 inputs, float32 otherwise (including bfloat16/float16), or None.

    Raises:
        ValueError: on inconsistent shapes, dtypes, offsets or chunk size.
    """
    shapes = validate_kda_inputs(q, k, v, g, beta, scale, initial_state, cu_seqlens, chunk_size)
    dtype = compute_dtype(q, k, v, g, beta, initial_state)
    scale = shapes.key_dim ** -0.5 if scale is None else scale
    output_dtype = v.dtype
    q, k, v, g, beta = (x.to(dtype) for x in (q, k, v, g, beta))
    if use_qk_l2norm_in_kernel:
        q, k = l2_normalize(q), l2_normalize(k)
    group = shapes.group_size
    q = (q * scale).repeat_interleave(group, dim=2) if group > 1 else q * scale
    k = k.repeat_interleave(group, dim=2) if group > 1 else k

    plan = plan_packing(shapes.tokens, cu_seqlens, chunk_size, q.device)
    rows = [_to_chunk_rows(to_padded(x, plan), chunk_size) for x in (q, k, v, g)]
    beta_rows = _to_chunk_rows(to_padded(beta, plan).unsqueeze(-1), chunk_size).squeeze(-1)
    rows_total = shapes.num_sequences * shapes.value_heads
    if initial_state is None:
        state = q.new_zeros(rows_total, shapes.key_dim, shapes.value_dim)
    else:
        state = initial_state.to(dtype).reshape(rows_total, shapes.key_dim, shapes.value_dim)

    output, final = chunk_kda_core(*rows, beta_rows, state)
    output = from_padded(_from_chunk_rows(output, shapes.num_sequences), plan)
    final_state = None
    if output_final_state:
        final_state = final.reshape(shapes.num_sequences, shapes.value_heads, shapes.key_dim, shapes.value_dim)
    return output.to(output_dtype), final_state


def chunk_kda_flops(tokens: int, value_heads: int, key_dim: int, value_dim: int, chunk_size: int = 64,
                    sequences: int = 1) -> int:
    """Floating-point operations of :func:`chunk_kda`'s forward pass (multiply-add = 2).

    Counts the matmul-shaped work per chunk and per (sequence, value head): the
    sub-chunk scores, the exact diagonal blocks, the triangular solve, the
    state-independent products, one scan step and the read-out. Elementwise work
    (decays, masks) is not counted, so this is the floor a perfect matmul engine
    would need for this algorithm.
    """
    size, k, v = chunk_size, key_dim, value_dim
    sub = min(SUBCHUNK, size)
    per_chunk = (
        4 * size * size * k          # off-diagonal scores, q and k rows against earlier columns
        + 4 * size * sub * k         # exact diagonal sub-blocks
        + size * size * (k + v)      # unit lower-triangular solve for [W | U]
        + 2 * size * size * (k + v)  # A_qk W and A_qk U
        + 2 * size * k * (k + v)     # transition and inject
        + 2 * k * k * v              # scan step
        + 2 * size * k * v           # read-out from the chunk-start state
    )
    chunks = -(-tokens // size)
    return per_chunk * chunks * value_heads * sequences

"""The two readable KDA references: the token loop and the chunkwise algorithm step by step.

* :func:`naive_recurrent_kda` is the recurrence itself (notes/kda.md, section ``kda-recurrence``),
  for each token t and value head::

      S'  = Diag(exp(g_t)) S_{t-1}                 decay each key channel
      S_t = S' + beta_t k_t (v_t - S'^T k_t)^T      delta rule on the decayed state
      o_t = S_t^T (scale q_t)                       read out with the updated state

  Given float64 inputs everything runs in float64: this is the oracle every other form
  is tested against.
* :func:`naive_chunk_kda` is the chunkwise algorithm (notes/kda.md, section ``kda-chunkwise``)
  written as the numbered steps of the derivation, one chunk at a time with dense masked
  matrices: slow and memory-hungry, but each line is one equation of the page. The
  tuned :func:`kdalib.ops.chunk_kda` computes the same thing.

Both prepare their inputs here, in :func:`_reference_inputs`, independently of the
preparation the fast forms share (:mod:`kdalib.ops._prepare`), so that a mistake there
shows up as a disagreement with these references.
"""

from __future__ import annotations

import math

import torch

from kdalib.ops._validate import KDAShapes, validate_kda_inputs


def _reference_inputs(q, k, v, g, beta, initial_state, scale, use_qk_l2norm, shapes: KDAShapes):
    """Casts to float64 when any input is float64 (float32 otherwise), clamps a positive log-decay
    to 0 (notes/kda.md, section ``kda-contract``), L2-normalises and scales q, L2-normalises k, and gives every
    value head its own copy of the q/k head it reads."""
    wide = any(t is not None and t.dtype == torch.float64 for t in (q, k, v, g, beta, initial_state))
    dtype = torch.float64 if wide else torch.float32
    q, k, v, g, beta = (x.to(dtype) for x in (q, k, v, g, beta))
    g = g.clamp(max=0.0)  # +inf too; NaN stays NaN
    if use_qk_l2norm:
        q = q / (q.pow(2).sum(-1, keepdim=True) + 1e-6).sqrt()
        k = k / (k.pow(2).sum(-1, keepdim=True) + 1e-6).sqrt()
    q = q * (shapes.key_dim**-0.5 if scale is None else scale)
    head_of_value_head = torch.arange(shapes.value_heads, device=q.device) // shapes.group_size
    return q[:, :, head_of_value_head], k[:, :, head_of_value_head], v, g, beta, dtype


def _sequences(shapes: KDAShapes, cu_seqlens: torch.Tensor | None) -> list[tuple[int, slice]]:
    """``(batch_row, token_span)`` of each of the N sequences, in state order."""
    if cu_seqlens is None:
        return [(b, slice(0, shapes.tokens)) for b in range(shapes.batch)]
    offsets = shapes.sequences.offsets
    return [(0, slice(start, end)) for start, end in zip(offsets, offsets[1:])]


def _run_sequences(step_sequence, q, k, v, g, beta, initial_state, output_final_state, cu_seqlens, shapes, dtype):
    """Applies ``step_sequence(q, k, v, g, beta, state) -> (o, state)`` to every sequence, each
    ``[T_n, HV, *]`` from its own initial state, and reassembles ``(o [B, T, HV, V], final | None)``."""
    outputs, finals = [], []
    for index, (row, span) in enumerate(_sequences(shapes, cu_seqlens)):
        if initial_state is None:
            state = q.new_zeros(shapes.value_heads, shapes.key_dim, shapes.value_dim)
        else:
            state = initial_state[index].to(dtype)
        o, state = step_sequence(q[row, span], k[row, span], v[row, span], g[row, span], beta[row, span], state)
        outputs.append(o)
        finals.append(state)
    output = torch.cat(outputs).unsqueeze(0) if cu_seqlens is not None else torch.stack(outputs)
    return output, (torch.stack(finals) if output_final_state else None)


def recurrent_step(
    state: torch.Tensor,
    q_t: torch.Tensor,
    k_t: torch.Tensor,
    v_t: torch.Tensor,
    g_t: torch.Tensor,
    beta_t: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Applies one token of the KDA recurrence.

    Args:
        state: ``[..., K, V]`` state S_{t-1}.
        q_t: ``[..., K]`` query, already scaled.
        k_t: ``[..., K]`` key.
        v_t: ``[..., V]`` value.
        g_t: ``[..., K]`` log decay of this token.
        beta_t: ``[...]`` step size.

    Returns:
        ``(o_t [..., V], S_t [..., K, V])``.
    """
    decayed = state * g_t.exp().unsqueeze(-1)
    prediction = (k_t.unsqueeze(-1) * decayed).sum(-2)
    correction = beta_t.unsqueeze(-1) * (v_t - prediction)
    new_state = decayed + k_t.unsqueeze(-1) * correction.unsqueeze(-2)
    output = (q_t.unsqueeze(-1) * new_state).sum(-2)
    return output, new_state


def _token_loop(q, k, v, g, beta, state):
    """The recurrence over one sequence: inputs ``[T, HV, *]``, state ``[HV, K, V]``."""
    outputs = []
    for t in range(q.shape[0]):
        o_t, state = recurrent_step(state, q[t], k[t], v[t], g[t], beta[t])
        outputs.append(o_t)
    return torch.stack(outputs), state


def naive_recurrent_kda(
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
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Kimi Delta Attention, one token at a time.

    Args:
        q, k, v, g, beta, scale, initial_state, output_final_state, use_qk_l2norm_in_kernel, cu_seqlens: as in :func:`kdalib.ops.chunk_kda` (shapes ``[B, T, H, K]``,
            ``[B, T, HV, V]``, ``[B, T, HV, K]``, ``[B, T, HV]``, state ``[N, HV, K, V]``); each
            packed sequence starts from its own initial state.

    Returns:
        ``(o, final_state)``: o ``[B, T, HV, V]`` in v's dtype; final_state float64
        for float64 inputs, float32 otherwise, or None.

    Raises:
        ValueError: on inconsistent shapes, dtypes or offsets (see ``validate_kda_inputs``).
    """
    shapes = validate_kda_inputs(q, k, v, g, beta, scale, initial_state, cu_seqlens)
    *prepared, dtype = _reference_inputs(q, k, v, g, beta, initial_state, scale, use_qk_l2norm_in_kernel, shapes)
    output, final_state = _run_sequences(
        _token_loop, *prepared, initial_state, output_final_state, cu_seqlens, shapes, dtype
    )
    return output.to(v.dtype), final_state


def _chunk_steps(q, k, v, g, beta, state, chunk_size):
    """The chunkwise algorithm over one sequence: inputs ``[T, HV, *]``, state ``[HV, K, V]``.

    Numbered as the equations of notes/kda.md, section ``kda-chunkwise``; heads are the
    leading (batch) dimension of every product, rows of a chunk are tokens r = 1..C.
    """
    q, k, v, g, beta = (x.transpose(0, 1) for x in (q, k, v, g, beta))  # heads first: [HV, T, *]
    # 0. a log decay below the floor decays to exactly 0 in this dtype, as does the floor itself;
    #    clamping to it keeps every Γ finite (g = -inf would make Γ_r - Γ_i = -inf + inf = NaN, and
    #    g = -1e30 would swallow the other gates of the chunk in Γ's rounding).
    g = g.clamp(min=_underflow_floor(g.dtype))
    outputs = []
    for start in range(0, q.shape[1], chunk_size):
        rows = slice(start, start + chunk_size)
        Q, K, V, G, B = q[:, rows], k[:, rows], v[:, rows], g[:, rows], beta[:, rows]
        size = K.shape[1]
        # 1. chunk-local cumulative log decay Γ_r = Σ_{s<=r} g_s, and the pairwise decays
        #    exp(Γ_r - Γ_i) for r >= i (the exponent of r < i is masked to -inf: no overflow).
        gamma = G.cumsum(1)  # [HV, C, K]
        lower = torch.ones(size, size, dtype=torch.bool, device=q.device).tril()
        pair = (gamma.unsqueeze(2) - gamma.unsqueeze(1)).masked_fill(~lower[..., None], -torch.inf).exp()
        # 2. A_kk[r, i] = beta_r Σ_d K_rd K_id exp(Γ_rd - Γ_id) for r > i.
        strict = (~torch.eye(size, dtype=torch.bool, device=q.device)).to(q.dtype)
        A_kk = B.unsqueeze(-1) * torch.einsum("hrd,hid,hrid->hri", K, K, pair) * strict
        # 3. the UT transform: M = (I + A_kk)^{-1} Diag(beta), a unit lower-triangular solve.
        eye = torch.eye(size, dtype=q.dtype, device=q.device)
        M = torch.linalg.solve_triangular(eye + A_kk, torch.diag_embed(B), upper=False, unitriangular=True)
        # 4. the WY factors: W = M (exp(Γ) ⊙ K), U = M V.
        W, U = M @ (gamma.exp() * K), M @ V
        # 5. corrected values: V_new = U - W S_0.
        V_new = U - W @ state
        # 6. A_qk[r, i] = Σ_d Q_rd K_id exp(Γ_rd - Γ_id) for r >= i (Q is already scaled).
        A_qk = torch.einsum("hrd,hid,hrid->hri", Q, K, pair)
        # 7. output: O = (Q ⊙ exp(Γ)) S_0 + A_qk V_new.
        outputs.append((Q * gamma.exp()) @ state + A_qk @ V_new)
        # 8. state: S_next = Diag(exp(Γ_C)) S_0 + (exp(Γ_C - Γ) ⊙ K)^T V_new.
        last = gamma[:, -1:]
        state = last.exp().transpose(1, 2) * state + ((last - gamma).exp() * K).transpose(1, 2) @ V_new
    return torch.cat(outputs, dim=1).transpose(0, 1), state


def _underflow_floor(dtype: torch.dtype) -> float:
    """A log decay whose exp, and the exp of anything below it, is exactly 0 in ``dtype``:
    two below the log of the smallest subnormal number (finfo.tiny * finfo.eps)."""
    info = torch.finfo(dtype)
    return math.log(info.tiny * info.eps) - 2.0


def naive_chunk_kda(
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
    """Kimi Delta Attention by the chunkwise algorithm, written out step by step.

    Same arguments, results and dtypes as :func:`naive_recurrent_kda`, plus
    ``chunk_size`` (C: 16, 32 or 64; T need not be a multiple of it). Each chunk costs
    ``O(HV C^2 K)`` memory for its pairwise decays; use :func:`kdalib.ops.chunk_kda` for speed.

    Raises:
        ValueError: on inconsistent shapes, dtypes, offsets or chunk size.
    """
    shapes = validate_kda_inputs(q, k, v, g, beta, scale, initial_state, cu_seqlens, chunk_size)
    *prepared, dtype = _reference_inputs(q, k, v, g, beta, initial_state, scale, use_qk_l2norm_in_kernel, shapes)

    def steps(*sequence):
        return _chunk_steps(*sequence, chunk_size)

    output, final_state = _run_sequences(steps, *prepared, initial_state, output_final_state, cu_seqlens, shapes, dtype)
    return output.to(v.dtype), final_state

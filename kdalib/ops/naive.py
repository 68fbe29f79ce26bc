"""The KDA recurrence as a token loop: the slow, obvious oracle.

For each token t and value head (KDA.md §1)::

    S'  = Diag(exp(g_t)) S_{t-1}                 decay each key channel
    S_t = S' + beta_t k_t (v_t - S'^T k_t)^T      delta rule on the decayed state
    o_t = S_t^T (scale q_t)                       read out with the updated state

Given float64 inputs everything runs in float64, so this is the reference the
faster forms are tested against; otherwise the state is float32.
"""

from __future__ import annotations

import torch

from kdalib.ops._validate import compute_dtype, prepare_inputs, sequence_bounds, validate_kda_inputs


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


def _recur_sequence(q, k, v, g, beta, state):
    """Runs the token loop over ``[b, t, HV, *]`` inputs; returns ``([b, t, HV, V], [b, HV, K, V])``."""
    outputs = []
    for t in range(q.shape[1]):
        o_t, state = recurrent_step(state, q[:, t], k[:, t], v[:, t], g[:, t], beta[:, t])
        outputs.append(o_t)
    return torch.stack(outputs, dim=1), state


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
        q: ``[B, T, H, K]`` queries.
        k: ``[B, T, H, K]`` keys.
        v: ``[B, T, HV, V]`` values; value head ``hv`` reads q/k head ``hv // (HV // H)``.
        g: ``[B, T, HV, K]`` log-space decay per key channel; a positive value acts as 0 (notes/kda.md, "Contract").
        beta: ``[B, T, HV]`` delta-rule step sizes.
        scale: query scale, default ``K ** -0.5``.
        initial_state: ``[N, HV, K, V]`` state before the first token (zeros if None).
        output_final_state: also return the ``[N, HV, K, V]`` state after the last token.
        use_qk_l2norm_in_kernel: L2-normalise q and k per head before use.
        cu_seqlens: ``[N + 1]`` offsets of packed sequences in a B = 1 batch; each
            sequence starts from its own initial state.

    Returns:
        ``(o, final_state)``: o ``[B, T, HV, V]`` in v's dtype; final_state float64
        for float64 inputs, float32 otherwise, or None.

    Raises:
        ValueError: on inconsistent shapes, dtypes or offsets (see ``validate_kda_inputs``).
    """
    shapes = validate_kda_inputs(q, k, v, g, beta, scale, initial_state, cu_seqlens)
    dtype = compute_dtype(q, k, v, g, beta, initial_state)
    scale = shapes.key_dim ** -0.5 if scale is None else scale
    output_dtype = v.dtype
    q, k, v, g, beta = prepare_inputs(q, k, v, g, beta, shapes, dtype, use_qk_l2norm_in_kernel, scale)

    outputs, finals = [], []
    for index, (row, start, end) in enumerate(sequence_bounds(shapes, cu_seqlens)):
        if initial_state is None:
            state = q.new_zeros(1, shapes.value_heads, shapes.key_dim, shapes.value_dim)
        else:
            state = initial_state[index : index + 1].to(dtype)
        span = slice(start, end)
        o, state = _recur_sequence(q[row : row + 1, span], k[row : row + 1, span], v[row : row + 1, span],
                                   g[row : row + 1, span], beta[row : row + 1, span], state)
        outputs.append(o)
        finals.append(state)
    output = torch.cat(outputs, dim=1 if cu_seqlens is not None else 0)
    final_state = torch.cat(finals, dim=0) if output_final_state else None
    return output.to(output_dtype), final_state

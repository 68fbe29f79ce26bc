"""The step-by-step chunkwise reference stays finite and exact on extreme gates."""

from __future__ import annotations

import pytest
import torch

from kdalib.ops import naive_chunk_kda, naive_recurrent_kda


def _inputs(dtype, gate_value, seed=0):
    generator = torch.Generator().manual_seed(seed)
    batch, tokens, heads, dim = 1, 40, 2, 8
    q, k = (torch.randn(batch, tokens, heads, dim, generator=generator, dtype=dtype) for _ in range(2))
    v = torch.randn(batch, tokens, heads, dim, generator=generator, dtype=dtype)
    g = -torch.rand(batch, tokens, heads, dim, generator=generator, dtype=dtype)
    g[:, 5, 0, :3] = gate_value  # one token forgets three channels of head 0 at once
    g[:, 21, 1, :] = gate_value  # another wipes a whole head in the second chunk
    beta = torch.rand(batch, tokens, heads, generator=generator, dtype=dtype)
    state = torch.randn(1, heads, dim, dim, generator=generator, dtype=dtype)
    return q, k, v, g, beta, state


@pytest.mark.parametrize("gate_value", [-torch.inf, -1e30, -1e4, -800.0])
def test_naive_chunk_matches_the_token_loop_on_extreme_gates_in_float64(gate_value):
    q, k, v, g, beta, state = _inputs(torch.float64, gate_value)
    kwargs = dict(initial_state=state, output_final_state=True, use_qk_l2norm_in_kernel=True)
    expected, expected_state = naive_recurrent_kda(q, k, v, g, beta, **kwargs)
    got, got_state = naive_chunk_kda(q, k, v, g, beta, chunk_size=16, **kwargs)
    assert torch.isfinite(expected).all() and torch.isfinite(got).all() and torch.isfinite(got_state).all()
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(got_state, expected_state, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("gate_value", [-torch.inf, -1e30])
def test_naive_chunk_is_finite_on_extreme_gates_in_float32(gate_value):
    q, k, v, g, beta, state = _inputs(torch.float32, gate_value)
    kwargs = dict(initial_state=state, output_final_state=True, use_qk_l2norm_in_kernel=True)
    expected, _ = naive_recurrent_kda(q, k, v, g, beta, **kwargs)
    got, got_state = naive_chunk_kda(q, k, v, g, beta, chunk_size=16, **kwargs)
    assert torch.isfinite(got).all() and torch.isfinite(got_state).all()
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-3)

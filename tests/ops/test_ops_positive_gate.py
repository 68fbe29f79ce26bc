"""A positive log-decay g acts as 0 in every form (notes/kda.md, section ``kda-contract``)."""

from __future__ import annotations

import pytest
import torch

from kdalib.ops import chunk_kda, fused_recurrent_kda, kda, naive_chunk_kda, naive_recurrent_kda


def _inputs(T=24, H=2, K=8, V=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(1, T, H, K, generator=gen, dtype=torch.float64)
    k = torch.randn(1, T, H, K, generator=gen, dtype=torch.float64)
    v = torch.randn(1, T, H, V, generator=gen, dtype=torch.float64)
    g = -torch.rand(1, T, H, K, generator=gen, dtype=torch.float64)
    beta = torch.rand(1, T, H, generator=gen, dtype=torch.float64)
    return q, k, v, g, beta


def _forms():
    return {
        "naive": lambda *a, **kw: naive_recurrent_kda(*a, **kw),
        "naive_chunk": lambda *a, **kw: naive_chunk_kda(*a, chunk_size=16, **kw),
        "chunk": lambda *a, **kw: chunk_kda(*a, chunk_size=16, **kw),
        "recurrent": lambda *a, **kw: fused_recurrent_kda(*a, **kw),
        "kda": lambda *a, **kw: kda(*a, chunk_size=16, **kw),
    }


@pytest.mark.parametrize("positive", [0.7, 3.0, float("inf")], ids=["0.7", "3", "inf"])
def test_every_form_treats_positive_g_as_zero(positive):
    q, k, v, g, beta = _inputs()
    g[:, 5:, :, :3] = positive  # a run of positive decays on some channels
    expected, expected_state = naive_recurrent_kda(
        q, k, v, g.clamp(max=0.0), beta, output_final_state=True, use_qk_l2norm_in_kernel=True
    )
    for name, form in _forms().items():
        out, state = form(q, k, v, g, beta, output_final_state=True, use_qk_l2norm_in_kernel=True)
        assert torch.isfinite(out).all() and torch.isfinite(state).all(), name
        torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-9, msg=name)
        torch.testing.assert_close(state, expected_state, rtol=1e-9, atol=1e-9, msg=name)


def test_kda_prefill_and_token_by_token_decoding_agree_with_positive_g():
    # before: chunk_kda clamped g > 0 while the recurrent forms let the state grow, so the
    # same call gave answers ~1e18 apart depending on whether it went through prefill or decode
    q, k, v, g, beta = _inputs(T=32)
    g = g.abs() * 4.0
    prefill, prefill_state = kda(q, k, v, g, beta, output_final_state=True, use_qk_l2norm_in_kernel=True)
    state, outputs = None, []
    for t in range(q.shape[1]):
        step = slice(t, t + 1)
        o, state = kda(
            q[:, step],
            k[:, step],
            v[:, step],
            g[:, step],
            beta[:, step],
            initial_state=state,
            output_final_state=True,
            use_qk_l2norm_in_kernel=True,
        )
        outputs.append(o)
    torch.testing.assert_close(torch.cat(outputs, dim=1), prefill, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(state, prefill_state, rtol=1e-9, atol=1e-9)
    assert prefill_state.abs().max() < 1e3


def test_nan_in_g_stays_nan():
    q, k, v, g, beta = _inputs()
    g[0, 3, 0, 0] = float("nan")
    for name, form in _forms().items():
        out, _ = form(q, k, v, g, beta)
        assert torch.isnan(out[0, 3:, 0]).any(), name


def test_the_triton_decoding_kernel_clamps_too():
    pytest.importorskip("triton")
    from kdalib.ops.triton import triton_fused_recurrent_kda

    device = "cuda" if torch.cuda.is_available() else "cpu"
    q, k, v, g, beta = (x.float().to(device) for x in _inputs(T=6, H=1, K=16, V=16))
    g[:, 2:, :, :4] = float("inf")
    g[:, 4, :, 4:8] = 2.0
    expected, expected_state = naive_recurrent_kda(q, k, v, g.clamp(max=0.0), beta, scale=0.25, output_final_state=True)
    out, state = triton_fused_recurrent_kda(q, k, v, g, beta, 0.25, None, True)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(state, expected_state, rtol=1e-4, atol=1e-4)
    g[0, 1, 0, 0] = float("nan")
    out, _ = triton_fused_recurrent_kda(q, k, v, g, beta, 0.25, None, False)
    assert torch.isnan(out[0, 1:]).any()

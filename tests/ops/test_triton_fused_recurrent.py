"""The Triton decoding kernel against the token-loop oracle.

On a machine without CUDA the kernel runs in Triton's interpreter (tests/conftest.py
sets TRITON_INTERPRET=1 before triton is imported), so CI checks the kernel's logic on
the CPU; with CUDA the same tests run the compiled kernel.
"""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")

from kda_test_utils import rel_rms  # noqa: E402

from kdalib.ops import naive_recurrent_kda  # noqa: E402
from kdalib.ops.triton import triton_fused_recurrent_kda  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _inputs(B, T, H, HV, K, V, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, K, generator=gen)
    k = torch.nn.functional.normalize(torch.randn(B, T, H, K, generator=gen), dim=-1)
    v = torch.randn(B, T, HV, V, generator=gen)
    g = -torch.rand(B, T, HV, K, generator=gen) * 2.0
    beta = torch.rand(B, T, HV, generator=gen)
    return [x.to(DEVICE, dtype) for x in (q, k, v, g, beta)]


@pytest.mark.parametrize(
    "B,T,H,HV,K,V",
    [(1, 1, 1, 1, 16, 16), (2, 7, 2, 2, 32, 32), (1, 5, 1, 2, 60, 20), (1, 9, 2, 4, 16, 100)],
    ids=["single-token", "batch2", "gva-k60", "gva-v100"],
)
@pytest.mark.parametrize("l2norm", [False, True], ids=["raw-qk", "l2norm"])
def test_matches_oracle_with_states(B, T, H, HV, K, V, l2norm):
    q, k, v, g, beta = _inputs(B, T, H, HV, K, V)
    h0 = torch.randn(B, HV, K, V, device=DEVICE)
    kwargs = dict(scale=K**-0.5, initial_state=h0, output_final_state=True, use_qk_l2norm_in_kernel=l2norm)
    o, ht = triton_fused_recurrent_kda(q, k, v, g, beta, **kwargs)
    o_ref, ht_ref = naive_recurrent_kda(q, k, v, g, beta, **kwargs)
    assert rel_rms(o, o_ref) < 1e-5
    assert rel_rms(ht, ht_ref) < 1e-5


def test_packed_sequences_match_oracle():
    q, k, v, g, beta = _inputs(1, 11, 2, 2, 32, 32)
    cu = torch.tensor([0, 1, 5, 11], device=DEVICE, dtype=torch.int32)
    h0 = torch.randn(3, 2, 32, 32, device=DEVICE)
    kwargs = dict(scale=0.3, initial_state=h0, output_final_state=True, cu_seqlens=cu)
    o, ht = triton_fused_recurrent_kda(q, k, v, g, beta, **kwargs)
    o_ref, ht_ref = naive_recurrent_kda(q, k, v, g, beta, **kwargs)
    assert rel_rms(o, o_ref) < 1e-5
    assert rel_rms(ht, ht_ref) < 1e-5


def test_bf16_inputs_keep_a_float32_state():
    q, k, v, g, beta = _inputs(1, 6, 1, 1, 32, 32, dtype=torch.bfloat16)
    o, ht = triton_fused_recurrent_kda(q, k, v, g, beta, scale=0.2, output_final_state=True)
    o_ref, ht_ref = naive_recurrent_kda(q, k, v, g, beta, scale=0.2, output_final_state=True)
    assert o.dtype == torch.bfloat16 and ht.dtype == torch.float32
    assert rel_rms(o, o_ref) < 2e-2
    assert rel_rms(ht, ht_ref) < 1e-5


def test_extreme_gates_stay_finite():
    q, k, v, g, beta = _inputs(1, 4, 1, 1, 16, 16)
    g = torch.full_like(g, -1000.0)
    o, ht = triton_fused_recurrent_kda(q, k, v, g, beta, scale=0.25, output_final_state=True)
    assert torch.isfinite(o).all() and torch.isfinite(ht).all()
    o_ref, _ = naive_recurrent_kda(q, k, v, g, beta, scale=0.25)
    assert rel_rms(o, o_ref) < 1e-5


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fused_recurrent_kda_uses_the_kernel_for_cuda_inference_and_autograd_otherwise():
    from kdalib.ops import fused_recurrent_kda

    q, k, v, g, beta = _inputs(2, 5, 2, 4, 64, 64)
    h0 = torch.randn(2, 4, 64, 64, device=DEVICE)
    o_ref, ht_ref = naive_recurrent_kda(q, k, v, g, beta, initial_state=h0, output_final_state=True)
    with torch.no_grad():
        o, ht = fused_recurrent_kda(q, k, v, g, beta, initial_state=h0, output_final_state=True)
    assert rel_rms(o, o_ref) < 1e-5 and rel_rms(ht, ht_ref) < 1e-5
    v.requires_grad_(True)
    o, _ = fused_recurrent_kda(q, k, v, g, beta, initial_state=h0)
    o.sum().backward()
    assert v.grad is not None and torch.isfinite(v.grad).all()

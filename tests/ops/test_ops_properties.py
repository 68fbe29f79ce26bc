"""Property tests over random shapes, packings and gates (hypothesis)."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kda_test_utils import make_inputs, rel_rms

from kdalib.ops import chunk_kda, fused_recurrent_kda, naive_recurrent_kda

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def problems(draw):
    lengths = draw(st.lists(st.integers(1, 40), min_size=1, max_size=4))
    packed = len(lengths) > 1 and draw(st.booleans())
    heads = draw(st.integers(1, 2))
    shape = dict(
        batch=1 if packed else draw(st.integers(1, 2)),
        tokens=sum(lengths) if packed else lengths[0],
        heads=heads,
        value_heads=heads * draw(st.integers(1, 3)),
        key_dim=draw(st.integers(1, 20)),
        value_dim=draw(st.integers(1, 20)),
        seed=draw(st.integers(0, 2**16)),
        gate=draw(st.sampled_from(["logsigmoid", "kimi", -5.0, 0.0])),
    )
    if packed:
        shape["num_states"] = len(lengths)
    cu_seqlens = torch.tensor([0] + lengths).cumsum(0) if packed else None
    return shape, cu_seqlens, draw(st.sampled_from([16, 32, 64])), draw(st.booleans())


@SETTINGS
@given(problems())
def test_chunk_and_recurrent_agree_with_oracle(problem):
    shape, cu_seqlens, chunk_size, l2norm = problem
    inputs = make_inputs(**shape)
    kwargs = dict(output_final_state=True, cu_seqlens=cu_seqlens, use_qk_l2norm_in_kernel=l2norm)
    o_ref, s_ref = naive_recurrent_kda(**inputs, **kwargs)
    o_chunk, s_chunk = chunk_kda(**inputs, **kwargs, chunk_size=chunk_size)
    o_rec, s_rec = fused_recurrent_kda(**inputs, **kwargs)
    assert o_chunk.shape == o_ref.shape == inputs["v"].shape
    assert s_chunk.shape == s_ref.shape == inputs["initial_state"].shape
    for actual, expected in ((o_chunk, o_ref), (s_chunk, s_ref), (o_rec, o_ref), (s_rec, s_ref)):
        assert rel_rms(actual, expected) < 1e-11


@SETTINGS
@given(problems())
def test_no_write_no_decay_reads_the_initial_state(problem):
    """With beta = 0 and g = 0 the state never changes: o_t = S0ᵀ (scale q_t) and S_T = S0."""
    shape, cu_seqlens, chunk_size, _ = problem
    inputs = make_inputs(**dict(shape, gate=0.0))
    inputs["beta"] = torch.zeros_like(inputs["beta"])
    o, s = chunk_kda(**inputs, output_final_state=True, cu_seqlens=cu_seqlens, chunk_size=chunk_size)
    assert torch.allclose(s, inputs["initial_state"], rtol=1e-12, atol=1e-12)
    group = inputs["v"].shape[2] // inputs["q"].shape[2]
    q = inputs["q"].repeat_interleave(group, dim=2) * inputs["q"].shape[-1] ** -0.5
    if cu_seqlens is None:
        expected = torch.einsum("bthk,bhkv->bthv", q, inputs["initial_state"])
    else:
        sequence = torch.repeat_interleave(torch.arange(len(cu_seqlens) - 1), cu_seqlens.diff())
        expected = torch.einsum("bthk,thkv->bthv", q, inputs["initial_state"][sequence])
    assert torch.allclose(o, expected, rtol=1e-10, atol=1e-12)

"""chunk_kda, naive_chunk_kda and fused_recurrent_kda against the naive token loop: outputs, final state, gradients."""

from __future__ import annotations

import itertools

import pytest
import torch
from kda_test_utils import GRAD_TOLERANCE, INPUT_NAMES, TOLERANCE, make_inputs, rel_rms, run_with_grads

from kdalib.ops import chunk_kda, fused_recurrent_kda, naive_chunk_kda, naive_recurrent_kda

TOKENS = (1, 2, 3, 15, 63, 64, 65, 130, 1000)
DIMS = (32, 60, 100, 128)
DTYPES = {"f64": torch.float64, "f32": torch.float32}
CHUNKS = (16, 32, 64)


def _case_id(tokens, key_dim, value_dim, dtype_name, chunk_size):
    return f"T{tokens}-K{key_dim}-V{value_dim}-{dtype_name}-C{chunk_size}"


# A deterministic sample of the grid that still covers every T, K, V, dtype and chunk
# size; the full cartesian product is the slow test below.
_FAST_CASES = [
    (tokens, DIMS[i % 4], DIMS[(i + 1) % 4], ("f64", "f32")[i % 2], CHUNKS[i % 3])
    for i, tokens in enumerate(TOKENS[:-1])
] + [
    (1000, 32, 32, "f64", 64),
    (1000, 128, 60, "f32", 32),
    (130, 128, 128, "f64", 16),
    (65, 100, 32, "f32", 64),
]
_ALL_CASES = list(itertools.product(TOKENS, DIMS, DIMS, DTYPES, CHUNKS))


def _compare_chunk_with_naive(tokens, key_dim, value_dim, dtype_name, chunk_size, **problem):
    dtype = DTYPES[dtype_name]
    inputs = make_inputs(
        tokens=tokens, key_dim=key_dim, value_dim=value_dim, dtype=dtype, seed=tokens + key_dim + value_dim, **problem
    )
    o_ref, s_ref, grads_ref = run_with_grads(naive_recurrent_kda, inputs)
    o, s, grads = run_with_grads(chunk_kda, inputs, chunk_size=chunk_size)
    assert o.dtype == dtype and s.dtype == dtype
    assert rel_rms(o, o_ref) < TOLERANCE[dtype]
    assert rel_rms(s, s_ref) < TOLERANCE[dtype]
    for name in INPUT_NAMES:
        assert rel_rms(grads[name], grads_ref[name]) < GRAD_TOLERANCE[dtype], name


@pytest.mark.parametrize("case", _FAST_CASES, ids=[_case_id(*c) for c in _FAST_CASES])
def test_chunk_matches_recurrence(case):
    _compare_chunk_with_naive(*case)


@pytest.mark.slow
@pytest.mark.parametrize("case", _ALL_CASES, ids=[_case_id(*c) for c in _ALL_CASES])
def test_chunk_matches_recurrence_full_grid(case):
    _compare_chunk_with_naive(*case)


@pytest.mark.parametrize("heads,value_heads", [(1, 4), (2, 4), (2, 6)], ids=lambda x: str(x))
@pytest.mark.parametrize("dtype_name", ["f64", "f32"])
def test_grouped_value_heads(heads, value_heads, dtype_name):
    _compare_chunk_with_naive(70, 32, 60, dtype_name, 32, heads=heads, value_heads=value_heads)


@pytest.mark.parametrize("scale", [0.05, 1.0, 2.5])
def test_explicit_scale(scale):
    inputs = make_inputs(tokens=40, key_dim=32, value_dim=32)
    o_ref, s_ref = naive_recurrent_kda(**inputs, scale=scale, output_final_state=True)
    o, s = chunk_kda(**inputs, scale=scale, output_final_state=True, chunk_size=16)
    assert rel_rms(o, o_ref) < 1e-12 and rel_rms(s, s_ref) < 1e-12
    default, _ = chunk_kda(**inputs)
    assert rel_rms(o, default) > 1e-3  # the scale really is used


@pytest.mark.parametrize("dtype_name", ["f64", "f32"])
def test_l2norm_in_kernel(dtype_name):
    inputs = make_inputs(tokens=50, key_dim=60, value_dim=32, dtype=DTYPES[dtype_name], normalize_keys=False)
    o_ref, s_ref, grads_ref = run_with_grads(naive_recurrent_kda, inputs, use_qk_l2norm_in_kernel=True)
    o, s, grads = run_with_grads(chunk_kda, inputs, use_qk_l2norm_in_kernel=True, chunk_size=16)
    tolerance = TOLERANCE[DTYPES[dtype_name]]
    assert rel_rms(o, o_ref) < tolerance and rel_rms(s, s_ref) < tolerance
    assert all(rel_rms(grads[n], grads_ref[n]) < GRAD_TOLERANCE[DTYPES[dtype_name]] for n in INPUT_NAMES)
    # Normalising in the kernel is the same as normalising before the call.
    normalized = dict(
        inputs,
        q=torch.nn.functional.normalize(inputs["q"], dim=-1, eps=0.0),
        k=torch.nn.functional.normalize(inputs["k"], dim=-1, eps=0.0),
    )
    o_outside, _ = chunk_kda(**normalized, chunk_size=16)
    assert rel_rms(o_outside, o) < 1e-5


@pytest.mark.parametrize("tokens", [1, 5, 77])
@pytest.mark.parametrize("dtype_name", ["f64", "f32"])
def test_fused_recurrent_matches_naive(tokens, dtype_name):
    dtype = DTYPES[dtype_name]
    inputs = make_inputs(batch=2, tokens=tokens, heads=2, value_heads=4, key_dim=32, value_dim=60, dtype=dtype)
    o_ref, s_ref, grads_ref = run_with_grads(naive_recurrent_kda, inputs)
    o, s, grads = run_with_grads(fused_recurrent_kda, inputs)
    assert rel_rms(o, o_ref) < TOLERANCE[dtype] and rel_rms(s, s_ref) < TOLERANCE[dtype]
    assert all(rel_rms(grads[n], grads_ref[n]) < GRAD_TOLERANCE[dtype] for n in INPUT_NAMES)


def test_batch_rows_are_independent():
    inputs = make_inputs(batch=3, tokens=33, key_dim=32, value_dim=32)
    o, s = chunk_kda(**inputs, output_final_state=True, chunk_size=16)
    for row in range(3):
        single = {name: t[row : row + 1] for name, t in inputs.items()}
        o_row, s_row = naive_recurrent_kda(**single, output_final_state=True)
        assert rel_rms(o[row : row + 1], o_row) < 1e-12 and rel_rms(s[row : row + 1], s_row) < 1e-12


@pytest.mark.parametrize("case", _FAST_CASES[:6], ids=[_case_id(*c) for c in _FAST_CASES[:6]])
def test_tuned_chunk_equals_naive_chunk_equals_token_loop(case):
    """The readable chunk reference computes the tuned chunk form's result, and both the token loop's."""
    tokens, key_dim, value_dim, dtype_name, chunk_size = case
    dtype = DTYPES[dtype_name]
    inputs = make_inputs(
        tokens=tokens,
        heads=2,
        value_heads=4,
        key_dim=key_dim,
        value_dim=value_dim,
        dtype=dtype,
        seed=tokens,
        gate="kimi",
    )
    o_loop, s_loop, grads_loop = run_with_grads(naive_recurrent_kda, inputs, use_qk_l2norm_in_kernel=True)
    o_naive, s_naive, grads_naive = run_with_grads(
        naive_chunk_kda, inputs, chunk_size=chunk_size, use_qk_l2norm_in_kernel=True
    )
    o_tuned, s_tuned = chunk_kda(**inputs, chunk_size=chunk_size, output_final_state=True, use_qk_l2norm_in_kernel=True)
    for o, s in ((o_naive, s_naive), (o_tuned, s_tuned)):
        assert rel_rms(o, o_loop) < TOLERANCE[dtype] and rel_rms(s, s_loop) < TOLERANCE[dtype]
    for name in INPUT_NAMES:
        assert rel_rms(grads_naive[name], grads_loop[name]) < GRAD_TOLERANCE[dtype], name


def test_naive_chunk_handles_packed_sequences_and_a_short_last_chunk():
    lengths = [5, 16, 40]
    offsets = torch.tensor([0, *lengths]).cumsum(0)
    inputs = make_inputs(tokens=int(offsets[-1]), num_states=len(lengths))
    o_loop, s_loop = naive_recurrent_kda(**inputs, cu_seqlens=offsets, output_final_state=True)
    o, s = naive_chunk_kda(**inputs, cu_seqlens=offsets, output_final_state=True, chunk_size=16)
    assert rel_rms(o, o_loop) < 1e-12 and rel_rms(s, s_loop) < 1e-12


@pytest.mark.parametrize("rule", ["l2_normalize", "prepare_inputs"])
def test_the_references_do_not_share_the_fast_forms_preparation(rule, monkeypatch):
    """A mistake in the preparation the fast forms share must show up against the references:
    with it broken, chunk_kda changes and the token loop and the naive chunk form do not."""
    import kdalib.ops._prepare as prepare

    inputs = make_inputs(tokens=40, heads=2, value_heads=4)
    kwargs = dict(use_qk_l2norm_in_kernel=True, output_final_state=True)
    before = [op(**inputs, **kwargs)[0] for op in (naive_recurrent_kda, naive_chunk_kda, chunk_kda)]
    if rule == "l2_normalize":
        monkeypatch.setattr(prepare, "l2_normalize", lambda x, eps=1e-6: x)
    else:
        original = prepare.prepare_inputs
        monkeypatch.setattr(
            prepare, "prepare_inputs", lambda q, k, v, *rest, **kw: original(q, k, v * 1.5, *rest, **kw)
        )
        monkeypatch.setattr("kdalib.ops.chunk.prepare_inputs", prepare.prepare_inputs)
    after = [op(**inputs, **kwargs)[0] for op in (naive_recurrent_kda, naive_chunk_kda, chunk_kda)]
    assert torch.equal(after[0], before[0]) and torch.equal(after[1], before[1])
    assert rel_rms(after[2], after[0]) > 1e-3

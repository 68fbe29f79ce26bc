"""chunk_kda and fused_recurrent_kda against the naive token loop: outputs, final state, gradients."""

from __future__ import annotations

import itertools

import pytest
import torch
from kda_test_utils import GRAD_TOLERANCE, INPUT_NAMES, TOLERANCE, make_inputs, rel_rms, run_with_grads

from kdalib.ops import chunk_kda, fused_recurrent_kda, naive_recurrent_kda

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
    inputs = make_inputs(tokens=tokens, key_dim=key_dim, value_dim=value_dim, dtype=dtype,
                         seed=tokens + key_dim + value_dim, **problem)
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
    normalized = dict(inputs, q=torch.nn.functional.normalize(inputs["q"], dim=-1, eps=0.0),
                      k=torch.nn.functional.normalize(inputs["k"], dim=-1, eps=0.0))
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

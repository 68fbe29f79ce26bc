"""Numerics: extreme gates, half-precision inputs, gradcheck, and the forget gate."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from kda_test_utils import INPUT_NAMES, cpu_operators, make_inputs, rel_rms, run_with_grads

from kdalib.ops import chunk_kda, fused_recurrent_kda, kda_gate, naive_recurrent_kda

OPERATORS = cpu_operators()
TRAINABLE = cpu_operators(autograd=True)


@pytest.mark.parametrize("op_name", TRAINABLE)
@pytest.mark.parametrize("gate", ["kimi", -1000.0, -30.0], ids=["kimi-gate-200", "g-1000", "g-30"])
def test_extreme_gates_give_finite_outputs_and_gradients(op_name, gate):
    inputs = make_inputs(tokens=97, heads=2, value_heads=4, key_dim=32, value_dim=32, dtype=torch.float32, gate=gate)
    o, s, grads = run_with_grads(TRAINABLE[op_name], inputs)
    assert torch.isfinite(o).all() and torch.isfinite(s).all()
    for name in INPUT_NAMES:
        assert torch.isfinite(grads[name]).all(), name


def test_kimi_gate_chunk_matches_oracle_through_the_gate():
    """Gradients reach the raw gate and A_log through kda_gate with exp(A_log) up to 200."""
    torch.manual_seed(0)
    base = make_inputs(tokens=70, heads=2, key_dim=32, value_dim=32)
    raw = torch.randn(1, 70, 2, 32, dtype=torch.float64, requires_grad=True)
    a_log = torch.tensor([math.log(200.0), 0.0], dtype=torch.float64, requires_grad=True)
    results = []
    for op in (naive_recurrent_kda, chunk_kda):
        g = kda_gate(raw, a_log)
        o, _ = op(**dict(base, g=g))
        grads = torch.autograd.grad(o.square().sum(), (raw, a_log))
        assert all(torch.isfinite(t).all() for t in grads)
        results.append((o, *grads))
    for reference, actual in zip(*results):
        assert rel_rms(actual, reference) < 1e-11
    assert kda_gate(raw, a_log).min() < -100  # the gate really is extreme


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
@pytest.mark.parametrize("op_name", sorted(set(OPERATORS) - {"naive"}))
def test_half_inputs_keep_float32_state(dtype, op_name):
    inputs = make_inputs(tokens=100, key_dim=64, value_dim=32, gate="kimi")
    o_ref, s_ref = naive_recurrent_kda(**inputs, output_final_state=True)
    half = {name: t.to(dtype) for name, t in inputs.items()}
    half["initial_state"] = inputs["initial_state"].float()
    o, s = OPERATORS[op_name](**half, output_final_state=True)
    assert o.dtype == dtype and s.dtype == torch.float32
    # Error is set by rounding the inputs to 8/11 bits, not by the accumulation.
    rounded = {name: t.to(dtype).double() for name, t in inputs.items()}
    o_rounded, _ = naive_recurrent_kda(**rounded)
    assert rel_rms(o.double(), o_rounded) < 1e-2
    assert rel_rms(s, s_ref) < 5e-2


@pytest.mark.parametrize("chunk_size", [16, 32])
def test_chunk_gradcheck(chunk_size):
    inputs = make_inputs(tokens=35, heads=1, value_heads=2, key_dim=4, value_dim=3, gate="kimi")
    names = list(INPUT_NAMES)

    def fn(*tensors):
        o, s = chunk_kda(**dict(zip(names, tensors)), output_final_state=True, chunk_size=chunk_size)
        return o, s

    leaves = [inputs[n].clone().requires_grad_(True) for n in names]
    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-7, fast_mode=True)


def test_fused_recurrent_gradcheck_with_packing():
    inputs = make_inputs(tokens=7, heads=1, value_heads=2, key_dim=3, value_dim=2, num_states=3)
    names = list(INPUT_NAMES)
    offsets = torch.tensor([0, 2, 3, 7])

    def fn(*tensors):
        return fused_recurrent_kda(
            **dict(zip(names, tensors)), output_final_state=True, cu_seqlens=offsets, use_qk_l2norm_in_kernel=True
        )

    leaves = [inputs[n].clone().requires_grad_(True) for n in names]
    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-7)


class TestKdaGate:
    def test_softplus_form_matches_formula(self):
        raw = torch.randn(2, 5, 3, 4)
        a_log, bias = torch.randn(3), torch.randn(12)
        expected = -a_log.exp()[:, None] * F.softplus(raw + bias.view(3, 4))
        g = kda_gate(raw, a_log, bias)
        assert g.dtype == torch.float32 and torch.allclose(g, expected)
        assert (g <= 0).all()

    def test_lower_bound_form_stays_in_range(self):
        raw = torch.randn(4, 3, 8, dtype=torch.bfloat16) * 50
        g = kda_gate(raw, torch.full((3,), 5.0), torch.zeros(3, 8), lower_bound=-5.0)
        assert g.dtype == torch.float32
        assert (g <= 0).all() and (g >= -5.0).all()
        expected = -5.0 * torch.sigmoid(math.exp(5.0) * raw.float())
        assert torch.allclose(g, expected)

    def test_float64_stays_float64(self):
        assert kda_gate(torch.randn(2, 3, 4, dtype=torch.float64), torch.zeros(3)).dtype == torch.float64

    @pytest.mark.parametrize(
        "kwargs,match",
        [
            (dict(g_raw=torch.randn(2, 3, 4), A_log=torch.zeros(4)), "A_log"),
            (dict(g_raw=torch.randn(2, 3, 4), A_log=torch.zeros(3), dt_bias=torch.zeros(11)), "dt_bias"),
            (dict(g_raw=torch.randn(2, 3, 4), A_log=torch.zeros(3), dt_bias=torch.zeros(4, 3)), "dt_bias"),
            (dict(g_raw=torch.randn(2, 3, 4), A_log=torch.zeros(3), lower_bound=5.0), "lower_bound"),
            (dict(g_raw=torch.ones(2, 3, 4, dtype=torch.long), A_log=torch.zeros(3)), "g_raw"),
        ],
        ids=["A_log-shape", "dt_bias-shape", "dt_bias-transposed", "positive-lower-bound", "integer-g_raw"],
    )
    def test_bad_arguments(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            kda_gate(**kwargs)


class TestChunkBuildingBlocks:
    """The two pieces of chunk_kda that replace textbook operations, against those operations."""

    @pytest.mark.parametrize("size", [1, 2, 16, 32, 64])
    def test_unit_lower_inverse_matches_triangular_solve(self, size):
        from kdalib.ops.chunk import unit_lower_inverse

        generator = torch.Generator().manual_seed(size)
        strict = torch.randn(3, 2, size, size, generator=generator, dtype=torch.float64).tril(-1) / size
        garbage_above = torch.randn(3, 2, size, size, generator=generator, dtype=torch.float64).triu()
        identity = torch.eye(size, dtype=torch.float64)
        expected = torch.linalg.solve_triangular(identity + strict, identity.expand(3, 2, size, size), upper=False)
        actual = unit_lower_inverse(strict + garbage_above)  # only the strict lower part may be read
        assert torch.allclose(actual, expected, rtol=1e-12, atol=1e-13)

    @pytest.mark.parametrize("size", [16, 32, 64])
    def test_intra_chunk_scores_match_the_direct_sum(self, size):
        from kdalib.ops.chunk import intra_chunk_scores

        inputs = make_inputs(tokens=size, key_dim=8, value_dim=4, gate="kimi", seed=size)
        q, k, g = (inputs[n][0].transpose(0, 1) for n in ("q", "k", "g"))  # [H, C, K]
        gamma = g.cumsum(-2)
        scores_qk, scores_kk, decay_in, decay_out = intra_chunk_scores(q, k, g)
        exponent = gamma.unsqueeze(-2) - gamma.unsqueeze(-3)  # [H, i, j, K]
        lower = torch.ones(size, size, dtype=torch.bool).tril()
        decay = exponent.masked_fill(~lower.unsqueeze(-1), float("-inf")).exp()
        expected_qk = torch.einsum("hik,hjk,hijk->hij", q, k, decay)
        expected_kk = torch.einsum("hik,hjk,hijk->hij", k, k, decay) * (~torch.eye(size, dtype=torch.bool))
        assert torch.allclose(scores_qk, expected_qk, rtol=1e-12, atol=1e-14)
        assert torch.allclose(scores_kk, expected_kk, rtol=1e-12, atol=1e-14)
        # The reference subtracts cumulative sums near -1e4, so it is the less exact side here.
        assert torch.allclose(decay_in, gamma.exp(), rtol=1e-9, atol=1e-300)
        assert torch.allclose(decay_out, (gamma[..., -1:, :] - gamma).exp(), rtol=1e-9, atol=1e-300)


class TestStateScan:
    """The inter-chunk scan's three paths (CPU readout in the loop, batched readout, autograd) agree."""

    def test_readout_paths_agree_with_the_explicit_recurrence(self):
        from kdalib.ops.chunk import scan_chunk_states

        gen = torch.Generator().manual_seed(3)
        chunks, rows, size, key_dim, value_dim = 5, 3, 8, 6, 4
        w, keys_out, query_in = (
            torch.randn(chunks, rows, size, key_dim, generator=gen, dtype=torch.float64) for _ in range(3)
        )
        u = torch.randn(chunks, rows, size, value_dim, generator=gen, dtype=torch.float64)
        decay_last = torch.rand(chunks, rows, key_dim, 1, generator=gen, dtype=torch.float64)
        state = torch.randn(rows, key_dim, value_dim, generator=gen, dtype=torch.float64)

        expected_inter, expected_v_new, current = [], [], state
        for c in range(chunks):  # the recurrence written out: read, correct, decay and write
            expected_inter.append(query_in[c] @ current)
            v_new = u[c] - w[c] @ current
            expected_v_new.append(v_new)
            current = decay_last[c] * current + keys_out[c].transpose(-1, -2) @ v_new
        expected = (torch.stack(expected_inter), torch.stack(expected_v_new), current)

        state_copy = state.clone()
        for read_in_loop in (True, False):
            got = scan_chunk_states(w, u, keys_out, decay_last, query_in, state, read_in_loop=read_in_loop)
            for actual, reference in zip(got, expected):
                torch.testing.assert_close(actual, reference, rtol=1e-12, atol=1e-12)
        assert torch.equal(state, state_copy)  # the caller's state is never written
        got = scan_chunk_states(w, u, keys_out, decay_last, query_in, state.requires_grad_(True))
        for actual, reference in zip(got, expected):
            torch.testing.assert_close(actual.detach(), reference, rtol=1e-12, atol=1e-12)

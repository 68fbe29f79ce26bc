"""Sequence semantics: packing, carrying state across calls, causality, decode after prefill, dispatch."""

from __future__ import annotations

import pytest
import torch
from kda_test_utils import cpu_operators, make_inputs, rel_rms

from kdalib.ops import chunk_kda, kda, naive_recurrent_kda
from kdalib.ops.registry import OPERATORS as REGISTRY

OPERATORS = cpu_operators()
LENGTHS = [1, 2, 3, 15, 16, 17, 40, 64, 65, 1, 7]


def _slice_tokens(inputs, start, end):
    return {name: (t if name == "initial_state" else t[:, start:end]) for name, t in inputs.items()}


@pytest.mark.parametrize("op_name", OPERATORS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_packed_equals_per_sequence(op_name, dtype):
    op = OPERATORS[op_name]
    offsets = torch.tensor([0] + LENGTHS).cumsum(0)
    inputs = make_inputs(
        tokens=int(offsets[-1]),
        heads=2,
        value_heads=4,
        key_dim=32,
        value_dim=60,
        dtype=dtype,
        num_states=len(LENGTHS),
        gate="kimi",
    )
    o, s = op(**inputs, output_final_state=True, cu_seqlens=offsets)
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    for index, (start, end) in enumerate(zip(offsets.tolist(), offsets.tolist()[1:])):
        part = _slice_tokens(inputs, start, end)
        part["initial_state"] = inputs["initial_state"][index : index + 1]
        o_ref, s_ref = naive_recurrent_kda(**part, output_final_state=True)
        assert rel_rms(o[:, start:end], o_ref) < tolerance, (index, start, end)
        assert rel_rms(s[index : index + 1], s_ref) < tolerance, index


@pytest.mark.parametrize("chunk_size", [16, 64])
@pytest.mark.parametrize("split", [1, 16, 37, 64, 99])
def test_split_and_carry_state_equals_one_pass(split, chunk_size):
    inputs = make_inputs(tokens=130, key_dim=32, value_dim=32, gate="kimi")
    o_full, s_full = chunk_kda(**inputs, output_final_state=True, chunk_size=chunk_size)
    o_first, s_mid = chunk_kda(**_slice_tokens(inputs, 0, split), output_final_state=True, chunk_size=chunk_size)
    rest = dict(_slice_tokens(inputs, split, 130), initial_state=s_mid)
    o_second, s_end = chunk_kda(**rest, output_final_state=True, chunk_size=chunk_size)
    assert rel_rms(torch.cat([o_first, o_second], dim=1), o_full) < 1e-12
    assert rel_rms(s_end, s_full) < 1e-12


@pytest.mark.parametrize("op_name", ["chunk", "fused_recurrent"])
@pytest.mark.parametrize("cut", [1, 31, 64, 90])
def test_prefix_invariance(op_name, cut):
    """Changing tokens at or after ``cut`` leaves every output before ``cut`` bit-for-bit alone."""
    op = OPERATORS[op_name]
    inputs = make_inputs(tokens=128, key_dim=32, value_dim=32, dtype=torch.float32)
    changed = {name: t.clone() for name, t in inputs.items()}
    for name in ("q", "k", "v", "g", "beta"):
        changed[name][:, cut:] = torch.rand_like(changed[name][:, cut:]) - 1.0
    o, _ = op(**inputs)
    o_changed, _ = op(**changed)
    assert torch.equal(o[:, :cut], o_changed[:, :cut])
    assert not torch.equal(o[:, cut:], o_changed[:, cut:])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_decode_steps_after_chunk_prefill(dtype):
    prompt, steps = 75, 6
    inputs = make_inputs(
        batch=2, tokens=prompt + steps, heads=2, value_heads=4, key_dim=32, value_dim=32, dtype=dtype, gate="kimi"
    )
    o_full, s_full = chunk_kda(**inputs, output_final_state=True)
    _, state = chunk_kda(**_slice_tokens(inputs, 0, prompt), output_final_state=True)
    outputs = []
    for t in range(prompt, prompt + steps):
        step = dict(_slice_tokens(inputs, t, t + 1), initial_state=state)
        o_t, state = kda(**step, output_final_state=True)
        outputs.append(o_t)
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    assert rel_rms(torch.cat(outputs, dim=1), o_full[:, prompt:]) < tolerance
    assert rel_rms(state, s_full) < tolerance


def _recording_registry(monkeypatch, calls):
    """Makes every registered operator record its name (and chunk_size) instead of running."""
    import kdalib.ops.registry as registry

    def record(op, *args):
        calls.append((op.name, args[-1] if op.chunked else None))
        return None, None

    monkeypatch.setattr(registry.Operator, "run", record)


def test_dispatcher_picks_recurrent_for_decode_and_chunk_for_prefill(monkeypatch):
    calls = []
    _recording_registry(monkeypatch, calls)
    one = make_inputs(batch=3, tokens=1)
    many = make_inputs(tokens=9)
    kda(**one)
    kda(**many, chunk_size=32)
    kda(**make_inputs(tokens=3, num_states=3), cu_seqlens=torch.tensor([0, 1, 2, 3]))
    kda(**many, backend="fused_recurrent")
    kda(**one, backend="chunk")
    kda(**many, backend="naive_chunk", chunk_size=16)
    assert calls == [
        ("fused_recurrent", None),
        ("chunk", 32),
        ("fused_recurrent", None),
        ("fused_recurrent", None),
        ("chunk", 64),
        ("naive_chunk", 16),
    ]


@pytest.mark.parametrize("backend", sorted(OPERATORS))
def test_every_cpu_backend_agrees_with_the_oracle(backend):
    inputs = make_inputs(tokens=20, heads=2, value_heads=4)
    o_ref, s_ref = naive_recurrent_kda(**inputs, output_final_state=True)
    o, s = kda(**inputs, backend=backend, output_final_state=True, chunk_size=16)
    assert rel_rms(o, o_ref) < 1e-12 and rel_rms(s, s_ref) < 1e-12


def test_dispatcher_rejects_unknown_backend_and_cuda_only_operators_on_the_cpu():
    inputs = make_inputs(tokens=4)
    with pytest.raises(ValueError, match="backend: expected one of auto, naive"):
        kda(**inputs, backend="no-such-operator")
    for name, operator in REGISTRY.items():
        if not operator.supports("cpu"):
            with pytest.raises(RuntimeError, match=f"backend={name!r}"):
                kda(**inputs, backend=name)


def test_dispatcher_refuses_gradients_through_an_inference_only_operator(monkeypatch):
    import dataclasses

    import kdalib.ops.registry as registry

    inference_only = dataclasses.replace(registry.OPERATORS["chunk"], name="chunk", autograd=False)
    monkeypatch.setitem(registry.OPERATORS, "chunk", inference_only)
    inputs = {name: t.requires_grad_(True) for name, t in make_inputs(tokens=4).items()}
    with pytest.raises(RuntimeError, match="computes no gradients"):
        kda(**inputs, backend="chunk")
    with torch.no_grad():
        o, _ = kda(**inputs, backend="chunk")
    assert o.shape == (1, 4, 2, 32)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_chunk_on_cuda_matches_cpu_oracle(dtype):
    inputs = make_inputs(tokens=200, heads=2, value_heads=4, key_dim=64, value_dim=64, gate="kimi")
    o_ref, s_ref = naive_recurrent_kda(**inputs, output_final_state=True)
    cuda = {name: t.to("cuda", torch.float32 if name == "initial_state" else dtype) for name, t in inputs.items()}
    o, s = chunk_kda(**cuda, output_final_state=True)
    assert o.dtype == dtype and s.dtype == torch.float32
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    assert rel_rms(o.cpu(), o_ref) < tolerance and rel_rms(s.cpu(), s_ref) < tolerance


@pytest.mark.parametrize("op_name", sorted(cpu_operators(autograd=True)))
def test_inference_mode_leaves_initial_state_alone_and_matches_autograd(op_name):
    """The no-grad fast paths update buffers in place; the caller's state must not be one of them."""
    op = OPERATORS[op_name]
    inputs = make_inputs(batch=2, tokens=21, key_dim=16, value_dim=8, dtype=torch.float32)
    saved = inputs["initial_state"].clone()
    with torch.no_grad():
        o_fast, s_fast = op(**inputs, output_final_state=True)
    assert torch.equal(inputs["initial_state"], saved)
    leaves = {name: t.clone().requires_grad_(True) for name, t in inputs.items()}
    o_tracked, s_tracked = op(**leaves, output_final_state=True)
    assert rel_rms(o_fast, o_tracked.detach()) < 1e-6 and rel_rms(s_fast, s_tracked.detach()) < 1e-6

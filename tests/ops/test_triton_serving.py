"""States inside a call in the Triton kernels: the chunked forward's boundary states (prefix
caching) and the decoding kernel's per-token states (the verify step of speculative decoding).

Without CUDA the kernels run in Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1).
"""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")

from kda_test_utils import kernel_inputs, packed_inputs, rel_rms  # noqa: E402

from kdalib.ops import chunk_kda, naive_recurrent_kda  # noqa: E402
from kdalib.ops.triton import triton_chunk_kda, triton_fused_recurrent_kda  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
NAMES = ("q", "k", "v", "g", "beta")


def _reference_states(inputs: dict, bounds: list[tuple[int, int, int]], every: int) -> torch.Tensor:
    """The float64 token loop's states after every ``every``-th token of each (start, length, row) sequence."""
    wide = {name: x.double() for name, x in inputs.items()}
    states = []
    for start, length, row in bounds:
        for end in range(every, length + 1, every):
            part = {name: wide[name][:, start : start + end] for name in NAMES}
            state = wide["initial_state"][row : row + 1]
            states.append(naive_recurrent_kda(**part, scale=0.25, initial_state=state, output_final_state=True)[1])
    return torch.cat(states)


def _row(inputs: dict, row: int) -> dict:
    return {name: x[row : row + 1] for name, x in inputs.items()}


@pytest.mark.parametrize("tokens", [64, 130], ids=lambda t: f"T{t}")
def test_chunk_kernel_states_match_the_token_loop(tokens):
    inputs = kernel_inputs(
        torch.float32, DEVICE, batch=2, tokens=tokens, heads=1, value_heads=2, key_dim=16, value_dim=16
    )
    o, final, states = triton_chunk_kda(**inputs, scale=0.25, output_final_state=True, states_every=64)
    o_plain, final_plain = triton_chunk_kda(**inputs, scale=0.25, output_final_state=True)
    assert torch.equal(o, o_plain) and torch.equal(final, final_plain)  # asking for states changes nothing else
    per_row = [(row * tokens, tokens, row) for row in range(2)]
    flat = {name: x.reshape(1, -1, *x.shape[2:]) if name != "initial_state" else x for name, x in inputs.items()}
    expected = _reference_states(flat, per_row, 64)
    assert states.dtype == torch.float32 and states.shape == expected.shape
    assert rel_rms(states, expected) < 1e-5


def test_chunk_kernel_resumes_exactly_from_its_states():
    """Each returned state, passed back as the initial state of the rest, reproduces the rest of
    the one call bit for bit (the chunks line up and the state is the float32 one the call carried)."""
    inputs = kernel_inputs(torch.float32, DEVICE, batch=1, tokens=200, heads=1, key_dim=16, value_dim=16, gate="kimi")
    o, final, states = triton_chunk_kda(**inputs, scale=0.25, output_final_state=True, states_every=64)
    for j, state in enumerate(states.split(1)):
        start = (j + 1) * 64
        rest = {name: inputs[name][:, start:] for name in NAMES}
        o_rest, final_rest = triton_chunk_kda(**rest, scale=0.25, initial_state=state, output_final_state=True)
        assert torch.equal(o_rest, o[:, start:]) and torch.equal(final_rest, final)


def test_chunk_kernel_states_of_packed_sequences_in_bfloat16():
    lengths = [70, 20, 128, 150]
    inputs, cu = packed_inputs(lengths, "logsigmoid", torch.bfloat16, DEVICE, heads=1, key_dim=16, value_dim=16)
    o, final, states = chunk_kda(
        **inputs,
        cu_seqlens=cu,
        output_final_state=True,
        use_triton=True,
        output_states_every=64,
        states_dtype=torch.bfloat16,
        use_qk_l2norm_in_kernel=True,
    )
    _, _, wide = chunk_kda(
        **inputs, cu_seqlens=cu, use_triton=True, output_states_every=64, use_qk_l2norm_in_kernel=True
    )
    assert states.dtype == torch.bfloat16 and wide.dtype == torch.float32 and states.shape[0] == 1 + 2 + 2
    torch.testing.assert_close(states, wide.to(torch.bfloat16), rtol=0, atol=0)  # rounded from the float32 state
    reference = chunk_kda(
        **{name: x.double() for name, x in inputs.items()},
        cu_seqlens=cu,
        output_states_every=64,
        use_qk_l2norm_in_kernel=True,
    )[2]
    assert rel_rms(wide, reference) < 5e-3


def test_chunk_kernel_rejects_intervals_off_its_chunks():
    inputs = kernel_inputs(torch.float32, DEVICE, batch=1, tokens=64, heads=1, key_dim=16, value_dim=16)
    with pytest.raises(RuntimeError, match="keep states every 64 tokens"):
        chunk_kda(**inputs, use_triton=True, chunk_size=32, output_states_every=32)
    with pytest.raises(ValueError, match="multiple of 64"):
        triton_chunk_kda(**inputs, scale=0.25, states_every=96)
    trained = {name: x.requires_grad_(True) for name, x in inputs.items()}
    with pytest.raises(RuntimeError, match="returns no boundary states"):
        chunk_kda(**trained, use_triton=True, output_states_every=64)


@pytest.mark.parametrize("draft", [1, 4, 8])
def test_decoding_kernel_verify_step_is_k_single_steps(draft):
    inputs = kernel_inputs(
        torch.float32, DEVICE, batch=2, tokens=draft, heads=2, value_heads=4, key_dim=16, value_dim=16
    )
    o, final, states = triton_fused_recurrent_kda(**inputs, scale=0.25, output_final_state=True, states_every=1)
    states = states.view(2, draft, 4, 16, 16)
    state = inputs["initial_state"]
    for t in range(draft):
        step = {name: inputs[name][:, t : t + 1] for name in NAMES}
        o_t, state = triton_fused_recurrent_kda(**step, scale=0.25, initial_state=state, output_final_state=True)
        assert torch.equal(o[:, t : t + 1], o_t) and torch.equal(states[:, t], state)
    assert torch.equal(final, state)


def test_decoding_kernel_states_of_packed_sequences():
    lengths = [3, 1, 5]
    inputs, cu = packed_inputs(lengths, "logsigmoid", torch.float32, DEVICE, heads=1, key_dim=16, value_dim=16)
    _, _, states = triton_fused_recurrent_kda(
        **inputs, scale=0.25, cu_seqlens=cu, states_every=2, states_dtype=torch.bfloat16
    )
    bounds = [(start, n, row) for row, (start, n) in enumerate(zip(cu[:-1].tolist(), lengths))]
    expected = _reference_states(inputs, bounds, 2)
    assert states.dtype == torch.bfloat16 and states.shape == expected.shape == (1 + 0 + 2, 1, 16, 16)
    assert rel_rms(states, expected) < 5e-3

"""States inside a call (``output_states_every``) in the PyTorch forms: prefix caching for
``chunk_kda`` and the speculative-decoding verify step for ``fused_recurrent_kda``, against the
float64 token loop (notes/kda.md, section ``kda-serving``)."""

from __future__ import annotations

import pytest
import torch
from kda_test_utils import make_inputs

from kdalib.ops import chunk_kda, fused_recurrent_kda, naive_recurrent_kda

NAMES = ("q", "k", "v", "g", "beta")
EXACT = 1e-12


def _prefix_state(inputs: dict, start: int, end: int, state: torch.Tensor) -> torch.Tensor:
    """The token loop's state after tokens ``start .. end - 1`` of a one-sequence problem."""
    part = {name: inputs[name][:, start:end] for name in NAMES}
    return naive_recurrent_kda(**part, initial_state=state, output_final_state=True)[1]


def _packed(lengths: list[int], seed: int = 0, **shape):
    inputs = make_inputs(batch=1, tokens=sum(lengths), num_states=len(lengths), seed=seed, **shape)
    return inputs, torch.tensor([0, *lengths]).cumsum(0)


@pytest.mark.parametrize("chunk_size,every", [(64, 64), (32, 64), (16, 48), (16, 16)])
@pytest.mark.parametrize("tokens", [40, 64, 130, 192])
def test_chunk_states_are_the_token_loop_states_at_each_boundary(chunk_size, every, tokens):
    inputs = make_inputs(batch=2, tokens=tokens, heads=2, value_heads=4, key_dim=16, value_dim=8)
    o, final, states = chunk_kda(**inputs, output_final_state=True, chunk_size=chunk_size, output_states_every=every)
    boundaries = tokens // every
    assert states.shape == (2 * boundaries, 4, 16, 8) and states.dtype == torch.float64
    per_sequence = states.view(2, boundaries, 4, 16, 8)
    for b in range(2):
        one = {name: inputs[name][b : b + 1] for name in NAMES}
        for j in range(boundaries):
            expected = _prefix_state(one, 0, (j + 1) * every, inputs["initial_state"][b : b + 1])
            torch.testing.assert_close(per_sequence[b, j : j + 1], expected, rtol=0, atol=EXACT)


@pytest.mark.parametrize("form", ["chunk", "recurrent"])
def test_resuming_from_every_boundary_reproduces_the_rest_of_the_prefill(form):
    """Split the prefill at each returned boundary: the rest, run from that state, gives the one
    call's outputs and final state."""
    inputs = make_inputs(batch=2, tokens=200, heads=2, key_dim=16, value_dim=16, gate="kimi")
    op = chunk_kda if form == "chunk" else fused_recurrent_kda
    o, final, states = op(**inputs, output_final_state=True, output_states_every=64)
    for j, state in enumerate(states.view(2, 3, 2, 16, 16).unbind(1)):
        start = (j + 1) * 64
        rest = {name: inputs[name][:, start:] for name in NAMES}
        o_rest, final_rest = op(**rest, initial_state=state, output_final_state=True)
        torch.testing.assert_close(o_rest, o[:, start:], rtol=0, atol=EXACT)
        torch.testing.assert_close(final_rest, final, rtol=0, atol=EXACT)


@pytest.mark.parametrize("form", ["chunk", "recurrent"])
def test_packed_sequences_keep_their_own_boundaries(form):
    lengths = [70, 130, 64, 20, 200]
    inputs, cu = _packed(lengths, heads=1, value_heads=2, key_dim=16, value_dim=8)
    op = chunk_kda if form == "chunk" else fused_recurrent_kda
    o, final, states = op(**inputs, cu_seqlens=cu, output_final_state=True, output_states_every=64)
    counts = [n // 64 for n in lengths]
    assert states.shape[0] == sum(counts) == 7
    row = 0
    for n, (start, length) in enumerate(zip(cu[:-1].tolist(), lengths)):
        one = {name: inputs[name][:, start : start + length] for name in NAMES}
        for j in range(counts[n]):
            expected = _prefix_state(one, 0, (j + 1) * 64, inputs["initial_state"][n : n + 1])
            torch.testing.assert_close(states[row : row + 1], expected, rtol=0, atol=EXACT)
            row += 1
    o_plain, final_plain = op(**inputs, cu_seqlens=cu, output_final_state=True)
    torch.testing.assert_close(o, o_plain, rtol=0, atol=0)
    torch.testing.assert_close(final, final_plain, rtol=0, atol=0)


def test_sequences_shorter_than_the_interval_give_no_states():
    inputs = make_inputs(batch=3, tokens=63, heads=1, key_dim=8, value_dim=8)
    _, _, states = chunk_kda(**inputs, output_states_every=64)
    assert states.shape == (0, 1, 8, 8)


@pytest.mark.parametrize("states_dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_states_in_the_dtype_asked_for(states_dtype):
    inputs = make_inputs(batch=1, tokens=128, heads=1, key_dim=16, value_dim=16, dtype=torch.float32)
    _, _, wide = chunk_kda(**inputs, output_states_every=64)
    _, _, states = chunk_kda(**inputs, output_states_every=64, states_dtype=states_dtype)
    assert wide.dtype == torch.float32 and states.dtype == states_dtype
    torch.testing.assert_close(states, wide.to(states_dtype), rtol=0, atol=0)


@pytest.mark.parametrize("draft", [2, 4, 8])
def test_verify_step_is_k_single_steps(draft):
    """k draft tokens in one call give the k outputs and the k states of k decode steps, so the
    state after any accepted prefix is a lookup."""
    inputs = make_inputs(batch=3, tokens=draft, heads=2, value_heads=4, key_dim=16, value_dim=8, gate="kimi")
    o, final, states = fused_recurrent_kda(**inputs, output_final_state=True, output_states_every=1)
    states = states.view(3, draft, 4, 16, 8)
    state = inputs["initial_state"]
    for t in range(draft):
        step = {name: inputs[name][:, t : t + 1] for name in NAMES}
        o_t, state = naive_recurrent_kda(**step, initial_state=state, output_final_state=True)
        torch.testing.assert_close(o[:, t : t + 1], o_t, rtol=0, atol=EXACT)
        torch.testing.assert_close(states[:, t], state, rtol=0, atol=EXACT)
    torch.testing.assert_close(final, states[:, -1], rtol=0, atol=0)


def test_gradients_flow_through_the_chunk_states():
    inputs = make_inputs(batch=1, tokens=40, heads=1, key_dim=4, value_dim=4)
    leaves = {name: x.clone().requires_grad_(True) for name, x in inputs.items()}

    def states_of(q, k, v, g, beta, initial_state):
        return chunk_kda(q, k, v, g, beta, initial_state=initial_state, chunk_size=16, output_states_every=16)[2]

    assert torch.autograd.gradcheck(states_of, tuple(leaves.values()))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(output_states_every=0), "output_states_every: expected a positive int multiple of 64"),
        (dict(output_states_every=-64), "output_states_every: expected a positive int multiple of 64"),
        (dict(output_states_every=100), "output_states_every: expected a positive int multiple of 64"),
        (dict(output_states_every=32), "output_states_every: expected a positive int multiple of 64"),
        (dict(output_states_every=64.0), "output_states_every: expected a positive int"),
        (dict(output_states_every=True), "output_states_every: expected a positive int"),
        (dict(output_states_every=16, chunk_size=32), "multiple of 32"),
        (dict(output_states_every=64, states_dtype=torch.int32), "states_dtype: expected one of"),
        (dict(output_states_every=64, states_dtype="bfloat16"), "states_dtype: expected one of"),
        (dict(states_dtype=torch.float32), "states_dtype: only meaningful with output_states_every"),
    ],
)
def test_chunk_state_requests_are_checked(kwargs, message):
    inputs = make_inputs(batch=1, tokens=8, heads=1, key_dim=4, value_dim=4)
    with pytest.raises(ValueError, match=message):
        chunk_kda(**inputs, **kwargs)


@pytest.mark.parametrize("every", [0, -1, 1.5, None])
def test_recurrent_state_requests_are_checked(every):
    inputs = make_inputs(batch=1, tokens=3, heads=1, key_dim=4, value_dim=4)
    if every is None:
        with pytest.raises(ValueError, match="states_dtype: only meaningful"):
            fused_recurrent_kda(**inputs, states_dtype=torch.bfloat16)
        return
    with pytest.raises(ValueError, match="output_states_every: expected a positive int multiple of 1, got"):
        fused_recurrent_kda(**inputs, output_states_every=every)

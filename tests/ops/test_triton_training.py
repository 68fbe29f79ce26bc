"""The token-layout training path (kdalib.ops.triton.training) in Triton's CPU interpreter.

* The chunk-local kernel in the backward's chunk layout and the three backward kernels, in float64,
  against the PyTorch chunk form (exact to rounding): packed sequences that start and end inside
  chunks, shared key heads (GVA), the in-kernel L2 norm, mild, strong, Kimi and g = -1000 gates.
* Gates at -inf and above 0: finite, and what the clamp says.
* 16-bit inputs end to end against float64 autograd of the token loop.
"""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")

from kda_test_utils import INPUT_NAMES, kernel_inputs, packed_inputs, rel_rms, run_with_grads  # noqa: E402

from kdalib.ops import chunk_kda, naive_recurrent_kda  # noqa: E402
from kdalib.ops._validate import validate_call  # noqa: E402
from kdalib.ops.chunk import chunk_local_terms_and_factors, chunk_rows  # noqa: E402
from kdalib.ops.triton.chunk import ChunkTable, launch_chunk_local  # noqa: E402
from kdalib.ops.triton.runtime import CHUNK  # noqa: E402
from kdalib.ops.triton.training import chunk_kda_backward  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
LENGTHS = [1, 63, 64, 65, 130]
# the training tests' bar for 16-bit inputs (relative RMS against float64)
HALF_TOLERANCE = 1e-2
GATES = {"mild": "logsigmoid", "strong": -6.0, "kimi-A200": "kimi", "g-1000": -1000.0}


def _problem(gate, lengths=LENGTHS, heads=1, value_heads=2, key_dim=20, value_dim=24, dtype=torch.float64):
    inputs, cu_seqlens = packed_inputs(
        lengths, gate, dtype, DEVICE, heads=heads, value_heads=value_heads, key_dim=key_dim, value_dim=value_dim
    )
    if dtype == torch.float64:
        inputs["initial_state"] = inputs["initial_state"].double()
    return inputs, cu_seqlens


def _by_chunk(x: torch.Tensor, lengths, value_heads: int) -> torch.Tensor:
    """``[NC, N * HV, ...]`` (the PyTorch chunk form's rows) -> ``[chunks, HV, ...]`` (every
    sequence's own chunks in order, as the Triton chunk table lists them)."""
    parts = []
    for n, length in enumerate(lengths):
        for c in range(-(-length // CHUNK)):
            parts.append(x[c, n * value_heads : (n + 1) * value_heads])
    return torch.stack(parts)


@pytest.mark.parametrize("l2norm", [False, True], ids=["plain", "l2norm"])
@pytest.mark.parametrize("gate", list(GATES.values()), ids=list(GATES))
def test_local_terms_in_the_chunk_layout_match_the_pytorch_chunk_form(gate, l2norm):
    inputs, cu_seqlens = _problem(gate)
    q, k, v, g, beta = (inputs[name] for name in ("q", "k", "v", "g", "beta"))
    heads_v, key_dim, value_dim = v.shape[2], k.shape[3], v.shape[3]
    table = ChunkTable.of(1, q.shape[1], cu_seqlens)
    chunks = table.count
    w, kg, qg = (q.new_empty(chunks, heads_v, CHUNK, key_dim) for _ in range(3))
    u = q.new_empty(chunks, heads_v, CHUNK, value_dim)
    decay = q.new_empty(chunks, heads_v, key_dim)
    scores, inverse, scores_kk = (q.new_empty(chunks, heads_v, CHUNK, CHUNK) for _ in range(3))
    outputs = (w, u, qg, kg, decay, scores, inverse, scores_kk)
    launch_chunk_local((q, k, v, g, beta), outputs, table, 1.0, (None, None, None), l2norm, "ieee", as_chunks=True)

    call = validate_call(q, k, v, g, beta, 1.0, None, False, l2norm, cu_seqlens, CHUNK)
    rows = chunk_rows(call, CHUNK)
    terms, inverse_ref, scores_kk_ref = chunk_local_terms_and_factors(rows.q, rows.k, rows.v, rows.g, rows.beta)
    w_ref, u_ref, kg_ref, decay_ref, qg_ref, scores_ref = terms
    expected = {
        "w": (w, w_ref),
        "u": (u, u_ref),
        "k_out": (kg, kg_ref),
        "decay": (decay, decay_ref.squeeze(-1)),
        "q_in": (qg, qg_ref),
        "scores": (scores, scores_ref),
        "inverse": (inverse.tril(), inverse_ref.tril()),
        "scores_kk": (scores_kk, scores_kk_ref),
    }
    for name, (mine, theirs) in expected.items():
        assert rel_rms(mine, _by_chunk(theirs, LENGTHS, heads_v)) < 1e-12, name


def _entering_states(inputs, cu_seqlens, lengths, **kwargs) -> torch.Tensor:
    """The state entering every chunk of every sequence, ``[chunks, HV, K, V]``, from the PyTorch
    chunk form's boundary states (float64)."""
    with torch.no_grad():
        _, _, boundary = chunk_kda(
            **inputs, cu_seqlens=cu_seqlens, use_triton=False, output_states_every=CHUNK, **kwargs
        )
    states, at = [], 0
    for n, length in enumerate(lengths):
        chunks = -(-length // CHUNK)
        states += [inputs["initial_state"][n]] + [boundary[at + c] for c in range(chunks - 1)]
        at += length // CHUNK
    return torch.stack(states)


def _kernel_grads(inputs, cu_seqlens, lengths, scale, l2norm, seed=1):
    """Gradients from :func:`chunk_kda_backward` (float64, IEEE products) for the cotangents that
    :func:`run_with_grads` draws."""
    states = _entering_states(inputs, cu_seqlens, lengths, scale=scale, use_qk_l2norm_in_kernel=l2norm)
    o, final = chunk_kda(
        **inputs, scale=scale, cu_seqlens=cu_seqlens, use_qk_l2norm_in_kernel=l2norm, output_final_state=True,
        use_triton=False,
    )  # fmt: skip
    generator = torch.Generator().manual_seed(seed)
    d_out = torch.randn(o.shape, generator=generator, dtype=torch.float64).to(o)
    d_final = torch.randn(final.shape, generator=generator, dtype=torch.float64).to(final)
    tensors = tuple(inputs[name].contiguous() for name in ("q", "k", "v", "g", "beta"))
    table = ChunkTable.of(1, tensors[0].shape[1], cu_seqlens)
    grads = chunk_kda_backward(tensors, states, d_out, d_final, table, scale, cu_seqlens, l2norm, True, "ieee")
    return dict(zip(INPUT_NAMES, grads))


@pytest.mark.parametrize(
    "gate,l2norm,heads",
    [("logsigmoid", False, 1), ("logsigmoid", True, 2), (-6.0, True, 1), ("kimi", False, 1), (-1000.0, True, 1)],
    ids=["mild-GVA", "mild-l2norm", "strong-l2norm-GVA", "kimi-A200-GVA", "g-1000-l2norm-GVA"],
)
def test_backward_kernels_match_float64_autograd_of_the_chunk_form(gate, l2norm, heads):
    """The recomputed terms, the reverse pass, the chunk-parallel gradients and the local backward
    with its L2-norm and clamp epilogue, against autograd of the PyTorch chunk form."""
    inputs, cu_seqlens = _problem(gate, heads=heads, value_heads=2)
    scale = 20**-0.5
    grads = _kernel_grads(inputs, cu_seqlens, LENGTHS, scale, l2norm)
    _, _, grads_ref = run_with_grads(
        lambda **kw: chunk_kda(**kw, use_triton=False),
        inputs,
        scale=scale,
        cu_seqlens=cu_seqlens,
        use_qk_l2norm_in_kernel=l2norm,
    )
    for name in INPUT_NAMES:
        mine, theirs = grads[name], grads_ref[name]
        assert torch.isfinite(mine).all(), name
        assert rel_rms(mine, theirs) < 1e-10, name


def test_gates_past_the_floor_and_above_zero_give_what_the_clamp_says():
    """g = -inf acts as the floor (finite everything, no gradient to g there, exactly as g = -1000
    does); g > 0 acts as 0 (the same gradients as g = 0, and none to g there)."""
    inputs, cu_seqlens = _problem("logsigmoid", lengths=[65, 70])
    lengths, scale = [65, 70], 0.3
    mask = torch.rand(inputs["g"].shape, generator=torch.Generator().manual_seed(3)) < 0.1

    def grads_with(value):
        changed = dict(inputs, g=torch.where(mask.to(DEVICE), value, inputs["g"]))
        return _kernel_grads(changed, cu_seqlens, lengths, scale, True)

    finite, infinite = grads_with(-1000.0), grads_with(float("-inf"))
    for name in INPUT_NAMES:
        assert torch.isfinite(infinite[name]).all(), name
        assert torch.equal(infinite[name], finite[name]), name
    assert (infinite["g"][mask] == 0).all()
    zero, positive = grads_with(0.0), grads_with(2.5)
    for name in INPUT_NAMES:
        if name != "g":
            assert torch.equal(positive[name], zero[name]), name
    assert (positive["g"][mask] == 0).all()
    assert torch.equal(positive["g"][~mask], zero["g"][~mask])


def _check_16_bit(inputs, **kwargs):
    o, state, grads = run_with_grads(lambda **kw: chunk_kda(**kw, use_triton=True), inputs, **kwargs)
    reference = {name: x.double() for name, x in inputs.items()}
    o_ref, state_ref, grads_ref = run_with_grads(naive_recurrent_kda, reference, **kwargs)
    errors = {"o": rel_rms(o, o_ref), "state": rel_rms(state, state_ref)}
    for name in INPUT_NAMES:
        assert torch.isfinite(grads[name]).all(), name
        assert grads[name].dtype == inputs[name].dtype, name
        errors[name] = rel_rms(grads[name], grads_ref[name])
    assert all(error < HALF_TOLERANCE for error in errors.values()), errors


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("gate", ["logsigmoid", -1000.0], ids=["mild", "g-1000"])
def test_16_bit_training_of_a_batch_with_shared_key_heads(gate, dtype):
    """Two sequences of 130 tokens (the last chunk partial), two q/k heads shared by four value
    heads, the output and every gradient in the inputs' dtypes."""
    inputs = kernel_inputs(
        dtype, DEVICE, batch=2, tokens=130, heads=2, value_heads=4, key_dim=32, value_dim=16, gate=gate
    )
    _check_16_bit(inputs, scale=32**-0.5)

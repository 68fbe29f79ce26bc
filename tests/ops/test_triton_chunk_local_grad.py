"""The Triton backward of the chunk-local terms against autograd of the PyTorch chunk-local terms.

Runs in Triton's CPU interpreter without CUDA (float64, exact to rounding); the end-to-end
gradients of the Triton training path are checked in test_triton_chunk_scan.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

triton = pytest.importorskip("triton")

from kda_test_utils import rel_rms  # noqa: E402

from kdalib.ops.chunk import chunk_local_terms  # noqa: E402
from kdalib.ops.triton.training import _LocalTermsTriton  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
NAMES = ("q", "k", "v", "g", "beta")


def _inputs(size, key_dim=20, value_dim=24, shift=2.0, chunks=2, rows=2, seed=0):
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    q = randn(chunks, rows, size, key_dim)
    k = F.normalize(randn(chunks, rows, size, key_dim), dim=-1)
    v = randn(chunks, rows, size, value_dim)
    g = F.logsigmoid(randn(chunks, rows, size, key_dim) + shift)
    beta = torch.rand(chunks, rows, size, generator=generator, dtype=torch.float64)
    return [x.to(DEVICE) for x in (q, k, v, g, beta)]


def _grads(fn, inputs, seed=1):
    leaves = [x.clone().requires_grad_(True) for x in inputs]
    terms = fn(*leaves)
    generator = torch.Generator().manual_seed(seed)
    weights = [torch.randn(t.shape, generator=generator, dtype=torch.float64).to(t) for t in terms]
    weights[5] = weights[5].tril()  # the scores are causal: only their lower triangle carries a gradient
    sum((t * w).sum() for t, w in zip(terms, weights)).backward()
    return [t.detach() for t in terms], [leaf.grad for leaf in leaves]


@pytest.mark.parametrize(
    "size,shift",
    [(16, 2.0), (32, 2.0), (64, 2.0), (64, -6.0), (32, -30.0)],
    ids=["C16", "C32", "C64", "C64-strong", "C32-g-30"],
)
def test_gradients_match_autograd_of_the_chunk_local_terms(size, shift):
    """Mild and strong decay (about -6 and -30 per token, where the forward's products underflow)."""
    inputs = _inputs(size, shift=shift)
    terms, grads = _grads(lambda *x: _LocalTermsTriton.apply(*x, "ieee"), inputs)
    terms_ref, grads_ref = _grads(chunk_local_terms, inputs)
    for mine, theirs in zip(terms, terms_ref):  # chunks of 64: the Triton forward, else the PyTorch form
        assert rel_rms(mine, theirs) < 1e-12
    for name, mine, theirs in zip(NAMES, grads, grads_ref):
        assert torch.isfinite(mine).all(), name
        assert rel_rms(mine, theirs) < 1e-12, name


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("size", [16, 64], ids=["C16", "C64"])
def test_16_bit_inputs_are_widened_exactly(size, dtype):
    """16-bit inputs go in as they are (autograd saves them at half the size of float32 copies): the
    terms, and the gradients before their rounding to the inputs' dtype, are those of float32 copies
    of the same values, bit for bit."""
    narrow = [x.to(dtype) for x in _inputs(size, key_dim=32, value_dim=16)]
    terms, grads = _grads(lambda *x: _LocalTermsTriton.apply(*x, "ieee"), narrow)
    terms_ref, grads_ref = _grads(lambda *x: _LocalTermsTriton.apply(*x, "ieee"), [x.float() for x in narrow])
    for mine, theirs in zip(terms, terms_ref):
        assert mine.dtype == torch.float32 and torch.equal(mine, theirs)
    for name, mine, theirs in zip(NAMES, grads, grads_ref):
        assert mine.dtype == dtype and torch.equal(mine, theirs.to(dtype)), name


def test_full_key_and_value_tiles_and_a_constant_extreme_gate():
    inputs = _inputs(64, key_dim=32, value_dim=16)
    inputs[3] = torch.full_like(inputs[3], -1000.0)
    _, grads = _grads(lambda *x: _LocalTermsTriton.apply(*x, "ieee"), inputs)
    _, grads_ref = _grads(chunk_local_terms, inputs)
    for name, mine, theirs in zip(NAMES, grads, grads_ref):
        assert torch.isfinite(mine).all() and rel_rms(mine, theirs) < 1e-12, name


def test_gradcheck_in_float64():
    inputs = [x.requires_grad_(True) for x in _inputs(16, key_dim=16, value_dim=16, chunks=1, rows=1, seed=5)]
    assert torch.autograd.gradcheck(
        lambda *x: _LocalTermsTriton.apply(*x, "ieee"), inputs, eps=1e-6, atol=1e-7, fast_mode=True
    )


def test_blocks_of_one_chunk_may_take_either_path():
    """Mild decay in the first 16-row blocks (their diagonal blocks are products), strong in the
    last ones (built exactly, column by column): one chunk mixes both."""
    inputs = _inputs(64, key_dim=32, value_dim=16)
    strength = torch.cat([torch.full((32,), 0.1), torch.full((32,), 8.0)]).to(inputs[3])
    inputs[3] = inputs[3] * strength[:, None]
    _, grads = _grads(lambda *x: _LocalTermsTriton.apply(*x, "ieee"), inputs)
    _, grads_ref = _grads(chunk_local_terms, inputs)
    for name, mine, theirs in zip(NAMES, grads, grads_ref):
        assert rel_rms(mine, theirs) < 1e-12, name


def _kimi_gate_inputs(rows, key_dim, value_dim, chunks=4, seed=7):
    """Chunk rows whose decay per token is exp(A_log) * softplus(x), exp(A_log) from 1 to 200 over the rows."""
    inputs = _inputs(64, key_dim=key_dim, value_dim=value_dim, chunks=chunks, rows=rows, seed=seed)
    generator = torch.Generator().manual_seed(seed + 1)
    strength = torch.logspace(0.0, float(torch.log10(torch.tensor(200.0))), rows, dtype=torch.float64)
    raw = torch.randn(chunks, rows, 64, key_dim, generator=generator, dtype=torch.float64)
    inputs[3] = (-strength[None, :, None, None] * F.softplus(raw)).to(inputs[3])
    return inputs


def _float32_against_float64(inputs, precision):
    """Gradients of the float32 kernel path against float64 autograd of the PyTorch terms (same inputs)."""
    inputs32 = [x.float() for x in inputs]
    _, grads = _grads(lambda *x: _LocalTermsTriton.apply(*x, precision), inputs32)
    _, grads_ref = _grads(chunk_local_terms, [x.double() for x in inputs32])
    return {name: rel_rms(mine, theirs) for name, mine, theirs in zip(NAMES, grads, grads_ref)}


def test_float32_gradients_with_the_kimi_gate():
    errors = _float32_against_float64(_kimi_gate_inputs(rows=4, key_dim=32, value_dim=16, chunks=2), "ieee")
    assert all(error < 1e-5 for error in errors.values()), errors


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("precision", ["ieee", "tf32x3"])
def test_gpu_float32_gradients_with_the_kimi_gate(precision):
    """The full-size kernel in float32 on the GPU, where reductions run in another order than the
    interpreter's (the chunk decay must stay the cumulative sum's own last row)."""
    errors = _float32_against_float64(_kimi_gate_inputs(rows=8, key_dim=128, value_dim=128), precision)
    assert all(error < 1e-4 for error in errors.values()), errors

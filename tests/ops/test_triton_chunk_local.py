"""The Triton chunk-local terms (the training path's forward) against the PyTorch chunk-local terms.

Runs in Triton's CPU interpreter without CUDA, in float64 (exact to rounding).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

triton = pytest.importorskip("triton")

from kda_test_utils import rel_rms  # noqa: E402

from kdalib.ops.chunk import chunk_local_terms_and_factors  # noqa: E402
from kdalib.ops.triton import chunk_local_terms_forward  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
NAMES = ("w", "u", "keys_out", "decay_last", "query_in", "scores_qk", "inverse", "scores_kk")


def _inputs(key_dim, value_dim, gate, size=64, seed=0):
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    q = randn(2, 2, size, key_dim)
    k = F.normalize(randn(2, 2, size, key_dim), dim=-1)
    v = randn(2, 2, size, value_dim)
    if isinstance(gate, str):
        g = F.logsigmoid(randn(2, 2, size, key_dim) + float(gate))
    else:
        g = torch.full((2, 2, size, key_dim), gate, dtype=torch.float64)
    beta = torch.rand(2, 2, size, generator=generator, dtype=torch.float64)
    return [x.to(DEVICE) for x in (q, k, v, g, beta)]


@pytest.mark.parametrize(
    "key_dim,value_dim,gate",
    [(20, 24, "2"), (64, 32, "-6"), (32, 16, "-40"), (16, 16, -1000.0)],
    ids=["mild-masked", "strong", "g-40", "g-1000"],
)
def test_terms_and_factors_match_the_pytorch_form(key_dim, value_dim, gate):
    """Mild and strong decay (where products of factors underflow to exact zeros)."""
    inputs = _inputs(key_dim, value_dim, gate)
    terms, inverse, scores_kk = chunk_local_terms_forward(*inputs, "ieee")
    terms_ref, inverse_ref, scores_kk_ref = chunk_local_terms_and_factors(*inputs)
    for name, mine, theirs in zip(NAMES, (*terms, inverse, scores_kk), (*terms_ref, inverse_ref.tril(), scores_kk_ref)):
        assert torch.isfinite(mine).all(), name
        assert rel_rms(mine, theirs) < 1e-12, name


def test_only_chunks_of_64():
    with pytest.raises(ValueError, match="chunks of 64 rows, got 32"):
        chunk_local_terms_forward(*_inputs(16, 16, "2", size=32), "ieee")


def test_blocks_of_one_chunk_may_take_either_path():
    """Mild decay in the first half (diagonal blocks as products), strong in the second (exact)."""
    inputs = _inputs(32, 16, "2")
    strength = torch.cat([torch.full((32,), 0.1), torch.full((32,), 400.0)]).to(inputs[3])
    inputs[3] = inputs[3] * strength[:, None]
    terms, inverse, scores_kk = chunk_local_terms_forward(*inputs, "ieee")
    terms_ref, inverse_ref, scores_kk_ref = chunk_local_terms_and_factors(*inputs)
    for name, mine, theirs in zip(NAMES, (*terms, inverse, scores_kk), (*terms_ref, inverse_ref.tril(), scores_kk_ref)):
        assert rel_rms(mine, theirs) < 1e-12, name

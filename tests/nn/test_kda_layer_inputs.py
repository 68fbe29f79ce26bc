"""The layer names the argument when its inputs cannot work: a non-finite epsilon, a
hidden_states tensor of another dtype than the layer's weights."""

from __future__ import annotations

import math

import pytest
import torch

from kdalib.nn import KimiDeltaAttention


@pytest.mark.parametrize("eps", [math.inf, -math.inf, math.nan, 0.0, -1e-5, True, "1e-5"])
def test_norm_eps_must_be_a_finite_positive_number(eps):
    with pytest.raises(ValueError, match="norm_eps"):
        KimiDeltaAttention(16, 2, 8, norm_eps=eps)


@pytest.mark.parametrize(
    ("hidden_states", "words"),
    [
        (torch.zeros(1, 3, 16, dtype=torch.float64), "float64"),
        (torch.zeros(1, 3, 16, dtype=torch.int64), "floating-point"),
        (torch.zeros(1, 3, 16, dtype=torch.bool), "floating-point"),
        (torch.zeros(1, 3, 16, dtype=torch.complex64), "floating-point"),
    ],
)
def test_hidden_states_of_another_dtype_are_named(hidden_states, words):
    layer = KimiDeltaAttention(16, 2, 8)
    with pytest.raises(ValueError, match="hidden_states") as caught:
        layer(hidden_states)
    assert words in str(caught.value)


def test_a_float64_layer_takes_float64_input_and_autocast_may_mix():
    layer = KimiDeltaAttention(16, 2, 8, dtype=torch.float64)
    assert layer(torch.zeros(1, 3, 16, dtype=torch.float64)).dtype == torch.float64
    layer32 = KimiDeltaAttention(16, 2, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer32(torch.zeros(1, 3, 16, dtype=torch.bfloat16)).shape == (1, 3, 16)

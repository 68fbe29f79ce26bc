"""Careless input to the layer, its checkpoints and the operators: a ValueError that names it."""

from __future__ import annotations

import pytest
import torch

from kdalib.nn import KimiDeltaAttention
from kdalib.ops import chunk_kda, fused_recurrent_kda, kda, naive_recurrent_kda


@pytest.fixture(scope="module")
def layer():
    torch.manual_seed(0)
    return KimiDeltaAttention(16, 2, 8)


@pytest.mark.parametrize(
    "cu_seqlens, words",
    [
        (torch.tensor([0, 3, 9]), "expected to end at T = 6"),
        (torch.tensor([0, 4, 3, 6]), "strictly increasing"),
        (torch.tensor([[0, 3, 6]]), "expected shape [N + 1]"),
        (torch.tensor([1, 3, 6]), "expected to start at 0"),
        (torch.tensor([0.0, 3.0, 6.0]), "integer tensor"),
        (torch.tensor([0, 3, 6], device="meta"), "expected device cpu"),
    ],
)
def test_layer_checks_cu_seqlens_before_using_it(layer, cu_seqlens, words):
    with pytest.raises(ValueError, match="cu_seqlens") as info:
        layer(torch.randn(1, 6, 16), cu_seqlens=cu_seqlens)
    assert words in str(info.value)


@pytest.mark.parametrize("shape", [(0, 6, 16), (1, 0, 16)])
def test_layer_refuses_empty_batches(layer, shape):
    with pytest.raises(ValueError, match="at least one row and one token"):
        layer(torch.randn(*shape))


def _inputs(B=1, T=4, H=2, K=8, V=8):
    return (
        torch.randn(B, T, H, K),
        torch.randn(B, T, H, K),
        torch.randn(B, T, H, V),
        -torch.rand(B, T, H, K),
        torch.rand(B, T, H),
    )


@pytest.mark.parametrize("op", [chunk_kda, naive_recurrent_kda, fused_recurrent_kda, kda])
@pytest.mark.parametrize("sizes, words", [({"B": 0}, "B, T, H and K to be positive"), ({"V": 0}, "V (dim 3)")])
def test_operators_refuse_empty_batch_and_value_dims(op, sizes, words):
    with pytest.raises(ValueError) as info:
        op(*_inputs(**sizes))
    assert words in str(info.value)


def test_operators_check_the_device_of_cu_seqlens():
    with pytest.raises(ValueError, match="cu_seqlens: expected device cpu"):
        chunk_kda(*_inputs(T=6), cu_seqlens=torch.tensor([0, 3, 6], device="meta"))


def test_a_log_of_another_shape_is_refused(layer):
    state = layer.state_dict()
    for bad in (torch.zeros(1, 2), torch.zeros(2, 1), torch.zeros(1, 2, 1, 1)):
        with pytest.raises(ValueError, match=r"A_log: expected A_log of shape \[num_heads\]"):
            layer.load_state_dict({**state, "A_log": bad})
    fresh = KimiDeltaAttention(16, 2, 8)
    fresh.load_state_dict({**state, "A_log": state["A_log"].reshape(1, 1, 2, 1)})
    torch.testing.assert_close(fresh.A_log, state["A_log"])


def test_fused_and_separate_convolutions_together_are_refused(layer):
    state = layer.state_dict()
    fused = torch.cat([state["q_conv1d.weight"], state["k_conv1d.weight"], state["v_conv1d.weight"]])
    with pytest.raises(ValueError, match="either fused or separate, not both"):
        layer.load_state_dict({**state, "conv1d.weight": fused})

"""kdalib's KDA against transformers' KimiLinearDeltaAttention (models/kimi_linear), offline.

Layer level: the same random weights loaded into both, prefill and step-by-step decode
compared in float32 (tight) and bfloat16 (loose). Model level: a tiny random
KimiLinearForCausalLM with its KDA layers swapped for kdalib's gives the same logits,
padded or not, in a full pass, in prefill + decode, and in greedy generation.

Differences are max |a - b| / max |b|, with realistic gates (exp(A_log) up to 200).
Measured on CPU (torch 2.13, transformers 5.24), worst of 3 seeds, T up to 300:

    float32 prefill, vs transformers         kdalib chunk 1.6e-4, kdalib naive 9.6e-5
    float32 prefill, vs own float64 run      kdalib chunk 6.1e-5, kdalib naive 1.7e-6,
                                             (transformers' own fallback: 9.5e-5)
    float32 decode steps, vs transformers    2.9e-6
    bfloat16 prefill and decode              5.1e-3

Both chunked forms run their chunk algebra in float32 and drift from the exact result by
~1e-4 with gates this strong, so float32 parity is asserted against transformers within
FP32_TOL and against kdalib's own float64 run within ORACLE_TOL[mode]; a wiring bug
shows up as O(1). Single-token decode steps are recurrent on both sides: DECODE_TOL.
"""

from __future__ import annotations

import copy

import pytest
import torch
from nn_test_utils import rel_err
from transformers import KimiLinearForCausalLM
from transformers.cache_utils import DynamicCache
from transformers.models.kimi_linear.modeling_kimi_linear import KimiLinearDeltaAttention

from kdalib.nn import (
    KDACache,
    KimiDeltaAttention,
    TransformersKimiDeltaAttention,
    kda_from_transformers,
    swap_kda_into_transformers,
)

FP32_TOL = 5e-4
ORACLE_TOL = {"naive": 1e-5, "fused_recurrent": 1e-5, "auto": 2e-4}
DECODE_TOL = 2e-5
BF16_TOL = 3e-2


@pytest.fixture
def layer_pair(make_hf_config, randomize):
    """(transformers layer, kdalib layer) with the same random weights, float32."""

    def build(dtype=torch.float32, mode="auto"):
        config = make_hf_config()
        reference = KimiLinearDeltaAttention(config, layer_idx=0)
        randomize(reference, seed=3)
        ours = kda_from_transformers(reference, mode=mode)
        return reference.to(dtype), ours.to(dtype), config

    return build


def transformers_prefill_then_decode(layer, config, x, prefill):
    """Runs transformers' layer on x[:, :prefill], then token by token, with a DynamicCache."""
    cache = DynamicCache(config=config)
    outputs = [layer(x[:, :prefill], cache=cache)]
    outputs += [layer(x[:, t : t + 1], cache=cache) for t in range(prefill, x.shape[1])]
    return torch.cat(outputs, dim=1)


def kdalib_prefill_then_decode(layer, x, prefill):
    cache = KDACache()
    outputs = [layer(x[:, :prefill], cache=cache)]
    outputs += [layer(x[:, t : t + 1], cache=cache) for t in range(prefill, x.shape[1])]
    return torch.cat(outputs, dim=1)


@pytest.mark.parametrize("mode", ["auto", "naive", "fused_recurrent"])
@pytest.mark.parametrize("tokens", [1, 5, 64, 65, 130], ids=lambda t: f"T{t}")
def test_layer_prefill_matches_fp32(layer_pair, mode, tokens):
    reference, ours, _ = layer_pair(mode=mode)
    x = torch.randn(2, tokens, reference.hidden_size)
    with torch.no_grad():
        actual = ours(x)
        exact = copy.deepcopy(ours).double()(x.double())
        assert rel_err(actual, reference(x)) < FP32_TOL
    assert rel_err(actual, exact) < ORACLE_TOL[mode]


@pytest.mark.parametrize("mode", ["auto", "naive"])
def test_layer_decode_matches_fp32(layer_pair, mode):
    reference, ours, config = layer_pair(mode=mode)
    x = torch.randn(2, 9, reference.hidden_size)
    with torch.no_grad():
        expected = transformers_prefill_then_decode(reference, config, x, prefill=4)
        actual = kdalib_prefill_then_decode(ours, x, prefill=4)
    assert rel_err(actual, expected) < FP32_TOL
    assert rel_err(actual[:, 4:], expected[:, 4:]) < DECODE_TOL  # recurrent decode steps on both sides


def test_layer_matches_bf16(layer_pair):
    reference, ours, config = layer_pair(dtype=torch.bfloat16)
    x = torch.randn(2, 9, reference.hidden_size, dtype=torch.bfloat16)
    with torch.no_grad():
        assert rel_err(ours(x), reference(x)) < BF16_TOL
        expected = transformers_prefill_then_decode(reference, config, x, prefill=4)
        actual = kdalib_prefill_then_decode(ours, x, prefill=4)
    assert actual.dtype == torch.bfloat16
    assert rel_err(actual, expected) < BF16_TOL


def test_layer_left_padding_matches(layer_pair):
    """transformers zeroes pads (which, on the left, leaves the state untouched); kdalib removes them."""
    reference, ours, _ = layer_pair()
    x = torch.randn(3, 8, reference.hidden_size)
    mask = torch.ones(3, 8, dtype=torch.long)
    mask[1, :3] = 0
    mask[2, :7] = 0
    with torch.no_grad():
        assert rel_err(ours(x, attention_mask=mask), reference(x, attention_mask=mask)) < FP32_TOL


def test_state_dict_round_trips(layer_pair):
    reference, ours, config = layer_pair()
    from kdalib.nn import to_transformers_state_dict

    back = KimiLinearDeltaAttention(config, layer_idx=0)
    back.load_state_dict(to_transformers_state_dict(ours))
    for name, tensor in reference.state_dict().items():
        torch.testing.assert_close(back.state_dict()[name], tensor, rtol=0, atol=0, msg=name)


@pytest.fixture
def model_pair(make_hf_config, randomize):
    """(transformers model, the same model with kdalib's KDA), float32, eval mode."""

    def build(moe=True, mode="auto"):
        torch.manual_seed(0)
        reference = KimiLinearForCausalLM(make_hf_config(moe=moe)).eval()
        for layer in reference.model.layers:
            if isinstance(layer.self_attn, KimiLinearDeltaAttention):
                randomize(layer.self_attn, seed=layer.self_attn.layer_idx)
        ours = copy.deepcopy(reference)
        assert swap_kda_into_transformers(ours, mode=mode) == [0, 1, 2]
        return reference, ours

    return build


def test_swap_replaces_every_kda_layer(model_pair):
    reference, ours = model_pair()
    kinds = [type(layer.self_attn).__name__ for layer in ours.model.layers]
    assert kinds == ["TransformersKimiDeltaAttention"] * 3 + ["KimiLinearAttention"]
    assert isinstance(ours.model.layers[0].self_attn, KimiDeltaAttention)
    # The swapped model still loads a transformers checkpoint (layout converted on load).
    ours.load_state_dict(reference.state_dict())


def test_swap_without_kda_raises():
    with pytest.raises(ValueError, match="no KimiLinearDeltaAttention"):
        swap_kda_into_transformers(torch.nn.Sequential(torch.nn.Linear(2, 2)))


def test_model_logits_match(model_pair):
    reference, ours = model_pair()
    ids = torch.randint(3, 64, (2, 12))
    mask = torch.ones_like(ids)
    mask[1, :5] = 0  # left padding, as generation uses
    with torch.no_grad():
        assert rel_err(ours(ids).logits, reference(ids).logits) < FP32_TOL
        padded_ours = ours(ids, attention_mask=mask).logits
        padded_reference = reference(ids, attention_mask=mask).logits
    assert rel_err(padded_ours[mask.bool()], padded_reference[mask.bool()]) < FP32_TOL


def test_model_logits_match_float64_run(model_pair):
    _, ours = model_pair(moe=False)  # the MoE experts' grouped matmul has no float64 kernel on CPU
    ids = torch.randint(3, 64, (2, 12))
    with torch.no_grad():
        assert rel_err(ours(ids).logits, copy.deepcopy(ours).double()(ids).logits) < ORACLE_TOL["auto"]


def test_model_bf16_no_less_accurate_than_transformers(model_pair):
    """In bfloat16 both models drift from the float32 logits (by 0.1-0.4 of max |logit| on this
    random 4-layer model); with kdalib's KDA the drift must stay of the same size."""
    reference, ours = model_pair(moe=False)
    ids = torch.randint(3, 64, (2, 40))
    with torch.no_grad():
        exact = reference(ids).logits
        reference_bf16 = copy.deepcopy(reference).bfloat16()(ids).logits
        ours_bf16 = copy.deepcopy(ours).bfloat16()(ids).logits
    assert ours_bf16.dtype == torch.bfloat16
    assert rel_err(ours_bf16, exact) < 1.5 * rel_err(reference_bf16, exact)


def test_model_prefill_then_decode_logits_match(model_pair):
    reference, ours = model_pair()
    ids = torch.randint(3, 64, (2, 10))
    with torch.no_grad():
        out_reference, out_ours = reference(ids[:, :6], use_cache=True), ours(ids[:, :6], use_cache=True)
        assert rel_err(out_ours.logits, out_reference.logits) < FP32_TOL
        for t in range(6, 10):
            out_reference = reference(ids[:, t : t + 1], cache=out_reference.cache, use_cache=True)
            out_ours = ours(ids[:, t : t + 1], cache=out_ours.cache, use_cache=True)
            assert rel_err(out_ours.logits, out_reference.logits) < FP32_TOL
        full = ours(ids).logits
    assert rel_err(out_ours.logits[:, -1], full[:, -1]) < FP32_TOL


def test_model_greedy_generation_matches(model_pair):
    reference, ours = model_pair(moe=False)
    ids = torch.randint(3, 64, (2, 5))
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    with torch.no_grad():
        expected = reference.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
        actual = ours.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
    assert actual.tolist() == expected.tolist()


def test_model_gradients_reach_swapped_layers(model_pair):
    _, ours = model_pair(moe=False)
    ours.train()
    ids = torch.randint(3, 64, (2, 8))
    ours(ids, labels=ids).loss.backward()
    for index in range(3):
        layer = ours.model.layers[index].self_attn
        assert isinstance(layer, TransformersKimiDeltaAttention)
        for name, parameter in layer.named_parameters():
            assert parameter.grad is not None and parameter.grad.abs().max() > 0, f"layer {index} {name}"


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_full_size_layer_matches(randomize, dtype):
    """A layer of Kimi-Linear-48B-A3B's sizes (d 2304, 32 heads x 128), 190-token prefill + 10
    decode steps. Measured: fp32 2.6e-6, bf16 5.6e-3."""
    from transformers import KimiLinearConfig as HFKimiLinearConfig

    config = HFKimiLinearConfig()
    reference = KimiLinearDeltaAttention(config, layer_idx=0)
    randomize(reference, seed=0)
    with torch.no_grad():  # unit-variance projections at this width instead of std 0.3
        for parameter in reference.parameters():
            if parameter.dim() == 2:
                parameter.mul_(parameter.shape[1] ** -0.5 / 0.3)
    ours = kda_from_transformers(reference).to(dtype)
    reference = reference.to(dtype)
    x = torch.randn(1, 200, config.hidden_size, dtype=dtype)
    with torch.no_grad():
        expected = transformers_prefill_then_decode(reference, config, x, prefill=190)
        actual = kdalib_prefill_then_decode(ours, x, prefill=190)
    assert rel_err(actual, expected) < (FP32_TOL if dtype == torch.float32 else BF16_TOL)

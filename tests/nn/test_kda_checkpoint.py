"""Checkpoint layouts: original Kimi-Linear, transformers, flash-linear-attention."""

from __future__ import annotations

import pytest
import torch

from kdalib.nn import KimiDeltaAttention, to_native_state_dict, to_transformers_state_dict

HIDDEN = 32


def original_layout(native: dict) -> dict:
    """The Kimi-Linear checkpoint spelling: native names, A_log stored [1, 1, H, 1]."""
    out = dict(native)
    out["A_log"] = native["A_log"].reshape(1, 1, -1, 1)
    return out


def fla_layout(native: dict) -> dict:
    """flash-linear-attention's spelling: f_proj.0/1 and g_proj.0/1 Sequentials, A_log [H]."""
    renames = {
        "f_a_proj.weight": "f_proj.0.weight",
        "f_b_proj.weight": "f_proj.1.weight",
        "g_a_proj.weight": "g_proj.0.weight",
        "g_b_proj.weight": "g_proj.1.weight",
    }
    return {renames.get(name, name): value for name, value in native.items()}


@pytest.mark.parametrize(
    "layout", [original_layout, fla_layout, to_transformers_state_dict], ids=["original", "fla", "transformers"]
)
def test_every_layout_loads_to_the_same_layer(make_layer, layout):
    source = make_layer(seed=1)
    target = make_layer(seed=2)
    x = torch.randn(2, 6, HIDDEN)
    with torch.no_grad():
        assert not torch.allclose(target(x), source(x))
        target.load_state_dict(layout(source.state_dict()))
        torch.testing.assert_close(target(x), source(x), rtol=0, atol=0)


def test_transformers_layout_shapes(make_layer):
    hf = to_transformers_state_dict(make_layer())
    assert tuple(hf["conv1d.weight"].shape) == (3 * 16, 1, 4)
    assert tuple(hf["forget_gate.A_log"].shape) == (1, 1, 2, 1)
    assert {"forget_gate.f_a_proj.weight", "forget_gate.f_b_proj.weight", "forget_gate.dt_bias"} <= set(hf)
    assert not any(name.startswith(("q_conv1d", "f_a_proj")) for name in hf)


def test_prefixed_keys_are_converted_and_others_pass_through(make_layer):
    layer = make_layer()
    prefixed = {f"model.layers.0.self_attn.{k}": v for k, v in to_transformers_state_dict(layer).items()}
    prefixed["model.norm.weight"] = torch.ones(HIDDEN)
    native = to_native_state_dict(prefixed, layer, prefix="model.layers.0.self_attn.")
    assert "model.norm.weight" in native
    assert "model.layers.0.self_attn.q_conv1d.weight" in native
    assert "model.layers.0.self_attn.conv1d.weight" not in native


def test_loading_into_a_parent_module(make_layer):
    """The conversion runs for a KDA layer nested in a bigger model, under its prefix."""
    source = make_layer(seed=1)
    parent = torch.nn.ModuleDict({"attn": make_layer(seed=2)})
    parent.load_state_dict({f"attn.{k}": v for k, v in to_transformers_state_dict(source).items()})
    torch.testing.assert_close(parent["attn"].q_conv1d.weight, source.q_conv1d.weight, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("other", "key"),
    [(dict(head_dim=4), "dt_bias"), (dict(num_heads=4), "A_log"), (dict(conv_size=3), "q_conv1d.weight")],
    ids=["head_dim", "num_heads", "conv_size"],
)
def test_mismatched_checkpoint_names_the_key(make_layer, other, key):
    checkpoint = to_transformers_state_dict(make_layer(**other))
    with pytest.raises(ValueError, match=rf"{key}: checkpoint shape .* does not fit"):
        make_layer().load_state_dict(checkpoint)


def test_broken_fused_conv_raises(make_layer):
    checkpoint = to_transformers_state_dict(make_layer())
    checkpoint["conv1d.weight"] = checkpoint["conv1d.weight"][:-1]
    with pytest.raises(ValueError, match=r"conv1d.weight: expected the fused q/k/v convolution"):
        make_layer().load_state_dict(checkpoint)


def test_missing_keys_still_reported(make_layer):
    checkpoint = to_transformers_state_dict(make_layer())
    del checkpoint["o_proj.weight"]
    with pytest.raises(RuntimeError, match="o_proj.weight"):
        make_layer().load_state_dict(checkpoint)


def test_from_config_matches_the_48b_layer_sizes():
    from kdalib.nn import KIMI_LINEAR_48B_A3B

    layer = KimiDeltaAttention.from_config(KIMI_LINEAR_48B_A3B, device="meta")
    assert (layer.hidden_size, layer.num_heads, layer.head_dim, layer.conv_size) == (2304, 32, 128, 4)
    assert tuple(layer.q_conv1d.weight.shape) == (4096, 1, 4)
    assert tuple(layer.f_a_proj.weight.shape) == (128, 2304)

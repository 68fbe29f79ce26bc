"""KimiLinearConfig: the 48B layer pattern and per-sequence cache sizes."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from kdalib.nn import KIMI_LINEAR_48B_A3B, KimiLinearConfig, dtype_bytes

MiB = 2**20


def test_layer_pattern_of_the_48b_model():
    cfg = KIMI_LINEAR_48B_A3B
    assert cfg.num_layers == 27 and cfg.num_mla_layers == 7 and cfg.num_kda_layers == 20
    assert set(cfg.kda_layer_numbers) | set(cfg.mla_layer_numbers) == set(range(1, 28))
    assert [n for n, kind in enumerate(cfg.layer_types, start=1) if kind == "full_attention"] == [
        4,
        8,
        12,
        16,
        20,
        24,
        27,
    ]
    assert cfg.kda_to_mla_ratio == pytest.approx(20 / 7)


def test_layer_types_agree_with_transformers_checkpoint_parsing():
    """transformers rebuilds layer_types from the checkpoint's 1-based full_attn_layers / kda_layers."""
    from transformers import KimiLinearConfig as HFKimiLinearConfig

    cfg = KIMI_LINEAR_48B_A3B
    hf = HFKimiLinearConfig(
        linear_attn_config={"full_attn_layers": list(cfg.mla_layer_numbers), "kda_layers": list(cfg.kda_layer_numbers)}
    )
    assert hf.layer_types == cfg.layer_types
    assert (hf.hidden_size, hf.num_hidden_layers, hf.linear_num_heads, hf.linear_head_dim) == (
        cfg.hidden_size,
        cfg.num_layers,
        cfg.kda_num_heads,
        cfg.kda_head_dim,
    )
    assert (hf.kv_lora_rank, hf.qk_rope_head_dim, hf.num_attention_heads, hf.vocab_size) == (
        cfg.kv_lora_rank,
        cfg.qk_rope_head_dim,
        cfg.mla_num_heads,
        cfg.vocab_size,
    )


def test_kda_state_bytes_per_layer():
    cfg = KIMI_LINEAR_48B_A3B
    recurrent = 32 * 128 * 128 * 4  # fp32 [H, K, V]
    conv_bf16 = 3 * 4096 * 3 * 2  # q, k, v caches of W - 1 = 3 inputs, width 32 * 128
    assert cfg.kda_state_bytes_per_layer(torch.bfloat16) == recurrent + conv_bf16
    assert cfg.kda_state_bytes_per_layer("float32") == recurrent + 2 * conv_bf16
    assert cfg.kda_state_bytes("bf16") == 20 * (recurrent + conv_bf16)


def test_kda_state_bytes_match_a_real_cache():
    """The formula counts exactly what kdalib's cache holds for a layer of these sizes."""
    from kdalib.nn import KDACache, KimiDeltaAttention

    small = KimiLinearConfig(
        hidden_size=16,
        num_layers=4,
        mla_layer_numbers=(4,),
        kda_num_heads=2,
        kda_head_dim=8,
        mla_num_heads=2,
        kv_lora_rank=8,
    )
    layer = KimiDeltaAttention.from_config(small)
    cache = KDACache()
    with torch.no_grad():
        layer(torch.randn(1, 5, 16), cache=cache)
    assert cache.nbytes() == small.kda_state_bytes_per_layer(torch.float32)


def test_mla_cache_grows_linearly():
    cfg = KIMI_LINEAR_48B_A3B
    per_token = (512 + 64) * 2  # compressed latent + shared key part, bf16
    assert cfg.mla_cache_bytes_per_layer(1, torch.bfloat16) == per_token
    assert cfg.mla_cache_bytes(4096, torch.bfloat16) == 7 * 4096 * per_token
    assert cfg.all_mla_cache_bytes(4096, torch.bfloat16) == 27 * 4096 * per_token
    assert cfg.mla_cache_values_per_token(compressed=False) == 32 * (128 + 64 + 128)


def test_hybrid_saving_approaches_the_kda_share_of_layers():
    cfg = KIMI_LINEAR_48B_A3B
    savings = [cfg.cache_reduction(n) for n in (4096, 131072, 1_048_576)]
    assert savings == sorted(savings)
    assert savings[-1] < 20 / 27 and savings[-1] == pytest.approx(20 / 27, abs=3e-3)
    assert cfg.cache_reduction(16) < 0  # a 16-token context caches less than one KDA state


def test_hybrid_bytes_at_one_million_tokens():
    cfg = KIMI_LINEAR_48B_A3B
    expected = 20 * (2 * MiB + 3 * 4096 * 3 * 2) + 7 * 2**20 * 576 * 2
    assert cfg.hybrid_cache_bytes(2**20) == expected


def test_claims_are_bound():
    claims = KimiLinearConfig.claim_ids()
    assert claims["hidden_size"] == "linear.arch.hidden_size"
    assert claims["num_layers"] == "linear.arch.layers"
    assert claims["kda_num_heads"] == "linear.arch.kda_heads"
    assert claims["kda_head_dim"] == "linear.arch.head_dim"
    assert claims["design_ratio"] == "linear.arch.ratio"
    assert len(set(claims.values())) == len(claims)


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        KIMI_LINEAR_48B_A3B.hidden_size = 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(hidden_size=0), "hidden_size: expected a positive int"),
        (dict(kda_head_dim=-1), "kda_head_dim: expected a positive int"),
        (dict(mla_layer_numbers=(4, 4)), "strictly increasing"),
        (dict(mla_layer_numbers=(0, 4)), r"must lie in \[1, 27\]"),
        (dict(mla_layer_numbers=(4, 28)), r"must lie in \[1, 27\]"),
        (dict(num_experts_per_token=300), "cannot exceed num_experts"),
    ],
    ids=["hidden", "head_dim", "duplicate-layer", "zero-based", "past-depth", "experts"],
)
def test_bad_config_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        KimiLinearConfig(**kwargs)


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_bad_context_raises(bad):
    with pytest.raises(ValueError, match="context_len"):
        KIMI_LINEAR_48B_A3B.mla_cache_bytes(bad)


def test_dtype_bytes():
    assert [dtype_bytes(d) for d in ("fp32", "bf16", torch.float16, "float64", "fp8")] == [4, 2, 2, 8, 1]
    with pytest.raises(ValueError, match="unknown name 'int4'"):
        dtype_bytes("int4")
    with pytest.raises(ValueError, match="expected a torch.dtype"):
        dtype_bytes(4)


def _as_claimed(field_name: str, value):
    """A config value in the form and unit its claim in sources.yaml states it."""
    if field_name == "design_ratio":
        return f"{value[0]}:{value[1]}"
    if field_name == "mla_layer_numbers":
        return ", ".join(map(str, value))
    if field_name == "max_context":
        return value / 2**20  # claimed in M tokens: a "1M" context is 2**20 tokens
    return value


def test_bound_figures_equal_their_claims_in_sources_yaml():
    """Each figure carrying a claim id agrees with that claim, so the book and the code cannot drift."""
    import pathlib

    from kdalib.sources import load_document

    claims = load_document(pathlib.Path(__file__).resolve().parents[2] / "sources.yaml").claims
    for field_name, claim_id in KimiLinearConfig.claim_ids().items():
        assert claim_id in claims, f"{field_name}: claim {claim_id} missing from sources.yaml"
        claimed = claims[claim_id].value
        actual = _as_claimed(field_name, getattr(KIMI_LINEAR_48B_A3B, field_name))
        assert actual == claimed, f"{field_name} = {actual!r}, claim {claim_id} says {claimed!r}"

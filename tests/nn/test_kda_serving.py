"""The layer for serving engines: the verify step of speculative decoding with commit and rollback
(convolution caches included), grouped value heads, the layer presets (Kimi K3's among them), and
the calling conventions of flash-linear-attention's and transformers' layers."""

from __future__ import annotations

import pathlib

import pytest
import torch

from kdalib.nn import (
    KIMI_K3_KDA,
    KIMI_LINEAR_48B_A3B_KDA,
    FLAKimiDeltaAttention,
    KDACache,
    KDALayerConfig,
    KimiDeltaAttention,
)

HIDDEN = 32
EXACT = dict(rtol=0, atol=1e-12)


def _float64_layer(make_layer, **kwargs):
    return make_layer(mode="chunk", **kwargs).double()


def _prefilled(layer, prompt):
    cache = KDACache()
    with torch.no_grad():
        layer(prompt, cache=cache)
    return cache


@pytest.mark.parametrize("draft", [1, 2, 4, 8])
def test_verify_outputs_are_those_of_single_steps(make_layer, draft):
    layer = _float64_layer(make_layer)
    prompt, tokens = torch.randn(3, 6, HIDDEN, dtype=torch.float64), torch.randn(3, draft, HIDDEN, dtype=torch.float64)
    stepped, verified = _prefilled(layer, prompt), _prefilled(layer, prompt)
    with torch.no_grad():
        expected = torch.cat([layer(tokens[:, t : t + 1], cache=stepped) for t in range(draft)], dim=1)
        y = layer.verify(tokens, verified)
    torch.testing.assert_close(y, expected, **EXACT)
    assert verified.draft_tokens == draft


@pytest.mark.parametrize("accepted", [0, 1, 3, 5])
def test_commit_keeps_the_state_after_the_accepted_prefix(make_layer, accepted):
    """After committing a of k draft tokens, the cache is that of a prefill over prompt + those a
    tokens: the next tokens give the full pass's outputs (the short convolutions' windows included)."""
    layer = _float64_layer(make_layer, conv_size=4)
    prompt = torch.randn(2, 7, HIDDEN, dtype=torch.float64)
    draft = torch.randn(2, 5, HIDDEN, dtype=torch.float64)
    after = torch.randn(2, 3, HIDDEN, dtype=torch.float64)
    cache = _prefilled(layer, prompt)
    with torch.no_grad():
        layer.verify(draft, cache)
        cache.commit(accepted)
        continued = layer(after, cache=cache)
        full = layer(torch.cat([prompt, draft[:, :accepted], after], dim=1))
    torch.testing.assert_close(continued, full[:, -3:], **EXACT)
    assert cache.seen_tokens(0) == 7 + accepted + 3 and cache.draft_tokens is None


def test_commit_takes_one_count_per_sequence(make_layer):
    layer = _float64_layer(make_layer)
    prompt = torch.randn(3, 5, HIDDEN, dtype=torch.float64)
    draft = torch.randn(3, 4, HIDDEN, dtype=torch.float64)
    nxt = torch.randn(3, 1, HIDDEN, dtype=torch.float64)
    accepted = torch.tensor([0, 4, 2])
    cache = _prefilled(layer, prompt)
    with torch.no_grad():
        layer.verify(draft, cache)
        cache.commit(accepted)
        y = layer(nxt, cache=cache)
        for row, count in enumerate(accepted.tolist()):
            alone = layer(torch.cat([prompt[row : row + 1], draft[row : row + 1, :count], nxt[row : row + 1]], dim=1))
            torch.testing.assert_close(y[row], alone[0, -1:], **EXACT)


def test_a_stack_of_layers_verifies_and_commits_together(make_layer):
    layers = [_float64_layer(make_layer, seed=i, layer_idx=i) for i in range(2)]

    def model(x, cache, verify=False):
        for layer in layers:
            x = x + (layer.verify(x, cache) if verify else layer(x, cache=cache))
        return x

    prompt = torch.randn(2, 5, HIDDEN, dtype=torch.float64)
    draft = torch.randn(2, 3, HIDDEN, dtype=torch.float64)
    nxt = torch.randn(2, 2, HIDDEN, dtype=torch.float64)
    with torch.no_grad():
        cache = KDACache()
        model(prompt, cache)
        verified = model(draft, cache, verify=True)
        cache.commit(2)
        continued = model(nxt, cache)
        full = model(torch.cat([prompt, draft[:, :2], nxt], dim=1), KDACache())
        plain = model(torch.cat([prompt, draft], dim=1), KDACache())
    torch.testing.assert_close(verified, plain[:, 5:], **EXACT)
    torch.testing.assert_close(continued, full[:, -2:], **EXACT)


def test_verify_on_a_fresh_cache_starts_from_zero_states(make_layer):
    layer = _float64_layer(make_layer)
    draft = torch.randn(2, 4, HIDDEN, dtype=torch.float64)
    cache = KDACache()
    with torch.no_grad():
        y = layer.verify(draft, cache)
        cache.commit(3)
        reference = KDACache()
        expected = layer(draft[:, :3], cache=reference)
    torch.testing.assert_close(y[:, :3], expected, **EXACT)
    for name in ("q_conv", "k_conv", "v_conv", "recurrent"):
        torch.testing.assert_close(getattr(cache.get(0), name), getattr(reference.get(0), name), **EXACT)


def test_verify_runs_the_decoding_kernel_under_the_interpreter(make_layer, monkeypatch):
    """On CUDA the verify step takes the Triton decoding kernel; here it runs interpreted."""
    pytest.importorskip("triton")
    from kdalib.ops import router

    layer = make_layer()
    prompt, draft = torch.randn(2, 4, HIDDEN), torch.randn(2, 3, HIDDEN)
    expected_cache, cache = _prefilled(layer, prompt), _prefilled(layer, prompt)
    with torch.no_grad():
        expected = torch.cat([layer(draft[:, t : t + 1], cache=expected_cache) for t in range(3)], dim=1)
        route, kernel, launches = router.triton_path, router.triton_fused_recurrent_kda, []
        monkeypatch.setattr(router, "triton_path", lambda *a, **kw: route(*a, **{**kw, "use_triton": True}))
        monkeypatch.setattr(
            router, "triton_fused_recurrent_kda", lambda *a, **kw: launches.append(1) or kernel(*a, **kw)
        )
        y = layer.verify(draft, cache)
    assert launches == [1]  # one launch for the three draft tokens
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
    assert cache.draft_tokens == 3


@pytest.mark.parametrize(
    "accepted,message",
    [
        (5, r"accepted: expected counts in \[0, k = 4\], got \[5, 5\]"),
        (-1, r"accepted: expected counts in \[0, k = 4\]"),
        (torch.tensor([1, 9]), r"expected counts in \[0, k = 4\], got \[1, 9\]"),
        (torch.tensor([1.0, 2.0]), "accepted: expected an integer tensor"),
        (torch.tensor([1, 2, 3]), r"accepted: expected shape \[N\] = \[2\]"),
        (True, "accepted: expected an int or an"),
        (2.0, "accepted: expected an int or an"),
    ],
)
def test_bad_commits_are_refused_and_keep_the_draft(make_layer, accepted, message):
    layer = make_layer()
    cache = _prefilled(layer, torch.randn(2, 3, HIDDEN))
    with torch.no_grad():
        layer.verify(torch.randn(2, 4, HIDDEN), cache)
    with pytest.raises(ValueError, match=message):
        cache.commit(accepted)
    assert cache.draft_tokens == 4
    cache.commit(0)


def test_verify_and_commit_misuse_is_named(make_layer):
    layer = make_layer()
    cache = _prefilled(layer, torch.randn(2, 3, HIDDEN))
    with pytest.raises(ValueError, match="KDACache.commit: no verify step to commit"):
        cache.commit(1)
    with pytest.raises(ValueError, match="hidden_states: expected at least one row and one token"):
        layer.verify(torch.randn(2, 0, HIDDEN), cache)  # k = 0
    with pytest.raises(ValueError, match="cache: layer 0 holds 2 sequences, the input has 3"):
        layer.verify(torch.randn(3, 2, HIDDEN), cache)
    with pytest.raises(ValueError, match="cache: verify needs a KDACache"):
        layer.verify(torch.randn(2, 2, HIDDEN), None)
    with torch.no_grad():
        layer.verify(torch.randn(2, 2, HIDDEN), cache)
    with pytest.raises(ValueError, match=r"uncommitted verify of 2 tokens; call cache.commit\(accepted\) first"):
        layer(torch.randn(2, 1, HIDDEN), cache=cache)
    with pytest.raises(ValueError, match="uncommitted verify"):
        layer.verify(torch.randn(2, 2, HIDDEN), cache)
    with pytest.raises(ValueError, match="KDACache.reorder: layers \\[0\\] have an uncommitted verify"):
        cache.reorder(torch.tensor([1, 0]))


def test_cache_states_of_another_layer_or_dtype_are_named(make_layer):
    cache = _prefilled(make_layer(), torch.randn(2, 3, HIDDEN))
    wider = make_layer(num_heads=4)
    with pytest.raises(ValueError, match=r"cache: layer 0's q_conv state has shape \[2, 16, 3\], the layer expects"):
        wider(torch.randn(2, 1, HIDDEN), cache=cache)
    double = make_layer().double()
    with pytest.raises(ValueError, match="cache: layer 0's recurrent state is torch.float32, the layer computes it in"):
        double(torch.randn(2, 1, HIDDEN, dtype=torch.float64), cache=cache)
    with pytest.raises(ValueError, match=r"hidden_states: dtype torch.float64 differs from the layer's weights"):
        make_layer()(torch.randn(2, 1, HIDDEN, dtype=torch.float64))


# ----------------------------------------------------------------------------- grouped value heads


def test_grouped_value_heads_decode_like_a_full_pass(make_layer):
    layer = make_layer(num_heads=2, num_v_heads=4, mode="auto")
    assert layer.v_proj.out_features == 4 * 8 and layer.A_log.shape == (4,) and layer.b_proj.out_features == 4
    assert layer.o_proj.in_features == 32 and layer.q_proj.out_features == 16
    x = torch.randn(2, 9, HIDDEN)
    with torch.no_grad():
        full = layer(x)
        cache = KDACache()
        pieces = [layer(x[:, :5], cache=cache)] + [layer(x[:, t : t + 1], cache=cache) for t in range(5, 9)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-5, atol=1e-5)
    assert cache.get(0).recurrent.shape == (2, 4, 8, 8)
    assert "num_v_heads=4" in repr(layer)


def test_grouped_value_heads_must_divide(make_layer):
    with pytest.raises(ValueError, match="num_v_heads must be a multiple of num_heads = 2, got 3"):
        make_layer(num_v_heads=3)
    with pytest.raises(ValueError, match="num_v_heads must be a positive int"):
        make_layer(num_v_heads=0)


# ----------------------------------------------------------------------------- presets


def _claims():
    from kdalib.sources import load_document

    return load_document(pathlib.Path(__file__).resolve().parents[2] / "sources.yaml").claims


@pytest.mark.parametrize("preset", [KIMI_K3_KDA, KIMI_LINEAR_48B_A3B_KDA], ids=lambda p: p.name)
def test_every_preset_figure_is_a_claim_or_a_named_assumption(preset):
    claims = _claims()
    for field_name, claim_id in preset.claims:
        assert claims[claim_id].value == getattr(preset, field_name), (field_name, claim_id)
    explained = {name for name, _ in preset.claims} | {name for name, _ in preset.assumptions}
    assert set(preset.layer_arguments()) <= explained
    assert all(reason for _, reason in preset.assumptions)


def test_k3_preset_is_k3s_card_with_the_bounded_gate():
    assert KIMI_K3_KDA.claim_ids() == {"hidden_size": "k3.arch.hidden_dim", "num_heads": "k3.arch.attention_heads"}
    assert KIMI_K3_KDA.lower_bound == -5.0 and "lower_bound" in dict(KIMI_K3_KDA.assumptions)
    assert "gate_rank" in dict(KIMI_K3_KDA.assumptions)
    assert KIMI_K3_KDA.state_bytes() == 3 * KIMI_LINEAR_48B_A3B_KDA.state_bytes()  # 96 vs 32 heads of 128 x 128


def test_the_layer_runs_at_k3s_head_count():
    layer = KimiDeltaAttention.from_config(KIMI_K3_KDA, hidden_size=64)
    assert (layer.num_heads, layer.head_dim, layer.lower_bound, layer.hidden_size) == (96, 128, -5.0, 64)
    x = torch.randn(1, 6, 64)
    with torch.no_grad():
        full = layer(x)
        cache = KDACache()
        pieces = [layer(x[:, :4], cache=cache), layer.verify(x[:, 4:], cache)]
        cache.commit(2)
    assert full.shape == (1, 6, 64) and torch.isfinite(full).all()
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-4, atol=1e-5)
    assert cache.get(0).recurrent.shape == (1, 96, 128, 128)


def test_presets_are_checked_like_layer_arguments():
    preset = KDALayerConfig(name="odd", hidden_size=16, num_heads=2, head_dim=8, num_v_heads=3)
    with pytest.raises(ValueError, match="num_v_heads must be a multiple"):
        KimiDeltaAttention.from_config(preset)


# ----------------------------------------------------------------------------- calling conventions


def test_cache_keyword_aliases(make_layer):
    layer = make_layer()
    x, nxt = torch.randn(2, 4, HIDDEN), torch.randn(2, 1, HIDDEN)
    with torch.no_grad():
        expected_cache = KDACache()
        layer(x, cache=expected_cache)
        expected = layer(nxt, cache=expected_cache)
        for name in ("past_key_values", "cache_params"):
            cache = KDACache()
            layer(x, **{name: cache})
            torch.testing.assert_close(layer(nxt, **{name: cache}), expected)
    with pytest.raises(ValueError, match="cache and past_key_values: the same cache under two names"):
        layer(x, cache=KDACache(), past_key_values=KDACache())
    with pytest.raises(ValueError, match="cache: expected a kdalib.nn.KDACache, got dict"):
        layer(x, past_key_values={})


def test_flash_linear_attention_signature(make_layer):
    layer = make_layer()
    fla_style = FLAKimiDeltaAttention(hidden_size=HIDDEN, num_heads=2, head_dim=8, mode="naive")
    fla_style.load_state_dict(layer.state_dict())
    x, nxt = torch.randn(2, 5, HIDDEN), torch.randn(2, 1, HIDDEN)
    with torch.no_grad():
        o, attentions, cache = fla_style(x, use_cache=True)
        assert attentions is None and isinstance(cache, KDACache)
        o_next, _, same = fla_style(nxt, past_key_values=cache, use_cache=True)
        full = layer(torch.cat([x, nxt], dim=1))
        stateless = fla_style(x)
    assert same is cache and stateless[2] is None
    torch.testing.assert_close(torch.cat([o, o_next], dim=1), full, rtol=1e-5, atol=1e-5)


def test_transformers_cache_params_keyword():
    pytest.importorskip("transformers")
    from kdalib.nn import TransformersKimiDeltaAttention

    layer = TransformersKimiDeltaAttention(hidden_size=HIDDEN, num_heads=2, head_dim=8, mode="naive")
    with pytest.raises(ValueError, match="cache and cache_params: the same cache under two names"):
        layer(torch.randn(1, 2, HIDDEN), cache=object(), cache_params=object())

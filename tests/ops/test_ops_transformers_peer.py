"""Cross-check against the pure-PyTorch KDA fallbacks that transformers ships (models/kimi_linear).

These are an independent implementation (a token loop and a chunked form); they run
in float32, take no cu_seqlens and need HV == H, so the comparison stays in that space.
"""

from __future__ import annotations

import logging

import pytest
import torch
from kda_test_utils import make_inputs, rel_rms

from kdalib.ops import chunk_kda, fused_recurrent_kda, naive_recurrent_kda

kimi_linear = pytest.importorskip("transformers.models.kimi_linear.modeling_kimi_linear")


def _peer(name):
    function = getattr(kimi_linear, name)
    # The hub-kernel decorator keeps the original function; call it directly so the
    # check never depends on a network or on an optional compiled package.
    return getattr(function, "__wrapped__", function)


@pytest.fixture(autouse=True)
def _quiet_transformers():
    logger = logging.getLogger("transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


@pytest.mark.parametrize("tokens", [1, 37, 128, 200])
@pytest.mark.parametrize("l2norm", [False, True], ids=["no-l2norm", "l2norm"])
def test_matches_transformers_recurrent_fallback(tokens, l2norm):
    inputs = make_inputs(
        batch=2,
        tokens=tokens,
        heads=3,
        key_dim=32,
        value_dim=48,
        dtype=torch.float32,
        gate="kimi",
        normalize_keys=not l2norm,
    )
    o_peer, s_peer = _peer("recurrent_kimi_delta_attention")(
        inputs["q"],
        inputs["k"],
        inputs["v"],
        inputs["g"],
        inputs["beta"],
        inputs["initial_state"],
        True,
        use_qk_l2norm_in_kernel=l2norm,
    )
    for op in (naive_recurrent_kda, fused_recurrent_kda, chunk_kda):
        o, s = op(**inputs, output_final_state=True, use_qk_l2norm_in_kernel=l2norm)
        assert rel_rms(o, o_peer) < 1e-5, op.__name__
        assert rel_rms(s, s_peer) < 1e-5, op.__name__


@pytest.mark.parametrize("tokens", [64, 100])
def test_matches_transformers_chunk_fallback(tokens):
    inputs = make_inputs(tokens=tokens, heads=2, key_dim=64, value_dim=32, dtype=torch.float32)
    o_peer, s_peer = _peer("chunk_kimi_delta_attention")(
        inputs["q"],
        inputs["k"],
        inputs["v"],
        inputs["g"],
        inputs["beta"],
        initial_state=inputs["initial_state"],
        output_final_state=True,
    )
    o, s = chunk_kda(**inputs, output_final_state=True)
    assert rel_rms(o, o_peer) < 1e-5 and rel_rms(s, s_peer) < 1e-5

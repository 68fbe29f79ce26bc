"""Shared builders for the kdalib.nn tests: small random layers and models, no downloads."""

from __future__ import annotations

import importlib
import inspect

import pytest
import torch

from kdalib.nn import KimiDeltaAttention

HIDDEN, HEADS, HEAD_DIM = 32, 2, 8


@pytest.fixture(autouse=True)
def _seed():
    """Every test draws the same random inputs however the run is selected or ordered."""
    torch.manual_seed(1234)


# transformers' Kimi Linear functions that it swaps, when it is imported, for an installed
# package's kernel (flash-linear-attention's Triton KDA, causal-conv1d's CUDA convolution).
TRANSFORMERS_SWAPPABLE = (
    "chunk_kimi_delta_attention",
    "recurrent_kimi_delta_attention",
    "causal_conv1d_fn",
    "causal_conv1d_update",
)


@pytest.fixture(autouse=True)
def _transformers_reference_path(monkeypatch):
    """Pins transformers' Kimi Linear layer to its own PyTorch functions for every test here.

    With flash-linear-attention installed, transformers routes the layer to FLA's Triton
    kernels even for CPU tensors, and the parity tests would compare against something
    else than the reference they document (or fail in Triton's driver lookup). Each
    swapped function keeps the PyTorch original as ``__wrapped__``.
    """
    try:
        module = importlib.import_module("transformers.models.kimi_linear.modeling_kimi_linear")
    except ImportError:  # no transformers: the tests that need it are skipped
        return
    for name in TRANSFORMERS_SWAPPABLE:
        monkeypatch.setattr(module, name, inspect.unwrap(getattr(module, name)))


def randomize_kda_weights(module: torch.nn.Module, seed: int = 0) -> None:
    """Weights large enough that every part of the layer matters, and realistic gates.

    Projections get std 0.3 instead of ~0.02 so that outputs are O(1); exp(A_log) spans
    [0.5, 200] as in trained checkpoints (notes/kda.md, section `kda-gate`), so some channels forget almost
    completely each token and others barely decay.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "A_log":
                rates = torch.logspace(-0.3, 2.3, parameter.numel())
                parameter.copy_(rates.log().reshape(parameter.shape))
            elif leaf == "dt_bias":
                parameter.copy_(torch.randn(parameter.shape, generator=generator) - 2.0)
            elif name.endswith("norm.weight"):
                parameter.copy_(1.0 + 0.2 * torch.randn(parameter.shape, generator=generator))
            else:
                parameter.copy_(0.3 * torch.randn(parameter.shape, generator=generator))


@pytest.fixture
def make_layer():
    """Factory: a small random `KimiDeltaAttention` (float32 unless `dtype` is given)."""

    def build(seed: int = 0, **kwargs) -> KimiDeltaAttention:
        options = dict(hidden_size=HIDDEN, num_heads=HEADS, head_dim=HEAD_DIM, mode="naive")
        options.update(kwargs)
        torch.manual_seed(seed)
        layer = KimiDeltaAttention(**options)
        randomize_kda_weights(layer, seed)
        return layer

    return build


@pytest.fixture
def randomize():
    """The `randomize_kda_weights` function."""
    return randomize_kda_weights


@pytest.fixture
def make_hf_config():
    """Factory: a transformers KimiLinearConfig small enough for CPU tests (KDA, KDA, KDA, MLA, ...)."""
    return tiny_transformers_config


def tiny_transformers_config(num_layers: int = 4, moe: bool = True):
    from transformers import KimiLinearConfig as HFKimiLinearConfig

    layer_types = ["full_attention" if (i + 1) % 4 == 0 else "linear_attention" for i in range(num_layers)]
    return HFKimiLinearConfig(
        vocab_size=64,
        hidden_size=HIDDEN,
        intermediate_size=48,
        moe_intermediate_size=16,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        kv_lora_rank=16,
        qk_rope_head_dim=8,
        qk_nope_head_dim=8,
        v_head_dim=8,
        num_local_experts=4,
        num_experts_per_tok=2,
        n_group=1,
        topk_group=1,
        linear_num_heads=HEADS,
        linear_head_dim=HEAD_DIM,
        layer_types=layer_types,
        mlp_layer_types=["dense"] + ["sparse" if moe else "dense"] * (num_layers - 1),
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )

"""ContextParallelKDA in real gloo processes against KimiDeltaAttention on the whole stream.

Outputs, the gradient of the hidden states and of every parameter (its ranks' shares summed);
the shards of 1 and 2 tokens make the convolutions' halo come from several ranks. The layer's
gate parameters (A_log, dt_bias) are float32 tensors whatever the layer's dtype, so their
gradients meet the float32 bound.
"""

from __future__ import annotations

import pytest
import torch
from distributed_cases import FLOAT32, FLOAT32_GRAD
from distributed_ranks import WORLD_SIZES, run_ranks

from kdalib.distributed import ContextParallelKDA
from kdalib.nn import KimiDeltaAttention

FLOAT32_PARAMETERS = ("A_log.grad", "dt_bias.grad")


def assert_layer(results: list[dict], case: str, float64: bool) -> None:
    for rank, per_rank in enumerate(results):
        errors = per_rank[case]
        assert {"y", "x.grad", "q_conv1d.weight.grad", "o_proj.weight.grad", "A_log.grad"} <= set(errors)
        for name, error in errors.items():
            if float64 and name not in FLOAT32_PARAMETERS:
                assert error["max_abs"] <= 1e-10, f"{case}, rank {rank}, {name}: {error}"
            else:
                bound = FLOAT32["o"] if name == "y" else FLOAT32_GRAD
                assert error["rel_rms"] <= bound, f"{case}, rank {rank}, {name}: {error}"
                if "single_rel_rms" in error:
                    assert error["single_rel_rms"] <= bound, f"the single-process layer itself: {case}, {name}"


@pytest.mark.parametrize("world_size", WORLD_SIZES)
@pytest.mark.parametrize("case", ["layer64", "layer-grouped64"], ids=["HV=H", "HV=2H"])
def test_layer_float64_matches_single_process(fast_results, world_size, case):
    """``layer-grouped64``: a layer with grouped value heads (num_v_heads = 2 num_heads)."""
    assert_layer(fast_results(world_size), f"{case}/{world_size}", float64=True)


@pytest.mark.slow
@pytest.mark.parametrize("world_size", WORLD_SIZES)
def test_layer_float32_and_unpacked_rows(tmp_path, world_size):
    cases = [f"layer32/{world_size}", f"layer-batched64/{world_size}"]
    results = run_ranks(world_size, cases, tmp_path)
    assert_layer(results, cases[0], float64=False)
    assert_layer(results, cases[1], float64=True)


def test_wraps_only_a_kda_layer_and_needs_a_process_group():

    with pytest.raises(TypeError, match="layer: expected a kdalib.nn.KimiDeltaAttention, got Linear"):
        ContextParallelKDA(torch.nn.Linear(2, 2))
    wrapped = ContextParallelKDA(KimiDeltaAttention(hidden_size=8, num_heads=1, head_dim=8))
    with pytest.raises(RuntimeError, match="needs an initialised torch.distributed process group"):
        wrapped(torch.zeros(1, 4, 8))

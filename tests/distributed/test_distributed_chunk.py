"""context_parallel_chunk_kda in real gloo processes (2, 3 and 4 ranks) against chunk_kda on the whole stream.

Per case and rank: outputs, final states and the gradients of q, k, v, g, beta and the initial
state (its ranks' shares summed). float64 to 1e-10; float32 within the single-process float32
tolerance of tests/ops (relative RMS against float64). See distributed_cases for the streams: a packed
sequence that starts mid-rank 0 and ends mid-rank R - 1, a sequence boundary on a rank boundary,
B = 2 unpacked rows, shards of 1 and 2 tokens.
"""

from __future__ import annotations

import pytest
import torch
from distributed_cases import FLOAT32, FLOAT32_GRAD
from distributed_ranks import WORLD_SIZES, run_ranks

from kdalib.distributed import context_parallel_chunk_kda

OP_QUANTITIES = ("o", "final_state", "initial_state.grad", "q.grad", "k.grad", "v.grad", "g.grad", "beta.grad")


def assert_float64(results: list[dict], case: str, quantities) -> None:
    for rank, per_rank in enumerate(results):
        errors = per_rank[case]
        assert set(quantities) <= set(errors), f"{case}: missing {set(quantities) - set(errors)}"
        for name in quantities:
            assert errors[name]["max_abs"] <= 1e-10, f"{case}, rank {rank}, {name}: {errors[name]}"


def assert_float32(results: list[dict], case: str, quantities) -> None:
    for rank, per_rank in enumerate(results):
        for name in quantities:
            error = per_rank[case][name]
            bound = FLOAT32.get(name, FLOAT32_GRAD)
            assert error["single_rel_rms"] <= bound, f"the single-process call itself: {case}, {name}: {error}"
            assert error["rel_rms"] <= bound, f"{case}, rank {rank}, {name}: {error}"


@pytest.mark.parametrize("world_size", WORLD_SIZES)
@pytest.mark.parametrize("case", ["spanning64", "boundary64", "batched64"])
def test_float64_matches_single_process(fast_results, world_size, case):
    assert_float64(fast_results(world_size), f"{case}/{world_size}", OP_QUANTITIES)


@pytest.mark.parametrize("world_size", WORLD_SIZES)
def test_float32_within_single_process_tolerance(fast_results, world_size):
    assert_float32(fast_results(world_size), f"spanning32/{world_size}", OP_QUANTITIES)


@pytest.mark.parametrize("world_size", WORLD_SIZES)
def test_triton_local_runs(fast_results, world_size):
    """The local runs on the Triton training path (as on CUDA; here in Triton's CPU interpreter),
    including the head's widened [v | 0] run."""
    assert_float32(fast_results(world_size), f"triton32/{world_size}", OP_QUANTITIES)


@pytest.mark.parametrize("world_size", WORLD_SIZES)
def test_every_rank_raises_the_same_error(fast_results, world_size):
    results = [per_rank[f"errors/{world_size}"] for per_rank in fast_results(world_size)]
    last = world_size - 1
    for rank, messages in enumerate(results):
        assert messages["chunk_size differs"].startswith("chunk_size: expected the same value on every rank")
        sizes = [8] * last + [5]
        assert messages["v of the wrong size on the last rank"] == (
            f"V of v: expected the same value on every rank: got {sizes} for ranks 0..{last}"
        )
        assert messages["cu_seqlens differ"] == "cu_seqlens: expected the same offsets (or None) on every rank"
        assert messages["cu_seqlens short of the stream"].startswith("cu_seqlens: expected to end at T = ")
        assert messages["initial_state of the wrong N"].startswith(
            "initial_state: expected shape [N, HV, K, V] with N = 1"
        )
        assert messages["float offsets"] == (
            f"cu_seqlens: expected an integer tensor (int32 or int64), got torch.float32 (rank {rank} of {world_size})"
        )
        state = messages["initial_state of the wrong K on rank 0"]
        if rank == 0:
            assert state == (
                f"initial_state: expected shape [N, HV, K, V] = [N, 2, 8, 8], got [1, 2, 7, 8] (rank 0 of {world_size})"
            )
        else:
            assert state == "the inputs on rank(s) [0] are invalid; those ranks raised the reason"
        hidden = messages["hidden size wrong on rank 0"]
        if rank == 0:
            assert hidden.startswith("hidden_states: expected shape [B, T_r, 12]") and hidden.endswith(
                f"(rank 0 of {world_size})"
            )
        else:
            assert hidden == "the inputs on rank(s) [0] are invalid; those ranks raised the reason"
        assert messages["then a good call"] == "no error"


@pytest.mark.slow
@pytest.mark.parametrize("world_size", WORLD_SIZES)
def test_larger_grid(tmp_path, world_size):
    """Longer streams, chunks of 16, 32 and 64, sequences every 7 tokens (float64) and one
    sequence across all ranks (float32)."""
    cases = [f"long{size}-{kind}/{world_size}" for size in (16, 32, 64) for kind in ("many64", "whole32")]
    results = run_ranks(world_size, cases, tmp_path)
    for case in cases:
        if "many64" in case:
            assert_float64(results, case, OP_QUANTITIES)
        else:
            assert_float32(results, case, OP_QUANTITIES)


def test_needs_a_process_group():

    x = torch.zeros(1, 4, 1, 8)
    with pytest.raises(RuntimeError, match="needs an initialised torch.distributed process group"):
        context_parallel_chunk_kda(x, x, x, x, torch.zeros(1, 4, 1))

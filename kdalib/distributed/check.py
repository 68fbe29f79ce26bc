"""Checks context-parallel KDA against the single-device call, one process per rank.

Run under torchrun, one process per GPU (NCCL) or on the CPU (gloo)::

    torchrun --standalone --nproc-per-node 4 -m kdalib.distributed.check --tokens 65536 --sequences 3

Every rank builds the same random problem (a packed stream whose sequence boundaries fall
inside shards), runs :func:`kdalib.ops.chunk_kda` on the whole stream on its own device and
:func:`kdalib.distributed.context_parallel_chunk_kda` on its shard, back-propagates a fixed
random cotangent through the outputs and final states, and compares outputs, final states and
the gradients of q, k, v, g, beta and the initial state. Rank 0 prints one JSON line with the
largest relative RMS error of each over all ranks; the exit status is 1 when one exceeds the
tolerance.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F

from kdalib.distributed.chunk import context_parallel_chunk_kda
from kdalib.distributed.launch import setup_from_env
from kdalib.ops import chunk_kda

DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16}
#: Relative RMS error allowed per dtype: float64 and float32 as the single-device tests; bfloat16
#: outputs are rounded once more on carried pieces (o_0 and p are bfloat16 before they are added).
TOLERANCE = {torch.float64: 1e-10, torch.float32: 5e-5, torch.bfloat16: 2e-2}
INPUTS = ("q", "k", "v", "g", "beta", "initial_state")


def shard_offsets(tokens: int, ranks: int) -> list[int]:
    """Contiguous shards as equal as possible (the first ranks take one token more)."""
    base, extra = divmod(tokens, ranks)
    offsets = [0]
    for rank in range(ranks):
        offsets.append(offsets[-1] + base + (rank < extra))
    return offsets


def sequence_offsets(tokens: int, sequences: int, generator: torch.Generator) -> list[int]:
    """``sequences`` packed sequences with random boundaries (anywhere, so mostly inside shards)."""
    if not 1 <= sequences <= tokens:
        raise ValueError(f"sequences: expected 1 <= sequences <= tokens = {tokens}, got {sequences}")
    cuts = torch.randperm(tokens - 1, generator=generator)[: sequences - 1] + 1
    return [0, *sorted(int(c) for c in cuts), tokens]


def _relative(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.double(), expected.double()
    scale = expected.pow(2).mean().sqrt().item()
    error = (actual - expected).pow(2).mean().sqrt().item()
    return error if scale == 0.0 else error / scale


def compare(
    tokens: int,
    sequences: int,
    heads: int,
    head_dim: int,
    dtype: torch.dtype,
    device: torch.device,
    chunk_size: int = 64,
    seed: int = 0,
    group=None,
) -> dict[str, float]:
    """The largest relative RMS error over all ranks of each compared quantity (a collective)."""
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=generator).to(device)

    cu = sequence_offsets(tokens, sequences, generator)
    whole = {
        "q": randn(1, tokens, heads, head_dim),
        "k": F.normalize(randn(1, tokens, heads, head_dim), dim=-1),
        "v": randn(1, tokens, heads, head_dim),
        "g": F.logsigmoid(randn(1, tokens, heads, head_dim) + 3.0),
        "beta": torch.rand(1, tokens, heads, generator=generator).to(device),
        "initial_state": randn(sequences, heads, head_dim, head_dim),
    }
    grad_o, grad_final = randn(1, tokens, heads, head_dim), randn(sequences, heads, head_dim, head_dim)
    cu_seqlens = torch.tensor(cu, device=device)
    state_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    options = dict(use_qk_l2norm_in_kernel=True, cu_seqlens=cu_seqlens, chunk_size=chunk_size, output_final_state=True)

    def leaf(x, cast):
        return x.detach().to(cast).clone().requires_grad_()

    reference = {n: leaf(x, state_dtype if n == "initial_state" else dtype) for n, x in whole.items()}
    o_ref, final_ref = chunk_kda(**reference, **options)
    ((o_ref.float() * grad_o).sum() + (final_ref.float() * grad_final).sum()).backward()

    offsets = shard_offsets(tokens, world)
    part = slice(offsets[rank], offsets[rank + 1])
    local = {n: leaf(x if n == "initial_state" else x[:, part], reference[n].dtype) for n, x in whole.items()}
    o, final = context_parallel_chunk_kda(**local, group=group, **options)
    loss = (o.float() * grad_o[:, part]).sum()
    if rank == 0:  # the replicated final states: one rank's cotangent reaches the rank that owns them
        loss = loss + (final.float() * grad_final).sum()
    loss.backward()

    share = (
        torch.zeros_like(local["initial_state"]) if local["initial_state"].grad is None else local["initial_state"].grad
    )
    initial_grad = share.detach().clone()
    dist.all_reduce(initial_grad, group=group)
    errors = {
        "o": _relative(o, o_ref[:, part]),
        "final_state": _relative(final, final_ref),
        "initial_state.grad": _relative(initial_grad, reference["initial_state"].grad),
    }
    for name in INPUTS[:-1]:
        errors[f"{name}.grad"] = _relative(local[name].grad, reference[name].grad[:, part])
    worst = torch.tensor(list(errors.values()), dtype=torch.float64, device=device)
    dist.all_reduce(worst, op=dist.ReduceOp.MAX, group=group)
    return dict(zip(errors, worst.tolist()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kdalib.distributed.check", description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=4096, help="tokens of the whole stream")
    parser.add_argument("--sequences", type=int, default=3, help="packed sequences in the stream")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=64, help="K = V")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--chunk-size", type=int, default=64, choices=(16, 32, 64))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", choices=("nccl", "gloo"), default=None, help="default: NCCL with CUDA, else gloo")
    args = parser.parse_args(argv)
    device = setup_from_env(args.backend)
    dtype = DTYPES[args.dtype]
    try:
        errors = compare(
            args.tokens, args.sequences, args.heads, args.head_dim, dtype, device, args.chunk_size, args.seed
        )
    finally:
        world = dist.get_world_size()
        rank = dist.get_rank()
        dist.destroy_process_group()
    passed = all(value <= TOLERANCE[dtype] for value in errors.values())
    if rank == 0:
        report = {"ranks": world, "device": str(device), "dtype": args.dtype, "tokens": args.tokens}
        print(json.dumps({**report, "max_rel_rms": errors, "tolerance": TOLERANCE[dtype], "passed": passed}))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())

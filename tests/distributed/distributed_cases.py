"""The cases the rank processes run: each compares the context-parallel call on this rank's
shard with the single-process call on the whole stream, and returns the errors.

Every rank builds the same whole problem from a fixed seed and runs the single-process
reference itself, so nothing but the code under test crosses ranks. The loss is a fixed
random projection of the outputs (each rank its own tokens) plus, on rank 0 only, one of the
final states: the replicated final states must send rank 0's gradient to the rank whose
sequence ends there. Gradients of replicated tensors (initial state, layer parameters) are each
rank's share, summed here with an all-reduce as data-parallel training would.

A case returns ``{quantity: {"max_abs": ..., "rel_rms": ..., "single_rel_rms": ...}}``, errors
against the float64 single-process call; ``single_rel_rms`` is the single-process call's own
error in the case's dtype (the tolerance the context-parallel call must stay within).
"""

from __future__ import annotations

import copy
import itertools

import torch
import torch.distributed as dist
import torch.nn.functional as F

from kdalib.distributed import ContextParallelKDA, context_parallel_chunk_kda
from kdalib.nn import KimiDeltaAttention
from kdalib.ops import chunk_kda

#: The single-process float32 tolerance of tests/ops (relative RMS against float64): outputs, gradients.
FLOAT32 = {"o": 1e-5, "final_state": 1e-5}
FLOAT32_GRAD = 5e-5
#: Shard lengths per world size: unequal, one shard shorter than a chunk, and for 3 and 4 ranks
#: shards shorter than the convolutions' W - 1 = 3 tokens (the halo then spans several ranks).
SHARDS = {1: [41], 2: [23, 17], 3: [19, 2, 22], 4: [17, 2, 1, 20]}
LONG_SHARDS = {2: [70, 58], 3: [50, 37, 41], 4: [33, 31, 40, 24]}


def offsets_of(shards: list[int]) -> list[int]:
    return [0, *itertools.accumulate(shards)]


def spanning_offsets(shards: list[int]) -> list[int]:
    """Sequence 1 starts mid-rank 0 and ends mid-rank R - 1: it spans every rank."""
    bounds = offsets_of(shards)
    return [0, 5, bounds[-2] + 3, bounds[-1]] if len(shards) > 1 else [0, 5, 20, bounds[-1]]


def boundary_offsets(shards: list[int]) -> list[int]:
    """Sequence 0 is rank 0's shard exactly; sequence 1 is the first token of rank 1 and sequence 2 crosses the rest."""
    bounds = offsets_of(shards)
    return sorted({0, bounds[1], min(bounds[1] + 1, bounds[-1] - 1), bounds[-1]})


def many_offsets(shards: list[int]) -> list[int]:
    """Short sequences every 7 tokens: boundaries fall inside ranks and on some rank boundaries."""
    total = offsets_of(shards)[-1]
    return sorted({*range(0, total, 7), *offsets_of(shards)[1:2], total})


def _errors(actual: torch.Tensor, expected: torch.Tensor, single: torch.Tensor | None = None) -> dict:
    actual, expected = actual.double(), expected.double()
    scale = expected.pow(2).mean().sqrt().item()

    def rel(x):
        error = (x.double() - expected).pow(2).mean().sqrt().item()
        return error if scale == 0.0 else error / scale

    result = {"max_abs": (actual - expected).abs().max().item(), "rel_rms": rel(actual)}
    if single is not None:
        result["single_rel_rms"] = rel(single)
    return result


def _leaf(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return tensor.detach().to(dtype).clone().requires_grad_()


def _summed(grad: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """The sum of every rank's share of a replicated tensor's gradient (None: this rank has none)."""
    total = torch.zeros_like(like) if grad is None else grad.detach().clone()
    dist.all_reduce(total)
    return total


def _problem(batch, tokens, sequences, heads, value_heads, key_dim, value_dim, seed):
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    return {
        "q": randn(batch, tokens, heads, key_dim),
        "k": F.normalize(randn(batch, tokens, heads, key_dim), dim=-1),
        "v": randn(batch, tokens, value_heads, value_dim),
        "g": F.logsigmoid(randn(batch, tokens, value_heads, key_dim) + 2.0),
        "beta": torch.rand(batch, tokens, value_heads, generator=generator, dtype=torch.float64),
        "initial_state": randn(sequences, value_heads, key_dim, value_dim),
        "grad_o": randn(batch, tokens, value_heads, value_dim),
        "grad_final": randn(sequences, value_heads, key_dim, value_dim),
    }


def _single(inputs, dtype, cu, options):
    leaves = {n: _leaf(inputs[n], dtype) for n in ("q", "k", "v", "g", "beta", "initial_state")}
    o, final = chunk_kda(**leaves, output_final_state=True, cu_seqlens=cu, **options)
    loss = (o.double() * inputs["grad_o"]).sum() + (final.double() * inputs["grad_final"]).sum()
    loss.backward()
    return o, final, {n: t.grad for n, t in leaves.items()}


def op_case(
    rank,
    world,
    *,
    shards,
    offsets=None,
    batch=1,
    dtype=torch.float64,
    heads=2,
    value_heads=4,
    key_dim=8,
    value_dim=6,
    chunk_size=16,
    l2norm=True,
    seed=0,
    use_triton=None,
):
    """context_parallel_chunk_kda against chunk_kda: outputs, final states and every gradient
    (``use_triton``: the context-parallel call's local runs only; the references run PyTorch)."""
    bounds = offsets_of(shards)
    cu = None if offsets is None else torch.tensor(offsets)
    sequences = batch if offsets is None else len(offsets) - 1
    inputs = _problem(batch, bounds[-1], sequences, heads, value_heads, key_dim, value_dim, seed)
    options = dict(chunk_size=chunk_size, use_qk_l2norm_in_kernel=l2norm)
    o_ref, final_ref, grads_ref = _single(inputs, torch.float64, cu, options)
    single = _single(inputs, dtype, cu, options) if dtype != torch.float64 else (o_ref, final_ref, grads_ref)

    part = slice(bounds[rank], bounds[rank + 1])
    local = {n: _leaf(inputs[n][:, part], dtype) for n in ("q", "k", "v", "g", "beta")}
    initial = _leaf(inputs["initial_state"], dtype)
    o, final = context_parallel_chunk_kda(
        **local, initial_state=initial, output_final_state=True, cu_seqlens=cu, use_triton=use_triton, **options
    )
    loss = (o.double() * inputs["grad_o"][:, part]).sum()
    if rank == 0:
        loss = loss + (final.double() * inputs["grad_final"]).sum()
    loss.backward()

    results = {
        "o": _errors(o, o_ref[:, part], single[0][:, part]),
        "final_state": _errors(final, final_ref, single[1]),
        "initial_state.grad": _errors(
            _summed(initial.grad, initial), grads_ref["initial_state"], single[2]["initial_state"]
        ),
    }
    for name, leaf in local.items():
        results[f"{name}.grad"] = _errors(leaf.grad, grads_ref[name][:, part], single[2][name][:, part])
    return results


def _layer_run(layer, x, grad_y, cu):
    x = _leaf(x, x.dtype)
    y = layer(x, cu_seqlens=cu)
    (y.double() * grad_y).sum().backward()
    return y, x.grad, {n: p.grad for n, p in layer.named_parameters()}


def layer_case(rank, world, *, shards, offsets=None, batch=1, dtype=torch.float64, value_heads=None, seed=0):
    """ContextParallelKDA against KimiDeltaAttention: outputs, input gradients and every parameter's
    gradient (``value_heads``: the layer's ``num_v_heads``)."""
    bounds = offsets_of(shards)
    cu = None if offsets is None else torch.tensor(offsets)
    torch.manual_seed(seed)
    layer = KimiDeltaAttention(
        hidden_size=12, num_heads=2, head_dim=8, num_v_heads=value_heads, conv_size=4, dtype=torch.float64
    )
    generator = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(batch, bounds[-1], 12, generator=generator, dtype=torch.float64)
    grad_y = torch.randn(batch, bounds[-1], 12, generator=generator, dtype=torch.float64)
    y_ref, dx_ref, dparams_ref = _layer_run(copy.deepcopy(layer), x, grad_y, cu)
    single = _layer_run(copy.deepcopy(layer).to(dtype), x.to(dtype), grad_y, cu) if dtype != torch.float64 else None

    part = slice(bounds[rank], bounds[rank + 1])
    wrapped = ContextParallelKDA(copy.deepcopy(layer).to(dtype))
    x_local = _leaf(x[:, part], dtype)
    y = wrapped(x_local, cu_seqlens=cu)
    (y.double() * grad_y[:, part]).sum().backward()

    def pick(which, index=None, name=None):
        if single is None:
            return None
        value = single[which] if name is None else single[which][name]
        return value if index is None else value[:, index]

    results = {
        "y": _errors(y, y_ref[:, part], pick(0, part)),
        "x.grad": _errors(x_local.grad, dx_ref[:, part], pick(1, part)),
    }
    for name, parameter in wrapped.layer.named_parameters():
        results[f"{name}.grad"] = _errors(_summed(parameter.grad, parameter), dparams_ref[name], pick(2, name=name))
    return results


def errors_case(rank, world):
    """Bad or disagreeing inputs: every rank raises (none is left waiting), then the group still works.

    Returns ``{scenario: message}`` (the ValueError's text on this rank, or "no error").
    """
    shards = SHARDS[world]
    bounds = offsets_of(shards)
    part = slice(bounds[rank], bounds[rank + 1])
    inputs = _problem(1, bounds[-1], 1, 2, 2, 8, 8, seed=3)
    local = {n: inputs[n][:, part] for n in ("q", "k", "v", "g", "beta")}
    last = world - 1

    def attempt(function, *args, **kwargs):
        try:
            function(*args, **kwargs)
        except ValueError as error:
            return str(error)
        return "no error"

    messages = {
        "chunk_size differs": attempt(context_parallel_chunk_kda, **local, chunk_size=32 if rank == 1 else 16),
        "v of the wrong size on the last rank": attempt(
            context_parallel_chunk_kda, **{**local, "v": local["v"][..., :5] if rank == last else local["v"]}
        ),
        "cu_seqlens differ": attempt(
            context_parallel_chunk_kda, **local, cu_seqlens=torch.tensor([0, 4 + (rank == 0), bounds[-1]])
        ),
        "cu_seqlens short of the stream": attempt(
            context_parallel_chunk_kda, **local, cu_seqlens=torch.tensor([0, 4, bounds[-1] - 1])
        ),
        "initial_state of the wrong N": attempt(
            context_parallel_chunk_kda, **local, initial_state=torch.zeros(2, 2, 8, 8, dtype=torch.float64)
        ),
        "initial_state of the wrong K on rank 0": attempt(
            context_parallel_chunk_kda,
            **local,
            initial_state=torch.zeros(1, 2, 8 - (rank == 0), 8, dtype=torch.float64),
        ),
        "float offsets": attempt(context_parallel_chunk_kda, **local, cu_seqlens=torch.tensor([0.0, bounds[-1]])),
        "hidden size wrong on rank 0": attempt(
            ContextParallelKDA(KimiDeltaAttention(hidden_size=12, num_heads=2, head_dim=8, dtype=torch.float64)),
            torch.zeros(1, shards[rank], 12 + (rank == 0), dtype=torch.float64),
        ),
    }
    o, _ = context_parallel_chunk_kda(**local)  # the group is still usable
    reference, _ = chunk_kda(**{n: inputs[n] for n in local})
    messages["then a good call"] = "no error" if torch.allclose(o, reference[:, part], atol=1e-12) else "mismatch"
    return messages


def _cases() -> dict:
    cases = {}
    for world in (1, 2, 3, 4):
        shards = SHARDS[world]
        cases[f"errors/{world}"] = errors_case
        cases[f"spanning64/{world}"] = lambda r, w, s=shards: op_case(r, w, shards=s, offsets=spanning_offsets(s))
        cases[f"boundary64/{world}"] = lambda r, w, s=shards: op_case(r, w, shards=s, offsets=boundary_offsets(s))
        cases[f"batched64/{world}"] = lambda r, w, s=shards: op_case(r, w, shards=s, batch=2, value_dim=8, l2norm=False)
        cases[f"spanning32/{world}"] = lambda r, w, s=shards: op_case(
            r, w, shards=s, offsets=spanning_offsets(s), dtype=torch.float32
        )
        cases[f"triton32/{world}"] = lambda r, w, s=shards: op_case(
            r, w, shards=s, offsets=spanning_offsets(s), dtype=torch.float32, chunk_size=64, use_triton=True
        )
        cases[f"layer64/{world}"] = lambda r, w, s=shards: layer_case(r, w, shards=s, offsets=spanning_offsets(s))
        cases[f"layer-grouped64/{world}"] = lambda r, w, s=shards: layer_case(
            r, w, shards=s, offsets=spanning_offsets(s), value_heads=4
        )
        # the larger grid (marked slow)
        cases[f"layer32/{world}"] = lambda r, w, s=shards: layer_case(
            r, w, shards=s, offsets=spanning_offsets(s), dtype=torch.float32
        )
        cases[f"layer-batched64/{world}"] = lambda r, w, s=shards: layer_case(r, w, shards=s, batch=2)
        if world in LONG_SHARDS:
            long = LONG_SHARDS[world]
            for size in (16, 32, 64):
                cases[f"long{size}-many64/{world}"] = lambda r, w, s=long, c=size: op_case(
                    r, w, shards=s, offsets=many_offsets(s), chunk_size=c, key_dim=16, value_dim=16
                )
                cases[f"long{size}-whole32/{world}"] = lambda r, w, s=long, c=size: op_case(
                    r, w, shards=s, dtype=torch.float32, chunk_size=c, heads=2, value_heads=2, key_dim=16, value_dim=16
                )
    return cases


CASES = _cases()

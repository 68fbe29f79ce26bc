"""Measuring the benchmark's rows: the inputs, the timing, the floors a row is held against
(one large matmul's rate, one large copy's bandwidth) and a suite's run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict

import torch
import torch.nn.functional as F

from kdalib.bench.methods import MethodUnavailable, resolve_method
from kdalib.bench.suites import CHUNK_SIZES, Shape, Suite, applies
from kdalib.ops import kda_gate
from kdalib.ops.chunk import chunk_kda_flops
from kdalib.timing import measure_seconds


def make_problem(shape: Shape, device: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random inputs like a trained layer's: unit-norm q and k, the shape's gate
    (:data:`~kdalib.bench.suites.GATES`; the bounded one as the raw projection with ``A_log`` and
    ``dt_bias``), a cached state for decode, ``cu_seqlens`` for packed rows; on train rows every
    floating input is a leaf that requires a gradient."""
    generator = torch.Generator().manual_seed(seed)
    b, t, h, k, v = shape.batch, shape.tokens, shape.heads, shape.key_dim, shape.value_dim
    dtype = getattr(torch, shape.dtype)

    def randn(*size):
        return torch.randn(*size, generator=generator)

    tensors = dict(
        q=F.normalize(randn(b, t, h, k), dim=-1),
        k=F.normalize(randn(b, t, h, k), dim=-1),
        v=randn(b, t, h, v),
        g=F.logsigmoid(randn(b, t, h, k) + 3.0),
        beta=torch.rand(b, t, h, generator=generator),
    )
    gate_parameters = {}
    if shape.gate == "kimi":
        rate = torch.empty(h).uniform_(1.0, 16.0, generator=generator)
        tensors["g"] = kda_gate(randn(b, t, h, k), rate.log())
    elif shape.gate == "bounded":  # the raw projection; every method computes the gate itself
        tensors["g"] = randn(b, t, h, k)
        gate_parameters = dict(A_log=torch.rand(h, generator=generator), dt_bias=torch.zeros(h * k))
    problem = {name: x.to(device=device, dtype=dtype) for name, x in tensors.items()}
    problem.update({name: x.to(device) for name, x in gate_parameters.items()})  # float32, as layers keep them
    if shape.decode:
        problem["initial_state"] = (0.1 * randn(b, h, k, v)).to(device)
    if shape.train:
        problem = {name: x.requires_grad_(True) for name, x in problem.items()}
    if shape.packed:
        problem["cu_seqlens"] = torch.tensor((0, *shape.packed), device=device).cumsum(0)
    return problem


def training_step(fn: Callable, problem: dict[str, torch.Tensor]) -> Callable[[], torch.Tensor]:
    """A call that runs ``fn`` forward and back to every input (a cotangent of ones); returns the output."""
    leaves = [x for x in problem.values() if x.requires_grad]

    def step():
        out = fn(**problem)[0]
        torch.autograd.grad(out, leaves, torch.ones_like(out), allow_unused=True)
        return out.detach()

    return step


def time_call(fn: Callable[[], object], repeats: int, device: str) -> float:
    """Best time of ``fn`` in seconds after one warm-up call; a warm-up slower than 2 s is the result."""
    return measure_seconds(fn, repeats=repeats, warmup=1, device=device, slow_seconds=2.0)


def matmul_rate(device: str, dtype: torch.dtype, repeats: int = 3) -> float:
    """FLOP/s of one large square ``torch.matmul`` (2048 on CPU, 8192 on CUDA)."""
    n = 8192 if device == "cuda" else 2048
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    seconds = time_call(lambda: torch.matmul(a, b), max(repeats, 3), device)
    return 2 * n**3 / seconds


def copy_bandwidth(device: str, repeats: int = 5, elements: int = 1 << 29) -> float:
    """Bytes per second of one large device-to-device copy (bytes read plus bytes written)."""
    source = torch.empty(elements, dtype=torch.bfloat16, device=device).normal_()
    target = torch.empty_like(source)
    seconds = time_call(lambda: target.copy_(source), repeats, device)
    return 2 * source.numel() * source.element_size() / seconds


def bytes_moved(problem: dict[str, torch.Tensor]) -> int:
    """The fewest bytes a KDA forward must move: every input read once, the output written once."""
    inputs = sum(t.numel() * t.element_size() for t in problem.values())
    return inputs + problem["v"].numel() * problem["v"].element_size()


def run_suite(
    suite: Suite,
    device: str,
    repeats: int,
    peer: Callable | None,
    log: Callable[[str], None] = print,
    on_shape: Callable[[dict], None] | None = None,
    breakdown: bool = False,
) -> dict:
    """Times every (shape, method) of a suite; returns the JSON-ready result.

    On CUDA each row also gets its peak memory above the inputs, and the prefill rows the memory
    floor (:func:`bytes_moved` at the copy bandwidth measured in the same run). ``on_shape``, when
    given, receives the result so far after each shape (a long run that is stopped keeps them).
    ``breakdown``: also profile one call of every row (:func:`time_breakdown`).
    """
    rates: dict[str, float] = {}
    rows = []
    bandwidth = copy_bandwidth(device) if device == "cuda" else None
    for shape in suite.shapes:
        problem = make_problem(shape, device)
        dtype = getattr(torch, shape.dtype)
        if shape.dtype not in rates:
            rates[shape.dtype] = matmul_rate(device, dtype)
        outputs: dict[str, torch.Tensor] = {}
        for method in suite.methods:
            if not applies(method, shape):
                continue
            try:
                fn = resolve_method(method, peer)
            except MethodUnavailable as error:
                log(f"  {shape.label} {method}: skipped ({error})")
                continue
            if shape.train:
                call = training_step(fn, problem)
            else:
                call = torch.no_grad()(lambda fn=fn, problem=problem: fn(**problem)[0])
            peak = _peak_bytes(call, device)
            outputs[method] = call()
            seconds = time_call(call, repeats, device)
            row = dict(
                shape=asdict(shape),
                label=shape.label,
                method=method,
                ms=seconds * 1e3,
                tokens_per_s=shape.batch * shape.tokens / seconds,
            )
            if peak is not None:
                row["peak_extra_mb"] = peak / 2**20
            if breakdown:
                row["breakdown"] = time_breakdown(call, device)
            if bandwidth is not None and not (shape.decode or shape.train):
                row["memory_floor_ms"] = bytes_moved(problem) / bandwidth * 1e3
                row["x_memory_floor"] = row["ms"] / row["memory_floor_ms"]
            rows.append(row)
            log(f"  {shape.label:<36} {method:<20} {seconds * 1e3:10.2f} ms")
        _annotate(rows, shape, outputs, rates[shape.dtype])
        if on_shape is not None:
            on_shape(_suite_result(rates, rows, bandwidth))
    return _suite_result(rates, rows, bandwidth)


def _suite_result(rates: dict, rows: list[dict], bandwidth: float | None) -> dict:
    result = dict(matmul_flops_per_s=dict(rates), rows=list(rows))
    if bandwidth is not None:
        result["copy_bytes_per_s"] = bandwidth
    return result


BREAKDOWN_TOP = 8
# The most launches of one kernel whose times a breakdown lists one by one.
BREAKDOWN_LAUNCHES = 16


def time_breakdown(call: Callable[[], object], device: str, top: int = BREAKDOWN_TOP) -> list[dict]:
    """Where one call's time goes: its ``top`` most expensive GPU kernels (on CUDA) or CPU
    operators (on the CPU), by their own time, under :mod:`torch.profiler`. It is one more call,
    profiled: its times include the profiler's overhead, so read the shares, not the sum.

    Returns:
        ``[{"name", "ms", "calls", "share"}]``, most expensive first; ``share`` is the fraction of
        the call's summed kernel (or operator) time. A kernel launched 2 to
        :data:`BREAKDOWN_LAUNCHES` times also gets ``launches_ms``, each launch's own time in the
        order they ran (one kernel's launches with different settings, such as a kernel's stages,
        are told apart so).
    """
    from torch.profiler import ProfilerActivity, profile

    cuda = device == "cuda"
    activities = [ProfilerActivity.CPU, ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]
    with profile(activities=activities) as profiler:
        call()
        if cuda:
            torch.cuda.synchronize()
    launches: dict[str, list[float]] = {}  # name -> own microseconds of each launch, in order
    for event in sorted(profiler.events(), key=lambda e: e.time_range.start):
        if cuda and event.self_cpu_time_total != 0:  # kernels and copies run on the device alone
            continue
        own = event.self_device_time_total if cuda else event.self_cpu_time_total
        launches.setdefault(event.key, []).append(own)
    total = sum(sum(times) for times in launches.values()) or 1.0
    ranked = sorted(launches.items(), key=lambda item: -sum(item[1]))[:top]
    parts = []
    for name, times in ranked:
        part = dict(name=name, ms=sum(times) / 1e3, calls=len(times), share=sum(times) / total)
        if 1 < len(times) <= BREAKDOWN_LAUNCHES:
            part["launches_ms"] = [us / 1e3 for us in times]
        parts.append(part)
    return parts


def _peak_bytes(fn: Callable[[], object], device: str) -> int | None:
    """Peak CUDA memory allocated during one call, above what was allocated before it (None off CUDA)."""
    if device != "cuda":
        return None
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def _annotate(rows: list[dict], shape: Shape, outputs: dict, rate: float) -> None:
    """Adds speed-up over the peer, the matmul floor, and agreement with the chunked form."""
    mine = [r for r in rows if r["label"] == shape.label]
    peer_ms = next((r["ms"] for r in mine if r["method"] == "peer"), None)
    references = ("chunk", "chunk_pytorch", "fused_recurrent", "single_steps", "triton")
    reference = next((outputs[m] for m in references if m in outputs), None)
    for row in mine:
        row["speedup_vs_peer"] = peer_ms / row["ms"] if peer_ms else None
        if row["method"] in CHUNK_SIZES:
            row["chunk_size"] = CHUNK_SIZES[row["method"]]
            flops = (
                chunk_kda_flops(shape.tokens, shape.heads, shape.key_dim, shape.value_dim, row["chunk_size"])
                * shape.batch
            )
            row["flops"] = flops
            row["floor_ms"] = flops / rate * 1e3
            row["x_floor"] = row["ms"] / row["floor_ms"]
        other = outputs.get(row["method"])
        if (
            reference is not None
            and other is not None
            and row["method"] not in ("sdpa", "sdpa_flash")
            and other is not reference
        ):
            diff = (other.double() - reference.double()).pow(2).mean().sqrt()
            row["rel_rms_vs_chunk"] = float(diff / reference.double().pow(2).mean().sqrt().clamp_min(1e-30))

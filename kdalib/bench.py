"""``kdalib bench``: time the KDA operators side by side, print a table, write JSON.

A row's *method* is an operator of :mod:`kdalib.ops.registry` (``naive``, ``chunk``,
``fused_recurrent``, ``fla``, ...), a variant of one (``chunk-c32``: ``chunk`` at C = 32),
or one of two comparisons that are not KDA operators: ``peer``, the CPU path of
flash-linear-attention (its pure-PyTorch ``naive_recurrent_kda``, loaded from the file by
path because importing the ``fla`` package needs triton), and ``sdpa_flash``, PyTorch's
flash SDPA causal attention at the same shapes. Every chunked row also shows the *matmul
floor*: the chunked form's FLOP count at the rate of one large ``torch.matmul`` measured
in the same run. The arguments are parsed in :mod:`kdalib.cli`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import types
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from kdalib.environment import provenance
from kdalib.ops.chunk import chunk_kda, chunk_kda_flops
from kdalib.ops.dispatch import kda
from kdalib.ops.registry import OPERATORS
from kdalib.timing import measure_seconds

PEER_FILE = Path("fla", "ops", "kda", "naive.py")
# Speed-up of the chunked form over the peer that the CPU suite is held to: (row label, minimum).
TARGETS = {
    "B1-T8192-H4-K64-V64-float32": 10.0,
    "B1-T2048-H32-K128-V128-float32": 3.0,
}

# Methods that run a registry operator with fixed options: name -> (operator, options).
VARIANTS = {"chunk-c32": ("chunk", {"chunk_size": 32})}
# Chunk size of each chunked method, for the FLOP count of the matmul floor.
CHUNK_SIZES = {"chunk": 64, "chunk-c32": 32}
# Methods that are not KDA operators: name -> what it is.
COMPARISONS = {
    "peer": "flash-linear-attention's pure-PyTorch naive_recurrent_kda, loaded by path (--fla-path)",
    "sdpa_flash": "PyTorch's flash SDPA causal attention at the same shapes (CUDA)",
    "chunk_pytorch": "the chunk operator's PyTorch form only (chunk_kda(use_triton=False)), never the Triton kernels",
    "fla_bounded": "flash-linear-attention's chunk_kda with the bounded gate computed in its kernel "
    "(use_gate_in_kernel, safe_gate, lower_bound=-5; g taken as the raw gate input)",
}
# Methods timed on decode rows (one new token per sequence from a cached state).
DECODE_METHODS = ("fused_recurrent", "fla_fused_recurrent")
# Methods timed on half-precision prefill rows only (the Triton and flash comparisons).
HALF_PRECISION_METHODS = ("sdpa_flash", "fla", "fla_bounded", "triton")
# Methods timed on training rows (forward and backward): kdalib's Triton training path, the PyTorch
# chunk form under autograd, FLA, flash SDPA.
TRAIN_METHODS = ("triton", "chunk_pytorch", "fla", "sdpa_flash")


class MethodUnavailable(RuntimeError):
    """flash-linear-attention's reference file, or an optional operator, could not be loaded."""


@dataclass(frozen=True)
class Shape:
    """One benchmark row's problem: q, k ``[B, T, H, K]``, v ``[B, T, H, V]`` (decode: T new tokens;
    train: the forward and the backward to every input)."""

    batch: int
    tokens: int
    heads: int
    key_dim: int
    value_dim: int
    dtype: str = "float32"
    decode: bool = False
    train: bool = False

    @property
    def label(self) -> str:
        kind = "decode-" if self.decode else "train-" if self.train else ""
        return f"{kind}B{self.batch}-T{self.tokens}-H{self.heads}-K{self.key_dim}-V{self.value_dim}-{self.dtype}"


@dataclass(frozen=True)
class Suite:
    description: str
    device: str
    shapes: tuple[Shape, ...]
    methods: tuple[str, ...]


def _grid(tokens, heads, dim, dtype="float32"):
    return tuple(Shape(1, t, heads, dim, dim, dtype) for t in tokens)


CPU_METHODS = ("peer", "naive", "fused_recurrent", "chunk", "chunk-c32")
# The training rows of the GPU suites: forward and backward, bf16, H32 K=V=128.
TRAIN_SHAPES = tuple(Shape(b, t, 32, 128, 128, "bfloat16", train=True) for b, t in ((8, 4096), (2, 16384), (1, 65536)))
SUITES = {
    "cpu": Suite(
        "CPU: T in {512, 2048, 8192} at H4 K=V=64 and T in {512, 2048} at H32 K=V=128, fp32; "
        "naive, fused_recurrent, chunk and flash-linear-attention's naive_recurrent_kda",
        "cpu",
        _grid((512, 2048, 8192), 4, 64) + _grid((512, 2048), 32, 128),
        CPU_METHODS,
    ),
    "cpu-quick": Suite(
        "CPU, a minute: T in {512, 2048} at H4 K=V=64 and T=512 at H32 K=V=128",
        "cpu",
        _grid((512, 2048), 4, 64) + _grid((512,), 32, 128),
        CPU_METHODS,
    ),
    "cpu-targets": Suite(
        "CPU: only the two target rows (T=8192 H4 K=V=64; T=2048 H32 K=V=128), chunk vs peer",
        "cpu",
        _grid((8192,), 4, 64) + _grid((2048,), 32, 128),
        ("peer", "chunk", "chunk-c32"),
    ),
    "tiny": Suite(
        "smoke test: tiny shapes, every CPU method, one training row (used by the tests)",
        "cpu",
        _grid((40, 100), 2, 16) + (Shape(1, 40, 2, 16, 16, train=True),),
        (*CPU_METHODS, "chunk_pytorch"),
    ),
    "gpu": Suite(
        "CUDA, H32 K=V=128: kdalib's Triton forward, chunk (Triton for bf16, PyTorch for fp32), the "
        "PyTorch chunk form, flash-linear-attention's chunk_kda (default and bounded gate) and flash SDPA "
        "at B8 T4096, B2 T16384 and B1 T2K-64K in bf16, T 2K-32K in fp32; decode steps at B in {1, 64}; "
        "forward+backward (train rows) at B8 T4096, B2 T16384, B1 T65536 in bf16",
        "cuda",
        (Shape(8, 4096, 32, 128, 128, "bfloat16"), Shape(2, 16384, 32, 128, 128, "bfloat16"))
        + _grid((2048, 8192, 32768, 65536), 32, 128, "bfloat16")
        + _grid((2048, 8192, 32768), 32, 128, "float32")
        + (Shape(1, 1, 32, 128, 128, "bfloat16", True), Shape(64, 1, 32, 128, 128, "bfloat16", True))
        + TRAIN_SHAPES,
        (
            "triton",
            "chunk",
            "chunk_pytorch",
            "fla",
            "fla_bounded",
            "sdpa_flash",
            "fused_recurrent",
            "fla_fused_recurrent",
        ),
    ),
    "gpu-train": Suite(
        "CUDA, H32 K=V=128, bf16: only the gpu suite's forward+backward rows (B8 T4096, B2 T16384, B1 T65536): "
        "kdalib's Triton training path, the PyTorch chunk form, flash-linear-attention and flash SDPA",
        "cuda",
        TRAIN_SHAPES,
        TRAIN_METHODS,
    ),
}


def known_methods() -> tuple[str, ...]:
    """Every method name a suite may list."""
    return tuple(method_descriptions())


def method_descriptions() -> dict[str, str]:
    """Method name -> one line: the registry's operators, their variants, then the comparisons."""
    lines = {name: f"[{', '.join(op.devices)}] {op.description}" for name, op in OPERATORS.items()}
    lines.update({name: f"{operator} with {options}" for name, (operator, options) in VARIANTS.items()})
    return lines | COMPARISONS


# ----------------------------------------------------------------------------- peer


def _module_from_source(source: str, origin: str, name: str = "fla_ops_kda_naive") -> types.ModuleType:
    """Executes a Python file's text as a module (nothing is written to disk)."""
    module = types.ModuleType(name)
    module.__file__ = origin
    try:
        exec(compile(source, origin, "exec"), module.__dict__)
    except ImportError as error:  # the file imports einops at the top
        raise MethodUnavailable(f"{origin}: {error} (pip install einops)") from error
    return module


def read_peer_source(fla_path: str | None) -> tuple[str, str]:
    """The text of ``fla/ops/kda/naive.py`` and where it came from.

    Args:
        fla_path: an unpacked tree (containing ``fla/`` or being it), a ``.whl`` file (read
            in place), or None to look for an installed ``fla`` without importing it.

    Raises:
        MethodUnavailable: saying where it looked.
    """
    if fla_path is None:
        spec = importlib.util.find_spec("fla")
        if spec is None or not spec.submodule_search_locations:
            raise MethodUnavailable("no installed 'fla' package; pass --fla-path (a fla-core wheel or source tree)")
        candidates = [Path(p).parent / PEER_FILE for p in spec.submodule_search_locations]
    else:
        root = Path(fla_path)
        if root.is_file() and root.suffix == ".whl":
            member = PEER_FILE.as_posix()
            with zipfile.ZipFile(root) as wheel:
                if member not in wheel.namelist():
                    raise MethodUnavailable(f"--fla-path {root}: the wheel has no {member}")
                return wheel.read(member).decode("utf-8"), f"{root}!{member}"
        candidates = [root / PEER_FILE, root / Path(*PEER_FILE.parts[1:])]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8"), str(candidate)
    raise MethodUnavailable(f"no {PEER_FILE.as_posix()} under {', '.join(str(c.parent) for c in candidates)}")


def load_peer(fla_path: str | None) -> Callable:
    """flash-linear-attention's pure-PyTorch ``naive_recurrent_kda``, loaded by path."""
    return _module_from_source(*read_peer_source(fla_path)).naive_recurrent_kda


# ----------------------------------------------------------------------------- inputs and methods


def make_problem(shape: Shape, device: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random inputs like a trained layer's: unit-norm q and k, moderate gates, a cached state for
    decode; on train rows every input is a leaf that requires a gradient."""
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
    problem = {name: x.to(device=device, dtype=dtype) for name, x in tensors.items()}
    if shape.decode:
        problem["initial_state"] = (0.1 * randn(b, h, k, v)).to(device)
    if shape.train:
        problem = {name: x.requires_grad_(True) for name, x in problem.items()}
    return problem


def _training_step(fn: Callable, problem: dict[str, torch.Tensor]) -> Callable[[], torch.Tensor]:
    """A call that runs ``fn`` forward and back to every input (a cotangent of ones); returns the output."""
    leaves = list(problem.values())

    def step():
        out = fn(**problem)[0]
        torch.autograd.grad(out, leaves, torch.ones_like(out), allow_unused=True)
        return out.detach()

    return step


def _sdpa_flash(q, k, v, **_):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        return F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
        ), None


def resolve_method(name: str, peer: Callable | None) -> Callable:
    """The callable behind a method name.

    Raises:
        MethodUnavailable: the peer is not loaded, or an optional operator cannot be imported.
        ValueError: for an unknown name.
    """
    if name == "peer":
        if peer is None:
            raise MethodUnavailable("peer not loaded")
        return lambda q, k, v, g, beta, **kw: peer(q, k, v, g, beta, **kw)
    if name == "sdpa_flash":
        return _sdpa_flash
    if name == "chunk_pytorch":
        return lambda *args, **kwargs: chunk_kda(*args, use_triton=False, **kwargs)
    if name == "fla_bounded":
        try:
            fla_chunk = OPERATORS["fla"].function
        except RuntimeError as error:
            raise MethodUnavailable(str(error)) from error
        return lambda q, k, v, g, beta, **kw: fla_chunk(
            q,
            k,
            v,
            g,
            beta,
            use_gate_in_kernel=True,
            safe_gate=True,
            lower_bound=-5.0,
            A_log=torch.zeros(v.shape[2], device=v.device),
            dt_bias=torch.zeros(v.shape[2] * q.shape[3], device=v.device),
            **kw,
        )
    operator, options = VARIANTS.get(name, (name, {}))
    if operator not in OPERATORS:
        raise ValueError(f"method: unknown name {name!r}; expected one of {', '.join(known_methods())}")
    try:
        _ = OPERATORS[operator].function  # imported now: a missing optional dependency skips the row
    except RuntimeError as error:
        raise MethodUnavailable(str(error)) from error
    return lambda *args, **kwargs: kda(*args, backend=operator, **options, **kwargs)


def _applies(method: str, shape: Shape) -> bool:
    """Decode rows time the decoding operators, train rows the training methods; prefill rows time
    the rest, with the token-by-token form in float32 only and the Triton/flash comparisons in half
    precision only."""
    if shape.train:
        return method in TRAIN_METHODS
    if shape.decode:
        return method in DECODE_METHODS
    if method in DECODE_METHODS:
        return method == "fused_recurrent" and shape.dtype == "float32"
    return not (method in HALF_PRECISION_METHODS and shape.dtype == "float32")


# ----------------------------------------------------------------------------- timing


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


# ----------------------------------------------------------------------------- running a suite


def copy_bandwidth(device: str, repeats: int = 5) -> float:
    """Bytes per second of one large device-to-device copy (bytes read plus bytes written)."""
    source = torch.empty(1 << 29, dtype=torch.bfloat16, device=device).normal_()
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
            if not _applies(method, shape):
                continue
            try:
                fn = resolve_method(method, peer)
            except MethodUnavailable as error:
                log(f"  {shape.label} {method}: skipped ({error})")
                continue
            if shape.train:
                call = _training_step(fn, problem)
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


def write_result(path: Path, result: dict) -> None:
    """Writes ``result`` as JSON to ``path`` in one step (a temporary file renamed over it), so the
    file is always either the previous complete write or the new one."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(temporary, path)


BREAKDOWN_TOP = 8


def time_breakdown(call: Callable[[], object], device: str, top: int = BREAKDOWN_TOP) -> list[dict]:
    """Where one call's time goes: its ``top`` most expensive GPU kernels (on CUDA) or CPU
    operators (on the CPU), by their own time, under :mod:`torch.profiler`. It is one more call,
    profiled: its times include the profiler's overhead, so read the shares, not the sum.

    Returns:
        ``[{"name", "ms", "calls", "share"}]``, most expensive first; ``share`` is the fraction of
        the call's summed kernel (or operator) time.
    """
    from torch.profiler import ProfilerActivity, profile

    cuda = device == "cuda"
    activities = [ProfilerActivity.CPU, ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]
    with profile(activities=activities) as profiler:
        call()
        if cuda:
            torch.cuda.synchronize()
    if cuda:  # kernels and copies run on the device alone: no host time of their own
        own = {
            e.key: (e.self_device_time_total, e.count) for e in profiler.key_averages() if e.self_cpu_time_total == 0
        }
    else:
        own = {e.key: (e.self_cpu_time_total, e.count) for e in profiler.key_averages()}
    total = sum(us for us, _ in own.values()) or 1.0
    ranked = sorted(own.items(), key=lambda item: -item[1][0])[:top]
    return [dict(name=name, ms=us / 1e3, calls=calls, share=us / total) for name, (us, calls) in ranked]


def format_breakdowns(result: dict, width: int = 60) -> str:
    """One block per row that has a breakdown: its most expensive kernels or operators."""
    lines = []
    for row in result["rows"]:
        if not row.get("breakdown"):
            continue
        lines.append(f"{row['label']} {row['method']} ({row['ms']:.2f} ms):")
        for part in row["breakdown"]:
            name = part["name"] if len(part["name"]) <= width else part["name"][: width - 3] + "..."
            lines.append(f"  {part['share']:6.1%} {part['ms']:9.3f} ms {part['calls']:5d}x  {name}")
    return "\n".join(lines)


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
    reference = next((outputs[m] for m in ("chunk", "chunk_pytorch", "fused_recurrent") if m in outputs), None)
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
        if reference is not None and other is not None and row["method"] != "sdpa_flash" and other is not reference:
            diff = (other.double() - reference.double()).pow(2).mean().sqrt()
            row["rel_rms_vs_chunk"] = float(diff / reference.double().pow(2).mean().sqrt().clamp_min(1e-30))


def format_table(result: dict) -> str:
    """The printed table: one line per (shape, method)."""
    head = (
        f"{'shape':<36} {'method':<20} {'ms':>10} {'tokens/s':>12} {'vs peer':>8} {'floor ms':>9} {'x floor':>8}"
        f" {'x mem floor':>11} {'peak MB':>9}"
    )
    lines = [head, "-" * len(head)]
    for row in result["rows"]:
        speed = f"{row['speedup_vs_peer']:.1f}x" if row.get("speedup_vs_peer") else "-"
        floor = f"{row['floor_ms']:.2f}" if "floor_ms" in row else "-"
        ratio = f"{row['x_floor']:.1f}" if "x_floor" in row else "-"
        memory = f"{row['x_memory_floor']:.1f}" if "x_memory_floor" in row else "-"
        peak = f"{row['peak_extra_mb']:,.0f}" if "peak_extra_mb" in row else "-"
        lines.append(
            f"{row['label']:<36} {row['method']:<20} {row['ms']:>10.2f} {row['tokens_per_s']:>12,.0f} "
            f"{speed:>8} {floor:>9} {ratio:>8} {memory:>11} {peak:>9}"
        )
    rates = ", ".join(f"{k} {v / 1e9:,.0f} GFLOP/s" for k, v in result["matmul_flops_per_s"].items())
    lines.append(f"matmul floor rate (one large torch.matmul, this run): {rates}")
    if "copy_bytes_per_s" in result:
        lines.append(
            f"memory floor: inputs read once and output written once at {result['copy_bytes_per_s'] / 1e9:,.0f} "
            "GB/s (one large device-to-device copy, this run)"
        )
    return "\n".join(lines)


def check_targets(result: dict) -> list[str]:
    """One line per target row present: the best chunk variant's speed-up over the peer against the target."""
    lines = []
    for label, target in TARGETS.items():
        rows = [
            r for r in result["rows"] if r["label"] == label and r["method"] in CHUNK_SIZES and r.get("speedup_vs_peer")
        ]
        if rows:
            best = max(rows, key=lambda r: r["speedup_vs_peer"])
            verdict = "met" if best["speedup_vs_peer"] >= target else "NOT met"
            lines.append(
                f"target {label}: {best['method']} {best['speedup_vs_peer']:.1f}x the peer "
                f"(>= {target:.0f}x): {verdict}"
            )
    return lines


def listing() -> str:
    """What ``kdalib bench --list`` prints: the suites, then every method."""
    lines = [f"{name:<12} [{suite.device}] {suite.description}" for name, suite in SUITES.items()]
    lines += ["default      'gpu' when the device is cuda, else 'cpu'", "", "methods:"]
    lines += [f"{name:<20} {description}" for name, description in method_descriptions().items()]
    return "\n".join(lines)


def cmd_bench(args) -> int:
    """Handler of ``kdalib bench`` (arguments parsed in :mod:`kdalib.cli`). Exit 0, or 2 on unusable input."""
    if args.list:
        print(listing())
        return 0
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device == "cuda" and not torch.cuda.is_available():
        print("kdalib bench: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    name = ("gpu" if device == "cuda" else "cpu") if args.suite == "default" else args.suite
    if name not in SUITES:
        print(f"kdalib bench: unknown --suite {name!r}; choose from {', '.join(SUITES)} (see --list)", file=sys.stderr)
        return 2
    suite = SUITES[name]
    if suite.device != device:
        print(f"kdalib bench: suite {name!r} runs on {suite.device}, not {device}", file=sys.stderr)
        return 2
    if args.repeats < 1:
        print(f"kdalib bench: --repeats must be >= 1, got {args.repeats}", file=sys.stderr)
        return 2
    threads = getattr(args, "threads", None)
    if threads is not None:
        if threads < 1:
            print(f"kdalib bench: --threads must be >= 1, got {threads}", file=sys.stderr)
            return 2
        torch.set_num_threads(threads)
    peer = None
    if "peer" in suite.methods:
        try:
            peer = load_peer(args.fla_path)
        except MethodUnavailable as error:
            if args.fla_path is not None:
                print(f"kdalib bench: {error}", file=sys.stderr)
                return 2
            print(f"kdalib bench: peer unavailable, its rows are skipped: {error}", file=sys.stderr)
    print(f"kdalib bench: suite {name} on {device}, best of {args.repeats}, {torch.get_num_threads()} CPU threads")
    out = Path(args.json or f"bench-{device}.json")
    header = dict(provenance(device), suite=name, repeats=args.repeats)

    def save_partial(partial: dict) -> None:  # rows so far, marked incomplete until the suite ends
        write_result(out, dict(header, complete=False, **partial))

    result = dict(
        header,
        complete=True,
        **run_suite(suite, device, args.repeats, peer, on_shape=save_partial, breakdown=args.breakdown),
    )
    print(format_table(result))
    if args.breakdown:
        print(format_breakdowns(result))
    for line in check_targets(result):
        print(line)
    write_result(out, result)
    print(f"wrote {out}")
    return 0

"""``kdalib dev ptxas``: what ptxas makes of the Triton kernels for a GPU, on a machine without one.

Registers and spills decide how a kernel runs, and reading them needs no GPU: the kernels'
entry points run on CPU tensors of the chosen sizes with every kernel launch caught instead of
made (nothing runs on a device, and nothing reads the outputs the caught kernels would have
written), so each launch has exactly the arguments, constexprs, warps and stages the entry point
chooses. Each one is then compiled as Triton's JIT would compile it on that GPU (the same
signature and alignment specialisations, ``GPUTarget("cuda", capability, 32)``), and ``ptxas -v``
on its PTX gives the registers per thread, the spill stores and loads and the stack frame;
Triton's metadata gives the shared memory.

The paths (:data:`PATHS`), at K = V = ``dim``, with the in-kernel L2 norm (as the bench and Kimi
models run them):

* ``forward``: :func:`~kdalib.ops.triton.triton_chunk_kda` with the gate given
  (``prefill_local``, ``prefill_states``, ``prefill_output``);
* ``forward-bounded``: the same with ``kda_gate``'s bounded form computed in the kernel;
* ``training``: :func:`~kdalib.ops.triton.triton_chunk_training`, forward and backward
  (``prefill_local`` in chunk rows, ``chunk_scan``'s three kernels, ``chunk_local_grad``).

A launch that several paths make alike (the same kernel, arguments' types, constexprs, warps and
stages) is reported once, under the first. Kernel work is described in CONTRIBUTING.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from unittest import mock

import torch

from kdalib.ops.triton import HAS_TRITON, interpreting

#: The lower bound of the ``forward-bounded`` path's gate (public Kimi K3 inference configurations).
BOUNDED_LOWER_BOUND = -5.0
DTYPES = ("bfloat16", "float16", "float32")
#: Tokens of the one sequence every path runs on.
TOKENS = 128


class ReportUnavailable(RuntimeError):
    """The report cannot be made here: no triton, no CUDA backend, the interpreter on, or no ptxas."""


@dataclass(frozen=True)
class Launch:
    """One caught kernel launch: the kernel (a Triton ``JITFunction``) and its arguments."""

    path: str
    kernel: object
    args: tuple
    kwargs: dict

    @property
    def name(self) -> str:
        """``module.function``, the module without its package (``prefill_local._chunk_local_kernel``)."""
        function = self.kernel.fn
        return f"{function.__module__.rsplit('.', 1)[-1]}.{function.__name__}"


@dataclass(frozen=True)
class Row:
    """What ptxas reports for one compiled launch (bytes for spills, stack and shared memory)."""

    path: str
    kernel: str
    warps: int
    stages: int
    registers: int | None = None
    spill_stores: int | None = None
    spill_loads: int | None = None
    stack: int | None = None
    shared: int | None = None
    error: str | None = None


def _inputs(dim: int, heads: int, dtype: torch.dtype, tokens: int = TOKENS) -> dict[str, torch.Tensor]:
    """One sequence of ``tokens`` tokens (two chunks; a multiple of 16, as the bench's T, so the
    launches are specialised alike): q, k, v, g, beta in ``dtype``, as the bench's rows."""
    generator = torch.Generator().manual_seed(0)

    def randn(*size):
        return torch.randn(*size, generator=generator).to(dtype)

    return dict(
        q=randn(1, tokens, heads, dim),
        k=randn(1, tokens, heads, dim),
        v=randn(1, tokens, heads, dim),
        g=-randn(1, tokens, heads, dim).abs(),
        beta=randn(1, tokens, heads).sigmoid(),
    )


def _forward(dim: int, heads: int, dtype: torch.dtype) -> None:
    from kdalib.ops.triton import triton_chunk_kda

    triton_chunk_kda(
        **_inputs(dim, heads, dtype), scale=dim**-0.5, output_final_state=True, use_qk_l2norm_in_kernel=True
    )


def _forward_bounded(dim: int, heads: int, dtype: torch.dtype) -> None:
    from kdalib.ops.triton import triton_chunk_kda

    gate = dict(A_log=torch.zeros(heads), dt_bias=torch.zeros(heads * dim), lower_bound=BOUNDED_LOWER_BOUND)
    triton_chunk_kda(
        **_inputs(dim, heads, dtype), scale=dim**-0.5, output_final_state=True, use_qk_l2norm_in_kernel=True, **gate
    )


def _training(dim: int, heads: int, dtype: torch.dtype) -> None:
    from kdalib.ops._validate import validate_call
    from kdalib.ops.triton import triton_chunk_training

    inputs = {name: x.requires_grad_() for name, x in _inputs(dim, heads, dtype).items()}
    call = validate_call(*inputs.values(), None, None, False, True, None, 64)
    output, _ = triton_chunk_training(call)
    output.float().sum().backward()


#: Path name -> what it runs (on CPU tensors of K = V = dim, ``heads`` heads, the dtype).
PATHS: dict[str, Callable[[int, int, torch.dtype], None]] = {
    "forward": _forward,
    "forward-bounded": _forward_bounded,
    "training": _training,
}


def caught_launches(path: str, dim: int, heads: int, dtype: torch.dtype) -> list[Launch]:
    """Every kernel launch ``path`` makes, caught instead of made."""
    from triton.runtime.jit import JITFunction

    launches = []

    def catch(kernel, *args, grid, warmup, **kwargs):
        launches.append(Launch(path, kernel, args, kwargs))

    with mock.patch.object(JITFunction, "run", catch):
        PATHS[path](dim, heads, dtype)
    return launches


def find_ptxas(path: str | None = None) -> str:
    """The ptxas to run: ``path`` when given, else Triton's (``$TRITON_PTXAS_PATH``, else the one
    its wheel ships in ``triton/backends/nvidia/bin``).

    Raises:
        ReportUnavailable: naming where it looked.
    """
    from triton import knobs

    if path is not None:
        if knobs.NvidiaTool.from_path(path) is None:
            raise ReportUnavailable(f"--ptxas {path}: no ptxas runs there (`{path} --version` failed)")
        return path
    try:
        return knobs.nvidia.ptxas.path
    except RuntimeError:
        raise ReportUnavailable(
            "ptxas not found: $TRITON_PTXAS_PATH is "
            + (f"{os.environ['TRITON_PTXAS_PATH']!r}" if os.environ.get("TRITON_PTXAS_PATH") else "not set")
            + f" and Triton's own {knobs.nvidia.ptxas.default_path} does not run; install a triton wheel "
            "that ships it, or pass --ptxas PATH (a CUDA toolkit's bin/ptxas)"
        ) from None


_REGISTERS = re.compile(r"Used (\d+) registers")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")


def parse_ptxas_info(text: str) -> dict[str, int]:
    """``registers``, ``stack``, ``spill_stores``, ``spill_loads`` from ``ptxas -v``'s output for one kernel.

    Raises:
        ValueError: the text has no register count or no stack-frame line.
    """
    registers, frame = _REGISTERS.search(text), _FRAME.search(text)
    if registers is None or frame is None:
        raise ValueError(f"ptxas -v printed no register count or stack frame: {text.strip()[-500:]!r}")
    stack, stores, loads = map(int, frame.groups())
    return dict(registers=int(registers.group(1)), stack=stack, spill_stores=stores, spill_loads=loads)


def _source(launch: Launch, target, warps: int | None, stages: int | None):
    """``(ASTSource, options)``: the launch as Triton's JIT compiles it for ``target`` (its signature,
    constexprs and alignment specialisations), with ``warps``/``stages`` in place of the launch's when given."""
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    kernel = launch.kernel
    kwargs = dict(launch.kwargs, debug=False)
    if warps is not None:
        kwargs["num_warps"] = warps
    if stages is not None:
        kwargs["num_stages"] = stages
    backend = make_backend(target)
    bind = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound, specialization, options = bind(*launch.args, **kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound, specialization, options)
    return ASTSource(kernel, signature, constexprs, attrs), options


def report(
    paths: list[str],
    dim: int = 128,
    heads: int = 32,
    dtype: str = "bfloat16",
    capability: int = 90,
    kernels: list[str] | None = None,
    warps: list[int] | None = None,
    stages: list[int] | None = None,
    ptxas: str | None = None,
    log: Callable[[str], None] = lambda line: None,
) -> list[Row]:
    """One :class:`Row` per distinct launch of ``paths`` (those whose ``module.function`` name contains
    one of ``kernels``, when given), with each of ``warps`` and ``stages`` in place of the entry
    point's when given.

    Raises:
        ReportUnavailable: no triton, its CUDA backend or ptxas, or ``TRITON_INTERPRET`` is on.
        ValueError: an unknown path or dtype.
    """
    check_available()
    unknown = [p for p in paths if p not in PATHS]
    if unknown or dtype not in DTYPES:
        raise ValueError(f"path: expected some of {list(PATHS)} and dtype one of {DTYPES}, got {paths}, {dtype!r}")
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import sm_arch_from_capability

    ptxas = find_ptxas(ptxas)
    target, arch = GPUTarget("cuda", capability, 32), sm_arch_from_capability(capability)
    rows, seen = [], set()
    # Triton's own compile runs ptxas too (to build the binary): the same one
    with mock.patch.dict(os.environ, TRITON_PTXAS_PATH=ptxas), tempfile.TemporaryDirectory() as folder:
        for path in paths:
            for launch in caught_launches(path, dim, heads, getattr(torch, dtype)):
                if kernels and not any(part in launch.name for part in kernels):
                    continue
                for w, s in itertools.product(warps or [None], stages or [None]):
                    ast, options = _source(launch, target, w, s)
                    if (ast.hash(), options.hash()) in seen:
                        continue
                    seen.add((ast.hash(), options.hash()))
                    log(f"compiling {path} {launch.name} for {arch}")
                    rows.append(_row(launch, ast, options, target, arch, ptxas, Path(folder, "kernel.ptx")))
    return rows


def _row(launch: Launch, ast, options, target, arch: str, ptxas: str, ptx: Path) -> Row:
    import triton

    head = (launch.path, launch.name, options.num_warps, options.num_stages)
    try:
        compiled = triton.compile(ast, target=target, options=options.__dict__)
    except Exception as error:  # a kernel that does not compile is a row saying why; the rest go on
        first = (str(error).strip().splitlines() or [""])[0]
        return Row(*head, error=f"{type(error).__name__}: {first}")
    ptx.write_text(compiled.asm["ptx"])
    done = subprocess.run(
        [ptxas, "-v", f"--gpu-name={arch}", str(ptx), "-o", os.devnull], capture_output=True, text=True
    )
    if done.returncode != 0:
        return Row(*head, error=f"ptxas failed: {done.stderr.strip()[-300:]}")
    return Row(*head, **parse_ptxas_info(done.stdout + done.stderr), shared=compiled.metadata.shared)


def check_available() -> None:
    """Raises :class:`ReportUnavailable` saying why the kernels cannot be compiled for CUDA here."""
    if not HAS_TRITON:
        raise ReportUnavailable("the `triton` package is not installed")
    if interpreting():
        raise ReportUnavailable(
            "TRITON_INTERPRET is on, so the kernels are the interpreter's, which do not compile: "
            "run it without TRITON_INTERPRET"
        )
    from triton.backends import backends

    if "nvidia" not in backends:
        raise ReportUnavailable(f"this triton has no CUDA backend (it has: {', '.join(sorted(backends)) or 'none'})")


COLUMNS = (
    ("path", "path"),
    ("kernel", "kernel"),
    ("warps", "warps"),
    ("stages", "stages"),
    ("registers", "registers"),
    ("spill_stores", "spill stores (B)"),
    ("spill_loads", "spill loads (B)"),
    ("stack", "stack (B)"),
    ("shared", "shared (B)"),
)


def format_table(rows: list[Row]) -> str:
    """The rows as an aligned text table; a row that failed gives its error after its kernel."""
    table = [[title for _, title in COLUMNS]]
    table += [[str(getattr(row, name)) for name, _ in COLUMNS] for row in rows]
    width = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    lines = []
    for line, row in zip(table, [None, *rows]):
        cells = [f"{cell:<{width[i]}}" for i, cell in enumerate(line[:2])]
        if row is not None and row.error is not None:
            lines.append("  ".join([*cells, row.error]))
        else:
            lines.append("  ".join(cells + [f"{cell:>{width[i + 2]}}" for i, cell in enumerate(line[2:])]))
    return "\n".join(lines)


def cmd_ptxas(args: argparse.Namespace) -> int:
    """``kdalib dev ptxas``: prints the table (and writes ``--json``); 2 when it cannot run here, 1
    when a kernel failed to compile."""
    try:
        rows = report(
            args.path or list(PATHS),
            dim=args.dim,
            heads=args.heads,
            dtype=args.dtype,
            capability=args.capability,
            kernels=args.kernel,
            warps=args.warps,
            stages=args.stages,
            ptxas=args.ptxas,
            log=lambda line: print(line, file=sys.stderr, flush=True),
        )
    except ReportUnavailable as error:
        print(f"kdalib dev ptxas: {error}", file=sys.stderr)
        return 2
    if not rows:
        print("kdalib dev ptxas: no kernel matched --kernel", file=sys.stderr)
        return 2
    print(format_table(rows))
    if args.json:
        import triton

        document = dict(
            capability=args.capability,
            dtype=args.dtype,
            dim=args.dim,
            heads=args.heads,
            tokens=TOKENS,
            triton=triton.__version__,
            ptxas=find_ptxas(args.ptxas),
            rows=[asdict(row) for row in rows],
        )
        Path(args.json).write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    return 1 if any(row.error for row in rows) else 0

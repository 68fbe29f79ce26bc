"""The benchmark's methods: the callable behind each name, and flash-linear-attention's CPU
reference (the ``peer``) loaded from its file by path."""

from __future__ import annotations

import importlib.util
import types
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from kdalib.bench.suites import BOUNDED_LOWER_BOUND, COMPARISONS, VARIANTS
from kdalib.ops import OPERATORS, chunk_kda, fused_recurrent_kda, kda, kda_gate, validate_call
from kdalib.ops.recurrent import fused_recurrent_pytorch

PEER_FILE = Path("fla", "ops", "kda", "naive.py")


class MethodUnavailable(RuntimeError):
    """flash-linear-attention's reference file, or an optional operator, could not be loaded."""


def known_methods() -> tuple[str, ...]:
    """Every method name a suite may list."""
    return tuple(method_descriptions())


def method_descriptions() -> dict[str, str]:
    """Method name -> one line: the registry's operators, their variants, then the comparisons."""
    lines = {name: f"[{', '.join(op.devices)}] {op.description}" for name, op in OPERATORS.items()}
    lines.update({name: f"{operator} with {options}" for name, (operator, options) in VARIANTS.items()})
    return lines | COMPARISONS


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


def _sdpa(q, k, v, flash: bool = False, **_):
    """Causal softmax attention on the same q, k, v (no gate, no beta: they mean nothing to it);
    ``flash``: only the flash kernel may run."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v = (x.transpose(1, 2) for x in (q, k, v))
    if not flash:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True), None
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True), None


def _fused_recurrent_pytorch(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False):
    """The recurrent form's PyTorch token loop on every device (never the Triton kernel)."""
    return fused_recurrent_pytorch(
        validate_call(q, k, v, g, beta, scale, initial_state, output_final_state, False, None)
    )


def _verify(q, k, v, g, beta, **kw):
    """The k draft tokens in one call, keeping the state after each (what a verify step needs)."""
    o, final, _states = fused_recurrent_kda(q, k, v, g, beta, output_states_every=1, **kw)
    return o, final


def _single_steps(q, k, v, g, beta, initial_state=None, output_final_state=False, scale=None):
    """k one-token calls, each state passed to the next (and so kept, as a rollback needs)."""
    outputs, states, state = [], [], initial_state
    for t in range(q.shape[1]):
        step = (x[:, t : t + 1] for x in (q, k, v, g, beta))
        o_t, state = fused_recurrent_kda(*step, scale=scale, initial_state=state, output_final_state=True)
        outputs.append(o_t)
        states.append(state)
    return torch.cat(outputs, dim=1), state if output_final_state else None


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
    if name in ("sdpa", "sdpa_flash"):
        return lambda q, k, v, g, beta, **kw: _sdpa(q, k, v, flash=name == "sdpa_flash")
    if name == "fused_recurrent_pytorch":
        return _fused_recurrent_pytorch
    if name == "chunk_pytorch":
        return lambda *args, **kwargs: chunk_kda(*args, use_triton=False, **kwargs)
    if name == "triton_states64":
        return lambda *args, **kwargs: chunk_kda(*args, use_triton=True, output_states_every=64, **kwargs)[:2]
    if name == "verify":
        return _verify
    if name == "single_steps":
        return _single_steps
    if name == "fla":
        try:
            fla_chunk = OPERATORS["fla"].function
        except RuntimeError as error:
            raise MethodUnavailable(str(error)) from error
        return _fla_gated(fla_chunk)
    operator, options = VARIANTS.get(name, (name, {}))
    if operator not in OPERATORS:
        raise ValueError(f"method: unknown name {name!r}; expected one of {', '.join(known_methods())}")
    try:
        _ = OPERATORS[operator].function  # imported now: a missing optional dependency skips the row
    except RuntimeError as error:
        raise MethodUnavailable(str(error)) from error
    if operator in ("chunk", "triton"):  # the gate inside the Triton forward when it runs
        use_triton = True if operator == "triton" else None
        return _gated(lambda *a, **kw: chunk_kda(*a, use_triton=use_triton, **options, **kw), in_kernel=True)
    return _gated(lambda *args, **kwargs: kda(*args, backend=operator, **options, **kwargs), in_kernel=False)


def _gated(fn: Callable, in_kernel: bool) -> Callable:
    """``fn`` on a problem whose ``g`` may be the bounded gate's raw projection (``A_log`` given):
    passed on as ``chunk_kda``'s gate arguments (``in_kernel``), else turned into the log decay by
    :func:`kda_gate` first, inside the timed call."""

    def call(q, k, v, g, beta, A_log=None, dt_bias=None, **kwargs):
        if A_log is None:
            return fn(q, k, v, g, beta, **kwargs)
        if in_kernel:
            return fn(q, k, v, g, beta, A_log=A_log, dt_bias=dt_bias, lower_bound=BOUNDED_LOWER_BOUND, **kwargs)
        return fn(q, k, v, kda_gate(g, A_log, dt_bias, BOUNDED_LOWER_BOUND), beta, **kwargs)

    return call


def _fla_gated(fla_chunk: Callable) -> Callable:
    """flash-linear-attention's chunk_kda; on a bounded-gate problem (``A_log`` given) its gate runs
    in its kernel (``use_gate_in_kernel``, ``safe_gate``, the same lower bound)."""

    def call(q, k, v, g, beta, A_log=None, dt_bias=None, **kwargs):
        if A_log is None:
            return fla_chunk(q, k, v, g, beta, **kwargs)
        gate = dict(use_gate_in_kernel=True, safe_gate=True, lower_bound=BOUNDED_LOWER_BOUND)
        return fla_chunk(q, k, v, g, beta, A_log=A_log, dt_bias=dt_bias, **gate, **kwargs)

    return call

"""The KDA operators, in one table: name -> function, devices, autograd, what it is for.

Every place that chooses an operator by name reads this table: :func:`kdalib.ops.kda`
(``backend=``), the layer's ``mode`` (:class:`kdalib.nn.KimiDeltaAttention`), ``kdalib bench``
and the tests. A new operator is one more :class:`Operator` entry in :data:`OPERATORS`.

Every operator takes ``(q, k, v, g, beta, scale, initial_state=None, output_final_state=False,
use_qk_l2norm_in_kernel=False, cu_seqlens=None)`` (plus ``chunk_size=`` when ``chunked``) and
returns ``(o, final_state)``; :func:`kdalib.ops.kda` validates the inputs once and runs the
operator through :meth:`Operator.run` with a number for ``scale`` (``K ** -0.5`` by default).
kdalib's own operators are imported here directly (the fast forms take the validated shapes, so
nothing is checked twice); the optional flash-linear-attention peer is named by a
``"module:function"`` string and imported only when it is asked for.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from kdalib.ops._validate import KDACall, KDAShapes
from kdalib.ops.naive import naive_chunk_kda, naive_recurrent_kda
from kdalib.ops.router import chunk_kda, fused_recurrent_kda, run_chunk, run_recurrent, triton_unavailable

AUTO = "auto"


@dataclass(frozen=True)
class Operator:
    """One KDA operator.

    Attributes:
        name: the name used by ``kda(backend=...)``, the layer's ``mode`` and ``kdalib bench``.
        target: the implementation (the public function), or ``"module:function"`` of an optional
            peer's, imported on first use.
        devices: device types it runs on (``"cpu"``, ``"cuda"``).
        autograd: True when gradients flow through it (training); False for inference-only kernels.
        chunked: True when it takes ``chunk_size=``.
        description: one line for tables and error messages.
        requirement: what to install when the import fails (empty for kdalib's own forms).
        check: ``(q, k, v, g, beta, initial_state) -> str | None``, saying why the operator cannot
            serve these tensors (None when it can); it replaces the ``devices`` test for operators
            with more conditions (dtype, sizes, Triton's CPU interpreter).
        options: keyword arguments the implementation is always called with, as ``(name, value)`` pairs.
        validated: the same operator on a validated call (``(call: KDACall[, chunk_size],
            **options)``); None: ``target`` is called.
    """

    name: str
    target: Callable | str
    devices: tuple[str, ...]
    autograd: bool
    chunked: bool
    description: str
    requirement: str = ""
    check: Callable | None = None
    options: tuple[tuple[str, object], ...] = ()
    validated: Callable | None = None

    @property
    def function(self) -> Callable:
        """The implementation (with its fixed ``options``), imported now.

        Raises:
            RuntimeError: the module cannot be imported (names what to install).
        """
        function = self._load(self.target) if isinstance(self.target, str) else self.target
        return functools.partial(function, **dict(self.options)) if self.options else function

    def supports(self, device: torch.device | str) -> bool:
        """True when this operator runs natively on tensors of ``device``."""
        return torch.device(device).type in self.devices

    def unavailable_reason(self, q, k, v, g, beta, initial_state=None) -> str | None:
        """Why this operator cannot run on these tensors, or None when it can (gradients aside)."""
        if self.check is not None:
            return self.check(q, k, v, g, beta, initial_state)
        if not self.supports(q.device):
            return f"runs on {' or '.join(self.devices)} tensors, got device {q.device}"
        return None

    def run(self, call: KDACall, chunk_size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Runs the operator on a validated call (``chunk_size`` is passed to chunked ones)."""
        sizes = {"chunk_size": chunk_size} if self.chunked else {}
        if self.validated is not None:
            return self.validated(call, **sizes, **dict(self.options))
        own = not isinstance(self.target, str)  # kdalib's references take the validated offsets as they are
        return self.function(
            *call.tensors[:5],
            scale=call.scale,
            initial_state=call.initial_state,
            output_final_state=call.output_final_state,
            use_qk_l2norm_in_kernel=call.use_qk_l2norm,
            cu_seqlens=call.shapes.sequences if own else call.shapes.cu_seqlens,
            **sizes,
        )

    def _load(self, target: str) -> Callable:
        module_name, function_name = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise RuntimeError(f"operator {self.name!r} needs {self.requirement or module_name}: {error}") from error
        return getattr(module, function_name)


OPERATORS: dict[str, Operator] = {
    op.name: op
    for op in (
        Operator(
            "naive",
            naive_recurrent_kda,
            ("cpu", "cuda"),
            autograd=True,
            chunked=False,
            description="the token loop, float64-exact: the oracle the other forms are tested against",
        ),
        Operator(
            "naive_chunk",
            naive_chunk_kda,
            ("cpu", "cuda"),
            autograd=True,
            chunked=True,
            description="the chunkwise algorithm written step by step as in the derivation (readable, slow)",
        ),
        Operator(
            "chunk",
            chunk_kda,
            ("cpu", "cuda"),
            autograd=True,
            chunked=True,
            description="chunkwise-parallel PyTorch, prefill and training (on CUDA as kdalib.ops.router says: Triton)",
            validated=run_chunk,
        ),
        Operator(
            "fused_recurrent",
            fused_recurrent_kda,
            ("cpu", "cuda"),
            autograd=True,
            chunked=False,
            description="token by token from a cached state: decoding (a Triton kernel on CUDA)",
            validated=run_recurrent,
        ),
        Operator(
            "triton",
            chunk_kda,
            ("cuda",),
            autograd=True,
            chunked=True,
            description="kdalib's Triton kernels: the chunked forward (inference), the scan and its backward (training)",
            options=(("use_triton", True),),
            requirement="triton",
            check=functools.partial(triton_unavailable, "chunk"),
            validated=run_chunk,
        ),
        Operator(
            "fla",
            "fla.ops.kda:chunk_kda",
            ("cuda",),
            autograd=True,
            chunked=False,
            description="flash-linear-attention's Triton chunk_kda",
            requirement="flash-linear-attention (pip install flash-linear-attention) and triton",
        ),
        Operator(
            "fla_fused_recurrent",
            "fla.ops.kda:fused_recurrent_kda",
            ("cuda",),
            autograd=False,
            chunked=False,
            description="flash-linear-attention's Triton decoding kernel",
            requirement="flash-linear-attention (pip install flash-linear-attention) and triton",
        ),
    )
}

BACKENDS: tuple[str, ...] = (AUTO, *OPERATORS)


def get_operator(name: str) -> Operator:
    """The operator called ``name``.

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    try:
        return OPERATORS[name]
    except (KeyError, TypeError):
        raise ValueError(f"expected one of {', '.join(BACKENDS)}, got {name!r}") from None


def auto_operator(shapes: KDAShapes) -> Operator:
    """The operator ``"auto"`` picks: ``fused_recurrent`` when every sequence brings exactly one
    new token (decoding), ``chunk`` for everything else (prefill, training)."""
    decode = shapes.tokens == 1 if shapes.sequences is None else shapes.num_sequences == shapes.tokens
    return OPERATORS["fused_recurrent" if decode else "chunk"]

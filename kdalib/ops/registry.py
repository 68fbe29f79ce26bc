"""The KDA operators, in one table: name -> function, devices, autograd, what it is for.

Every place that chooses an operator by name reads this table: :func:`kdalib.ops.kda`
(``backend=``), the layer's ``mode`` (:class:`kdalib.nn.KimiDeltaAttention`), ``kdalib bench``
and the tests. A new operator is one more :class:`Operator` entry in :data:`OPERATORS`.

Every operator takes ``(q, k, v, g, beta, scale, initial_state=None, output_final_state=False,
use_qk_l2norm_in_kernel=False, cu_seqlens=None)`` (plus ``chunk_size=`` when ``chunked``) and
returns ``(o, final_state)``; :func:`kdalib.ops.kda` validates the inputs and always passes a
number for ``scale`` (``K ** -0.5`` by default). Functions are loaded on first use, so an optional
dependency (flash-linear-attention, triton) is imported only when its operator is asked for.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

AUTO = "auto"


@dataclass(frozen=True)
class Operator:
    """One KDA operator.

    Attributes:
        name: the name used by ``kda(backend=...)``, the layer's ``mode`` and ``kdalib bench``.
        target: ``"module:function"`` of the implementation, imported on first use.
        devices: device types it runs on (``"cpu"``, ``"cuda"``).
        autograd: True when gradients flow through it (training); False for inference-only kernels.
        chunked: True when it takes ``chunk_size=``.
        description: one line for tables and error messages.
        requirement: what to install when the import fails (empty for kdalib's own forms).
        check: ``"module:function"`` of ``(q, k, v, g, beta, initial_state) -> str | None``, saying why
            the operator cannot serve these tensors (None when it can); it replaces the ``devices``
            test for operators with more conditions (dtype, sizes, Triton's CPU interpreter).
        options: keyword arguments the implementation is always called with, as ``(name, value)`` pairs.
    """

    name: str
    target: str
    devices: tuple[str, ...]
    autograd: bool
    chunked: bool
    description: str
    requirement: str = ""
    check: str = ""
    options: tuple[tuple[str, object], ...] = ()

    @property
    def function(self) -> Callable:
        """The implementation (with its fixed ``options``), imported now.

        Raises:
            RuntimeError: the module cannot be imported (names what to install).
        """
        function = self._load(self.target)
        return functools.partial(function, **dict(self.options)) if self.options else function

    def supports(self, device: torch.device | str) -> bool:
        """True when this operator runs natively on tensors of ``device``."""
        return torch.device(device).type in self.devices

    def unavailable_reason(self, q, k, v, g, beta, initial_state=None) -> str | None:
        """Why this operator cannot run on these tensors, or None when it can (gradients aside)."""
        if self.check:
            return self._load(self.check)(q, k, v, g, beta, initial_state)
        if not self.supports(q.device):
            return f"runs on {' or '.join(self.devices)} tensors, got device {q.device}"
        return None

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
            "kdalib.ops.naive:naive_recurrent_kda",
            ("cpu", "cuda"),
            autograd=True,
            chunked=False,
            description="the token loop, float64-exact: the oracle the other forms are tested against",
        ),
        Operator(
            "naive_chunk",
            "kdalib.ops.naive:naive_chunk_kda",
            ("cpu", "cuda"),
            autograd=True,
            chunked=True,
            description="the chunkwise algorithm written step by step as in the derivation (readable, slow)",
        ),
        Operator(
            "chunk",
            "kdalib.ops.chunk:chunk_kda",
            ("cpu", "cuda"),
            autograd=True,
            chunked=True,
            description="chunkwise-parallel PyTorch, prefill and training (16-bit CUDA inference: Triton)",
        ),
        Operator(
            "fused_recurrent",
            "kdalib.ops.recurrent:fused_recurrent_kda",
            ("cpu", "cuda"),
            autograd=True,
            chunked=False,
            description="token by token from a cached state: decoding (a Triton kernel on CUDA)",
        ),
        Operator(
            "triton",
            "kdalib.ops.chunk:chunk_kda",
            ("cuda",),
            autograd=True,
            chunked=True,
            description="kdalib's Triton kernels: the chunked forward (inference), the scan and its backward (training)",
            options=(("use_triton", True),),
            requirement="triton",
            check="kdalib.ops.chunk:triton_chunk_unavailable_reason",
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


def auto_operator(tokens: int, cu_seqlens: torch.Tensor | None) -> Operator:
    """The operator ``"auto"`` picks: ``fused_recurrent`` when every sequence brings exactly one
    new token (decoding), ``chunk`` for everything else (prefill, training)."""
    decode = tokens == 1 if cu_seqlens is None else cu_seqlens.numel() - 1 == tokens
    return OPERATORS["fused_recurrent" if decode else "chunk"]


def load_fla_chunk_kda() -> Callable:
    """flash-linear-attention's Triton ``chunk_kda``, or ``RuntimeError`` saying what to install."""
    return OPERATORS["fla"].function

"""``kda``: one entry point that runs the KDA operator named by ``backend``.

The names are those of :mod:`kdalib.ops.registry`, plus ``"auto"``: ``fused_recurrent``
for decoding (one new token per sequence) and ``chunk`` for everything else (prefill,
training; the chunked form itself runs kdalib's Triton kernels for CUDA inference). An
operator asked for where it cannot run (its device, dtype or size limits, or a call that
needs gradients it does not provide) is a clear error rather than a silent fallback.
"""

from __future__ import annotations

import torch

from kdalib.ops._prepare import needs_grad
from kdalib.ops._validate import PackedSequences, validate_call
from kdalib.ops.registry import AUTO, auto_operator, get_operator


def kda(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    cu_seqlens: torch.Tensor | PackedSequences | None = None,
    backend: str = AUTO,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Kimi Delta Attention through the operator named by ``backend``.

    Args:
        q, k, v, g, beta, scale, initial_state, output_final_state, use_qk_l2norm_in_kernel, cu_seqlens: as in :func:`kdalib.ops.chunk_kda` (shapes ``[B, T, H, K]``,
            ``[B, T, HV, V]``, ``[B, T, HV, K]``, ``[B, T, HV]``, state ``[N, HV, K, V]``;
            ``cu_seqlens`` a tensor or :class:`~kdalib.ops.PackedSequences`).
        backend: ``"auto"`` or an operator name of :data:`kdalib.ops.registry.OPERATORS`
            (``naive``, ``naive_chunk``, ``chunk``, ``fused_recurrent``, ``triton``, ``fla``, ...).
        chunk_size: chunk length for the chunked operators (16, 32 or 64).

    Returns:
        ``(o [B, T, HV, V], final_state [N, HV, K, V] | None)``.

    Raises:
        ValueError: on bad inputs or an unknown backend.
        RuntimeError: the operator cannot run on these inputs (device, dtype, size), has no
            backward for inputs that require gradients, or its optional dependency is not installed.
    """
    if backend == AUTO:
        operator = None
    else:
        try:
            operator = get_operator(backend)
        except ValueError as error:
            raise ValueError(f"backend: {error}") from None
    call = validate_call(
        q, k, v, g, beta, scale, initial_state, output_final_state, use_qk_l2norm_in_kernel, cu_seqlens, chunk_size
    )
    if operator is None:
        operator = auto_operator(call.shapes)
    reason = operator.unavailable_reason(q, k, v, g, beta, initial_state)
    if reason is None and not operator.autograd and needs_grad(q, k, v, g, beta, initial_state):
        reason = (
            "it computes no gradients; use backend='chunk' for inputs that require them, "
            "or call it under torch.no_grad()"
        )
    if reason is not None:
        raise RuntimeError(f"backend={operator.name!r} ({operator.description}): {reason}")
    return operator.run(call, chunk_size)

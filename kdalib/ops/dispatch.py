"""``kda``: one entry point that picks the KDA operator for the job.

* ``"auto"``: :func:`fused_recurrent_kda` for decode (one new token per sequence),
  :func:`chunk_kda` for everything else (prefill, training).
* ``"chunk"`` / ``"recurrent"``: force one of the two forms (``chunk_kda`` itself runs the
  Triton kernels for CUDA inference).
* ``"triton"``: kdalib's Triton chunked forward (:func:`kdalib.ops.triton.triton_chunk_kda`),
  inference only; a clear error when it cannot run (no triton, no CUDA tensors, float64,
  K > 256, or a gradient is needed).
* ``"fla"``: flash-linear-attention's Triton ``chunk_kda`` on CUDA tensors; a
  clear error when it is not importable or the inputs are not on a GPU.
"""

from __future__ import annotations

import importlib

import torch

from kdalib.ops._validate import validate_kda_inputs
from kdalib.ops.chunk import chunk_kda
from kdalib.ops.recurrent import fused_recurrent_kda
from kdalib.ops.triton import MAX_KEY_DIM, triton_chunk_kda, triton_unavailable_reason

BACKENDS = ("auto", "chunk", "recurrent", "triton", "fla")


def load_fla_chunk_kda():
    """Returns flash-linear-attention's Triton ``chunk_kda``, or raises ``RuntimeError`` saying why not."""
    try:
        module = importlib.import_module("fla.ops.kda")
    except ImportError as error:  # fla itself, or triton underneath it
        raise RuntimeError(
            f"backend='fla' needs flash-linear-attention (pip install flash-linear-attention) and triton: {error}"
        ) from error
    return module.chunk_kda


def _require_triton_chunk(q, k, v, g, beta, initial_state) -> None:
    """Raises ``RuntimeError`` saying why ``backend='triton'`` cannot serve this call."""
    tensors = (q, k, v, g, beta, initial_state)
    reason = triton_unavailable_reason(*tensors)
    if reason is None and q.shape[-1] > MAX_KEY_DIM:
        reason = f"the Triton chunk kernel supports K <= {MAX_KEY_DIM}, got K = {q.shape[-1]}"
    if reason is None and torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        reason = "the Triton chunk kernel computes no gradients yet; use backend='chunk' for training"
    if reason is not None:
        raise RuntimeError(f"backend='triton': {reason}")


def _is_decode(tokens: int, cu_seqlens: torch.Tensor | None) -> bool:
    """True when every sequence brings exactly one new token."""
    if cu_seqlens is None:
        return tokens == 1
    return cu_seqlens.numel() - 1 == tokens


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
    cu_seqlens: torch.Tensor | None = None,
    backend: str = "auto",
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Kimi Delta Attention through the operator that suits the call.

    Args:
        q, k, v, g, beta, scale, initial_state, output_final_state, use_qk_l2norm_in_kernel,
            cu_seqlens: as in :func:`kdalib.ops.chunk_kda` (shapes ``[B, T, H, K]``,
            ``[B, T, HV, V]``, ``[B, T, HV, K]``, ``[B, T, HV]``, state ``[N, HV, K, V]``).
        backend: ``"auto"``, ``"chunk"``, ``"recurrent"``, ``"triton"`` or ``"fla"`` (see the
            module docstring).
        chunk_size: chunk length for the chunked form (16, 32 or 64).

    Returns:
        ``(o [B, T, HV, V], final_state [N, HV, K, V] | None)``.

    Raises:
        ValueError: on bad inputs or an unknown backend.
        RuntimeError: for ``backend="fla"`` without flash-linear-attention or without CUDA inputs,
            and for ``backend="triton"`` where its kernels cannot run.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    shapes = validate_kda_inputs(q, k, v, g, beta, scale, initial_state, cu_seqlens, chunk_size)
    common = dict(scale=scale, initial_state=initial_state, output_final_state=output_final_state,
                  use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel, cu_seqlens=cu_seqlens)
    if backend == "fla":
        if q.device.type != "cuda":
            raise RuntimeError(f"backend='fla' runs Triton kernels and needs CUDA tensors, got device {q.device}")
        return load_fla_chunk_kda()(q, k, v, g, beta, **common)
    if backend == "triton":
        _require_triton_chunk(q, k, v, g, beta, initial_state)
        scale = shapes.key_dim ** -0.5 if scale is None else scale
        return triton_chunk_kda(q, k, v, g, beta, **dict(common, scale=scale))
    if backend == "recurrent" or (backend == "auto" and _is_decode(shapes.tokens, cu_seqlens)):
        return fused_recurrent_kda(q, k, v, g, beta, **common)
    return chunk_kda(q, k, v, g, beta, chunk_size=chunk_size, **common)

"""Triton kernels for CUDA (and Triton's CPU interpreter, ``TRITON_INTERPRET=1``, in tests).

* :func:`triton_chunk_kda`: the chunked forward (prefill and inference).
* :func:`triton_chunk_scan`: the chunk form's recurrence across chunks with its backward (training).
* :func:`chunk_local_terms_forward` / :func:`chunk_local_terms_backward`: the chunk form's
  chunk-local terms and their backward (training).
* :func:`triton_fused_recurrent_kda`: token by token from a cached state (decode).

Importing this package never fails: ``HAS_TRITON`` says whether the kernels can run, and
:func:`triton_unavailable_reason` says why they cannot run on given tensors.
"""

from __future__ import annotations

import torch

from kdalib.ops.triton.runtime import KERNEL_DTYPES, MAX_KEY_DIM, interpreting

try:
    import triton  # noqa: F401
except ImportError:  # CPU-only installs have no triton; the pure-PyTorch paths serve them
    HAS_TRITON = False
else:
    HAS_TRITON = True


def triton_unavailable_reason(*tensors: torch.Tensor | None) -> str | None:
    """Why the Triton kernels cannot run on these tensors, or None when they can."""
    if not HAS_TRITON:
        return "the `triton` package is not installed"
    present = [t for t in tensors if t is not None]
    device = present[0].device
    if device.type != "cuda" and not (device.type == "cpu" and interpreting()):
        return f"Triton kernels need CUDA tensors (or TRITON_INTERPRET=1 for CPU tensors), got device {device}"
    odd = sorted({str(t.dtype) for t in present[:5] if t.dtype not in KERNEL_DTYPES})
    if odd:
        return f"Triton kernels take float16, bfloat16 or float32 inputs, got {', '.join(odd)}"
    return None


if HAS_TRITON:
    from kdalib.ops.triton.chunk import triton_chunk_kda
    from kdalib.ops.triton.chunk_local import CHUNK as TRITON_LOCAL_CHUNK
    from kdalib.ops.triton.chunk_local import chunk_local_terms_forward
    from kdalib.ops.triton.chunk_local_grad import chunk_local_terms_backward
    from kdalib.ops.triton.chunk_scan import triton_chunk_scan
    from kdalib.ops.triton.fused_recurrent import triton_fused_recurrent_kda
else:

    def triton_chunk_kda(*args, **kwargs):
        raise RuntimeError("triton_chunk_kda needs the `triton` package, which is not installed")

    TRITON_LOCAL_CHUNK = 64

    def chunk_local_terms_forward(*args, **kwargs):
        raise RuntimeError("chunk_local_terms_forward needs the `triton` package, which is not installed")

    def chunk_local_terms_backward(*args, **kwargs):
        raise RuntimeError("chunk_local_terms_backward needs the `triton` package, which is not installed")

    def triton_chunk_scan(*args, **kwargs):
        raise RuntimeError("triton_chunk_scan needs the `triton` package, which is not installed")

    def triton_fused_recurrent_kda(*args, **kwargs):
        raise RuntimeError("triton_fused_recurrent_kda needs the `triton` package, which is not installed")


__all__ = [
    "HAS_TRITON",
    "MAX_KEY_DIM",
    "interpreting",
    "TRITON_LOCAL_CHUNK",
    "chunk_local_terms_backward",
    "chunk_local_terms_forward",
    "triton_chunk_kda",
    "triton_chunk_scan",
    "triton_fused_recurrent_kda",
    "triton_unavailable_reason",
]

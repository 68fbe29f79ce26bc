"""Triton kernels for CUDA (and Triton's CPU interpreter, ``TRITON_INTERPRET=1``, in tests).

* :func:`triton_chunk_kda`: the chunked forward (prefill and inference).
* :func:`triton_chunk_training`: the chunk form with gradients (:mod:`kdalib.ops.triton.training`:
  for 16-bit inputs :func:`~kdalib.ops.triton.training.chunk_kda_training`, the forward's kernels and a Triton backward in the
  token layout, with the gate in the kernels when it comes as its raw projection; for float32
  ones the recurrence across chunks as :func:`triton_chunk_scan` with its backward).
* :func:`triton_fused_recurrent_kda`: token by token from a cached state (decode).

Importing this package never fails: ``HAS_TRITON`` says whether the kernels can run, and
:func:`triton_unavailable_reason` says why they cannot run on given tensors. Which of them a call
runs is decided by :func:`kdalib.ops.router.triton_path`; the constants the kernels share are in
:mod:`kdalib.ops.triton.runtime`.
"""

from __future__ import annotations

from kdalib.ops.triton.runtime import KERNEL_DTYPES, MAX_KEY_DIM, interpreting

try:
    import triton  # noqa: F401
except ImportError:  # CPU-only installs have no triton; the pure-PyTorch paths serve them
    HAS_TRITON = False
else:
    HAS_TRITON = True


def triton_unavailable_reason(q, k, v, g, beta, initial_state=None, max_key_dim: int | None = None) -> str | None:
    """Why the Triton kernels cannot run on these tensors, or None when they can.

    They need triton, CUDA tensors (or CPU tensors under ``TRITON_INTERPRET=1``), float16,
    bfloat16 or float32 inputs, and K <= ``max_key_dim`` when a limit is given.
    """
    if not HAS_TRITON:
        return "the `triton` package is not installed"
    device = q.device
    if device.type != "cuda" and not (device.type == "cpu" and interpreting()):
        return f"Triton kernels need CUDA tensors (or TRITON_INTERPRET=1 for CPU tensors), got device {device}"
    odd = sorted({str(t.dtype) for t in (q, k, v, g, beta) if t.dtype not in KERNEL_DTYPES})
    if odd:
        return f"Triton kernels take float16, bfloat16 or float32 inputs, got {', '.join(odd)}"
    if max_key_dim is not None and q.shape[-1] > max_key_dim:
        return f"the Triton chunk kernels support K <= {max_key_dim}, got K = {q.shape[-1]}"
    return None


if HAS_TRITON:
    from kdalib.ops.triton.chunk import triton_chunk_kda
    from kdalib.ops.triton.chunk_scan import triton_chunk_scan
    from kdalib.ops.triton.fused_recurrent import triton_fused_recurrent_kda
    from kdalib.ops.triton.training import triton_chunk_training
else:

    def _needs_triton(name: str):
        def missing(*args, **kwargs):
            raise RuntimeError(f"{name} needs the `triton` package, which is not installed")

        missing.__name__ = name
        return missing

    triton_chunk_kda = _needs_triton("triton_chunk_kda")
    triton_chunk_scan = _needs_triton("triton_chunk_scan")
    triton_fused_recurrent_kda = _needs_triton("triton_fused_recurrent_kda")
    triton_chunk_training = _needs_triton("triton_chunk_training")


__all__ = [
    "HAS_TRITON",
    "MAX_KEY_DIM",
    "interpreting",
    "triton_chunk_kda",
    "triton_chunk_scan",
    "triton_chunk_training",
    "triton_fused_recurrent_kda",
    "triton_unavailable_reason",
]

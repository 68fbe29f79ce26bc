"""Triton kernels for CUDA (and Triton's CPU interpreter, ``TRITON_INTERPRET=1``, in tests).

Importing this package never fails: ``HAS_TRITON`` says whether the kernels can run.
"""

from __future__ import annotations

try:
    import triton  # noqa: F401
except ImportError:  # CPU-only installs have no triton; the pure-PyTorch paths serve them
    HAS_TRITON = False
else:
    HAS_TRITON = True

if HAS_TRITON:
    from kdalib.ops.triton.fused_recurrent import triton_fused_recurrent_kda
else:
    def triton_fused_recurrent_kda(*args, **kwargs):
        raise RuntimeError("triton_fused_recurrent_kda needs the `triton` package, which is not installed")

__all__ = ["HAS_TRITON", "triton_fused_recurrent_kda"]

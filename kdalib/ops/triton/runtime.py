"""What the Triton kernels' modules share about where they run: Triton's CPU interpreter, the
input dtypes the kernels take and their key-dimension limit."""

from __future__ import annotations

import os

import torch

KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)

# The kernels' limit on the key dimension (their [chunk, K] tiles live in registers).
MAX_KEY_DIM = 256


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")

"""What the Triton kernels' modules share: where they run (Triton's CPU interpreter), the input
dtypes they take, their key-dimension limit, the chunk geometry every chunk kernel is written for,
and the one numeric rule they take from the PyTorch forms (:func:`compute_dtype`)."""

from __future__ import annotations

import os

import torch

from kdalib.ops._prepare import compute_dtype

KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)

# The kernels' limit on the key dimension (their [chunk, K] tiles live in registers).
MAX_KEY_DIM = 256

CHUNK = 64  # tokens per chunk (C) of the chunk kernels; the block inverse is written for four sub-blocks
SUB = 16  # rows per sub-block of the intra-chunk matrices
# Largest total decay (sum of -g over a 16-row block, any channel) for which a block of scores is
# computed by matrix products: exp(60) ~ 1e26 leaves float32 (max ~3e38) ample headroom.
DOT_SPAN = 60.0

__all__ = ["CHUNK", "DOT_SPAN", "KERNEL_DTYPES", "MAX_KEY_DIM", "SUB", "compute_dtype", "interpreting"]


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")

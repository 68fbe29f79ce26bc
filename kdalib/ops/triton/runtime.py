"""What the Triton kernels' modules share: where they run (Triton's CPU interpreter), the input
dtypes they take, their key-dimension limit, the chunk geometry every chunk kernel is written for,
and the one numeric rule they take from the PyTorch forms (:func:`compute_dtype`)."""

from __future__ import annotations

import os

import torch

from kdalib.ops._prepare import compute_dtype

KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# The 16-bit ones: the Triton forward runs them by default, and their training path is the token layout's
HALF_DTYPES = (torch.bfloat16, torch.float16)

# The kernels' limit on the key dimension (their [chunk, K] tiles live in registers).
MAX_KEY_DIM = 256

CHUNK = 64  # tokens per chunk (C) of the chunk kernels; the block inverse is written for four sub-blocks
SUB = 16  # rows per sub-block of the intra-chunk matrices
# Largest total decay (sum of -g over a 16-row block, any channel) for which a block of scores is
# computed by matrix products: exp(60) ~ 1e26 leaves float32 (max ~3e38) ample headroom.
DOT_SPAN = 60.0
# The forward's diagonal blocks (prefill_local): the largest span for which one is a matrix
# product, with column factors up to exp(80) ~ 5.5e34, still far below float32's largest value
# when summed over 256 channels of unit-norm keys. It covers the bounded gate at lower_bound=-5
# (16 tokens decay less than 80).
DIAG_SPAN = 80.0
# Log decays below -GATE_FLOOR per token are taken as -GATE_FLOOR: exp(-120) ~ 8e-53 is zero in
# float32 (whose smallest subnormal is ~1.4e-45), so no float32 decay factor changes.
GATE_FLOOR = 120.0
# The same for float64 computations (the training path's chunk-local kernel on float64 inputs):
# exp(-800) is zero in float64 (whose smallest subnormal is ~4.9e-324).
FLOAT64_GATE_FLOOR = 800.0
# Matrix-product precisions of the kernels on float32 data (tl.dot's input_precision): IEEE
# products, three TF32 products (about float32's accuracy on the tensor cores), one TF32 product.
PRECISIONS = ("ieee", "tf32x3", "tf32")
# How the gate reaches the forward kernels: given as g, or computed from the raw projection in
# kda_gate's softplus or lower-bound form (kdalib/ops/gate.py; the kernels' copy: prefill_local._gate).
GATE_GIVEN, GATE_SOFTPLUS, GATE_BOUNDED = 0, 1, 2

__all__ = [
    "CHUNK",
    "DIAG_SPAN",
    "DOT_SPAN",
    "FLOAT64_GATE_FLOOR",
    "GATE_BOUNDED",
    "GATE_FLOOR",
    "GATE_GIVEN",
    "GATE_SOFTPLUS",
    "HALF_DTYPES",
    "KERNEL_DTYPES",
    "MAX_KEY_DIM",
    "PRECISIONS",
    "SUB",
    "compute_dtype",
    "float32_precision",
    "gate_form",
    "interpreting",
]


def gate_form(A_log, lower_bound) -> int:
    """The ``GATE_*`` form of a call: given when it passes no ``A_log``, else :func:`kdalib.ops.kda_gate`'s
    softplus form (``lower_bound`` None) or its bounded form."""
    if A_log is None:
        return GATE_GIVEN
    return GATE_SOFTPLUS if lower_bound is None else GATE_BOUNDED


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def float32_precision(dtype: torch.dtype, requested: str | None = None) -> str:
    """The matrix-product precision for float32 data: ``requested``, or ``tf32x3`` by default; IEEE
    for float64 tensors and in Triton's CPU interpreter, whatever was requested (exact there).
    ``tf32x3`` keeps the float32 forward within 4e-7 of float64 on the GPU tests' grid, in a
    thirteenth of IEEE's time (kdalib/ops/triton/NOTES.md, "Float32")."""
    if dtype == torch.float64 or interpreting():
        return "ieee"
    return requested or "tf32x3"

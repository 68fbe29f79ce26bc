"""The chunk form's training path with Triton: the chunk-local terms (Triton kernels for 16-bit
inputs, the PyTorch form's under autograd for float32 ones) and the recurrence across chunks as
the Triton scan with its Triton backward (:func:`kdalib.ops.triton.chunk_scan.triton_chunk_scan`).

The layout and the chunk-local algebra are the PyTorch chunk form's (:mod:`kdalib.ops.chunk`);
only where each term is computed differs (notes/kda.md, section ``kda-chunkwise``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdalib.ops._validate import KDACall
from kdalib.ops.chunk import chunk_local_terms, chunk_local_terms_and_factors, chunk_rows, from_chunk_rows
from kdalib.ops.triton.chunk_local import chunk_local_terms_forward
from kdalib.ops.triton.chunk_local_grad import chunk_local_terms_backward
from kdalib.ops.triton.chunk_scan import triton_chunk_scan
from kdalib.ops.triton.runtime import CHUNK, compute_dtype

HALF_DTYPES = (torch.bfloat16, torch.float16)


class _LocalTermsTriton(torch.autograd.Function):
    """:func:`kdalib.ops.chunk.chunk_local_terms` in Triton (:func:`chunk_local_terms_forward`, for
    chunks of 64; other sizes compute them in PyTorch, without autograd's saved intermediates),
    with its backward as one Triton kernel (:func:`chunk_local_terms_backward`).

    16-bit inputs are saved as they are (the kernels widen them on load), so what autograd keeps
    for the backward is half the size of float32 copies; the terms and the kernels' gradients are
    float32 for them (autograd rounds the gradients to the inputs' dtype)."""

    @staticmethod
    def forward(ctx, q, k, v, g, beta, precision):
        inputs = [x.contiguous() for x in (q, k, v, g, beta)]
        if k.shape[-2] == CHUNK:
            terms, inverse, scores_kk = chunk_local_terms_forward(*inputs, precision)
        else:
            terms, inverse, scores_kk = chunk_local_terms_and_factors(*(x.to(compute_dtype(x)) for x in inputs))
        ctx.save_for_backward(*inputs, inverse, scores_kk)
        ctx.precision = precision
        return tuple(t.contiguous() for t in terms)

    @staticmethod
    def backward(ctx, *grads):
        return (*chunk_local_terms_backward(*ctx.saved_tensors, grads, ctx.precision), None)


@dataclass(frozen=True)
class TritonTraining:
    """How :func:`triton_chunk_training` runs.

    Attributes:
        precision: matrix-product input precision of the Triton kernels (``tf32``, ``tf32x3``, ``ieee``).
        local_terms: compute the chunk-local terms with the Triton kernels
            (:func:`chunk_local_terms_forward` for chunks of 64, :func:`chunk_local_terms_backward`),
            not with autograd.
        states_dtype: the dtype the scan keeps each chunk's state and its gradient in for the
            backward (None: the terms' dtype; :func:`triton_chunk_scan`).
        output_dtype: the dtype the scan writes the output in (None: the terms' dtype).
    """

    precision: str
    local_terms: bool = False
    states_dtype: torch.dtype | None = None
    output_dtype: torch.dtype | None = None

    @classmethod
    def for_inputs(cls, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> TritonTraining:
        """16-bit inputs: TF32 products (as precise as the inputs), the chunk-local terms as Triton
        kernels, which read the inputs as given (autograd saves no float32 copies), the per-chunk
        states kept in bfloat16 for the backward and the output written in v's dtype. float32
        inputs: TF32x3 products and autograd of the chunk-local terms, until the float32 GPU grid
        has run through those kernels (kdalib/ops/triton/NOTES.md, "Float32")."""
        if all(t.dtype in HALF_DTYPES for t in (q, k, v)):
            return cls("tf32", local_terms=True, states_dtype=torch.bfloat16, output_dtype=v.dtype)
        return cls("tf32x3")


def triton_chunk_training(call: KDACall, chunk_size: int = 64) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`kdalib.ops.chunk_kda` with gradients through the Triton scan, on a validated call;
    runs as :meth:`TritonTraining.for_inputs` says."""
    options = TritonTraining.for_inputs(call.q, call.k, call.v)
    rows = chunk_rows(call, chunk_size, keep_dtypes=options.local_terms)
    if options.local_terms:
        terms = _LocalTermsTriton.apply(rows.q, rows.k, rows.v, rows.g, rows.beta, options.precision)
    else:
        terms = chunk_local_terms(rows.q, rows.k, rows.v, rows.g, rows.beta)
    output, final = triton_chunk_scan(
        *terms,
        rows.state,
        call.scale,
        precision=options.precision,
        states_dtype=options.states_dtype,
        output_dtype=options.output_dtype,
    )
    return from_chunk_rows(output, final, rows, call)

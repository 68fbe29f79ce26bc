"""Kimi Delta Attention operators.

* :func:`naive_recurrent_kda`: the token loop, the float64 oracle.
* :func:`naive_chunk_kda`: the chunkwise algorithm step by step, as derived in notes/kda.md.
* :func:`chunk_kda`: chunkwise-parallel form, CPU and CUDA, autograd.
* :func:`fused_recurrent_kda`: token by token from a cached state (decode).
* :func:`kda`: runs one of them by name (``backend=``); the names are :data:`OPERATORS`.
* :func:`kda_gate`: the forget gate, softplus or lower-bound form.
* :func:`validate_kda_inputs`, :func:`validate_cu_seqlens`: the shared argument checks
  (validated offsets, :class:`PackedSequences`, are passed on instead of being read again);
  :func:`validate_call` bundles a validated call (:class:`KDACall`) for the forms below the entry points.
* :func:`compute_dtype`: the dtype KDA arithmetic runs in (float32, or float64).

Shapes follow flash-linear-attention: q, k ``[B, T, H, K]``; v ``[B, T, HV, V]``;
g ``[B, T, HV, K]``; beta ``[B, T, HV]``; state ``[N, HV, K, V]``.
"""

from kdalib.ops._prepare import compute_dtype
from kdalib.ops._validate import (
    KDACall,
    KDAShapes,
    PackedSequences,
    validate_call,
    validate_cu_seqlens,
    validate_kda_inputs,
)
from kdalib.ops.dispatch import kda
from kdalib.ops.gate import kda_gate
from kdalib.ops.naive import naive_chunk_kda, naive_recurrent_kda
from kdalib.ops.registry import BACKENDS, OPERATORS, Operator
from kdalib.ops.router import chunk_kda, fused_recurrent_kda

__all__ = [
    "BACKENDS",
    "KDACall",
    "KDAShapes",
    "OPERATORS",
    "Operator",
    "PackedSequences",
    "chunk_kda",
    "compute_dtype",
    "fused_recurrent_kda",
    "kda",
    "kda_gate",
    "naive_chunk_kda",
    "naive_recurrent_kda",
    "validate_call",
    "validate_cu_seqlens",
    "validate_kda_inputs",
]

"""Kimi Delta Attention operators.

* :func:`naive_recurrent_kda`: the token loop, the float64 oracle.
* :func:`naive_chunk_kda`: the chunkwise algorithm step by step, as derived in notes/kda.md.
* :func:`chunk_kda`: chunkwise-parallel form, pure PyTorch, CPU and CUDA, autograd.
* :func:`fused_recurrent_kda`: token by token from a cached state (decode).
* :func:`kda`: runs one of them by name (``backend=``); the names are :data:`OPERATORS`.
* :func:`kda_gate`: the forget gate, softplus or lower-bound form.
* :func:`validate_kda_inputs`: the shared argument checks.

Shapes follow flash-linear-attention: q, k ``[B, T, H, K]``; v ``[B, T, HV, V]``;
g ``[B, T, HV, K]``; beta ``[B, T, HV]``; state ``[N, HV, K, V]``.
"""

from kdalib.ops._validate import KDAShapes, validate_kda_inputs
from kdalib.ops.chunk import chunk_kda
from kdalib.ops.dispatch import kda
from kdalib.ops.gate import kda_gate
from kdalib.ops.naive import naive_chunk_kda, naive_recurrent_kda
from kdalib.ops.recurrent import fused_recurrent_kda
from kdalib.ops.registry import BACKENDS, OPERATORS, Operator

__all__ = [
    "BACKENDS",
    "KDAShapes",
    "OPERATORS",
    "Operator",
    "chunk_kda",
    "fused_recurrent_kda",
    "kda",
    "kda_gate",
    "naive_chunk_kda",
    "naive_recurrent_kda",
    "validate_kda_inputs",
]

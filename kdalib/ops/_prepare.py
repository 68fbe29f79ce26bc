"""The numeric rules every fast KDA form shares, written once.

* :func:`compute_dtype`: state arithmetic runs in float32, or float64 when an input is float64.
* :func:`needs_grad`: whether autograd will track a call (the forms switch to in-place,
  allocation-free paths when it will not).
* :func:`prepare_inputs`: cast, L2-normalise q and k, scale q, and repeat q/k heads for
  the value heads that share them (notes/kda.md, section ``kda-recurrence``).

The token-loop oracle (:func:`kdalib.ops.naive_recurrent_kda`) deliberately does not use
:func:`prepare_inputs`: it prepares its inputs in its own few lines, so a mistake here is
caught by the tests that compare the fast forms with it.
"""

from __future__ import annotations

import torch

from kdalib.ops._validate import KDAShapes


def compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """The dtype KDA arithmetic runs in: float64 if any given tensor is float64, else float32.

    Half and bfloat16 inputs are widened to float32 (the state and the decay must stay
    float32); ``None`` entries (an absent initial state) are skipped.
    """
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


def needs_grad(*tensors: torch.Tensor | None) -> bool:
    """True when autograd is on and any given tensor requires a gradient (``None`` entries skipped)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def l2_normalize(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``x / sqrt(sum(x**2) + eps)`` over the last dimension (the in-kernel q/k normalisation)."""
    return x * torch.rsqrt((x * x).sum(dim=-1, keepdim=True) + eps)


def prepare_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    shapes: KDAShapes,
    dtype: torch.dtype,
    use_qk_l2norm: bool,
    scale: float | None = None,
) -> tuple[torch.Tensor, ...]:
    """Validated inputs in the form the fast KDA forms compute with.

    Casts to ``dtype``, clamps a positive log-decay ``g`` to 0 (a decay of exactly 1; +inf
    included, NaN stays NaN: notes/kda.md, section ``kda-contract``), L2-normalises q and k when asked,
    multiplies q by ``scale`` when given (the chunk form applies it once to the output
    instead), and repeats each q/k head for the ``HV // H`` value heads that read it.

    Returns:
        ``(q, k, v, g, beta)`` with q and k ``[B, T, HV, K]``.
    """
    q, k, v, g, beta = (x.to(dtype) for x in (q, k, v, g, beta))
    g = g.clamp(max=0.0)  # the KDA gate is <= 0 by construction; every form treats g > 0 as 0
    if use_qk_l2norm:
        q, k = l2_normalize(q), l2_normalize(k)
    if scale is not None:
        q = q * scale
    if shapes.group_size > 1:
        q, k = q.repeat_interleave(shapes.group_size, dim=2), k.repeat_interleave(shapes.group_size, dim=2)
    return q, k, v, g, beta

"""The KDA forget gate: from a raw projection to the log-space decay ``g``.

Two forms (notes/kda.md, section ``kda-gate``), both computed in float32 (float64 when given float64):

* softplus form (Kimi-Linear-48B-A3B): ``g = -exp(A_log) * softplus(g_raw + dt_bias)``,
  unbounded below; real checkpoints reach ``|g|`` around 1e3 per token.
* lower-bound form: ``g = L * sigmoid(exp(A_log) * (g_raw + dt_bias))`` with ``L < 0``
  (e.g. -5), so every token's decay lies in ``(L, 0)``. This is a different
  function, not a clamp of the softplus form.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kdalib.ops._prepare import compute_dtype


def check_lower_bound(lower_bound) -> None:
    """Accepts None (the softplus form) or a finite negative number L (the lower-bound form).

    Raises:
        ValueError: naming ``lower_bound``, for anything else (0 or a positive L would let the
            decay exceed 1; -inf makes every decay 0).
    """
    if lower_bound is None:
        return
    if not isinstance(lower_bound, (int, float)) or isinstance(lower_bound, bool) or not math.isfinite(lower_bound):
        raise ValueError(f"lower_bound: expected None or a finite negative number, got {lower_bound!r}")
    if lower_bound >= 0:
        raise ValueError(
            f"lower_bound must be negative (the log decay per token lies in (lower_bound, 0)), got {lower_bound}"
        )


def check_gate_parameters(g_raw: torch.Tensor, A_log, dt_bias, lower_bound) -> None:
    """The checks of :func:`kda_gate`'s parameters against a raw projection ``[..., HV, K]``.

    Raises:
        ValueError: naming the argument, as :func:`kda_gate` does.
    """
    if not isinstance(g_raw, torch.Tensor) or not g_raw.is_floating_point() or g_raw.dim() < 2:
        got = f"{g_raw.dtype} {list(g_raw.shape)}" if isinstance(g_raw, torch.Tensor) else type(g_raw).__name__
        raise ValueError(f"g_raw: expected a floating tensor of shape [..., HV, K], got {got}")
    heads, key_dim = g_raw.shape[-2:]
    if not isinstance(A_log, torch.Tensor) or tuple(A_log.shape) != (heads,):
        shape = list(A_log.shape) if isinstance(A_log, torch.Tensor) else type(A_log).__name__
        raise ValueError(f"A_log: expected shape [HV] = [{heads}], got {shape}")
    for name, tensor in (("A_log", A_log), ("dt_bias", dt_bias)):
        if tensor is not None and tensor.device != g_raw.device:
            raise ValueError(f"{name}: expected a tensor on {g_raw.device} like the gate input, got {tensor.device}")
    check_lower_bound(lower_bound)
    if dt_bias is not None and (
        not isinstance(dt_bias, torch.Tensor) or tuple(dt_bias.shape) not in ((heads * key_dim,), (heads, key_dim))
    ):
        shape = list(dt_bias.shape) if isinstance(dt_bias, torch.Tensor) else type(dt_bias).__name__
        raise ValueError(f"dt_bias: expected shape [HV * K] = [{heads * key_dim}] or [HV, K], got {shape}")


def kda_gate(
    g_raw: torch.Tensor,
    A_log: torch.Tensor,
    dt_bias: torch.Tensor | None = None,
    lower_bound: float | None = None,
) -> torch.Tensor:
    """Computes the per-channel log decay ``g`` of KDA.

    Args:
        g_raw: ``[..., HV, K]`` raw gate projection (``W_f x``).
        A_log: ``[HV]`` per-head log rate.
        dt_bias: ``[HV * K]`` or ``[HV, K]`` per-channel bias, or None.
        lower_bound: None for the softplus form; a negative number L for the
            lower-bound form ``L * sigmoid(...)``.

    Returns:
        ``[..., HV, K]`` log decay ``g <= 0``, float32 (float64 for float64 ``g_raw``).

    Raises:
        ValueError: if a shape does not match or ``lower_bound`` is not None or a finite negative number.
    """
    check_gate_parameters(g_raw, A_log, dt_bias, lower_bound)
    heads, key_dim = g_raw.shape[-2:]
    dtype = compute_dtype(g_raw)
    x = g_raw.to(dtype)
    if dt_bias is not None:
        x = x + dt_bias.to(dtype).reshape(heads, key_dim)
    rate = A_log.to(dtype).exp().unsqueeze(-1)
    if lower_bound is None:
        return -rate * F.softplus(x)
    return lower_bound * torch.sigmoid(rate * x)

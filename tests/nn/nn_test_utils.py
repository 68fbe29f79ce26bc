"""Shared helper for the kdalib.nn tests: the error metric layer outputs are compared with."""

from __future__ import annotations

import torch


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected|."""
    return ((actual.double() - expected.double()).abs().max() / expected.double().abs().max()).item()

"""Layers built on kdalib.ops: the KimiDeltaAttention layer, its decode cache, Kimi Linear configs."""

from kdalib.nn.config import KIMI_LINEAR_48B_A3B, KimiLinearConfig, dtype_bytes

__all__ = ["KIMI_LINEAR_48B_A3B", "KimiLinearConfig", "dtype_bytes"]

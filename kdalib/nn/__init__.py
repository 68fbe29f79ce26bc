"""Layers built on kdalib.ops: the KimiDeltaAttention layer, its decode cache, Kimi Linear configs.

* `KimiDeltaAttention`: the KDA token mixer (padding masks, prefill + decode cache).
* `KDACache` / `KDALayerState`: per-layer conv caches and fp32 recurrent state.
* `KimiLinearConfig`, `KIMI_LINEAR_48B_A3B`: architecture figures and cache sizes.
* `swap_kda_into_transformers`: run kdalib's KDA inside a transformers Kimi Linear model.
* `to_native_state_dict` / `to_transformers_state_dict`: checkpoint layouts.
"""

from kdalib.nn.cache import KDACache, KDALayerState
from kdalib.nn.checkpoint import to_native_state_dict, to_transformers_state_dict
from kdalib.nn.compat import TransformersKimiDeltaAttention, kda_from_transformers, swap_kda_into_transformers
from kdalib.nn.config import KIMI_LINEAR_48B_A3B, KimiLinearConfig, dtype_bytes
from kdalib.nn.layer import GatedRMSNorm, KimiDeltaAttention, ShortConvolution

__all__ = [
    "GatedRMSNorm",
    "KDACache",
    "KDALayerState",
    "KIMI_LINEAR_48B_A3B",
    "KimiDeltaAttention",
    "KimiLinearConfig",
    "ShortConvolution",
    "TransformersKimiDeltaAttention",
    "dtype_bytes",
    "kda_from_transformers",
    "swap_kda_into_transformers",
    "to_native_state_dict",
    "to_transformers_state_dict",
]

"""Layers built on kdalib.ops: the KimiDeltaAttention layer, its decode cache, Kimi Linear configs.

* `KimiDeltaAttention`: the KDA token mixer (padding masks, prefill + decode cache).
* `KDACache` / `KDALayerState`: per-layer conv caches and fp32 recurrent state; `DraftRecord`
  and `KDACache.commit` for the layer's speculative-decoding `verify` step.
* `KimiLinearConfig`, `KIMI_LINEAR_48B_A3B`: architecture figures and cache sizes.
* `KDALayerConfig`, `KIMI_LINEAR_48B_A3B_KDA`, `KIMI_K3_KDA`: layer presets, each figure a claim
  or a named assumption.
* `swap_kda_into_transformers`: run kdalib's KDA inside a transformers Kimi Linear model;
  `FLAKimiDeltaAttention`: the layer with flash-linear-attention's signature.
* `to_native_state_dict` / `to_transformers_state_dict`: checkpoint layouts.
"""

from kdalib.nn.cache import DraftRecord, KDACache, KDALayerState
from kdalib.nn.checkpoint import to_native_state_dict, to_transformers_state_dict
from kdalib.nn.compat import (
    FLAKimiDeltaAttention,
    TransformersKimiDeltaAttention,
    kda_from_transformers,
    swap_kda_into_transformers,
)
from kdalib.nn.config import (
    KIMI_K3_KDA,
    KIMI_LINEAR_48B_A3B,
    KIMI_LINEAR_48B_A3B_KDA,
    KDALayerConfig,
    KimiLinearConfig,
    dtype_bytes,
)
from kdalib.nn.layer import GatedRMSNorm, KimiDeltaAttention, ShortConvolution

__all__ = [
    "DraftRecord",
    "FLAKimiDeltaAttention",
    "GatedRMSNorm",
    "KDACache",
    "KDALayerConfig",
    "KDALayerState",
    "KIMI_K3_KDA",
    "KIMI_LINEAR_48B_A3B",
    "KIMI_LINEAR_48B_A3B_KDA",
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

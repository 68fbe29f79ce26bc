"""Weight layouts of the KDA layer: the original checkpoints, transformers, flash-linear-attention.

Three spellings of the same parameters exist in the wild (all without biases):

=====================  ==========================  ==============================  =====================
role                   kdalib / original Kimi       transformers >= 5               flash-linear-attention
                       checkpoints                  KimiLinearDeltaAttention        KimiDeltaAttention
=====================  ==========================  ==============================  =====================
short convolutions     q_conv1d, k_conv1d,          conv1d [3·H·K, 1, W] (q, k, v   q_conv1d, k_conv1d,
                       v_conv1d [H·K, 1, W]         stacked in that order)          v_conv1d
forget gate            f_a_proj, f_b_proj           forget_gate.f_a_proj / f_b_proj f_proj.0, f_proj.1
gate parameters        A_log [H] (checkpoints:      forget_gate.A_log [1, 1, H, 1], A_log [H], dt_bias
                       [1, 1, H, 1]), dt_bias       forget_gate.dt_bias
output gate            g_a_proj, g_b_proj           g_a_proj, g_b_proj              g_proj.0, g_proj.1
=====================  ==========================  ==============================  =====================

q/k/v_proj, b_proj, o_norm.weight and o_proj are named alike everywhere. `to_native_state_dict`
maps any of the three onto kdalib's names (it runs automatically inside
`KimiDeltaAttention.load_state_dict`); `to_transformers_state_dict` goes back to
transformers' layout.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

# Renames that do not change the tensor.
_RENAMES = {
    "forget_gate.f_a_proj.weight": "f_a_proj.weight",
    "forget_gate.f_b_proj.weight": "f_b_proj.weight",
    "forget_gate.dt_bias": "dt_bias",
    "forget_gate.A_log": "A_log",
    "f_proj.0.weight": "f_a_proj.weight",
    "f_proj.1.weight": "f_b_proj.weight",
    "g_proj.0.weight": "g_a_proj.weight",
    "g_proj.1.weight": "g_b_proj.weight",
}
_FUSED_CONV = "conv1d.weight"
_CONVS = ("q_conv1d.weight", "k_conv1d.weight", "v_conv1d.weight")

# What a wrong shape most likely means, for the error message.
_SHAPE_HINTS = {
    "q_proj.weight": "[num_heads * head_dim, hidden_size]",
    "f_a_proj.weight": "[head_dim, hidden_size]",
    "A_log": "[num_v_heads]",
    "dt_bias": "[num_v_heads * head_dim]",
    "b_proj.weight": "[num_v_heads, hidden_size]",
    "o_norm.weight": "[head_dim]",
    "q_conv1d.weight": "[num_heads * head_dim, 1, conv_size]",
}


def _split_fused_conv(weight: torch.Tensor, key: str) -> list[torch.Tensor]:
    if weight.dim() != 3 or weight.shape[0] % 3:
        raise ValueError(f"{key}: expected the fused q/k/v convolution [3 * H * K, 1, W], got {list(weight.shape)}")
    return list(weight.chunk(3, dim=0))


def to_native_state_dict(state_dict: Mapping[str, torch.Tensor], layer=None, prefix: str = "") -> dict:
    """Renames and reshapes a KDA layer's weights from any known layout to kdalib's.

    Args:
        state_dict: weights; only keys starting with `prefix` are touched, others pass through.
        layer: a `KimiDeltaAttention` whose parameter shapes the result must match, or None
            to skip the shape check.
        prefix: key prefix of the layer inside `state_dict` (e.g. "model.layers.0.self_attn.").

    Returns:
        A new dict in kdalib's layout.

    Raises:
        ValueError: naming the key, the expected and the found shape when the weights do not
            fit `layer` (typically a different head_dim, num_heads or conv_size).
    """
    out: dict[str, torch.Tensor] = {}
    names = {key[len(prefix) :] for key in state_dict if key.startswith(prefix)}
    separate = sorted(names & set(_CONVS))
    if _FUSED_CONV in names and separate:
        raise ValueError(
            f"{prefix}{_FUSED_CONV} and {prefix}{separate[0]} are both given: the q/k/v convolutions "
            "must come either fused or separate, not both (which one is meant is ambiguous)"
        )
    for key, value in state_dict.items():
        name = key[len(prefix) :] if key.startswith(prefix) else None
        if name is None:
            out[key] = value
        elif name == _FUSED_CONV:
            for conv_name, part in zip(_CONVS, _split_fused_conv(value, key)):
                out[prefix + conv_name] = part
        else:
            name = _RENAMES.get(name, name)
            if name == "A_log":
                value = _flat_a_log(value, key)
            elif name in _CONVS and value.dim() == 2:
                value = value.unsqueeze(1)  # [D, W] -> the depthwise Conv1d layout [D, 1, W]
            out[prefix + name] = value
    if layer is not None:
        _check_shapes(out, layer, prefix)
    return out


def _flat_a_log(value: torch.Tensor, key: str) -> torch.Tensor:
    """``A_log`` as ``[H]``: accepted as ``[H]`` or the checkpoints' ``[1, 1, H, 1]``, nothing else."""
    shape = tuple(value.shape)
    if len(shape) == 1 or (len(shape) == 4 and shape[0] == shape[1] == shape[3] == 1):
        return value.reshape(-1)
    raise ValueError(f"{key}: expected A_log of shape [num_heads] or [1, 1, num_heads, 1], got {list(shape)}")


def _check_shapes(state_dict: Mapping[str, torch.Tensor], layer, prefix: str) -> None:
    expected = {name: tuple(p.shape) for name, p in layer.named_parameters()}
    for name, shape in expected.items():
        value = state_dict.get(prefix + name)
        if value is not None and tuple(value.shape) != shape:
            hint = _SHAPE_HINTS.get(name, "")
            raise ValueError(
                f"{prefix}{name}: checkpoint shape {list(value.shape)} does not fit the layer's {list(shape)}"
                f"{' ' + hint if hint else ''} (layer: hidden_size={layer.hidden_size}, num_heads={layer.num_heads}, "
                f"num_v_heads={layer.num_v_heads}, head_dim={layer.head_dim}, conv_size={layer.conv_size})"
            )


def to_transformers_state_dict(layer_or_state_dict) -> dict:
    """kdalib weights in transformers' `KimiLinearDeltaAttention` layout.

    Args:
        layer_or_state_dict: a `KimiDeltaAttention` or its state dict (no prefix).

    Returns:
        A dict that `KimiLinearDeltaAttention.load_state_dict` accepts.
    """
    source = layer_or_state_dict
    if isinstance(source, torch.nn.Module):
        source = source.state_dict()
    native = to_native_state_dict(source)
    out = {}
    for name, value in native.items():
        if name in _CONVS:
            continue
        if name in ("f_a_proj.weight", "f_b_proj.weight", "dt_bias"):
            out["forget_gate." + name] = value
        elif name == "A_log":
            out["forget_gate.A_log"] = value.reshape(1, 1, -1, 1)
        else:
            out[name] = value
    out[_FUSED_CONV] = torch.cat([native[name] for name in _CONVS], dim=0)
    return out

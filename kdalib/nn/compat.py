"""Running kdalib's KDA inside transformers' Kimi Linear models, and with the calling
conventions of transformers' and flash-linear-attention's layers.

`swap_kda_into_transformers(model)` replaces every `KimiLinearDeltaAttention` of a
transformers `KimiLinearForCausalLM` / `KimiLinearModel` by a
`TransformersKimiDeltaAttention`: kdalib's layer with the call signature and cache
protocol transformers' decoder layer expects. The weights are carried over, so the
model's logits, its padding behaviour and its `generate` loop stay the same while the
token mixing runs through `kdalib.ops`.

transformers keeps a KDA layer's decode state in its `Cache` as one fused conv state
`[B, 3·H·K, W]` (q, k, v raw inputs, the last W) and a recurrent state `[B, H, K, V]`;
the adapter converts to and from kdalib's `KDALayerState` around each call.

`FLAKimiDeltaAttention` is kdalib's layer with flash-linear-attention's signature and return
value, `(o, None, past_key_values)`, for code written against FLA's `KimiDeltaAttention`; its
cache is a `KDACache` (FLA's own `Cache` object stores states in another layout).
"""

from __future__ import annotations

import torch
from torch import nn

from kdalib.nn.cache import KDACache, KDALayerState
from kdalib.nn.layer import KimiDeltaAttention


class TransformersKimiDeltaAttention(KimiDeltaAttention):
    """`KimiDeltaAttention` callable as transformers' `KimiLinearDeltaAttention`.

    Its parameters carry kdalib's names, and it loads transformers' layout too, so the
    swapped model loads both original checkpoints and transformers state dicts.
    """

    def forward(
        self, hidden_states: torch.Tensor, cache=None, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> torch.Tensor:
        """transformers' signature.

        Args:
            hidden_states: `[B, T, d]`.
            cache: a transformers `Cache` (e.g. `DynamicCache`) holding linear-attention
                layers, or None; `cache_params=` (the keyword of transformers before 5.40) is
                accepted for it.
            attention_mask: `[B, T]` padding mask (transformers passes None when nothing is padded).
            **kwargs: transformers' extra keyword arguments; not used by this layer.

        Returns:
            `[B, T, d]`.

        Raises:
            ValueError: both `cache` and `cache_params` given.
        """
        cache_params = kwargs.pop("cache_params", None)
        if cache is not None and cache_params is not None:
            raise ValueError("cache and cache_params: the same cache under two names; pass one")
        cache = cache if cache is not None else cache_params
        if cache is None:
            return super().forward(hidden_states, attention_mask=attention_mask)
        local = KDACache()
        previous = self._read_transformers_cache(cache)
        if previous is not None:
            local.update(self.layer_idx, previous, new_tokens=0)
        output = super().forward(hidden_states, attention_mask=attention_mask, cache=local)
        self._write_transformers_cache(cache, local.get(self.layer_idx))
        return output

    def _read_transformers_cache(self, cache) -> KDALayerState | None:
        conv = cache.get_conv_state(self.layer_idx)
        recurrent = cache.get_recurrent_state(self.layer_idx)
        if conv is None or recurrent is None:
            return None
        history = self.conv_size - 1
        q_conv, k_conv, v_conv = conv[..., conv.shape[-1] - history :].chunk(3, dim=1)
        return KDALayerState(q_conv, k_conv, v_conv, recurrent)

    def _write_transformers_cache(self, cache, state: KDALayerState) -> None:
        fused = torch.cat([state.q_conv, state.k_conv, state.v_conv], dim=1)
        # transformers stores W inputs; the oldest is never read by a width-W causal window
        # that also covers the new token, so it is kept at zero.
        fused = nn.functional.pad(fused, (1, 0))
        stored = cache.get_conv_state(self.layer_idx)
        if stored is None:
            cache.update_conv_state(fused, self.layer_idx, conv_kernel_size=self.conv_size)
        else:
            stored.copy_(fused.to(stored.dtype))  # in place: the cache may hold a static address
        cache.update_recurrent_state(state.recurrent.to(torch.float32), self.layer_idx)


class FLAKimiDeltaAttention(KimiDeltaAttention):
    """`KimiDeltaAttention` callable as flash-linear-attention's `KimiDeltaAttention`."""

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: KDACache | None = None,
        use_cache: bool = False,
        output_attentions: bool = False,
        **kwargs,
    ) -> tuple[torch.Tensor, None, KDACache | None]:
        """flash-linear-attention's signature and return value.

        Args:
            hidden_states: `[B, T, d]`.
            attention_mask: `[B, T]` padding mask, 0 at the pads.
            past_key_values: a `KDACache` to continue from and update, or None.
            use_cache: with no `past_key_values`, start a new `KDACache` and return it.
            output_attentions: accepted for the signature; KDA has no attention matrix (None).
            **kwargs: `cu_seqlens` (packed sequences, B = 1) is used; the rest is ignored.

        Returns:
            `(o [B, T, d], None, past_key_values)`, the cache updated in place (or None).

        Raises:
            ValueError: as `KimiDeltaAttention.forward`, and for a `past_key_values` that is not a
                `KDACache`.
        """
        if past_key_values is None and use_cache:
            past_key_values = KDACache()
        output = super().forward(
            hidden_states, attention_mask=attention_mask, cache=past_key_values, cu_seqlens=kwargs.get("cu_seqlens")
        )
        return output, None, past_key_values


def kda_from_transformers(
    hf_layer: nn.Module, mode: str = "auto", layer_class: type[KimiDeltaAttention] = KimiDeltaAttention
) -> KimiDeltaAttention:
    """A kdalib layer with the sizes and weights of a transformers `KimiLinearDeltaAttention`.

    Args:
        hf_layer: the transformers layer.
        mode: operator mode of the new layer (see `KimiDeltaAttention`).
        layer_class: `KimiDeltaAttention` or `TransformersKimiDeltaAttention`.

    Returns:
        The new layer, on the device and in the dtype of `hf_layer`'s projections
        (A_log and dt_bias stay float32).
    """
    weight = hf_layer.q_proj.weight
    layer = layer_class(
        hidden_size=hf_layer.hidden_size,
        num_heads=hf_layer.num_heads,
        head_dim=hf_layer.head_dim,
        conv_size=hf_layer.conv_kernel_size,
        norm_eps=hf_layer.layer_norm_epsilon,
        layer_idx=hf_layer.layer_idx,
        mode=mode,
        device=weight.device,
        dtype=weight.dtype,
    )
    layer.load_state_dict(hf_layer.state_dict())
    return layer


def swap_kda_into_transformers(model: nn.Module, mode: str = "auto") -> list[int]:
    """Replaces, in place, every `KimiLinearDeltaAttention` of `model` by kdalib's layer.

    Args:
        model: a transformers `KimiLinearForCausalLM` or `KimiLinearModel`.
        mode: operator mode of the new layers.

    Returns:
        The layer indices that were replaced.

    Raises:
        ValueError: the model holds no `KimiLinearDeltaAttention`.
    """
    from transformers.models.kimi_linear.modeling_kimi_linear import KimiLinearDeltaAttention

    replaced = []
    for module in model.modules():
        attention = getattr(module, "self_attn", None)
        if isinstance(attention, KimiLinearDeltaAttention):
            module.self_attn = kda_from_transformers(attention, mode, TransformersKimiDeltaAttention)
            replaced.append(attention.layer_idx)
    if not replaced:
        raise ValueError(f"model: no KimiLinearDeltaAttention found in {type(model).__name__}")
    return replaced

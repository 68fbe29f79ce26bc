"""The decode cache of KimiDeltaAttention layers.

What a KDA layer must remember about a sequence is small and does not grow with it:
the last `W - 1` projected q, k and v inputs of its three short convolutions and the
fp32 recurrent state `[H, K, V]`. `KDALayerState` holds those for a batch of N
sequences; `KDACache` maps layer indices to them, so one object serves a whole stack
(pass the same cache to every layer; each layer reads and writes its own `layer_idx`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class KDALayerState:
    """One KDA layer's memory of N sequences.

    Attributes:
        q_conv: `[N, H*K, W-1]` last q-projection inputs, oldest first.
        k_conv: `[N, H*K, W-1]` last k-projection inputs.
        v_conv: `[N, H*V, W-1]` last v-projection inputs.
        recurrent: `[N, H, K, V]` float32 (float64 for float64 models) KDA state.
    """

    q_conv: torch.Tensor
    k_conv: torch.Tensor
    v_conv: torch.Tensor
    recurrent: torch.Tensor

    @property
    def num_sequences(self) -> int:
        return self.recurrent.shape[0]

    def tensors(self) -> list[torch.Tensor]:
        return [getattr(self, f.name) for f in fields(self)]

    def nbytes(self) -> int:
        """Bytes held for all N sequences."""
        return sum(t.numel() * t.element_size() for t in self.tensors())

    def select(self, index: torch.Tensor) -> KDALayerState:
        """The state of the sequences at `index` (`[M]` long), e.g. to reorder beams."""
        return KDALayerState(*(t.index_select(0, index.to(t.device)) for t in self.tensors()))


class KDACache:
    """Per-layer KDA states for prefill followed by token-by-token decode.

    Example::

        cache = KDACache()
        y = layer(prompt, cache=cache)            # prefill: [B, T, d]
        y_next = layer(next_token, cache=cache)   # decode:  [B, 1, d], O(H·K·V) per token
    """

    def __init__(self) -> None:
        self._states: dict[int, KDALayerState] = {}
        self._seen_tokens: dict[int, int] = {}

    def __contains__(self, layer_idx: int) -> bool:
        return layer_idx in self._states

    def __len__(self) -> int:
        return len(self._states)

    def get(self, layer_idx: int) -> KDALayerState | None:
        """The state of layer `layer_idx`, or None before its first call."""
        return self._states.get(layer_idx)

    def update(self, layer_idx: int, state: KDALayerState, new_tokens: int) -> None:
        """Stores the state after a call that consumed `new_tokens` time steps (padding included)."""
        previous = self._states.get(layer_idx)
        if previous is not None and previous.num_sequences != state.num_sequences:
            raise ValueError(
                f"KDACache.update: layer {layer_idx} holds {previous.num_sequences} sequences, "
                f"got a state for {state.num_sequences}"
            )
        self._states[layer_idx] = state
        self._seen_tokens[layer_idx] = self._seen_tokens.get(layer_idx, 0) + new_tokens

    def seen_tokens(self, layer_idx: int = 0) -> int:
        """Time steps layer `layer_idx` has consumed so far (0 before the first call)."""
        return self._seen_tokens.get(layer_idx, 0)

    def reorder(self, index: torch.Tensor) -> None:
        """Keeps, in place, the sequences at `index` (`[M]` long) in every layer (beam search)."""
        self._states = {layer: state.select(index) for layer, state in self._states.items()}

    def nbytes(self) -> int:
        """Bytes held by all layers."""
        return sum(state.nbytes() for state in self._states.values())

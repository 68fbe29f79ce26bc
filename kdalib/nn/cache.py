"""The decode cache of KimiDeltaAttention layers.

What a KDA layer must remember about a sequence is small and does not grow with it:
the last `W - 1` projected q, k and v inputs of its three short convolutions and the
fp32 recurrent state `[H, K, V]`. `KDALayerState` holds those for a batch of N
sequences; `KDACache` maps layer indices to them, so one object serves a whole stack
(pass the same cache to every layer; each layer reads and writes its own `layer_idx`).

For speculative decoding, `KimiDeltaAttention.verify` runs k draft tokens and stages a
`DraftRecord` per layer; `KDACache.commit(accepted)` then keeps the state after the accepted
prefix of each sequence, the convolution caches included (notes/kda.md, section ``kda-serving``).
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


@dataclass
class DraftRecord:
    """What one layer's verify step leaves for `KDACache.commit`.

    Attributes:
        base: the committed state the k draft tokens started from.
        inputs: `(q, k, v)` projections of the draft tokens before the convolutions, each
            `[N, D, k]` (the layout of the convolution caches).
        states: `[N, k, HV, K, V]` the recurrent state after each draft token.
    """

    base: KDALayerState
    inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    states: torch.Tensor

    @property
    def draft_tokens(self) -> int:
        """k."""
        return self.states.shape[1]

    def accept(self, accepted: torch.Tensor) -> KDALayerState:
        """The state after the first `accepted[n]` draft tokens of each sequence n (`[N]` long, in [0, k])."""
        rows = torch.arange(self.states.shape[0], device=self.states.device)
        index = accepted.to(self.states.device)
        after = self.states[rows, (index - 1).clamp(min=0)]
        keep_base = (index == 0).view(-1, 1, 1, 1)
        recurrent = torch.where(keep_base, self.base.recurrent.to(after.dtype), after)
        convs = []
        for cached, new in zip((self.base.q_conv, self.base.k_conv, self.base.v_conv), self.inputs):
            history = cached.shape[-1]
            timeline = torch.cat([cached, new.to(cached.dtype)], dim=-1)  # [N, D, W - 1 + k], oldest first
            window = index.to(timeline.device).view(-1, 1, 1) + torch.arange(history, device=timeline.device)
            convs.append(timeline.gather(-1, window.expand(-1, timeline.shape[1], -1)))
        return KDALayerState(*convs, recurrent)


class KDACache:
    """Per-layer KDA states for prefill followed by token-by-token decode.

    Example::

        cache = KDACache()
        y = layer(prompt, cache=cache)            # prefill: [B, T, d]
        y_next = layer(next_token, cache=cache)   # decode:  [B, 1, d], O(H·K·V) per token
        y_draft = layer.verify(draft, cache)      # verify:  [B, k, d], k draft tokens at once
        cache.commit(accepted)                    # keep the first accepted[b] of them, b = 0..B-1
    """

    def __init__(self) -> None:
        self._states: dict[int, KDALayerState] = {}
        self._seen_tokens: dict[int, int] = {}
        self._drafts: dict[int, DraftRecord] = {}

    def __contains__(self, layer_idx: int) -> bool:
        return layer_idx in self._states

    def __len__(self) -> int:
        return len(self._states)

    def get(self, layer_idx: int) -> KDALayerState | None:
        """The state of layer `layer_idx`, or None before its first call."""
        return self._states.get(layer_idx)

    def update(self, layer_idx: int, state: KDALayerState, new_tokens: int) -> None:
        """Stores the state after a call that consumed `new_tokens` time steps (padding included).

        Raises:
            ValueError: the layer holds a different number of sequences, or an uncommitted draft.
        """
        self.check_no_draft(layer_idx)
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
        self._check_no_drafts("reorder")
        self._states = {layer: state.select(index) for layer, state in self._states.items()}

    # ----- speculative decoding --------------------------------------------------------

    def stage_draft(self, layer_idx: int, record: DraftRecord) -> None:
        """Records a layer's verify step (`KimiDeltaAttention.verify` calls this)."""
        self.check_no_draft(layer_idx)
        self._drafts[layer_idx] = record

    @property
    def draft_tokens(self) -> int | None:
        """k of the staged verify step, or None when nothing waits for `commit`."""
        return next((record.draft_tokens for record in self._drafts.values()), None)

    def check_no_draft(self, layer_idx: int) -> None:
        """Raises ValueError if layer `layer_idx` has a verify step waiting for `commit`."""
        if layer_idx in self._drafts:
            raise ValueError(
                f"cache: layer {layer_idx} has an uncommitted verify of {self._drafts[layer_idx].draft_tokens} "
                "tokens; call cache.commit(accepted) first (commit(0) drops the draft)"
            )

    def _check_no_drafts(self, what: str) -> None:
        if self._drafts:
            raise ValueError(f"KDACache.{what}: layers {sorted(self._drafts)} have an uncommitted verify; commit first")

    def commit(self, accepted: int | torch.Tensor) -> None:
        """Keeps the state after the first `accepted` draft tokens of the staged verify step, in
        every layer that ran it, and drops the rest (`accepted = 0` rolls the whole draft back).

        Args:
            accepted: an int in [0, k] for every sequence, or an `[N]` integer tensor with one
                count in [0, k] per sequence. `seen_tokens` grows by the largest count.

        Raises:
            ValueError: nothing to commit, an `accepted` outside [0, k], of the wrong shape or type.
        """
        if not self._drafts:
            raise ValueError("KDACache.commit: no verify step to commit (run layer.verify(draft, cache) first)")
        record = next(iter(self._drafts.values()))
        draft, sequences = record.draft_tokens, record.base.num_sequences
        if isinstance(accepted, torch.Tensor):
            if accepted.is_floating_point() or accepted.is_complex() or accepted.dtype == torch.bool:
                raise ValueError(f"accepted: expected an integer tensor, got {accepted.dtype}")
            if tuple(accepted.shape) != (sequences,):
                raise ValueError(f"accepted: expected shape [N] = [{sequences}], got {list(accepted.shape)}")
            counts = accepted.long()
        elif isinstance(accepted, int) and not isinstance(accepted, bool):
            counts = torch.full((sequences,), accepted, dtype=torch.long)
        else:
            raise ValueError(f"accepted: expected an int or an [N] integer tensor, got {type(accepted).__name__}")
        low, high = int(counts.min()), int(counts.max())
        if low < 0 or high > draft:
            raise ValueError(f"accepted: expected counts in [0, k = {draft}], got {counts.tolist()}")
        drafts, self._drafts = self._drafts, {}
        for layer_idx, layer_record in drafts.items():
            self._states[layer_idx] = layer_record.accept(counts)
            self._seen_tokens[layer_idx] = self._seen_tokens.get(layer_idx, 0) + high

    def nbytes(self) -> int:
        """Bytes of the committed states of all layers (a staged verify step's k states per
        sequence and layer come on top until `commit`)."""
        return sum(state.nbytes() for state in self._states.values())

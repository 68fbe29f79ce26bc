"""Where each rank's tokens sit in the sequences that a context-parallel call splits.

The ranks of a process group hold consecutive, non-empty shards of one token stream: rank r
holds tokens ``offsets[r] .. offsets[r + 1] - 1``. The stream is either B sequences of equal
length, every one split at the same places (``cu_seqlens`` None), or N packed sequences in one
row (``cu_seqlens``, B = 1) whose boundaries may fall anywhere, including on a rank boundary
or several ranks apart.

Seen from one rank, its shard is cut into *pieces*, one per sequence it touches (notes/kda.md,
section ``kda-context-parallel``):

* the **head**: the piece of a sequence that began on an earlier rank (``carried_in``). Its
  incoming state is only known once the earlier ranks have run; for B sequences it is every row.
* the **rest**: pieces of sequences that begin on this rank, whose initial states are known.
* the last piece may continue on the next rank (``carried_out``); when the head reaches the
  end of the shard and continues, the rank only passes the state through (``passes_through``).

:func:`gather_layout` builds the layout with one all-gather of a few integers per rank. Every
cross-rank check runs on the gathered values, so all ranks raise the same error together (a
rank that raised alone would leave the others waiting in the next collective).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

from kdalib.distributed.comm import all_gather_ints
from kdalib.ops._validate import validate_cu_seqlens


@dataclass(frozen=True)
class ShardLayout:
    """The shards of all ranks, and this rank's pieces.

    Attributes:
        rank: this process's rank in the group.
        offsets: ``R + 1`` token offsets of the shards in the stream (``offsets[-1]`` = T).
        batch: B rows; each row is split at ``offsets`` (1 when packed).
        cu_seqlens: the packed sequences' offsets in the whole stream, or None for B rows.
    """

    rank: int
    offsets: tuple[int, ...]
    batch: int
    cu_seqlens: tuple[int, ...] | None

    # ----- the whole stream ----------------------------------------------------------------

    @property
    def world_size(self) -> int:
        return len(self.offsets) - 1

    @property
    def packed(self) -> bool:
        return self.cu_seqlens is not None

    @property
    def num_sequences(self) -> int:
        """N: packed sequences, or the B rows."""
        return len(self.cu_seqlens) - 1 if self.packed else self.batch

    def shard(self, rank: int) -> tuple[int, int]:
        """``(start, end)`` of ``rank``'s tokens in the stream."""
        return self.offsets[rank], self.offsets[rank + 1]

    def rank_of(self, position: int) -> int:
        """The rank holding token ``position`` of the stream."""
        if not 0 <= position < self.offsets[-1]:
            raise ValueError(f"position {position} is outside the stream of {self.offsets[-1]} tokens")
        return bisect.bisect_right(self.offsets, position) - 1

    def sequence_of(self, position: int) -> int:
        """The packed sequence holding token ``position``."""
        return bisect.bisect_right(self.cu_seqlens, position) - 1

    def crosses(self, boundary: int) -> bool:
        """Whether the boundary between ranks ``boundary - 1`` and ``boundary`` falls inside a sequence."""
        if not 0 < boundary < self.world_size:
            return False
        if not self.packed:
            return True
        return self.offsets[boundary] not in self._boundaries

    @property
    def _boundaries(self) -> frozenset[int]:
        return frozenset(self.cu_seqlens)

    # ----- this rank ------------------------------------------------------------------------

    @property
    def start(self) -> int:
        return self.offsets[self.rank]

    @property
    def end(self) -> int:
        return self.offsets[self.rank + 1]

    @property
    def tokens(self) -> int:
        return self.end - self.start

    @property
    def carried_in(self) -> bool:
        """The first token continues a sequence from the previous rank."""
        return self.crosses(self.rank)

    @property
    def carried_out(self) -> bool:
        """The last token's sequence continues on the next rank."""
        return self.crosses(self.rank + 1)

    @property
    def head_tokens(self) -> int:
        """Tokens of the head piece (0 without one)."""
        if not self.carried_in:
            return 0
        if not self.packed:
            return self.tokens
        following = self.cu_seqlens[bisect.bisect_right(self.cu_seqlens, self.start)]
        return min(following, self.end) - self.start

    @property
    def head_sequences(self) -> tuple[int, ...]:
        """The sequences of the head's rows: one when packed, every row otherwise (empty without a head)."""
        if not self.carried_in:
            return ()
        return (self.sequence_of(self.start),) if self.packed else tuple(range(self.batch))

    @property
    def head_start(self) -> int:
        """Where the head's sequence begins in the stream (every row: 0 when not packed)."""
        return self.cu_seqlens[self.sequence_of(self.start)] if self.packed else 0

    @property
    def passes_through(self) -> bool:
        """The head fills the shard and continues: the rank maps an incoming state to an outgoing one."""
        return self.carried_in and self.carried_out and self.head_tokens == self.tokens

    @property
    def head_ends(self) -> bool:
        """The head's sequences end on this rank."""
        return self.carried_in and not self.passes_through

    @property
    def rest_offsets(self) -> tuple[int, ...] | None:
        """Packed: the rest pieces' offsets, relative to the first token after the head (None when
        not packed or without rest pieces)."""
        if not self.packed or not self.has_rest:
            return None
        first = self.start + self.head_tokens
        inside = [b for b in self.cu_seqlens if first < b < self.end]
        return tuple(b - first for b in [first, *inside, self.end])

    @property
    def has_rest(self) -> bool:
        return self.head_tokens < self.tokens

    @property
    def rest_sequences(self) -> tuple[int, ...]:
        """The sequence of each rest piece (every row when not packed)."""
        if not self.has_rest:
            return ()
        if not self.packed:
            return tuple(range(self.batch))
        first = self.sequence_of(self.start + self.head_tokens)
        return tuple(range(first, first + len(self.rest_offsets) - 1))

    @property
    def rest_continuing(self) -> tuple[int, ...]:
        """Indices of the rest pieces that continue on the next rank (the last one, or every row)."""
        if not self.has_rest or not self.carried_out:
            return ()
        pieces = len(self.rest_sequences)
        return (pieces - 1,) if self.packed else tuple(range(pieces))

    @property
    def rest_ending(self) -> tuple[int, ...]:
        """Indices of the rest pieces whose sequence ends on this rank."""
        continuing = set(self.rest_continuing)
        return tuple(i for i in range(len(self.rest_sequences)) if i not in continuing)

    def halo_sources(self, history: int) -> tuple[tuple[int, int, int], ...]:
        """Where the ``history`` tokens before the shard come from, for a window that reaches back
        into the head's sequence: ``(slot, rank, index)`` for each slot of the halo (oldest first)
        that holds a token of that sequence, ``index`` counting within the last ``history`` tokens
        of ``rank``'s shard. Empty without a head."""
        if not self.carried_in:
            return ()
        sources = []
        for slot in range(history):
            position = self.start - history + slot
            if position >= self.head_start:
                owner = self.rank_of(position)
                sources.append((slot, owner, position - (self.offsets[owner + 1] - history)))
        return tuple(sources)

    @property
    def local_offsets(self) -> tuple[int, ...] | None:
        """Packed: offsets of all pieces (head first) within the shard; None when not packed."""
        if not self.packed:
            return None
        inside = [b for b in self.cu_seqlens if self.start < b < self.end]
        return tuple(b - self.start for b in [self.start, *inside, self.end])


def require_group(group) -> tuple[int, int]:
    """``(rank, world size)`` in ``group``; a RuntimeError naming the fix when no process group is initialised."""
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            "context parallelism needs an initialised torch.distributed process group "
            "(torch.distributed.init_process_group, or kdalib.distributed.setup_from_env under torchrun)"
        )
    return dist.get_rank(group), dist.get_world_size(group)


def _offsets_digest(cu_seqlens: torch.Tensor | None) -> list[int]:
    """Three integers that differ when two ranks pass different offsets (-1s for None)."""
    if cu_seqlens is None:
        return [-1, -1, -1]
    values = cu_seqlens.detach().to("cpu", torch.long)
    weights = torch.arange(1, values.numel() + 1, dtype=torch.long)
    return [values.numel(), int(values.sum()), int((values * weights).sum())]


def gather_layout(
    tokens: int,
    batch: int,
    cu_seqlens: torch.Tensor | None,
    group=None,
    device: torch.device | None = None,
    signature: Mapping[str, int] | None = None,
    problem: str | None = None,
) -> ShardLayout:
    """All ranks' shard lengths, checked for agreement, as a :class:`ShardLayout` (a collective).

    Args:
        tokens: tokens in this rank's shard (per row).
        batch: B of this rank's inputs.
        cu_seqlens: ``[N + 1]`` offsets of the packed sequences in the whole stream (the same
            tensor on every rank), or None.
        group: the process group (None: the default group).
        device: where the gathered integers travel (the inputs' device; CPU for gloo).
        signature: named integers that must be equal on every rank (sizes, dtype, options).
        problem: this rank's own input error, if it found one: every rank raises.

    Raises:
        ValueError: on any rank's problem, a signature or offsets that differ between ranks, a
            rank without tokens, or offsets that do not cover the stream.
        RuntimeError: without an initialised process group.
    """
    rank, world = require_group(group)
    names = list(signature or {})
    digest = _offsets_digest(None if problem is not None else cu_seqlens)
    local = [tokens, batch, int(problem is not None), *digest, *(signature or {}).values()]
    rows = all_gather_ints(local, group, device)
    bad = [r for r, row in enumerate(rows) if row[2]]
    if bad:
        if problem is not None:
            raise ValueError(f"{problem} (rank {rank} of {world})")
        raise ValueError(f"the inputs on rank(s) {bad} are invalid; those ranks raised the reason")
    for column, name in [(1, "batch size B"), (3, "cu_seqlens"), (4, "cu_seqlens"), (5, "cu_seqlens")] + [
        (6 + i, name) for i, name in enumerate(names)
    ]:
        values = [row[column] for row in rows]
        if len(set(values)) > 1:
            what = (
                "the same offsets (or None) on every rank" if name == "cu_seqlens" else "the same value on every rank"
            )
            shown = "" if name == "cu_seqlens" else f": got {values} for ranks 0..{world - 1}"
            raise ValueError(f"{name}: expected {what}{shown}")
    lengths = [row[0] for row in rows]
    empty = [r for r, n in enumerate(lengths) if n < 1]
    if empty:
        raise ValueError(f"every rank needs at least one token; rank(s) {empty} have none (shard lengths {lengths})")
    offsets = [0]
    for n in lengths:
        offsets.append(offsets[-1] + n)
    cu = None
    if cu_seqlens is not None:
        validate_cu_seqlens(cu_seqlens, batch, offsets[-1])  # the same offsets everywhere: all raise together
        cu = tuple(int(x) for x in cu_seqlens.tolist())
    return ShardLayout(rank=rank, offsets=tuple(offsets), batch=batch, cu_seqlens=cu)

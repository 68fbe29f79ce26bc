"""ShardLayout: which pieces of which sequences a rank holds, and where its halo comes from."""

from __future__ import annotations

import pytest

from kdalib.distributed import ShardLayout, gather_layout


def packed(rank, offsets, cu):
    return ShardLayout(rank=rank, offsets=tuple(offsets), batch=1, cu_seqlens=tuple(cu))


def test_sequence_through_a_rank_passes_through():
    # sequence 1 runs from token 5 (mid-rank 0) to 25 (mid-rank 2): rank 1 lies inside it
    offsets, cu = (0, 10, 20, 30), (0, 5, 25, 30)
    first, middle, last = (packed(r, offsets, cu) for r in range(3))
    assert (first.carried_in, first.carried_out, first.head_tokens) == (False, True, 0)
    assert first.rest_offsets == (0, 5, 10) and first.rest_sequences == (0, 1)
    assert first.rest_continuing == (1,) and first.rest_ending == (0,)
    assert middle.passes_through and not middle.head_ends and not middle.has_rest
    assert (middle.head_tokens, middle.head_sequences, middle.head_start) == (10, (1,), 5)
    assert (last.carried_in, last.carried_out, last.head_tokens, last.head_ends) == (True, False, 5, True)
    assert last.rest_offsets == (0, 5) and last.rest_sequences == (2,) and last.rest_ending == (0,)
    assert last.local_offsets == (0, 5, 10)


def test_sequence_boundary_on_a_rank_boundary_breaks_the_chain():
    offsets, cu = (0, 10, 20), (0, 10, 12, 20)
    first, second = packed(0, offsets, cu), packed(1, offsets, cu)
    assert not first.carried_out and not second.carried_in and not second.crosses(1)
    assert first.rest_ending == (0,) and first.rest_continuing == ()
    assert second.head_tokens == 0 and second.rest_offsets == (0, 2, 10) and second.rest_sequences == (1, 2)


def test_unpacked_rows_are_carried_on_every_boundary():
    first, second = (ShardLayout(rank=r, offsets=(0, 3, 7), batch=2, cu_seqlens=None) for r in (0, 1))
    assert first.rest_sequences == (0, 1) and first.rest_continuing == (0, 1) and first.rest_ending == ()
    assert first.rest_offsets is None and first.local_offsets is None
    assert second.head_tokens == 4 and second.head_sequences == (0, 1) and second.head_ends
    assert second.head_start == 0 and not second.has_rest and second.num_sequences == 2


def test_halo_reaches_back_over_short_shards_and_stops_at_the_sequence_start():
    offsets = (0, 4, 5, 6, 12)
    whole = packed(3, offsets, (0, 2, 12))
    assert whole.halo_sources(3) == ((0, 0, 2), (1, 1, 2), (2, 2, 2))  # one token from each earlier rank
    assert packed(3, offsets, (0, 4, 12)).halo_sources(3) == ((1, 1, 2), (2, 2, 2))  # token 3 is another sequence
    assert packed(3, offsets, (0, 6, 12)).halo_sources(3) == ()  # a fresh sequence: no halo


def test_rank_of_and_its_error():
    layout = packed(0, (0, 4, 9), (0, 9))
    assert [layout.rank_of(p) for p in (0, 3, 4, 8)] == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="position 9 is outside the stream of 9 tokens"):
        layout.rank_of(9)


def test_gather_needs_a_process_group():
    with pytest.raises(RuntimeError, match="needs an initialised torch.distributed process group"):
        gather_layout(4, 1, None)

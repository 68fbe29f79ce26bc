"""short_convolution against torch's padded conv1d, sequence by sequence."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from kdalib.nn.conv import short_convolution

CHANNELS = 6


def reference(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """SiLU(causal depthwise conv) of one `[T, D]` sequence via left zero padding."""
    width = weight.shape[-1]
    out = F.conv1d(x.t().unsqueeze(0), weight.unsqueeze(1), padding=width - 1, groups=x.shape[1])
    return F.silu(out[0, :, : x.shape[0]].t())


@pytest.mark.parametrize("width", [1, 2, 4])
def test_packed_sequences_do_not_mix(width):
    weight = torch.randn(CHANNELS, width)
    lengths = [5, 1, 2, 7]
    sequences = [torch.randn(n, CHANNELS) for n in lengths]
    cu_seqlens = torch.tensor([0, 5, 6, 8, 15])
    y, cache = short_convolution(torch.cat(sequences)[None], weight, cu_seqlens, output_final_state=True)
    torch.testing.assert_close(y[0], torch.cat([reference(s, weight) for s in sequences]))
    assert tuple(cache.shape) == (4, CHANNELS, width - 1)


@settings(max_examples=40, deadline=None)
@given(lengths=st.lists(st.integers(1, 9), min_size=1, max_size=5), width=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_any_packing_with_any_cache_matches_the_unsplit_sequences(lengths, width, seed):
    """Each sequence = cached prefix + new tokens; packed with others, it must equal the plain
    convolution of prefix + tokens, restricted to the new tokens."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(CHANNELS, width, generator=generator)
    history = [torch.randn(width - 1, CHANNELS, generator=generator) for _ in lengths]
    sequences = [torch.randn(n, CHANNELS, generator=generator) for n in lengths]
    cache = torch.stack([h.t() for h in history]) if width > 1 else torch.zeros(len(lengths), CHANNELS, 0)
    cu_seqlens = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    y, new_cache = short_convolution(torch.cat(sequences)[None], weight, cu_seqlens, cache, output_final_state=True)
    for index, (h, s) in enumerate(zip(history, sequences)):
        whole = torch.cat([h, s])
        start = int(cu_seqlens[index])
        torch.testing.assert_close(y[0, start : start + len(s)], reference(whole, weight)[len(h) :])
        torch.testing.assert_close(new_cache[index], whole[len(whole) - (width - 1) :].t())


def test_batch_rows_are_independent():
    weight = torch.randn(CHANNELS, 4)
    x = torch.randn(3, 5, CHANNELS)
    y, _ = short_convolution(x, weight)
    torch.testing.assert_close(y, torch.stack([reference(row, weight) for row in x]))


def test_cache_continues_a_split_sequence():
    weight = torch.randn(CHANNELS, 4)
    x = torch.randn(2, 9, CHANNELS)
    pieces, cache = [], None
    for start, end in ((0, 2), (2, 3), (3, 4), (4, 9)):  # shorter than W - 1, single tokens, long
        y, cache = short_convolution(x[:, start:end], weight, cache=cache, output_final_state=True)
        pieces.append(y)
    torch.testing.assert_close(torch.cat(pieces, dim=1), torch.stack([reference(row, weight) for row in x]))
    torch.testing.assert_close(cache, x[:, -3:].transpose(1, 2))


def test_short_sequence_cache_keeps_older_inputs():
    weight = torch.randn(CHANNELS, 4)
    first = torch.randn(1, 3, CHANNELS)
    _, cache = short_convolution(first, weight, output_final_state=True)
    step = torch.randn(1, 1, CHANNELS)
    _, cache = short_convolution(step, weight, cache=cache, output_final_state=True)
    torch.testing.assert_close(cache[0].t(), torch.cat([first[0, 1:], step[0]]))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: short_convolution(torch.randn(4, CHANNELS), torch.randn(CHANNELS, 4)),
            r"x: expected shape \[B, T, D\]",
        ),
        (lambda: short_convolution(torch.randn(1, 4, CHANNELS), torch.randn(CHANNELS + 1, 4)), "weight"),
        (
            lambda: short_convolution(torch.randn(2, 4, CHANNELS), torch.randn(CHANNELS, 4), torch.tensor([0, 4])),
            "needs B = 1",
        ),
        (
            lambda: short_convolution(
                torch.randn(2, 4, CHANNELS), torch.randn(CHANNELS, 4), cache=torch.zeros(2, CHANNELS, 2)
            ),
            r"cache: expected shape",
        ),
    ],
    ids=["x-rank", "weight-channels", "packed-batch", "cache-shape"],
)
def test_bad_input_raises(call, message):
    with pytest.raises(ValueError, match=message):
        call()

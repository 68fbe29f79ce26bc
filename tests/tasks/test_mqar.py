"""MQAR data: layout, bindings, reproducibility, accuracy metric, argument errors."""

from __future__ import annotations

import pytest
import torch

from kdalib.tasks.mqar import FILLER, IGNORE_INDEX, MQARSpec, generate_mqar, recall_accuracy

SPECS = [MQARSpec(16, 4, 17), MQARSpec(64, 8, 65), MQARSpec(65, 3, 257), MQARSpec(8, 2, 5)]


def _generate(spec: MQARSpec, batch: int = 16, seed: int = 0):
    return generate_mqar(batch, spec, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"T{s.seq_len}-P{s.num_pairs}-V{s.vocab_size}")
def test_every_query_asks_for_the_value_bound_in_the_context(spec):
    inputs, targets = _generate(spec)
    assert inputs.shape == targets.shape == (16, spec.seq_len)
    assert inputs.dtype == targets.dtype == torch.long
    n, pairs = spec.num_keys, spec.num_pairs
    for row_inputs, row_targets in zip(inputs.tolist(), targets.tolist()):
        keys, values = row_inputs[0 : 2 * pairs : 2], row_inputs[1 : 2 * pairs : 2]
        assert all(1 <= key <= n for key in keys) and len(set(keys)) == pairs
        assert all(n + 1 <= value <= 2 * n for value in values)
        binding = dict(zip(keys, values))
        scored = [t for t, target in enumerate(row_targets) if target != IGNORE_INDEX]
        assert len(scored) == pairs
        assert all(t >= 2 * pairs for t in scored)
        # each key is queried exactly once; the value follows its query in the input
        assert sorted(row_inputs[t] for t in scored) == sorted(keys)
        for t in scored:
            assert row_targets[t] == binding[row_inputs[t]] == row_inputs[t + 1]
        # nothing but fillers, queries and their values after the context
        query_tokens = set(scored) | {t + 1 for t in scored}
        rest = [row_inputs[t] for t in range(2 * pairs, spec.seq_len) if t not in query_tokens]
        assert all(token == FILLER for token in rest)


def test_same_seed_same_data_other_seed_other_data():
    spec = MQARSpec(32, 4, 33)
    first, second, other = _generate(spec, seed=3), _generate(spec, seed=3), _generate(spec, seed=4)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[0], other[0])


def test_query_positions_cover_the_whole_remaining_sequence():
    spec = MQARSpec(64, 2, 9)
    _, targets = generate_mqar(512, spec, torch.Generator().manual_seed(1))
    positions = (targets != IGNORE_INDEX).nonzero()[:, 1]
    assert positions.min().item() == 4 and positions.max().item() == 62


def test_recall_accuracy_counts_only_scored_positions():
    spec = MQARSpec(16, 4, 17)
    inputs, targets = _generate(spec, batch=4)
    perfect = torch.nn.functional.one_hot(targets.clamp_min(0), spec.vocab_size).float()
    assert recall_accuracy(perfect, targets) == 1.0
    wrong = torch.nn.functional.one_hot(torch.zeros_like(targets), spec.vocab_size).float()
    assert recall_accuracy(wrong, targets) == 0.0
    half = perfect.clone()
    first_scored = (targets[0] != IGNORE_INDEX).nonzero()[:2, 0]
    half[0, first_scored] = wrong[0, first_scored]
    assert recall_accuracy(half, targets) == pytest.approx(1 - 2 / 16)


def test_recall_accuracy_rejects_bad_input():
    targets = torch.full((2, 5), IGNORE_INDEX)
    with pytest.raises(ValueError, match="logits"):
        recall_accuracy(torch.zeros(2, 4, 3), targets)
    with pytest.raises(ValueError, match="no scored positions"):
        recall_accuracy(torch.zeros(2, 5, 3), targets)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(seq_len=15, num_pairs=4), "seq_len: the scattered layout needs at least 16 tokens"),
        (dict(seq_len=16, num_pairs=4, vocab_size=8), "vocab_size"),
        (dict(seq_len=0, num_pairs=1), "seq_len"),
        (dict(seq_len=8, num_pairs=2.0), "num_pairs"),
    ],
)
def test_spec_errors_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MQARSpec(**kwargs)


def test_batch_size_must_be_positive():
    with pytest.raises(ValueError, match="batch_size"):
        generate_mqar(0, MQARSpec(8, 2))

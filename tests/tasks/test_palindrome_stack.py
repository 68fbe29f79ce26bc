"""Palindrome and stack data, and MQAR's separated layout: shapes, answers determined by the
inputs (an independent solver reproduces every target), exact loss masks, seeds, errors."""

from __future__ import annotations

import pytest
import task_oracles
import torch

from kdalib.tasks.mqar import FILLER, IGNORE_INDEX, MQARSpec
from kdalib.tasks.palindrome import SEPARATOR, PalindromeSpec
from kdalib.tasks.stack import POP, PUSH, StackSpec


def _sample(spec, batch: int = 8, seed: int = 0):
    return spec.sample(batch, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    "spec",
    [PalindromeSpec(3, 4), PalindromeSpec(16, 6), PalindromeSpec(257, 66)],
    ids=lambda s: f"T{s.seq_len}-V{s.vocab_size}",
)
def test_palindrome_asks_for_the_reversal_and_nothing_else(spec):
    inputs, targets = _sample(spec)
    assert inputs.shape == targets.shape == (8, spec.seq_len) and inputs.dtype == targets.dtype == torch.long
    half = spec.half
    assert bool((inputs[:, :half] >= 2).all() and (inputs[:, :half] < spec.vocab_size).all())
    assert bool((inputs[:, half] == SEPARATOR).all())
    assert torch.equal(inputs[:, half + 1 : 2 * half + 1], inputs[:, :half].flip(1))
    assert bool((inputs[:, 2 * half + 1 :] == FILLER).all())  # one filler when T is even
    assert ((targets != IGNORE_INDEX).sum(dim=1) == half).all()
    oracle = task_oracles.palindrome(inputs, SEPARATOR)
    assert torch.equal(oracle, targets)
    assert task_oracles.score(oracle, targets, spec.vocab_size) == 1.0


@pytest.mark.parametrize(
    "spec",
    [StackSpec(6, 1, 1), StackSpec(64, 4, 5), StackSpec(1025), StackSpec(300, 64, 8, 0.8)],
    ids=lambda s: f"T{s.seq_len}-S{s.num_stacks}-E{s.num_elements}-p{s.push_probability}",
)
def test_stack_pops_are_answered_by_the_last_push_still_on_the_stack(spec):
    inputs, targets = _sample(spec)
    assert inputs.shape == targets.shape == (8, spec.seq_len) and inputs.dtype == targets.dtype == torch.long
    ops = spec.num_operations
    operations, stacks, elements = inputs[:, 0 : 3 * ops : 3], inputs[:, 1 : 3 * ops : 3], inputs[:, 2 : 3 * ops : 3]
    assert bool(((operations == PUSH) | (operations == POP)).all())
    assert bool(((stacks >= 3) & (stacks < spec.first_element)).all())
    assert bool(((elements >= spec.first_element) & (elements < spec.vocab_size)).all())
    assert bool((inputs[:, 3 * ops :] == FILLER).all())
    scored = targets != IGNORE_INDEX
    # the mask is exactly the stack-id positions of the pops, and the popped element follows in the input
    assert torch.equal(scored.nonzero(), (inputs == POP).roll(1, dims=1).nonzero())
    assert torch.equal(targets[scored], inputs.roll(-1, dims=1)[scored])
    oracle = task_oracles.stack(inputs, PUSH, POP)  # raises on a pop from an empty stack
    assert torch.equal(oracle, targets)
    assert bool(scored.any(dim=1).all())  # every sequence has a pop to score
    assert task_oracles.score(oracle, targets, spec.vocab_size) == 1.0


def test_stack_uses_every_stack_and_pops_often_enough_to_be_scored():
    spec = StackSpec(1024)
    inputs, targets = _sample(spec, batch=16)
    assert set(inputs[:, 1::3].flatten().tolist()) >= set(range(3, 3 + 64))
    pops = (targets != IGNORE_INDEX).sum(dim=1).float()
    # an operation pops with probability 0.5 x P(stack not empty), which is ~0.4 after the first few ops
    assert 0.25 * spec.num_operations < pops.mean() < 0.5 * spec.num_operations


def test_pops_reach_below_the_last_push():
    """A model that answers with the last element pushed onto the named stack is wrong on the
    second of two pops in a row: such pops occur, so the task needs the whole stack."""
    spec = StackSpec(300, num_stacks=2, num_elements=50)
    inputs, targets = _sample(spec, batch=4)
    below = 0
    for row_inputs, row_targets in zip(inputs.tolist(), targets.tolist()):
        last_push = {}
        for t in range(0, 3 * spec.num_operations, 3):
            stack_id = row_inputs[t + 1]
            if row_inputs[t] == PUSH:
                last_push[stack_id] = row_inputs[t + 2]
            else:
                below += row_targets[t + 1] != last_push[stack_id]
    assert below > 20


@pytest.mark.parametrize(
    "spec",
    [MQARSpec(13, 4, 9, "separated"), MQARSpec(256, 16, 513, "separated"), MQARSpec(16, 4, 17), MQARSpec(64, 8, 65)],
    ids=lambda s: f"{s.layout}-T{s.seq_len}",
)
def test_mqar_answers_are_determined_by_the_inputs_in_both_layouts(spec):
    inputs, targets = _sample(spec)
    oracle = task_oracles.mqar(inputs, spec.num_keys)
    assert torch.equal(oracle, targets)
    assert task_oracles.score(oracle, targets, spec.vocab_size) == 1.0


def test_mqar_separated_layout_is_the_reports_table():
    spec = MQARSpec(20, 4, 17, "separated")
    inputs, targets = _sample(spec, batch=4)
    pairs = spec.num_pairs
    keys = inputs[:, 0 : 2 * pairs : 2]
    assert bool((inputs[:, 2 * pairs : spec.seq_len - pairs] == FILLER).all())  # the separator and padding
    queries = inputs[:, spec.seq_len - pairs :]
    assert torch.equal(queries.sort(dim=1).values, keys.sort(dim=1).values)  # every key queried once
    assert bool((targets[:, : spec.seq_len - pairs] == IGNORE_INDEX).all())
    assert bool((targets[:, spec.seq_len - pairs :] > spec.num_keys).all())  # values, not given in the input
    assert not bool((inputs[:, spec.seq_len - pairs :] > spec.num_keys).any())


@pytest.mark.parametrize(
    "spec",
    [PalindromeSpec(33, 10), StackSpec(99), MQARSpec(40, 5, 33, "separated")],
    ids=lambda spec: type(spec).__name__,
)
def test_same_seed_same_data_other_seed_other_data(spec):
    first, again, other = _sample(spec, seed=5), _sample(spec, seed=5), _sample(spec, seed=6)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: PalindromeSpec(2), "PalindromeSpec.seq_len"),
        (lambda: PalindromeSpec(16, 3), "PalindromeSpec.vocab_size"),
        (lambda: StackSpec(5), "StackSpec.seq_len"),
        (lambda: StackSpec(60, num_stacks=0), "StackSpec.num_stacks"),
        (lambda: StackSpec(60, push_probability=1.0), "StackSpec.push_probability"),
        (lambda: MQARSpec(12, 4, 17, "separated"), "MQARSpec.seq_len: the separated layout needs at least 13"),
        (lambda: MQARSpec(16, 4, 17, "zoology"), "MQARSpec.layout"),
        (lambda: PalindromeSpec(8).sample(0), "batch_size"),
        (lambda: StackSpec(8).sample(-1), "batch_size"),
    ],
)
def test_bad_arguments_are_named(make, message):
    with pytest.raises(ValueError, match=message):
        make()

"""Plain-Python solvers of the synthetic tasks that read nothing but the inputs.

Each returns the targets a perfect model would be scored on: the answer at every answer
position, IGNORE_INDEX elsewhere. Written independently of the generators (a loop over
tokens, no tensor tricks), so agreement is evidence that the answers are determined by
the inputs and that the loss mask covers exactly the answer positions.
"""

from __future__ import annotations

import torch

from kdalib.tasks.mqar import IGNORE_INDEX


def _per_row(solve, inputs: torch.Tensor) -> torch.Tensor:
    return torch.tensor([solve(row) for row in inputs.tolist()], dtype=torch.long)


def mqar(inputs: torch.Tensor, num_keys: int) -> torch.Tensor:
    """Pairs up to the first filler or repeated key; after them, every key token is a query for its value."""

    def solve(row):
        binding, t = {}, 0
        while t + 1 < len(row) and row[t] != 0 and row[t] not in binding:
            binding[row[t]] = row[t + 1]
            t += 2
        return [binding[token] if i >= t and 1 <= token <= num_keys else IGNORE_INDEX for i, token in enumerate(row)]

    return _per_row(solve, inputs)


def palindrome(inputs: torch.Tensor, separator: int) -> torch.Tensor:
    """At the separator and after it, the token mirrored around the separator, while one is left."""

    def solve(row):
        middle = row.index(separator)
        return [row[2 * middle - 1 - i] if middle <= i < 2 * middle else IGNORE_INDEX for i in range(len(row))]

    return _per_row(solve, inputs)


def stack(inputs: torch.Tensor, push: int, pop: int) -> torch.Tensor:
    """Replays the operations; at each pop's stack id, the element on top of that stack."""

    def solve(row):
        stacks, answers = {}, [IGNORE_INDEX] * len(row)
        for t in range(0, len(row) - 2, 3):
            operation, stack_id, element = row[t : t + 3]
            if operation == push:
                stacks.setdefault(stack_id, []).append(element)
            elif operation == pop:
                answers[t + 1] = stacks[stack_id].pop()
        return answers

    return _per_row(solve, inputs)


def score(targets_by_oracle: torch.Tensor, targets: torch.Tensor, vocab_size: int) -> float:
    """Accuracy of a model whose logits are one-hot on the oracle's answers."""
    from kdalib.tasks.mqar import recall_accuracy

    logits = torch.nn.functional.one_hot(targets_by_oracle.clamp_min(0), vocab_size).float()
    return recall_accuracy(logits, targets)

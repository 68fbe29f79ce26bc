"""Stack data: track many independent LIFO stacks and answer every pop.

The Kimi Linear report (§5.1) simulates "64 independent stacks, each identified by a unique
ID": a sequence of operations of three tokens each, ``<push> s e`` (push element ``e`` onto
stack ``s``) and ``<pop> s e``, where ``e`` is the element most recently pushed onto ``s``
and still on it. The model predicts ``e`` at the stack-id position of each pop; the element
then follows in the input (teacher forcing), as in the report's example ``<pop> 0 E``::

    <push> 1 G  <push> 0 E  <push> 1 K  <pop> 1 K  <pop> 0 E
                                               [K]        [E]

Each operation picks a stack uniformly at random; it pushes when that stack is empty and
otherwise pushes with probability ``push_probability``, else pops. A sequence of ``T``
tokens holds ``T // 3`` operations; the remaining ``T % 3`` tokens are fillers. So that
every sequence is scored, a sequence without a pop before its last operation ends by
popping the stack of its first push (which is then certainly not empty); with 64 stacks
that only happens in short sequences.

Token ids: 0 filler, 1 ``<push>``, 2 ``<pop>``, then ``num_stacks`` stack ids, then
``num_elements`` elements.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from kdalib.tasks.mqar import IGNORE_INDEX

FILLER = 0
PUSH = 1
POP = 2
FIRST_STACK = 3


@dataclass(frozen=True)
class StackSpec:
    """Shape of one stack-tracking problem.

    Attributes:
        seq_len: tokens per sequence T; needs ``T >= 6`` (a push and a pop).
        num_stacks: independent stacks (the report uses 64).
        num_elements: distinct elements that can be pushed.
        push_probability: chance that an operation on a non-empty stack is a push, in (0, 1).
    """

    seq_len: int
    num_stacks: int = 64
    num_elements: int = 64
    push_probability: float = 0.5

    def __post_init__(self) -> None:
        for name, least in (("seq_len", 6), ("num_stacks", 1), ("num_elements", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"StackSpec.{name}: expected an int >= {least}, got {value!r}")
        if not 0 < self.push_probability < 1:
            raise ValueError(f"StackSpec.push_probability: expected a number in (0, 1), got {self.push_probability!r}")

    @property
    def first_element(self) -> int:
        """Token id of element 0."""
        return FIRST_STACK + self.num_stacks

    @property
    def vocab_size(self) -> int:
        """Filler, the two operations, the stack ids and the elements."""
        return self.first_element + self.num_elements

    @property
    def num_operations(self) -> int:
        """Operations per sequence, ``T // 3``."""
        return self.seq_len // 3

    @property
    def chance(self) -> float:
        """Accuracy of guessing an element uniformly at random at every pop."""
        return 1 / self.num_elements

    def sample(
        self, batch_size: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(inputs, targets)`` ``[B, T]``: :func:`generate_stack` for this spec."""
        return generate_stack(batch_size, self, generator, device)


def generate_stack(
    batch_size: int, spec: StackSpec, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples a batch of stack-operation sequences.

    The random choices are drawn from ``generator`` in one go; the stacks are then
    simulated operation by operation, all sequences of the batch at once.

    Args:
        batch_size: sequences B.
        spec: sequence length, stacks, elements and push probability.
        generator: random source (on ``device``); pass a seeded one for reproducible data.
        device: where the tensors are created.

    Returns:
        ``(inputs, targets)``, both ``[B, T]`` int64; ``targets`` holds the popped element
        at the stack-id position of every pop, :data:`~kdalib.tasks.mqar.IGNORE_INDEX`
        elsewhere (the number of pops varies from row to row; it is at least one).

    Raises:
        ValueError: for a non-positive ``batch_size``.
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
        raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
    ops = spec.num_operations
    shape = (batch_size, ops)
    stack_ids = torch.randint(spec.num_stacks, shape, generator=generator, device=device).cpu().numpy()
    wants_push = (torch.rand(shape, generator=generator, device=device) < spec.push_probability).cpu().numpy()
    pushed = torch.randint(spec.num_elements, shape, generator=generator, device=device).cpu().numpy()

    rows = np.arange(batch_size)
    contents = np.zeros((batch_size, spec.num_stacks, ops), dtype=np.int64)
    depth = np.zeros((batch_size, spec.num_stacks), dtype=np.int64)
    is_push = np.empty(shape, dtype=bool)
    element = np.empty(shape, dtype=np.int64)
    for step in range(ops):
        if step == ops - 1:
            no_pop_yet = is_push[:, :step].all(axis=1)
            stack_ids[no_pop_yet, step] = stack_ids[no_pop_yet, 0]
            wants_push[no_pop_yet, step] = False
        stack = stack_ids[:, step]
        level = depth[rows, stack]
        push = wants_push[:, step] | (level == 0)
        top = contents[rows, stack, np.maximum(level - 1, 0)]
        contents[rows[push], stack[push], level[push]] = pushed[push, step]
        element[:, step] = np.where(push, pushed[:, step], top)
        depth[rows, stack] = level + np.where(push, 1, -1)
        is_push[:, step] = push

    operation = torch.from_numpy(np.where(is_push, PUSH, POP))
    stack_tokens = torch.from_numpy(FIRST_STACK + stack_ids)
    element_tokens = torch.from_numpy(spec.first_element + element)
    inputs = torch.full((batch_size, spec.seq_len), FILLER, dtype=torch.long)
    inputs[:, 0 : 3 * ops : 3] = operation
    inputs[:, 1 : 3 * ops : 3] = stack_tokens
    inputs[:, 2 : 3 * ops : 3] = element_tokens
    targets = torch.full_like(inputs, IGNORE_INDEX)
    targets[:, 1 : 3 * ops : 3] = torch.where(torch.from_numpy(is_push), IGNORE_INDEX, element_tokens)
    return inputs.to(device), targets.to(device)

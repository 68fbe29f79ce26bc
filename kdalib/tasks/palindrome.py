"""Palindrome data: reproduce a random sequence in reverse order.

The Kimi Linear report (§5.1) describes the task as reproducing "a given sequence of random
tokens in reverse order": the sequence, a separator, then its reversal, predicted one token
at a time (teacher forcing: each reversed token is in the input once it has been predicted)::

    O G R S U N E <sep>  E  N  U  S  R  G  O
                  [E]   [N][U][S][R][G][O]

A sequence of ``T`` tokens holds ``L = (T - 1) // 2`` random tokens; an even ``T`` ends with
one filler. The ``L`` scored positions are the separator and the first ``L - 1`` reversed
tokens, each predicting the next one.

Token ids: 0 is the filler, 1 the separator, ``2 .. vocab_size - 1`` the random tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdalib.tasks.mqar import IGNORE_INDEX

FILLER = 0
SEPARATOR = 1
FIRST_SYMBOL = 2


@dataclass(frozen=True)
class PalindromeSpec:
    """Shape of one palindrome problem.

    Attributes:
        seq_len: tokens per sequence T; needs ``T >= 3`` (one token, the separator, its copy).
        vocab_size: filler, separator and ``vocab_size - 2`` symbols; needs ``vocab_size >= 4``.
    """

    seq_len: int
    vocab_size: int = 66

    def __post_init__(self) -> None:
        for name, least in (("seq_len", 3), ("vocab_size", 4)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"PalindromeSpec.{name}: expected an int >= {least}, got {value!r}")

    @property
    def half(self) -> int:
        """L, the number of random tokens (and of scored positions) per sequence."""
        return (self.seq_len - 1) // 2

    @property
    def chance(self) -> float:
        """Accuracy of guessing a symbol uniformly at random at every answer position."""
        return 1 / (self.vocab_size - FIRST_SYMBOL)

    def sample(
        self, batch_size: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(inputs, targets)`` ``[B, T]``: :func:`generate_palindrome` for this spec."""
        return generate_palindrome(batch_size, self, generator, device)


def generate_palindrome(
    batch_size: int, spec: PalindromeSpec, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples a batch of palindrome sequences.

    Args:
        batch_size: sequences B.
        spec: sequence length and vocabulary.
        generator: random source (on ``device``); pass a seeded one for reproducible data.
        device: where the tensors are created.

    Returns:
        ``(inputs, targets)``, both ``[B, T]`` int64; ``targets`` holds the next reversed
        token at the separator and at the first ``L - 1`` reversed tokens,
        :data:`~kdalib.tasks.mqar.IGNORE_INDEX` elsewhere.

    Raises:
        ValueError: for a non-positive ``batch_size``.
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
        raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
    half = spec.half
    symbols = FIRST_SYMBOL + torch.randint(
        spec.vocab_size - FIRST_SYMBOL, (batch_size, half), generator=generator, device=device
    )
    inputs = torch.full((batch_size, spec.seq_len), FILLER, dtype=torch.long, device=device)
    inputs[:, :half] = symbols
    inputs[:, half] = SEPARATOR
    inputs[:, half + 1 : 2 * half + 1] = symbols.flip(1)
    targets = torch.full_like(inputs, IGNORE_INDEX)
    targets[:, half : 2 * half] = symbols.flip(1)
    return inputs, targets

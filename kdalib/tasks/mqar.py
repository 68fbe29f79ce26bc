"""Multi-query associative recall (MQAR) data.

MQAR (Arora et al., "Zoology", 2023; used in the Kimi Linear report, §5.1) measures
how many key-value bindings a sequence model can store and look up. Each sequence
starts with ``P`` key-value pairs; later, each of the ``P`` keys appears once more
as a query at a random place, and the model must predict the value bound to it at
the query position. Everything else is a filler token::

    k3 v3 k1 v1 k2 v2 | 0 0 k1 [v1] 0 k3 [v3] 0 0 k2 [v2] 0

(the bracketed values are the targets, predicted at the query key's position; the
value itself follows in the input, as in teacher-forced language modelling). That is the
``"scattered"`` layout. The Kimi Linear report's table shows the ``"separated"`` layout:
the pairs, then a separator, then the queries back to back, each answered at its own
position (the value is not given in the input)::

    k3 v3 k1 v1 k2 v2 0 0 0 0 | 0 k1 k3 k2
                                  [v1 v3 v2]

(the filler also serves as the separator: the queries are the last ``P`` tokens).

Token ids: 0 is the filler, keys are ``1 .. n``, values ``n+1 .. 2n`` with
``n = (vocab_size - 1) // 2``, so keys and values never collide.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE_INDEX = -100
"""Target at positions that are not scored (the default ``ignore_index`` of cross-entropy)."""

FILLER = 0
LAYOUTS = ("scattered", "separated")


@dataclass(frozen=True)
class MQARSpec:
    """Shape of one MQAR problem.

    Attributes:
        seq_len: tokens per sequence T; needs ``T >= 4 * num_pairs`` in the scattered layout
            (pairs, then room for every query and its value) and ``T >= 3 * num_pairs + 1``
            in the separated one (pairs, separator, queries).
        num_pairs: key-value pairs P stored and queried per sequence.
        vocab_size: total vocabulary (filler + keys + values); needs ``(vocab_size - 1) // 2 >= P``.
        layout: ``"scattered"`` or ``"separated"`` (see the module docstring).
    """

    seq_len: int
    num_pairs: int
    vocab_size: int = 257
    layout: str = "scattered"

    def __post_init__(self) -> None:
        for name in ("seq_len", "num_pairs", "vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"MQARSpec.{name}: expected a positive int, got {value!r}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"MQARSpec.layout: expected one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        needed = 4 * self.num_pairs if self.layout == "scattered" else 3 * self.num_pairs + 1
        if self.seq_len < needed:
            raise ValueError(
                f"MQARSpec.seq_len: the {self.layout} layout needs at least {needed} tokens "
                f"for {self.num_pairs} pairs and their queries, got {self.seq_len}"
            )
        if self.num_keys < self.num_pairs:
            raise ValueError(
                f"MQARSpec.vocab_size: {self.vocab_size} gives {self.num_keys} distinct keys, "
                f"fewer than num_pairs = {self.num_pairs}; need vocab_size >= {2 * self.num_pairs + 1}"
            )

    @property
    def num_keys(self) -> int:
        """n, the number of distinct keys (and of distinct values)."""
        return (self.vocab_size - 1) // 2

    @property
    def chance(self) -> float:
        """Accuracy of guessing a value uniformly at random at every query."""
        return 1 / self.num_keys

    def sample(
        self, batch_size: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(inputs, targets)`` ``[B, T]``: :func:`generate_mqar` for this spec."""
        return generate_mqar(batch_size, self, generator, device)


def _random_rows_without_replacement(rows: int, population: int, count: int, generator, device) -> torch.Tensor:
    """``[rows, count]`` distinct indices in ``[0, population)`` per row, uniformly at random."""
    scores = torch.rand(rows, population, generator=generator, device=device)
    return scores.argsort(dim=1)[:, :count]


def generate_mqar(
    batch_size: int,
    spec: MQARSpec,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples a batch of MQAR sequences.

    Args:
        batch_size: sequences B.
        spec: sequence length, pairs and vocabulary.
        generator: random source (on ``device``); pass a seeded one for reproducible data.
        device: where the tensors are created.

    Returns:
        ``(inputs, targets)``, both ``[B, T]`` int64. ``targets`` holds the queried value
        at each query position and :data:`IGNORE_INDEX` everywhere else (exactly P
        scored positions per row).

    Raises:
        ValueError: for a non-positive ``batch_size``.
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
        raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
    pairs, n = spec.num_pairs, spec.num_keys
    rows = torch.arange(batch_size, device=device).unsqueeze(1)

    keys = 1 + _random_rows_without_replacement(batch_size, n, pairs, generator, device)
    values = 1 + n + torch.randint(n, (batch_size, pairs), generator=generator, device=device)
    inputs = torch.full((batch_size, spec.seq_len), FILLER, dtype=torch.long, device=device)
    inputs[:, 0 : 2 * pairs : 2] = keys
    inputs[:, 1 : 2 * pairs : 2] = values
    targets = torch.full_like(inputs, IGNORE_INDEX)
    if spec.layout == "separated":
        order = _random_rows_without_replacement(batch_size, pairs, pairs, generator, device)
        inputs[:, spec.seq_len - pairs :] = keys.gather(1, order)
        targets[:, spec.seq_len - pairs :] = values.gather(1, order)
        return inputs, targets

    # Queries sit on even offsets after the context so that a query and its value never overlap.
    slots = (spec.seq_len - 2 * pairs) // 2
    positions = 2 * pairs + 2 * _random_rows_without_replacement(batch_size, slots, pairs, generator, device)
    order = _random_rows_without_replacement(batch_size, pairs, pairs, generator, device)
    queried_keys, queried_values = keys.gather(1, order), values.gather(1, order)
    inputs[rows, positions] = queried_keys
    inputs[rows, positions + 1] = queried_values
    targets[rows, positions] = queried_values
    return inputs, targets


def recall_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of scored positions whose arg-max prediction is the bound value.

    Args:
        logits: ``[B, T, vocab]`` model outputs.
        targets: ``[B, T]`` from :func:`generate_mqar`.

    Returns:
        Accuracy in [0, 1] over positions whose target is not :data:`IGNORE_INDEX`.

    Raises:
        ValueError: if the shapes disagree or nothing is scored.
    """
    if logits.dim() != 3 or logits.shape[:2] != targets.shape:
        raise ValueError(
            f"logits: expected shape [B, T, vocab] with [B, T] = {list(targets.shape)}, got {list(logits.shape)}"
        )
    scored = targets != IGNORE_INDEX
    if not bool(scored.any()):
        raise ValueError("targets: no scored positions (all equal IGNORE_INDEX)")
    correct = (logits.argmax(dim=-1) == targets) & scored
    return correct.sum().item() / scored.sum().item()

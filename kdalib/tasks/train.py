"""Training a tiny recall model on MQAR, and sweeping it over kinds, sizes and seeds."""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from kdalib.tasks.model import MIXER_KINDS, TinyRecallModel
from kdalib.tasks.mqar import IGNORE_INDEX, MQARSpec, generate_mqar, recall_accuracy


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run.

    Attributes:
        steps: optimiser steps, each on a freshly sampled batch.
        batch_size: sequences per step.
        lr: peak AdamW learning rate (linear warm-up over 10% of steps, then cosine decay).
        weight_decay: AdamW weight decay.
        d_model: model width.
        num_layers: blocks.
        num_heads: mixer heads.
        eval_batches: held-out batches for the final accuracy.
    """

    steps: int = 200
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.1
    d_model: int = 64
    num_layers: int = 2
    num_heads: int = 2
    eval_batches: int = 2


@dataclass
class TrainResult:
    """Outcome of one run.

    Attributes:
        kind: mixer kind.
        spec: the MQAR problem.
        seed: random seed (model initialisation and data).
        accuracy: held-out recall accuracy in [0, 1].
        losses: training loss per step.
        seconds: wall time of the run.
    """

    kind: str
    spec: MQARSpec
    seed: int
    accuracy: float
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def _learning_rate(step: int, config: TrainConfig) -> float:
    warmup = max(1, config.steps // 10)
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, config.steps - warmup)
    return config.lr * 0.5 * (1 + math.cos(math.pi * progress))


@torch.no_grad()
def evaluate(model: TinyRecallModel, spec: MQARSpec, batches: int, batch_size: int,
             generator: torch.Generator, device: torch.device | str) -> float:
    """Mean recall accuracy over ``batches`` fresh held-out batches."""
    model.eval()
    scores = []
    for _ in range(batches):
        inputs, targets = generate_mqar(batch_size, spec, generator, device)
        scores.append(recall_accuracy(model(inputs), targets))
    model.train()
    return sum(scores) / len(scores)


def _training_step(model, optimizer, spec: MQARSpec, batch_size: int, generator, device) -> float:
    inputs, targets = generate_mqar(batch_size, spec, generator, device)
    logits = model(inputs)
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return loss.item()


def train_recall_model(kind: str, spec: MQARSpec, seed: int, config: TrainConfig = TrainConfig(),
                       device: torch.device | str = "cpu") -> TrainResult:
    """Trains one tiny model on MQAR and measures its held-out accuracy.

    Args:
        kind: mixer kind, one of :data:`kdalib.tasks.model.MIXER_KINDS`.
        spec: sequence length, pairs and vocabulary.
        seed: seeds the initialisation, the training data and (offset) the held-out data.
        config: optimisation and model size.
        device: where to train.

    Returns:
        The :class:`TrainResult`.
    """
    start = time.perf_counter()
    torch.manual_seed(seed)
    model = TinyRecallModel(spec.vocab_size, kind, config.d_model, config.num_layers, config.num_heads).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    train_data = torch.Generator(device=device).manual_seed(seed)
    losses = []
    for step in range(config.steps):
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(step, config)
        losses.append(_training_step(model, optimizer, spec, config.batch_size, train_data, device))
    held_out = torch.Generator(device=device).manual_seed(10_000 + seed)
    accuracy = evaluate(model, spec, config.eval_batches, config.batch_size, held_out, device)
    return TrainResult(kind, spec, seed, accuracy, losses, time.perf_counter() - start)


def sweep(kinds: tuple[str, ...], specs: list[MQARSpec], seeds: list[int], config: TrainConfig,
          device: torch.device | str = "cpu", progress: bool = True) -> list[TrainResult]:
    """Trains every (kind, spec, seed) combination.

    Args:
        kinds: subset of :data:`MIXER_KINDS`.
        specs: MQAR problems.
        seeds: seeds per combination (for error bars).
        config: training configuration shared by all runs.
        device: where to train.
        progress: show a tqdm progress bar.

    Returns:
        One :class:`TrainResult` per combination, in kinds × specs × seeds order.
    """
    unknown = [kind for kind in kinds if kind not in MIXER_KINDS]
    if unknown:
        raise ValueError(f"kinds: unknown {unknown}; expected a subset of {MIXER_KINDS}")
    grid = list(itertools.product(kinds, specs, seeds))
    if progress:
        from tqdm.std import tqdm  # text bars: the book renders no widgets

        grid = tqdm(grid, desc="MQAR runs", unit="run")
    return [train_recall_model(kind, spec, seed, config, device) for kind, spec, seed in grid]


def steps_within_budget(specs: list[MQARSpec], runs: int, config: TrainConfig, budget_s: float,
                        min_steps: int = 20, device: torch.device | str = "cpu", probe_steps: int = 5) -> int:
    """Training steps per run that fit ``runs`` runs into ``budget_s`` seconds.

    Times a few KDA training steps (the most expensive kind) on the longest spec and
    divides the budget evenly, so that every run of a sweep trains for the same number
    of steps. The result is clamped to ``[min_steps, config.steps]``.

    Args:
        specs: the sweep's MQAR problems (the longest one is timed).
        runs: total runs in the sweep.
        config: training configuration; ``config.steps`` is the upper bound.
        budget_s: wall-clock budget for the whole sweep, in seconds.
        min_steps: lower bound on the returned steps.
        device: where the sweep will run.
        probe_steps: timed steps (after two warm-up steps).

    Returns:
        Steps per run.
    """
    if runs <= 0 or budget_s <= 0:
        raise ValueError(f"steps_within_budget: need runs > 0 and budget_s > 0, "
                         f"got runs = {runs}, budget_s = {budget_s}")
    spec = max(specs, key=lambda s: s.seq_len)
    torch.manual_seed(0)
    model = TinyRecallModel(spec.vocab_size, "kda", config.d_model, config.num_layers, config.num_heads).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    generator = torch.Generator(device=device).manual_seed(0)
    for _ in range(2):
        _training_step(model, optimizer, spec, config.batch_size, generator, device)
    start = time.perf_counter()
    for _ in range(probe_steps):
        _training_step(model, optimizer, spec, config.batch_size, generator, device)
    per_step = (time.perf_counter() - start) / probe_steps
    return int(min(config.steps, max(min_steps, budget_s / (runs * per_step))))

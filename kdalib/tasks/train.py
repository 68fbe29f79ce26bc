"""Training a tiny model on a synthetic task, and sweeping it over kinds, sizes and seeds.

A task is any spec with ``seq_len``, ``vocab_size`` and ``sample(batch_size, generator,
device) -> (inputs, targets)`` (:class:`TaskSpec`): MQAR, palindrome and stack all qualify.
"""

from __future__ import annotations

import itertools
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F

from kdalib.tasks.model import MIXER_KINDS, OPERATOR_DTYPES, TinyRecallModel
from kdalib.tasks.mqar import IGNORE_INDEX, recall_accuracy

MATMUL_PRECISIONS = ("highest", "high", "medium")


def check_precision(owner: str, operator_dtype: str | None, matmul_precision: str) -> None:
    """Raises ValueError, naming ``owner``'s field, unless ``operator_dtype`` is None or a key of
    :data:`~kdalib.tasks.model.OPERATOR_DTYPES` and ``matmul_precision`` one of :data:`MATMUL_PRECISIONS`."""
    if operator_dtype is not None and operator_dtype not in OPERATOR_DTYPES:
        raise ValueError(
            f"{owner}.operator_dtype: expected None or one of {list(OPERATOR_DTYPES)}, got {operator_dtype!r}"
        )
    if matmul_precision not in MATMUL_PRECISIONS:
        raise ValueError(f"{owner}.matmul_precision: expected one of {MATMUL_PRECISIONS}, got {matmul_precision!r}")


@contextmanager
def matmul_precision(precision: str):
    """Runs the block with :func:`torch.set_float32_matmul_precision` at ``precision``, then restores it."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


class TaskSpec(Protocol):
    """What training needs from a task: sizes and a seeded sampler of scored sequences."""

    @property
    def seq_len(self) -> int: ...

    @property
    def vocab_size(self) -> int: ...

    def sample(
        self, batch_size: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


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
        eval_batches: held-out batches for the accuracy (the same batches at every evaluation).
        eval_every: also evaluate after every ``eval_every`` steps (0: only after the last one).
        head_dim: mixer head dimension; None for ``d_model // num_heads``.
        use_triton: the KDA operator path of the mixers (see :class:`~kdalib.tasks.model.RecallMixer`):
            None picks it by device and dtype, False keeps the PyTorch chunk form, True forces Triton.
        cuda_graph: record the model's training forward and backward once as CUDA graphs
            (:func:`torch.cuda.make_graphed_callables`) and replay them at every step: the same
            kernels, without the host's cost of launching each one, which is most of a step for
            models this small. CUDA only; evaluation runs the model as it is.
        operator_dtype: the dtype the mixers' KDA operator works in, by name (a key of
            :data:`~kdalib.tasks.model.OPERATOR_DTYPES`); None: the model's float32.
        matmul_precision: float32 matrix products during the run, as
            :func:`torch.set_float32_matmul_precision` names them: ``"highest"`` (float32),
            ``"high"`` (TF32 on a GPU's tensor cores) or ``"medium"``; restored afterwards.
        stop_accuracy: end the run after the first evaluation whose held-out accuracy reaches
            this value (the curve then ends there, before ``steps``); None: train all ``steps``.
            The learning-rate schedule stays the one of ``steps``, so the run up to the stop is
            exactly the start of the full run.
    """

    steps: int = 200
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.1
    d_model: int = 64
    num_layers: int = 2
    num_heads: int = 2
    eval_batches: int = 2
    eval_every: int = 0
    head_dim: int | None = None
    use_triton: bool | None = None
    cuda_graph: bool = False
    operator_dtype: str | None = None
    matmul_precision: str = "highest"
    stop_accuracy: float | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "d_model", "num_layers", "num_heads", "eval_batches"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"TrainConfig.{name}: expected a positive int, got {value!r}")
        if not isinstance(self.eval_every, int) or self.eval_every < 0:
            raise ValueError(f"TrainConfig.eval_every: expected an int >= 0, got {self.eval_every!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"TrainConfig.lr: expected a positive finite number, got {self.lr!r}")
        if self.use_triton is not None and not isinstance(self.use_triton, bool):
            raise ValueError(f"TrainConfig.use_triton: expected None, True or False, got {self.use_triton!r}")
        if not isinstance(self.cuda_graph, bool):
            raise ValueError(f"TrainConfig.cuda_graph: expected True or False, got {self.cuda_graph!r}")
        check_precision("TrainConfig", self.operator_dtype, self.matmul_precision)
        if self.stop_accuracy is not None and not (
            isinstance(self.stop_accuracy, (int, float)) and 0 < self.stop_accuracy <= 1
        ):
            raise ValueError(
                f"TrainConfig.stop_accuracy: expected None or a number in (0, 1], got {self.stop_accuracy!r}"
            )


@dataclass
class TrainResult:
    """Outcome of one run.

    Attributes:
        kind: mixer kind.
        spec: the task problem (:class:`TaskSpec`).
        seed: random seed (model initialisation and data).
        accuracy: held-out accuracy at the scored positions after the last step, in [0, 1].
        losses: training loss per step.
        seconds: wall time of the run.
        curve: ``(steps done, held-out accuracy)`` at every evaluation, the last one included.
        lr: the peak learning rate of the run.
        steps_done: optimiser steps taken (fewer than the configured steps after an early stop).
    """

    kind: str
    spec: TaskSpec
    seed: int
    accuracy: float
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    curve: list[tuple[int, float]] = field(default_factory=list)
    lr: float = 0.0
    steps_done: int = 0

    @property
    def peak_accuracy(self) -> float:
        """The best held-out accuracy along the run (the final one when nothing else was evaluated)."""
        return max([accuracy for _, accuracy in self.curve] + [self.accuracy])


def _learning_rate(step: int, config: TrainConfig) -> float:
    warmup = max(1, config.steps // 10)
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, config.steps - warmup)
    return config.lr * 0.5 * (1 + math.cos(math.pi * progress))


@torch.no_grad()
def evaluate(model: TinyRecallModel, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Mean accuracy at the scored positions over held-out ``(inputs, targets)`` batches."""
    model.eval()
    scores = [recall_accuracy(model(inputs), targets) for inputs, targets in batches]
    model.train()
    return sum(scores) / len(scores)


def _model_and_optimizer(
    kind: str, spec: TaskSpec, config: TrainConfig, device
) -> tuple[TinyRecallModel, torch.optim.AdamW]:
    """The model (its training forward graphed when ``config.cuda_graph``) and its optimiser."""
    if config.cuda_graph and torch.device(device).type != "cuda":
        raise ValueError(f"TrainConfig.cuda_graph: CUDA graphs need a CUDA device, got device={device!r}")
    model = TinyRecallModel(
        spec.vocab_size,
        kind,
        config.d_model,
        config.num_layers,
        config.num_heads,
        config.head_dim,
        use_triton=config.use_triton,
        operator_dtype=None if config.operator_dtype is None else OPERATOR_DTYPES[config.operator_dtype],
    ).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if config.cuda_graph:
        # Any valid tokens of the training shape will do: they only drive the warm-up passes,
        # which compute gradients without storing them in the parameters.
        example = torch.zeros(config.batch_size, spec.seq_len, dtype=torch.long, device=device)
        model = torch.cuda.make_graphed_callables(model, (example,), num_warmup_iters=2)
    return model, optimizer


def _training_step(model, optimizer, spec: TaskSpec, batch_size: int, generator, device) -> torch.Tensor:
    """One optimiser step; returns the loss as a detached tensor, so that the host never waits
    for the device inside the loop."""
    inputs, targets = spec.sample(batch_size, generator, device)
    logits = model(inputs)
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return loss.detach()


def train_recall_model(
    kind: str, spec: TaskSpec, seed: int, config: TrainConfig = TrainConfig(), device: torch.device | str = "cpu"
) -> TrainResult:
    """Trains one tiny model on a task and measures its held-out accuracy along the way.

    Args:
        kind: mixer kind, one of :data:`kdalib.tasks.model.MIXER_KINDS`.
        spec: the task problem (MQAR, palindrome, stack: any :class:`TaskSpec`).
        seed: seeds the initialisation, the training data and (offset) the held-out data.
        config: optimisation and model size.
        device: where to train.

    Returns:
        The :class:`TrainResult`.
    """
    with matmul_precision(config.matmul_precision):
        start = time.perf_counter()
        torch.manual_seed(seed)
        model, optimizer = _model_and_optimizer(kind, spec, config, device)
        train_data = torch.Generator(device=device).manual_seed(seed)
        held_out_data = torch.Generator(device=device).manual_seed(10_000 + seed)
        held_out = [spec.sample(config.batch_size, held_out_data, device) for _ in range(config.eval_batches)]
        losses, curve = [], []
        done = 0
        while done < config.steps:
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(done, config)
            losses.append(_training_step(model, optimizer, spec, config.batch_size, train_data, device))
            done += 1
            if config.eval_every and done % config.eval_every == 0 and done < config.steps:
                curve.append((done, evaluate(model, held_out)))
                if config.stop_accuracy is not None and curve[-1][1] >= config.stop_accuracy:
                    break
        if not curve or curve[-1][0] != done:  # the last step's evaluation, unless the stop just made it
            curve.append((done, evaluate(model, held_out)))
        accuracy = curve[-1][1]
        losses = torch.stack(losses).tolist()
        return TrainResult(kind, spec, seed, accuracy, losses, time.perf_counter() - start, curve, config.lr, done)


def sweep(
    kinds: tuple[str, ...],
    specs: list[TaskSpec],
    seeds: list[int],
    config: TrainConfig,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> list[TrainResult]:
    """Trains every (kind, spec, seed) combination.

    Args:
        kinds: subset of :data:`MIXER_KINDS`.
        specs: task problems.
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

        grid = tqdm(grid, desc="training runs", unit="run")
    return [train_recall_model(kind, spec, seed, config, device) for kind, spec, seed in grid]


def steps_within_budget(
    specs: list[TaskSpec],
    runs: int,
    config: TrainConfig,
    budget_s: float,
    min_steps: int = 20,
    device: torch.device | str = "cpu",
    probe_steps: int = 5,
) -> int:
    """Training steps per run that fit ``runs`` runs into ``budget_s`` seconds.

    Times a few KDA training steps (the most expensive kind) on the longest spec and
    divides the budget evenly, so that every run of a sweep trains for the same number
    of steps. The result is clamped to ``[min_steps, config.steps]``.

    Args:
        specs: the sweep's problems (the longest one is timed).
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
        raise ValueError(
            f"steps_within_budget: need runs > 0 and budget_s > 0, got runs = {runs}, budget_s = {budget_s}"
        )
    per_step = seconds_per_step(max(specs, key=lambda s: s.seq_len), config, device, probe_steps)
    return int(min(config.steps, max(min_steps, budget_s / (runs * per_step))))


def seconds_per_step(
    spec: TaskSpec,
    config: TrainConfig,
    device: torch.device | str = "cpu",
    probe_steps: int = 5,
) -> float:
    """Wall time of one KDA training step (the most expensive kind) on ``spec``, after two warm-up steps,
    as the training loop takes it (operator path and dtype, CUDA graphs, matmul precision)."""
    if not isinstance(probe_steps, int) or probe_steps < 1:
        raise ValueError(f"probe_steps: expected a positive int, got {probe_steps!r}")
    with matmul_precision(config.matmul_precision):
        torch.manual_seed(0)
        model, optimizer = _model_and_optimizer("kda", spec, config, device)
        generator = torch.Generator(device=device).manual_seed(0)
        for _ in range(2):
            _training_step(model, optimizer, spec, config.batch_size, generator, device)
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(probe_steps):
            loss = _training_step(model, optimizer, spec, config.batch_size, generator, device)
        loss.item()  # waits for the device
        return (time.perf_counter() - start) / probe_steps

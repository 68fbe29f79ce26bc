"""The synthetic-task grid of the Kimi Linear report (§5.1, Figure 4), at a chosen size.

The report trains 2-layer models with 2 heads of dimension 128 on palindrome, MQAR and
stack, for at most 20,000 steps, with a search over four learning rates, at training
lengths from 256 to 2,048 tokens, and reports (1) the peak accuracy per task, mechanism
and length and (2) accuracy against training steps at 1,024 tokens. :class:`GridProfile`
says which part of that grid a run covers; :func:`cuts` lists, in words, what it leaves
out; :func:`run_grid` trains it; :func:`peak_accuracy` and :func:`accuracy_curves` reduce
the runs to Figure 4's two quantities.

Choices the report does not state, made here and applied to every mechanism alike: the
vocabularies, MQAR's layout (the report's table: pairs, separator, queries) with one pair
per ``mqar_tokens_per_pair`` tokens, the stack's element count and push probability, the
batch size, AdamW with warm-up and cosine decay, accuracy measured on held-out
sequences (fresh samples of the same distribution) rather than on the training batches, and (at
the ``full`` size) mixed precision: the operator in bfloat16, float32 weights and products in TF32.
"""

from __future__ import annotations

import dataclasses
import itertools
import statistics

import torch

from kdalib.tasks.model import MIXER_KINDS
from kdalib.tasks.mqar import MQARSpec
from kdalib.tasks.palindrome import PalindromeSpec
from kdalib.tasks.stack import StackSpec
from kdalib.tasks.train import (
    TaskSpec,
    TrainConfig,
    TrainResult,
    check_precision,
    seconds_per_step,
    train_recall_model,
)

TASKS = ("palindrome", "mqar", "stack")
REPORT_LENGTHS = (256, 512, 1024, 2048)
REPORT_LEARNING_RATES = (5e-5, 1e-4, 5e-4, 1e-3)
REPORT_MAX_STEPS = 20_000
REPORT_LAYERS, REPORT_HEADS, REPORT_HEAD_DIM = 2, 2, 128
REPORT_CURVE_LENGTH = 1024
REPORT_STACKS = 64


@dataclasses.dataclass(frozen=True)
class GridProfile:
    """One size of the synthetic-task grid.

    Attributes:
        tasks: subset of :data:`TASKS`.
        kinds: mixer kinds, a subset of :data:`~kdalib.tasks.model.MIXER_KINDS`.
        lengths: training lengths in tokens.
        learning_rates: peak learning rates searched; the best per (task, kind, length) is kept.
        seeds: seeds per configuration.
        max_steps: steps per run; with ``budget_s``, the most a run may get.
        budget_s: wall-clock budget for the whole grid: the steps per run are then what
            fits (:func:`plan_steps`), at least ``min_steps``. None: ``max_steps`` exactly.
        min_steps: lower bound on the planned steps.
        evaluations: held-out evaluations along each run (the accuracy curve's points).
        curve_length: the length whose accuracy-vs-steps curves are reported.
        batch_size, d_model, num_layers, num_heads, head_dim: model and batch size.
        eval_batches: held-out batches per evaluation.
        palindrome_vocab: vocabulary of the palindrome task (two special tokens and the symbols).
        mqar_vocab: vocabulary of MQAR (filler, keys, values).
        mqar_tokens_per_pair: MQAR stores ``length // mqar_tokens_per_pair`` pairs.
        stacks: independent stacks of the stack task (the report's 64 at full size; short
            sequences need fewer for their operations to revisit a stack).
        stack_elements: distinct elements of the stack task.
        operator_dtype: the dtype the KDA operator works in (``TrainConfig.operator_dtype``).
        matmul_precision: float32 matrix products (``TrainConfig.matmul_precision``).
    """

    tasks: tuple[str, ...]
    kinds: tuple[str, ...]
    lengths: tuple[int, ...]
    learning_rates: tuple[float, ...]
    seeds: tuple[int, ...]
    max_steps: int
    budget_s: float | None
    min_steps: int
    evaluations: int
    curve_length: int
    batch_size: int
    d_model: int
    num_layers: int
    num_heads: int
    head_dim: int
    eval_batches: int
    palindrome_vocab: int
    mqar_vocab: int
    mqar_tokens_per_pair: int
    stacks: int
    stack_elements: int
    operator_dtype: str | None = None
    matmul_precision: str = "highest"

    def __post_init__(self) -> None:
        for name, allowed in (("tasks", TASKS), ("kinds", MIXER_KINDS)):
            values = getattr(self, name)
            unknown = [value for value in values if value not in allowed]
            if not values or unknown:
                raise ValueError(f"GridProfile.{name}: expected a non-empty subset of {allowed}, got {values!r}")
        if self.curve_length not in self.lengths:
            raise ValueError(f"GridProfile.curve_length: {self.curve_length} is not one of the lengths {self.lengths}")
        check_precision("GridProfile", self.operator_dtype, self.matmul_precision)
        if not self.learning_rates or not self.seeds:
            raise ValueError("GridProfile: learning_rates and seeds must not be empty")
        if self.budget_s is not None and not self.budget_s > 0:
            raise ValueError(f"GridProfile.budget_s: expected a positive number or None, got {self.budget_s!r}")
        if not 1 <= self.min_steps <= self.max_steps or self.evaluations < 1:
            raise ValueError(
                f"GridProfile: need 1 <= min_steps <= max_steps and evaluations >= 1, got "
                f"min_steps={self.min_steps}, max_steps={self.max_steps}, "
                f"evaluations={self.evaluations}"
            )

    @property
    def runs(self) -> int:
        """Training runs in the grid."""
        return len(self.tasks) * len(self.kinds) * len(self.lengths) * len(self.learning_rates) * len(self.seeds)

    def config(self, steps: int, lr: float, device: torch.device | str = "cpu") -> TrainConfig:
        """The :class:`TrainConfig` of one run on ``device``; on CUDA its steps replay CUDA graphs
        (the same kernels, launched at once: :class:`~kdalib.tasks.train.TrainConfig`)."""
        return TrainConfig(
            steps=steps,
            batch_size=self.batch_size,
            lr=lr,
            d_model=self.d_model,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            head_dim=self.head_dim,
            eval_batches=self.eval_batches,
            eval_every=max(1, steps // self.evaluations),
            cuda_graph=torch.device(device).type == "cuda",
            operator_dtype=self.operator_dtype,
            matmul_precision=self.matmul_precision,
        )


PROFILES = {
    # The CPU book build: the whole pipeline on every task and mechanism in well under a minute.
    # Its numbers show that the pieces fit together, not how the mechanisms compare.
    "smoke": GridProfile(
        tasks=TASKS,
        kinds=MIXER_KINDS,
        lengths=(16, 32),
        learning_rates=(1e-2,),
        seeds=(0,),
        max_steps=40,
        budget_s=None,
        min_steps=40,
        evaluations=4,
        curve_length=32,
        batch_size=8,
        d_model=32,
        num_layers=1,
        num_heads=2,
        head_dim=16,
        eval_batches=1,
        palindrome_vocab=6,
        mqar_vocab=17,
        mqar_tokens_per_pair=8,
        stacks=2,
        stack_elements=4,
    ),
    # One H200 command (10 minutes): the report's model, tasks, mechanisms and lengths, its
    # largest learning rate only, two seeds, and as many steps per run as 330 s of training
    # allow (the rest of the command: timing, graph capture, evaluations, start-up).
    "full": GridProfile(
        tasks=TASKS,
        kinds=MIXER_KINDS,
        lengths=REPORT_LENGTHS,
        learning_rates=(1e-3,),
        seeds=(0, 1),
        max_steps=REPORT_MAX_STEPS,
        budget_s=330.0,
        min_steps=50,
        evaluations=10,
        curve_length=REPORT_CURVE_LENGTH,
        batch_size=32,
        d_model=REPORT_HEADS * REPORT_HEAD_DIM,
        num_layers=REPORT_LAYERS,
        num_heads=REPORT_HEADS,
        head_dim=REPORT_HEAD_DIM,
        eval_batches=2,
        palindrome_vocab=66,
        mqar_vocab=513,
        mqar_tokens_per_pair=16,
        stacks=64,
        stack_elements=64,
        operator_dtype="bfloat16",
        matmul_precision="high",
    ),
}


def task_spec(task: str, length: int, profile: GridProfile) -> TaskSpec:
    """The problem of ``task`` at ``length`` tokens under ``profile``'s vocabularies."""
    if task == "palindrome":
        return PalindromeSpec(length, profile.palindrome_vocab)
    if task == "mqar":
        return MQARSpec(length, max(1, length // profile.mqar_tokens_per_pair), profile.mqar_vocab, "separated")
    if task == "stack":
        return StackSpec(length, profile.stacks, profile.stack_elements)
    raise ValueError(f"task: expected one of {', '.join(TASKS)}, got {task!r}")


def cuts(profile: GridProfile, steps: int) -> list[str]:
    """What ``profile`` (training ``steps`` per run) leaves out of the report's grid, one line each;
    empty when it covers the grid."""
    lines = []
    if steps < REPORT_MAX_STEPS:
        lines.append(f"steps: {steps:,} per run instead of up to {REPORT_MAX_STEPS:,}")
    missing = [lr for lr in REPORT_LEARNING_RATES if lr not in profile.learning_rates]
    if missing:
        lines.append(
            f"learning rates: {', '.join(f'{lr:g}' for lr in profile.learning_rates)} only; "
            f"not searched: {', '.join(f'{lr:g}' for lr in missing)}"
        )
    absent = [length for length in REPORT_LENGTHS if length not in profile.lengths]
    if absent:
        lines.append(
            f"lengths: {', '.join(map(str, profile.lengths))} tokens instead of {', '.join(map(str, REPORT_LENGTHS))}"
        )
    if profile.curve_length != REPORT_CURVE_LENGTH:
        lines.append(f"accuracy-vs-steps curves at {profile.curve_length} tokens instead of {REPORT_CURVE_LENGTH}")
    model = (profile.num_layers, profile.num_heads, profile.head_dim)
    if model != (REPORT_LAYERS, REPORT_HEADS, REPORT_HEAD_DIM):
        lines.append(
            f"model: {profile.num_layers} layer(s), {profile.num_heads} heads of dimension "
            f"{profile.head_dim} instead of {REPORT_LAYERS} layers, {REPORT_HEADS} heads of "
            f"dimension {REPORT_HEAD_DIM}"
        )
    if profile.stacks != REPORT_STACKS:
        lines.append(f"stack task: {profile.stacks} stacks instead of {REPORT_STACKS}")
    missing_tasks = [task for task in TASKS if task not in profile.tasks]
    if missing_tasks:
        lines.append(f"tasks left out: {', '.join(missing_tasks)}")
    return lines


def _timed_spec(profile: GridProfile, length: int) -> TaskSpec:
    """The problem whose steps are timed at ``length``: the profile's task with the largest vocabulary."""
    return max((task_spec(task, length, profile) for task in profile.tasks), key=lambda spec: spec.vocab_size)


def _timed_config(profile: GridProfile, device: torch.device | str) -> TrainConfig:
    """The configuration whose steps are timed: the profile's runs at their largest learning rate."""
    return profile.config(profile.max_steps, max(profile.learning_rates), device)


def plan_steps(profile: GridProfile, device: torch.device | str = "cpu", probe_steps: int = 3) -> int:
    """Steps per run: ``profile.max_steps`` without a budget; otherwise what fits the budget.

    With a budget, a few KDA training steps (the most expensive kind) are timed at every
    length on the task with the largest vocabulary (:func:`~kdalib.tasks.train.seconds_per_step`), and the budget is divided so that every
    run trains for the same number of steps, clamped to ``[min_steps, max_steps]``.
    Evaluations add a little on top (``evaluations * eval_batches`` forward passes per run).
    """
    if profile.budget_s is None:
        return profile.max_steps
    runs_per_length = profile.runs // len(profile.lengths)
    config = _timed_config(profile, device)
    seconds = sum(seconds_per_step(_timed_spec(profile, n), config, device, probe_steps) for n in profile.lengths)
    steps = profile.budget_s / (runs_per_length * seconds)
    return int(min(profile.max_steps, max(profile.min_steps, steps)))


_FLOAT32 = {"operator_dtype": None, "matmul_precision": "highest"}
STEP_PATHS = {
    "pytorch": {"use_triton": False, "cuda_graph": False, **_FLOAT32},
    "triton": {"use_triton": None, "cuda_graph": False, **_FLOAT32},
    "triton_graph": {"use_triton": None, "cuda_graph": True, **_FLOAT32},
    "triton_bf16_graph": {
        "use_triton": None,
        "cuda_graph": True,
        "operator_dtype": "bfloat16",
        "matmul_precision": "high",
    },
}
"""How a training step can run: in float32, the PyTorch chunk form, the Triton training path, and
that path with the forward and backward replayed as CUDA graphs; and graphed with the operator in
bfloat16 (its 16-bit Triton kernels) and the model's float32 products in TF32, which is how
:func:`run_grid` trains on CUDA under the ``full`` profile."""


def step_times(
    profile: GridProfile, device: torch.device | str = "cpu", probe_steps: int = 5
) -> dict[tuple[str, int], float]:
    """Seconds per KDA training step at each of ``profile``'s lengths along each of
    :data:`STEP_PATHS` that applies on ``device`` (on the CPU only ``pytorch``), timed as in
    :func:`plan_steps`.

    Returns:
        ``{(path, length): seconds}``.
    """
    on_cuda = torch.device(device).type == "cuda"
    paths = list(STEP_PATHS) if on_cuda else ["pytorch"]
    base = _timed_config(profile, device)
    times = {}
    for length in profile.lengths:
        spec = _timed_spec(profile, length)
        for path in paths:
            config = dataclasses.replace(base, **STEP_PATHS[path])
            times[(path, length)] = seconds_per_step(spec, config, device, probe_steps)
    return times


@dataclasses.dataclass
class GridRun:
    """One trained configuration: task, length and the :class:`TrainResult` (kind, seed, lr, curve)."""

    task: str
    length: int
    result: TrainResult


def run_grid(
    profile: GridProfile, steps: int, device: torch.device | str = "cpu", progress: bool = True
) -> list[GridRun]:
    """Trains every (task, kind, length, learning rate, seed) of ``profile`` for ``steps`` steps."""
    grid = list(itertools.product(profile.tasks, profile.kinds, profile.lengths, profile.learning_rates, profile.seeds))
    if progress:
        from tqdm.std import tqdm  # text bars: the book renders no widgets

        grid = tqdm(grid, desc="synthetic-task runs", unit="run")
    runs = []
    for task, kind, length, lr, seed in grid:
        spec = task_spec(task, length, profile)
        result = train_recall_model(kind, spec, seed, profile.config(steps, lr, device), device)
        runs.append(GridRun(task, length, result))
    return runs


def _by_learning_rate(runs: list[GridRun]) -> dict[tuple, dict[float, list[TrainResult]]]:
    groups: dict[tuple, dict[float, list[TrainResult]]] = {}
    for run in runs:
        key = (run.task, run.result.kind, run.length)
        groups.setdefault(key, {}).setdefault(run.result.lr, []).append(run.result)
    return groups


def _best_learning_rate(by_lr: dict[float, list[TrainResult]]) -> float:
    """The learning rate with the highest mean peak accuracy over seeds (the smaller one on a tie)."""
    return max(sorted(by_lr), key=lambda lr: statistics.fmean(r.peak_accuracy for r in by_lr[lr]))


def peak_accuracy(runs: list[GridRun]) -> dict[tuple[str, str, int], dict[str, float]]:
    """Figure 4's first quantity: peak accuracy per (task, kind, length).

    For each learning rate, every seed's peak held-out accuracy along its run is taken and
    averaged over seeds; the best learning rate's mean is reported.

    Returns:
        ``{(task, kind, length): {"peak": mean, "low": min over seeds, "high": max over seeds,
        "lr": best learning rate, "seeds": count}}``.
    """
    table = {}
    for key, by_lr in _by_learning_rate(runs).items():
        lr = _best_learning_rate(by_lr)
        peaks = [r.peak_accuracy for r in by_lr[lr]]
        table[key] = {
            "peak": statistics.fmean(peaks),
            "low": min(peaks),
            "high": max(peaks),
            "lr": lr,
            "seeds": len(peaks),
        }
    return table


def accuracy_curves(runs: list[GridRun], length: int) -> dict[tuple[str, str], tuple[list[int], list[float]]]:
    """Figure 4's second quantity: held-out accuracy vs training steps at ``length`` tokens.

    Returns:
        ``{(task, kind): (steps, accuracy averaged over seeds)}`` at each configuration's
        best learning rate (as in :func:`peak_accuracy`).
    """
    curves = {}
    for (task, kind, run_length), by_lr in _by_learning_rate(runs).items():
        if run_length != length:
            continue
        results = by_lr[_best_learning_rate(by_lr)]
        steps = [step for step, _ in results[0].curve]
        mean = [statistics.fmean(r.curve[i][1] for r in results) for i in range(len(steps))]
        curves[(task, kind)] = (steps, mean)
    return curves


def mean_along_curve(curves: dict[tuple[str, str], tuple[list[int], list[float]]], task: str, kind: str) -> float:
    """Mean accuracy over a curve's evenly spaced evaluations: the area under accuracy-vs-steps,
    normalised; of two curves that end alike, the one that rose earlier has the larger value."""
    _, accuracy = curves[(task, kind)]
    return statistics.fmean(accuracy)


def highest_everywhere(
    table: dict[tuple[str, str, int], dict[str, float]], task: str, kind: str = "kda", margin: float = 0.0
) -> bool:
    """True when ``kind``'s peak accuracy on ``task`` is at least every other kind's minus
    ``margin`` at every length of ``table``."""
    lengths = sorted({length for t, _, length in table if t == task})
    if not lengths:
        raise ValueError(f"task {task!r}: no runs in the table")
    for length in lengths:
        ours = table[(task, kind, length)]["peak"]
        others = [row["peak"] for (t, k, n), row in table.items() if t == task and n == length and k != kind]
        if any(ours < other - margin for other in others):
            return False
    return True


TRANSITION_FRACTION = 0.5
"""Where a run counts as past its learning transition: held-out accuracy at least this fraction
of the way from chance to 1 (see :func:`transition_step`)."""


def transition_step(curve: list[tuple[int, float]], chance: float, fraction: float = TRANSITION_FRACTION) -> int | None:
    """The first evaluated step at which accuracy reaches ``chance + fraction * (1 - chance)``.

    On these tasks a model sits near chance for a while and then learns within a few hundred
    steps; this step locates that transition on an accuracy-vs-steps ``curve`` of
    ``(step, accuracy)`` points (in step order).

    Returns:
        The step, or None when the curve never gets there.
    """
    if not 0 < fraction <= 1 or not 0 <= chance < 1:
        raise ValueError(f"transition_step: need 0 < fraction <= 1 and 0 <= chance < 1, got {fraction}, {chance}")
    level = chance + fraction * (1 - chance)
    return next((step for step, accuracy in curve if accuracy >= level), None)

"""Synthetic tasks that probe what a recurrent state can remember.

* :mod:`kdalib.tasks.mqar`: multi-query associative recall data.
* :mod:`kdalib.tasks.palindrome`: reproduce a random sequence in reverse order.
* :mod:`kdalib.tasks.stack`: track 64 independent LIFO stacks and answer every pop.
* :mod:`kdalib.tasks.model`: a tiny language model whose token mixer is kdalib's KDA
  operator, restricted to linear attention, DeltaNet, Gated DeltaNet, full KDA or
  Mamba-2's scalar-decay rule.
* :mod:`kdalib.tasks.train`: the training loop and the accuracy sweep the
  synthetic-recall notebook runs.
* :mod:`kdalib.tasks.report_grid`: the Kimi Linear report's synthetic-task grid
  (§5.1, Figure 4) at a chosen size, and its peak-accuracy and accuracy-curve tables.
* :mod:`kdalib.tasks.grid`: grids trained a few runs per command in priority order, resuming
  from :mod:`kdalib.tasks.record` (one JSON record, keyed by each run's settings); what is
  recorded and missing; :mod:`kdalib.tasks.grid_view` shows it in a notebook and
  :mod:`kdalib.tasks.command` is ``kdalib tasks grid``.
"""

from kdalib.tasks.model import MIXER_KINDS, Block, RecallMixer, TinyRecallModel
from kdalib.tasks.mqar import IGNORE_INDEX, MQARSpec, generate_mqar, recall_accuracy
from kdalib.tasks.palindrome import PalindromeSpec, generate_palindrome
from kdalib.tasks.stack import StackSpec, generate_stack
from kdalib.tasks.train import TaskSpec, TrainConfig, TrainResult, train_recall_model

__all__ = [
    "Block",
    "IGNORE_INDEX",
    "MIXER_KINDS",
    "MQARSpec",
    "PalindromeSpec",
    "RecallMixer",
    "StackSpec",
    "TaskSpec",
    "TinyRecallModel",
    "TrainConfig",
    "TrainResult",
    "generate_mqar",
    "generate_palindrome",
    "generate_stack",
    "recall_accuracy",
    "train_recall_model",
]

"""Synthetic tasks that probe what a recurrent state can remember.

* :mod:`kdalib.tasks.mqar`: multi-query associative recall data.
* :mod:`kdalib.tasks.model`: a tiny language model whose token mixer is kdalib's KDA
  operator, restricted to linear attention, DeltaNet, Gated DeltaNet or full KDA.
* :mod:`kdalib.tasks.train`: the training loop and the accuracy sweep the
  synthetic-recall notebook runs.
"""

from kdalib.tasks.model import MIXER_KINDS, Block, RecallMixer, TinyRecallModel
from kdalib.tasks.mqar import IGNORE_INDEX, MQARSpec, generate_mqar, recall_accuracy
from kdalib.tasks.train import TrainConfig, TrainResult, train_recall_model

__all__ = [
    "Block",
    "IGNORE_INDEX",
    "MIXER_KINDS",
    "MQARSpec",
    "RecallMixer",
    "TinyRecallModel",
    "TrainConfig",
    "TrainResult",
    "generate_mqar",
    "recall_accuracy",
    "train_recall_model",
]

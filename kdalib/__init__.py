"""kdalib: Kimi Delta Attention in PyTorch, plus the tools behind the Kimi field guide.

Submodules are imported on demand so that torch-free parts (``kdalib.sources``,
``kdalib.book``) never pay for, or require, a torch import.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = ("ops", "nn", "sources", "book", "tasks", "repro")


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"kdalib.{name}")
    raise AttributeError(f"module 'kdalib' has no attribute {name!r}")

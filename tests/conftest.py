"""Session-wide test settings, loaded before any test module is imported.

Without CUDA, Triton kernels run in Triton's CPU interpreter. The switch must be set
before anything imports triton (transformers does, when tests/nn imports it), so it
lives here rather than next to the kernel tests.
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

"""tests/ops configuration.

* Tests marked ``slow`` are deselected unless asked for (``-m slow`` or KDALIB_SLOW=1).
* Without CUDA, Triton kernels run in Triton's interpreter. The switch must be set
  before anything imports triton, and transformers (imported by the peer tests)
  may import it first, so it is set here, before any test module is collected.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    if "slow" in (config.getoption("-m") or "") or os.environ.get("KDALIB_SLOW") == "1":
        return
    slow = [item for item in items if "slow" in item.keywords and _HERE in Path(str(item.fspath)).parents]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if item not in set(slow)]

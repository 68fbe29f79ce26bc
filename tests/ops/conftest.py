"""tests/ops configuration.

* Tests marked ``slow`` are deselected unless asked for (``-m slow`` or KDALIB_SLOW=1).
* Without CUDA, Triton kernels run in Triton's interpreter. The switch must be set
  before anything imports triton, and transformers (imported by the peer tests)
  may import it first, so it is set here, before any test module is collected.
* Every test here runs on one intra-op thread (see ``_one_intra_op_thread``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
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


@pytest.fixture(autouse=True)
def _one_intra_op_thread():
    """Runs each ops test on one intra-op thread.

    The tests use small tensors, where a second OpenMP thread gains nothing; on a
    shared machine it costs a great deal, because every parallel region waits for a
    thread the scheduler has parked. The previous setting is restored afterwards.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

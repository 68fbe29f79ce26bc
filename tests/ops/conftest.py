"""tests/ops configuration.

* Tests marked ``slow`` (the full grids) are left out by the default ``-m 'not slow'``.
* Without CUDA, Triton kernels run in Triton's interpreter: tests/conftest.py sets that
  for the whole session, before anything imports triton.
* Every test here runs on one intra-op thread (see ``_one_intra_op_thread``).
"""

from __future__ import annotations

import pytest
import torch


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

"""The rank processes of tests/distributed, started once per world size and shared by the tests.

Starting Python with torch costs a second or two per process, so each world size runs all its
fast cases in one set of processes (``distributed_ranks.FAST_CASES``); the slow grid starts its own.
"""

from __future__ import annotations

import pytest
from distributed_ranks import FAST_CASES, run_ranks


@pytest.fixture(scope="session")
def fast_results(tmp_path_factory):
    """``results(world_size)``: every rank's ``{case: result}`` for ``FAST_CASES`` on that many ranks."""
    cache = {}

    def results(world_size: int) -> list[dict]:
        if world_size not in cache:
            folder = tmp_path_factory.mktemp(f"ranks{world_size}")
            cache[world_size] = run_ranks(world_size, [f"{case}/{world_size}" for case in FAST_CASES], folder)
        return cache[world_size]

    return results

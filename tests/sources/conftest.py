"""Fixtures for the kdalib.sources tests; the data and helpers live in sources_fixtures.py."""

from __future__ import annotations

import pytest
from sources_fixtures import LocalServer, Workspace


@pytest.fixture
def ws(tmp_path) -> Workspace:
    return Workspace(tmp_path)


@pytest.fixture
def server():
    local = LocalServer()
    yield local
    local.close()

"""kdalib.locking: one rule for every file the commands edit in place, importable without extras."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from kdalib import locking

ROOT = Path(__file__).resolve().parents[1]


def test_a_second_holder_waits_then_gives_up_having_taken_nothing(tmp_path):
    record = tmp_path / "grid.json"
    with locking.locked(record):
        with pytest.raises(locking.Busy, match="grid.json is being edited"):
            with locking.locked(record, wait=0.1):
                pass
    with locking.locked(record, wait=0.1):  # free again once the first holder is done
        pass
    assert (tmp_path / ".grid.json.lock").exists()


def test_a_waiting_holder_gets_the_lock_when_it_is_released(tmp_path):
    record = tmp_path / "grid.json"
    order: list[str] = []
    first_holds = threading.Event()

    def first() -> None:
        with locking.locked(record):
            first_holds.set()
            order.append("first in")
            threading.Event().wait(0.3)
            order.append("first out")

    thread = threading.Thread(target=first)
    thread.start()
    first_holds.wait(5)
    with locking.locked(record, wait=10):
        order.append("second in")
    thread.join()
    assert order == ["first in", "first out", "second in"]


def test_the_grid_record_imports_without_the_sources_extra():
    """``kdalib tasks grid`` needs only torch: its record's lock must not pull in ruamel.yaml
    (the ``sources`` extra), as it did while the lock lived in kdalib.sources."""
    code = (
        "import sys; sys.modules['ruamel'] = None; sys.modules['ruamel.yaml'] = None\n"
        "import kdalib.tasks.record, kdalib.tasks.command\n"
        "assert 'kdalib.sources' not in sys.modules, sorted(m for m in sys.modules if m.startswith('kdalib.sources'))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]

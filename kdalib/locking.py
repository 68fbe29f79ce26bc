"""Exclusive locks around every read-modify-write of a file the project's commands edit.

``kdalib sources add``, ``sources fetch`` and ``check-links --write`` edit sources.yaml and the
snapshot manifest; ``kdalib tasks grid`` adds each finished run to its grid record.
Each reads a file, changes it in memory and writes it back; two of them at once would each write
their own change over the other's. :func:`locked` holds an exclusive ``flock`` on a hidden lock
file beside each file (``.sources.yaml.lock``, ``snapshots/.MANIFEST.yaml.lock``) from before the
read until after the write. Locks are taken in one order (sorted paths), so two commands never
wait for each other in a circle; a command that cannot get a lock within :data:`WAIT_SECONDS`
stops with :class:`Busy`, having written nothing. The lock files stay in place (removing one would
let a third command lock a new file while the second still holds the old one). Locking needs POSIX
``fcntl`` and nothing outside the standard library, so every command may use it whatever extras
are installed.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: How long a command waits for another one to finish its edit.
WAIT_SECONDS = 60.0
_POLL_SECONDS = 0.05


class Busy(Exception):
    """Another kdalib command holds the lock of a file this one must edit."""


def lock_path(path: str | os.PathLike[str]) -> Path:
    """The lock file that guards ``path``: ``.NAME.lock`` in the same folder (links resolved)."""
    resolved = Path(path).resolve()
    return resolved.with_name(f".{resolved.name}.lock")


@contextmanager
def locked(*paths: str | os.PathLike[str], wait: float | None = None) -> Iterator[None]:
    """Hold the locks of ``paths`` for the duration of the ``with`` block.

    Raises:
        Busy: a lock was not free within ``wait`` seconds (default :data:`WAIT_SECONDS`).
    """
    held: list[int] = []
    try:
        for path in sorted({lock_path(p) for p in paths}):
            held.append(_acquire(path, WAIT_SECONDS if wait is None else wait))
        yield
    finally:
        for handle in reversed(held):
            fcntl.flock(handle, fcntl.LOCK_UN)
            os.close(handle)


def _acquire(path: Path, wait: float) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(handle)
                guarded = path.with_name(path.name[1 : -len(".lock")])
                raise Busy(
                    f"{guarded} is being edited by another kdalib command (lock {path}); "
                    "nothing was written: run this one again when that one has finished"
                ) from None
            time.sleep(_POLL_SECONDS)
        except BaseException:
            os.close(handle)
            raise

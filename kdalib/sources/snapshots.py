"""The snapshot store: archived source texts, addressed by file name, checked by sha256.

The store is the repository's ``snapshots/`` folder (the evidence travels with the book), or
``$KDALIB_SNAPSHOTS`` when set.
Texts are read as UTF-8 and cached per file, together with their normalised form, so a
snapshot quoted by fifty claims is read, hashed and normalised once. A file is read only as a
regular file inside the store, under :data:`MAX_SNAPSHOT_BYTES` (:func:`kdalib.sources.files.read_inside`).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kdalib.sources.files import UnsafeFile, read_inside
from kdalib.sources.model import Snapshot
from kdalib.sources.quotes import NormalizedText

ENV_VAR = "KDALIB_SNAPSHOTS"
#: A fetched body is capped at 25 MB, and its extracted text is smaller; an archived text is below this.
MAX_SNAPSHOT_BYTES = 32 * 1024 * 1024
DEFAULT_DIR = "snapshots"

PRESENT = "present"
MISSING = "missing"
SHA_MISMATCH = "sha-mismatch"
UNREADABLE = "unreadable"


def default_snapshot_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The store folder: ``explicit`` if given, else ``$KDALIB_SNAPSHOTS``, else ``snapshots``."""
    return Path(explicit or os.environ.get(ENV_VAR) or DEFAULT_DIR)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class SnapshotState:
    """The outcome of opening one snapshot.

    Attributes:
        state: ``present``, ``missing``, ``sha-mismatch`` or ``unreadable``.
        path: where the file was looked for.
        actual_sha256: the file's sha256 when it could be read.
        text: the normalised text, only when ``state == "present"``.
        detail: why it is unreadable (decode error, permission).
    """

    state: str
    path: Path
    actual_sha256: str | None = None
    text: NormalizedText | None = None
    detail: str = ""


class SnapshotStore:
    """Opens snapshot files from one folder, checking each against its recorded sha256."""

    def __init__(self, root: str | os.PathLike[str] | None = None):
        self.root = default_snapshot_dir(root)
        self._cache: dict[tuple[str, str], SnapshotState] = {}

    def path_of(self, file: str) -> Path:
        return self.root / file

    def read(self, file: str) -> bytes:
        """The bytes of ``file``, read inside the store (raises :class:`~kdalib.sources.files.UnsafeFile`)."""
        return read_inside(self.root, file, MAX_SNAPSHOT_BYTES)

    def open(self, snapshot: Snapshot) -> SnapshotState:
        """Read, hash and normalise ``snapshot.file`` (cached); never raises for a bad file."""
        key = (snapshot.file, snapshot.sha256)
        if key not in self._cache:
            self._cache[key] = self._open(snapshot)
        return self._cache[key]

    def _open(self, snapshot: Snapshot) -> SnapshotState:
        path = self.path_of(snapshot.file)
        try:
            data = self.read(snapshot.file)
        except UnsafeFile as err:
            return SnapshotState(MISSING if err.missing else UNREADABLE, path, detail=err.problem)
        actual = sha256_bytes(data)
        if actual != snapshot.sha256:
            return SnapshotState(SHA_MISMATCH, path, actual)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            return SnapshotState(UNREADABLE, path, actual, detail=f"not UTF-8 ({err.reason} at byte {err.start})")
        return SnapshotState(PRESENT, path, actual, NormalizedText(text))

    def write(self, file: str, text: str) -> Path:
        """Store ``text`` as ``file`` atomically (UTF-8) and return its path."""
        path = self.path_of(file)
        atomic_write_bytes(path, text.encode("utf-8"))
        self._cache = {k: v for k, v in self._cache.items() if k[0] != file}
        return path


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place.

    A crash or an exception leaves either the old file or the new one, never half of each.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        # mkstemp creates the file 0600; keep the old file's mode, or the usual one for a new file
        os.chmod(temp_name, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_current_umask())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise

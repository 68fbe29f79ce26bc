"""Archiving texts into the store and recording them in sources.yaml and the manifest.

A source's first archived text is its ``snapshot:``; when the document changes, the new
text is kept beside the old one under a dated name (``kimi-k2-readme.2026-12-01.md``) and
listed under the source's ``versions:``. Nothing is ever written over: claims checked
against the old text keep verifying, and a claim moves to the new text with
``version: 2026-12-01`` (or is marked ``superseded`` by one that does).

:func:`archive` edits sources.yaml and the manifest under their locks (:mod:`kdalib.locking`)
and writes the text, then the manifest, then sources.yaml. A run stopped between those writes
leaves a text that sources.yaml does not name yet; the next :func:`archive` of that file takes it
over (and says so), while a text that sources.yaml names is never written over.
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from kdalib.locking import locked
from kdalib.sources import manifest
from kdalib.sources.files import UnsafeFile
from kdalib.sources.loader import LoadError, load_document, load_round_trip, load_text
from kdalib.sources.model import Snapshot, Source
from kdalib.sources.snapshots import SnapshotStore, atomic_write_bytes, sha256_bytes


def dated_name(first_file: str, day: dt.date) -> str:
    """``name.md`` → ``name.2026-12-01.md`` (in the same folder of the store)."""
    path = PurePosixPath(first_file)
    return str(path.with_name(f"{path.stem}.{day.isoformat()}{path.suffix or '.txt'}"))


def _source_entry(data: CommentedMap, path: str | Path, source_id: str) -> CommentedMap:
    for entry in data.get("sources") or []:
        if isinstance(entry, CommentedMap) and entry.get("id") == source_id:
            return entry
    raise LoadError(path, 0, f"source {source_id!r} is not in the file")


def _flow(mapping: dict) -> CommentedMap:
    node = CommentedMap(mapping)
    node.fa.set_flow_style()
    return node


def _edited(path: str | Path, edit) -> bytes:
    """sources.yaml with ``edit(data)`` applied round-trip; refused unless the result validates."""
    yaml, data = load_round_trip(path)
    edit(data)
    buffer = io.StringIO()
    yaml.dump(data, buffer)
    checked = load_text(buffer.getvalue(), path)
    if checked.findings:
        details = "\n".join(f.format() for f in checked.findings)
        raise LoadError(path, 0, f"the edit would not validate, nothing written:\n{details}")
    return buffer.getvalue().encode("utf-8")


@dataclass
class Archived:
    """What :func:`archive` recorded; ``recovered`` when it replaced the text of an interrupted run."""

    snapshot: Snapshot
    recovered: bool = False


def archive(
    store: SnapshotStore,
    sources_path: str | Path,
    source: Source,
    file: str,
    text: str,
    retrieved_from: str,
    version: str,
    origin: str,
    day: dt.date,
    as_version: bool,
) -> Archived:
    """Write ``text`` as ``file`` and record it: the manifest entry, and in sources.yaml either
    the source's ``snapshot:`` (its first text) or a new entry of its ``versions:``.

    Every new content is computed and validated before the first write, under the locks of
    sources.yaml and the manifest.

    Raises:
        FileExistsError: ``file`` is in the store and sources.yaml names it (texts are never
            written over), or it is not a regular file.
        LoadError: sources.yaml cannot be edited, or the edit would not validate.
        Busy: another kdalib command is editing sources.yaml or the manifest.
    """
    data = text.encode("utf-8")
    target = store.path_of(file)
    snapshot = Snapshot(
        file, sha256_bytes(data), retrieved=day if as_version else None, url=retrieved_from if as_version else None
    )

    def edit(doc: CommentedMap) -> None:
        entry = _source_entry(doc, sources_path, source.id)
        if as_version:
            versions = entry.get("versions")
            if not isinstance(versions, CommentedSeq):
                versions = entry["versions"] = CommentedSeq()
            versions.append(_flow({"file": file, "sha256": snapshot.sha256, "retrieved": day, "url": retrieved_from}))
        else:
            entry["snapshot"] = _flow({"file": file, "sha256": snapshot.sha256})

    manifest_path = store.root / manifest.MANIFEST_NAME
    with locked(sources_path, manifest_path):
        recovered = _left_by_an_interrupted_run(store, sources_path, file)
        new_sources = _edited(sources_path, edit)
        new_manifest = manifest.with_entry(store, file, source.id, version, retrieved_from, origin, data, today=day)
        atomic_write_bytes(target, data)
        atomic_write_bytes(manifest_path, new_manifest)
        atomic_write_bytes(sources_path, new_sources)
    return Archived(snapshot, recovered)


def _left_by_an_interrupted_run(store: SnapshotStore, sources_path: str | Path, file: str) -> bool:
    """Whether ``file`` is in the store without sources.yaml naming it (it may then be replaced).

    Raises:
        FileExistsError: sources.yaml names it, or it is not a regular file of the store.
    """
    try:
        store.read(file)
    except UnsafeFile as err:
        if err.missing:
            return False
        raise FileExistsError(f"{store.path_of(file)} exists and cannot be replaced: {err}") from None
    named = {s.file for source in load_document(sources_path).sources.values() for s in source.all_snapshots()}
    if file in named:
        raise FileExistsError(f"{store.path_of(file)} exists already; archived texts are never written over")
    return True

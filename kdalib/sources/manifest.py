"""The snapshot store's manifest (``snapshots/MANIFEST.yaml``): what each archived text is.

One entry per file: the source it belongs to, which version of the document it is, where
and when it was retrieved, its ``origin`` (the publisher's own bytes, this project's text
extraction of the publisher's document, or a third party's copy), the licence where known,
and its sha256 and size. :func:`check_manifest` holds the manifest, the folder and
sources.yaml to each other; :func:`with_entry` is how ``kdalib sources add/fetch`` add to it.
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from kdalib.sources.fields import parse_date, parse_enum, parse_pattern, parse_sha, parse_text
from kdalib.sources.files import UnsafeFile, entries_below, path_problem, read_inside
from kdalib.sources.loader import MAX_FILE_BYTES, LoadError, guard, load_yaml
from kdalib.sources.model import ERROR, WARNING, Document, Finding, short_repr
from kdalib.sources.schema import SOURCE_ID, _Entry, _Reporter, item_line
from kdalib.sources.snapshots import ENV_VAR, SnapshotStore, sha256_bytes

MANIFEST_NAME = "MANIFEST.yaml"
#: Files of the store that are about the texts, not texts themselves.
STORE_DOCUMENTS = (MANIFEST_NAME, "README.md")
ORIGINS = ("publisher", "extraction", "third-party")
ENTRY_KEYS = (
    "file",
    "source",
    "version",
    "retrieved_from",
    "retrieved_on",
    "origin",
    "licence",
    "sha256",
    "bytes",
    "notes",
)

NEW_MANIFEST_HEADER = (
    "# The archived texts in this folder, one entry per file (see kdalib/sources/manifest.py):\n"
    "# file, source, version, retrieved_from, retrieved_on, origin (publisher | extraction |\n"
    "# third-party), licence where known, sha256, bytes, notes.\n"
)


@dataclass
class ManifestEntry:
    """One file's record; ``line`` is where its entry starts in MANIFEST.yaml."""

    file: str
    source: str
    version: str
    retrieved_from: str
    retrieved_on: dt.date
    origin: str
    sha256: str
    bytes: int
    licence: str = ""
    notes: str = ""
    line: int = 0
    sha256_line: int = 0


def _parse_size(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("")
    return int(value)


#: The manifest is a few kilobytes; the checklist's cap applies.
MAX_MANIFEST_BYTES = MAX_FILE_BYTES


def _yaml() -> YAML:
    yaml = guard(YAML(typ="rt"))
    yaml.width = 110
    yaml.indent(mapping=2, sequence=2, offset=0)
    return yaml


def _parse_entry(raw: Any, report: _Reporter, line: int) -> ManifestEntry | None:
    if not hasattr(raw, "items"):
        report.error(line, "", "manifest-bad-entry", f"an entry is {short_repr(raw)}; expected a mapping with 'file:'")
        return None
    entry = _Entry(raw, report, "", line, "manifest entry")
    file = entry.get("file", parse_text, "the file's name in the snapshot store", required=True)
    if file is None:
        return None
    problem = path_problem(file)
    if problem is not None:
        report.error(
            entry.line_of("file"),
            short_repr(file),
            "manifest-bad-file",
            f"file {short_repr(file)} leaves the snapshot store: it {problem}",
            "name a file inside the store, relative to it, without '..'",
        )
        return None
    entry.item = file
    entry.check_keys(ENTRY_KEYS)
    values = {
        "source": entry.get("source", parse_pattern(SOURCE_ID), "a source id from sources.yaml", required=True),
        "version": entry.get("version", parse_text, "which version of the document this is", required=True),
        "retrieved_from": entry.get("retrieved_from", parse_text, "where the text was taken from", required=True),
        "retrieved_on": entry.get("retrieved_on", parse_date, "a date written YYYY-MM-DD", required=True),
        "origin": entry.get("origin", parse_enum(ORIGINS), f"one of {', '.join(ORIGINS)}", required=True),
        "sha256": entry.get("sha256", parse_sha, "64 lower-case hex digits (sha256sum of the file)", required=True),
        "bytes": entry.get("bytes", _parse_size, "the file's size in bytes (wc -c)", required=True),
    }
    if any(value is None for value in values.values()):
        return None
    return ManifestEntry(
        file=file,
        **values,
        licence=entry.get("licence", parse_text, "text") or "",
        notes=entry.get("notes", parse_text, "text") or "",
        line=line,
        sha256_line=entry.line_of("sha256"),
    )


def load_manifest(path: Path) -> tuple[dict[str, ManifestEntry], list[Finding]]:
    """Entries by file name, and the problems of the manifest itself (never raises for bad content)."""
    report = _Reporter(path)
    try:
        text = read_inside(path.parent, path.name, MAX_MANIFEST_BYTES).decode("utf-8")
        data = load_yaml(_yaml(), text, path)
    except (UnsafeFile, UnicodeDecodeError) as err:
        report.error(0, "", "manifest-unreadable", f"cannot read {path}: {err}")
        return {}, report.findings
    except LoadError as err:
        report.error(err.line, "", "manifest-unreadable", err.message)
        return {}, report.findings
    if not isinstance(data, CommentedSeq):
        report.error(
            1,
            "",
            "manifest-unreadable",
            "the manifest is not a list of entries",
            "write one '- file: ...' entry per archived text",
        )
        return {}, report.findings
    entries: dict[str, ManifestEntry] = {}
    for index, raw in enumerate(data):
        parsed = _parse_entry(raw, report, item_line(data, index, 1))
        if parsed is None:
            continue
        if parsed.file in entries:
            report.error(
                parsed.line,
                parsed.file,
                "manifest-duplicate-file",
                f"{parsed.file} is already listed on line {entries[parsed.file].line}",
                "keep one entry per file",
            )
            continue
        entries[parsed.file] = parsed
    return entries, report.findings


def store_files(root: Path) -> list[str]:
    """The archived texts in the store: every entry that is not a folder (links and devices
    included, so that they are reported), except the manifest, the README and hidden files."""
    return [
        name
        for name in entries_below(root)
        if not any(part.startswith(".") for part in name.split("/")) and name not in STORE_DOCUMENTS
    ]


def check_manifest(doc: Document, store: SnapshotStore, strict: bool) -> list[Finding]:
    """The manifest, the files of the store and sources.yaml agree with each other.

    Findings: a missing manifest (an error under ``strict``); schema problems of an entry; an
    entry whose file is absent, whose sha256 or size disagrees with the file, or whose source
    is unknown; a file of the store without an entry; a snapshot named in sources.yaml whose
    entry names another source (or none).
    """
    path = store.root / MANIFEST_NAME
    if not path.exists() and not path.is_symlink():
        return [
            Finding(
                ERROR if strict else WARNING,
                "manifest-missing",
                str(path),
                0,
                "",
                f"the snapshot store {store.root} has no {MANIFEST_NAME}",
                f"add {path} with one entry per archived text",
            )
        ]
    entries, findings = load_manifest(path)
    if any(f.code == "manifest-unreadable" for f in findings):
        return findings  # every file would look unlisted: report the cause only
    file = str(path)
    named = {snapshot.file for source in doc.sources.values() for snapshot in source.all_snapshots()}
    for entry in entries.values():
        if entry.source not in doc.sources:
            findings.append(
                Finding(
                    ERROR,
                    "manifest-unknown-source",
                    file,
                    entry.line,
                    entry.file,
                    f"names source {entry.source!r}, which is not in {doc.path}",
                    "fix the id, or add the source to sources.yaml",
                )
            )
        try:
            data = store.read(entry.file)
        except UnsafeFile as err:
            if not err.missing:
                findings.append(
                    Finding(
                        ERROR,
                        "manifest-file-unreadable",
                        file,
                        entry.line,
                        entry.file,
                        f"lists {err}",
                        "keep archived texts as regular files inside the store",
                    )
                )
            elif entry.file not in named:  # a named one is already a snapshot-missing finding
                findings.append(
                    Finding(
                        ERROR if strict else WARNING,
                        "manifest-file-missing",
                        file,
                        entry.line,
                        entry.file,
                        f"lists {entry.file}, which is not in {store.root}",
                        "restore the file, or remove its entry",
                    )
                )
            continue
        actual = sha256_bytes(data)
        if actual != entry.sha256:
            findings.append(
                Finding(
                    ERROR,
                    "manifest-sha-mismatch",
                    file,
                    entry.sha256_line,
                    entry.file,
                    f"records sha256 {entry.sha256}, but the file has {actual}",
                    "restore the archived file; a changed source is kept as a new version "
                    "(`kdalib sources fetch --new-version ID`), never written over",
                )
            )
        elif len(data) != entry.bytes:
            findings.append(
                Finding(
                    ERROR,
                    "manifest-size-mismatch",
                    file,
                    entry.line,
                    entry.file,
                    f"records {entry.bytes} bytes, but the file has {len(data)}",
                    f"write bytes: {len(data)}",
                )
            )
    for name in store_files(store.root):
        if name not in entries:
            findings.append(
                Finding(
                    ERROR,
                    "unlisted-snapshot",
                    str(store.path_of(name)),
                    1,
                    name,
                    f"is in the snapshot store but not in {file}",
                    "add its entry (file, source, version, retrieved_from, retrieved_on, origin, "
                    "sha256, bytes), or remove the file",
                )
            )
    findings += _check_named_snapshots(doc, entries, named, file)
    return findings


def _check_named_snapshots(
    doc: Document, entries: dict[str, ManifestEntry], named: set[str], manifest: str
) -> list[Finding]:
    findings: list[Finding] = []
    for source in doc.sources.values():
        for snapshot in source.all_snapshots():
            entry = entries.get(snapshot.file)
            line = source.lines.get("snapshot" if snapshot is source.snapshot else "versions", source.line)
            if entry is not None and entry.source != source.id:
                findings.append(
                    Finding(
                        ERROR,
                        "manifest-source-mismatch",
                        str(doc.path),
                        line,
                        source.id,
                        f"names snapshot {snapshot.file}, which {manifest} (line {entry.line}) "
                        f"gives to source {entry.source!r}",
                        "give each source its own file, or correct the manifest's 'source'",
                    )
                )
    for entry in entries.values():
        if entry.file not in named and entry.source in doc.sources:
            findings.append(
                Finding(
                    WARNING,
                    "manifest-unused",
                    manifest,
                    entry.line,
                    entry.file,
                    f"no source in {doc.path} names {entry.file} as its snapshot or a version",
                    f"list it under {entry.source}'s snapshot or versions, or remove it (an interrupted "
                    f"`kdalib sources fetch {entry.source}` is finished by running it again)",
                )
            )
    return findings


def with_entry(
    store: SnapshotStore,
    file: str,
    source: str,
    version: str,
    retrieved_from: str,
    origin: str,
    data: bytes,
    notes: str = "",
    today: dt.date | None = None,
) -> bytes:
    """The manifest's new content with the entry of ``file`` added (or replaced), comments kept."""
    if origin not in ORIGINS:
        raise ValueError(f"origin {origin!r} is not one of {', '.join(ORIGINS)}")
    path = store.root / MANIFEST_NAME
    yaml = _yaml()
    try:
        text = read_inside(store.root, MANIFEST_NAME, MAX_MANIFEST_BYTES).decode("utf-8") if path.exists() else ""
    except (UnsafeFile, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read {path}: {err}") from None
    if _only_comments(text):
        header, entries = text or NEW_MANIFEST_HEADER, CommentedSeq()
    else:
        try:
            header, entries = "", load_yaml(yaml, text, path)
        except LoadError as err:
            raise ValueError(str(err)) from None
        if not isinstance(entries, CommentedSeq):
            raise ValueError(f"{path}: the manifest is not a list of entries")
    entry = CommentedMap()
    entry["file"] = file
    entry["source"] = source
    entry["version"] = version
    entry["retrieved_from"] = retrieved_from
    entry["retrieved_on"] = (today or dt.datetime.now(dt.UTC).date()).isoformat()
    entry["origin"] = origin
    entry["sha256"] = sha256_bytes(data)
    entry["bytes"] = len(data)
    if notes:
        entry["notes"] = notes
    for index, existing in enumerate(entries):
        if hasattr(existing, "get") and existing.get("file") == file:
            entries[index] = entry
            break
    else:
        entries.append(entry)
    buffer = io.StringIO(header)
    buffer.seek(0, io.SEEK_END)
    yaml.dump(entries, buffer)
    return buffer.getvalue().encode("utf-8")


def _only_comments(text: str) -> bool:
    return all(not line.strip() or line.lstrip().startswith("#") for line in text.splitlines())


def missing_snapshot_fix(source_id: str, file: str, store: SnapshotStore) -> str:
    """How to get a missing archived text back, by where it came from (its manifest entry): a text
    fetched from a URL can be fetched again; one added from a local file cannot, and is restored."""
    archive = f"or set {ENV_VAR} to the archive that holds it"
    entries = load_manifest(store.root / MANIFEST_NAME)[0] if (store.root / MANIFEST_NAME).is_file() else {}
    entry = entries.get(file)
    if entry is not None and entry.retrieved_from.startswith(("https://", "http://")) and entry.origin != "third-party":
        return f"run `kdalib sources fetch {source_id}` (it archives {entry.retrieved_from} again) {archive}"
    if entry is not None:
        return (
            f"it was added from a local file ({entry.retrieved_from}), which `kdalib sources fetch` cannot recreate: "
            f"restore it with `git checkout -- snapshots/{file}`, or add that file again with "
            f"`kdalib sources add URL --id {source_id} --snapshot FILE --origin {entry.origin}`, {archive}"
        )
    return (
        f"restore it with `git checkout -- snapshots/{file}`; a source whose URL serves the text can be fetched "
        f"again with `kdalib sources fetch {source_id}`; {archive}"
    )

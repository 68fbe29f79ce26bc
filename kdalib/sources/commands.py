"""Handlers of ``kdalib verify`` and ``kdalib sources ...`` (arguments are defined in kdalib/cli.py).

Each handler takes the parsed namespace and returns 0 (clean), 1 (findings) or 2
(unusable input). Findings go to stdout one per line as ``file:line: severity: ...``,
followed by a short summary table; problems with the input itself go to stderr.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit

from ruamel.yaml.comments import CommentedMap

from kdalib.sources import links
from kdalib.sources.extract import body_to_text, raw_url
from kdalib.sources.fields import parse_url
from kdalib.sources.http import FetchError, FetchPolicy, SafeClient
from kdalib.sources.loader import LoadError, load_document, load_round_trip, load_text
from kdalib.sources.model import Document
from kdalib.sources.schema import SOURCE_ID, SOURCE_KINDS
from kdalib.sources.snapshots import MISSING, PRESENT, SnapshotStore, atomic_write_bytes, sha256_bytes
from kdalib.sources.verify import run_verify

OK, FINDINGS, UNUSABLE = 0, 1, 2


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return UNUSABLE


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def _load_clean(path: str) -> Document:
    """Load a checklist that must have no schema errors (for commands that act on it)."""
    doc = load_document(path)
    if doc.findings:
        details = "\n".join(f.format() for f in doc.findings)
        raise LoadError(path, 0, f"fix these schema errors first (run `kdalib verify`):\n{details}")
    return doc


def _client(args: argparse.Namespace) -> SafeClient:
    return SafeClient(FetchPolicy(allow_loopback=bool(getattr(args, "allow_loopback", False))))


# ---- verify ----------------------------------------------------------------------------


def cmd_verify(args: argparse.Namespace) -> int:
    """``kdalib verify``: every rule; findings, then the summary table; optional JSON."""
    try:
        report = run_verify(args.sources, args.snapshots, args.root, strict=args.strict, online=args.online)
    except LoadError as err:
        if args.json:
            payload = {"ok": False, "unusable": str(err), "findings": []}
            atomic_write_bytes(Path(args.json), (json.dumps(payload, indent=2) + "\n").encode())
        return _fail(str(err))
    for finding in report.errors + report.warnings:
        print(finding.format())
    if report.missing_snapshots:
        print(f"snapshots not found in {report.snapshot_dir}: {', '.join(report.missing_snapshots)}")
    print(report.format_summary())
    if args.json:
        report.write_json(args.json)
    verdict = "FAILED" if report.errors else "OK"
    print(f"verify {verdict}{' (strict)' if args.strict else ''}: {args.sources}")
    return report.exit_code


# ---- fetch -----------------------------------------------------------------------------


def _selected(doc: Document, ids: list[str]) -> list:
    unknown = [i for i in ids if i not in doc.sources]
    if unknown:
        raise LoadError(doc.path, 0, f"no source with id {', '.join(map(repr, unknown))}")
    return [doc.sources[i] for i in ids] if ids else list(doc.sources.values())


def _fetch_one(client: SafeClient, store: SnapshotStore, source) -> tuple[str, str, bool]:
    """Fetch one source into the store: (state, detail, ok)."""
    url = source.version_url or source.url
    if not url:
        return "skipped", "no url or version_url", True
    try:
        result = client.get(raw_url(url))
    except FetchError as err:
        return err.kind, str(err), False
    if not result.ok:
        return "http-error", f"HTTP {result.status} from {result.final_url}", False
    try:
        text = body_to_text(result.body, result.content_type)
    except ValueError as err:
        return "unreadable", f"{url}: {err}", False
    sha = sha256_bytes(text.encode("utf-8"))
    file = source.snapshot.file if source.snapshot else f"{source.id}.txt"
    if source.snapshot is None:
        store.write(file, text)
        return "new", f"stored {file}; add snapshot: {{file: {file}, sha256: {sha}}}", True
    if sha == source.snapshot.sha256:
        store.write(file, text)
        return "ok", f"{file} matches the recorded sha256", True
    store.write(file + ".new", text)
    return "changed", (f"the text differs from the recorded sha256 (got {sha}); saved as {file}.new "
                       "for review, the archived file is untouched"), False


def cmd_fetch(args: argparse.Namespace) -> int:
    """``kdalib sources fetch [ID...]``: download version_url (else url) as text into the store."""
    try:
        doc = _load_clean(args.sources)
        chosen = _selected(doc, args.ids)
    except LoadError as err:
        return _fail(str(err))
    client, store = _client(args), SnapshotStore(args.snapshots)
    rows = [("source", "result", "detail")]
    failed = False
    for source in chosen:
        state, detail, ok = _fetch_one(client, store, source)
        failed |= not ok
        rows.append((source.id, state, detail))
    print(_table(rows))
    print(f"snapshot store: {store.root}")
    return FINDINGS if failed else OK


# ---- check-links -----------------------------------------------------------------------


def cmd_check_links(args: argparse.Namespace) -> int:
    """``kdalib sources check-links [--write]``: classify every url; record results only if all were checked."""
    try:
        doc = _load_clean(args.sources)
    except LoadError as err:
        return _fail(str(err))
    results = links.check_links(doc, _client(args))
    rows = [("source", "status", "detail")] + [(r.source_id, "refused" if r.refused else r.status, r.detail)
                                               for r in results]
    print(_table(rows))
    refused = [r for r in results if r.refused]
    if refused:
        print(f"{len(refused)} URL(s) refused; {args.sources} was not changed", file=sys.stderr)
        return FINDINGS
    if args.write:
        try:
            changed = links.write_link_results(args.sources, results, _today())
        except LoadError as err:
            return _fail(str(err))
        print(f"updated link.checked/status of {changed} source(s) in {args.sources}")
    return FINDINGS if any(r.status != "ok" for r in results) else OK


# ---- add -------------------------------------------------------------------------------


def derive_source_id(url: str) -> str:
    """A kebab-case id from a URL: owner-repo for GitHub/Hugging Face, arxiv-<number>, else host-path."""
    parts = urlsplit(url)
    host = (parts.hostname or "").removeprefix("www.")
    segments = [s for s in parts.path.split("/") if s]
    if host in ("github.com", "huggingface.co") and len(segments) >= 2:
        words = segments[:2]
    elif host == "arxiv.org" and segments:
        words = ["arxiv", segments[-1]]
    else:
        words = [host.split(".")[0], *segments[-2:]]
    slug = re.sub(r"[^a-z0-9.]+", "-", "-".join(words).lower()).strip("-.")
    return re.sub(r"-{2,}", "-", slug) or "source"


def _first_heading(text: str) -> str | None:
    for line in text.splitlines():
        stripped = line.strip().lstrip("#").strip()
        if stripped and not stripped.startswith(("---", "<", "!")):
            return stripped[:150]
    return None


def _new_entry(args, source_id: str, file: str, sha: str, text: str) -> CommentedMap:
    parts = urlsplit(args.url)
    segments = [s for s in parts.path.split("/") if s]
    owner = segments[0] if parts.hostname in ("github.com", "huggingface.co") and segments else parts.hostname
    entry = CommentedMap()
    entry["id"] = source_id
    entry["title"] = args.title or _first_heading(text) or source_id
    entry["publisher"] = args.publisher or owner
    entry["kind"] = args.kind
    entry["url"] = args.url
    snapshot = CommentedMap(file=file, sha256=sha)
    snapshot.fa.set_flow_style()
    entry["snapshot"] = snapshot
    link = CommentedMap(checked=_today(), status="unchecked")
    link.fa.set_flow_style()
    entry["link"] = link
    return entry


def cmd_add(args: argparse.Namespace) -> int:
    """``kdalib sources add URL --snapshot FILE``: store the text and append a validated entry."""
    try:
        parse_url(args.url)
    except ValueError as err:
        return _fail(f"URL {args.url!r}: {err}")
    if args.kind not in SOURCE_KINDS:
        return _fail(f"--kind {args.kind!r} is not one of {', '.join(SOURCE_KINDS)}")
    source_id = args.source_id or derive_source_id(args.url)
    if not SOURCE_ID.match(source_id):
        return _fail(f"id {source_id!r} is not kebab-case (lower-case letters, digits, '-' and '.')")
    try:
        data_bytes = Path(args.snapshot).read_bytes()
        text = data_bytes.decode("utf-8")
        doc = _load_clean(args.sources)
        yaml, data = load_round_trip(args.sources)
    except (OSError, UnicodeDecodeError) as err:
        return _fail(f"--snapshot {args.snapshot}: cannot read UTF-8 text ({err})")
    except LoadError as err:
        return _fail(str(err))
    if source_id in doc.sources:
        return _fail(f"{args.sources}:{doc.sources[source_id].line}: id {source_id!r} exists already (use --id)")
    store = SnapshotStore(args.snapshots)
    file = source_id + (Path(args.snapshot).suffix or ".txt")
    sha = sha256_bytes(data_bytes)
    if not isinstance(data.get("sources"), list):
        return _fail(f"{args.sources}: 'sources:' is not a list")
    data["sources"].append(_new_entry(args, source_id, file, sha, text))
    buffer = io.StringIO()
    yaml.dump(data, buffer)
    checked = load_text(buffer.getvalue(), args.sources)
    if checked.findings:
        return _fail("the new entry would not validate, nothing written:\n"
                     + "\n".join(f.format() for f in checked.findings))
    existing = store.path_of(file)
    if existing.exists() and existing.read_bytes() != data_bytes:
        return _fail(f"{existing} exists with other content; choose another --id")
    atomic_write_bytes(existing, data_bytes)
    atomic_write_bytes(args.sources, buffer.getvalue().encode("utf-8"))
    print(f"added source {source_id!r} (snapshot {file}, sha256 {sha}) to {args.sources}")
    print("next: check title/publisher/kind, add version_url, then `kdalib sources quote "
          f"{source_id} \"...\"` for each claim")
    return OK


# ---- quote -----------------------------------------------------------------------------


def _print_nearest(text, wanted: str) -> None:
    """Show how far the words of ``wanted`` match, and how the snapshot continues from there."""
    words = wanted.split()
    for count in range(len(words) - 1, 0, -1):
        match = text.find(" ".join(words[:count]))
        if match is not None:
            following = text.raw[match.end:match.end + 60].split("\n", 1)[0]
            print(f"the first {count} of {len(words)} words occur at line {match.line}; the snapshot goes on:")
            print(f"  | {match.span}{following}")
            return


def cmd_quote(args: argparse.Namespace) -> int:
    """``kdalib sources quote ID TEXT``: where TEXT occurs in the snapshot, and the span to paste."""
    try:
        doc = load_document(args.sources)
    except LoadError as err:
        return _fail(str(err))
    source = doc.sources.get(args.source_id)
    if source is None:
        return _fail(f"no source with id {args.source_id!r} in {args.sources}")
    if source.snapshot is None:
        return _fail(f"source {source.id!r} has no snapshot to search")
    state = SnapshotStore(args.snapshots).open(source.snapshot)
    if state.state != PRESENT or state.text is None:
        hint = " (run `kdalib sources fetch` or set KDALIB_SNAPSHOTS)" if state.state == MISSING else ""
        return _fail(f"snapshot {state.path} is {state.state}{hint}")
    match = state.text.find(args.text)
    if match is None:
        print(f"not found in {source.snapshot.file} (even ignoring whitespace): {args.text!r}")
        _print_nearest(state.text, args.text)
        return FINDINGS
    print(f"found ({match.kind}) in {source.snapshot.file}, line {match.line}")
    print("as written in the snapshot:")
    for line in match.span.splitlines() or [match.span]:
        print(f"  | {line}")
    print("quote for sources.yaml:")
    print(f"  quote: {json.dumps(match.normalized, ensure_ascii=False)}")
    return OK

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

from kdalib.locking import Busy, locked
from kdalib.sources import links, manifest, review, tracker, versions
from kdalib.sources.extract import raw_url
from kdalib.sources.fields import parse_url
from kdalib.sources.files import UnsafeFile, read_capped
from kdalib.sources.http import FetchError, FetchPolicy, SafeClient
from kdalib.sources.loader import LoadError, load_document, load_round_trip, load_text
from kdalib.sources.model import Document
from kdalib.sources.quotes import normalize
from kdalib.sources.schema import SOURCE_ID, SOURCE_KINDS
from kdalib.sources.snapshots import (
    MAX_SNAPSHOT_BYTES,
    MISSING,
    PRESENT,
    SnapshotStore,
    atomic_write_bytes,
    sha256_bytes,
)
from kdalib.sources.urls import redact
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
    """``kdalib verify``: every rule; findings, then the summary table (or the Markdown report)."""
    if args.changed_since and args.report != "md":
        return _fail("--changed-since selects the claims of the Markdown report: add --report md")
    try:
        report = run_verify(
            args.sources,
            args.snapshots,
            args.root,
            strict=args.strict,
            online=args.online,
            client=_client(args) if args.online else None,
        )
        scope = None
        if args.changed_since:
            base = review.base_document(args.sources, args.changed_since)
            scope = review.changes_since(report.document, base, args.changed_since)
    except LoadError as err:
        if args.json:
            payload = {"ok": False, "unusable": str(err), "findings": []}
            try:
                atomic_write_bytes(Path(args.json), (json.dumps(payload, indent=2) + "\n").encode())
            except OSError as write_err:
                print(
                    f"error: --json {args.json}: cannot write the report ({write_err.strerror or write_err})",
                    file=sys.stderr,
                )
        return _fail(str(err))
    if args.json:
        try:
            report.write_json(args.json)
        except OSError as err:
            return _fail(f"--json {args.json}: cannot write the report ({err.strerror or err})")
    changed = [t for t in report.tracks if t.state == tracker.CHANGED or t.quotes_gone]  # grown texts do not fail
    status = FINDINGS if report.errors or (args.fail_on_change and changed) else OK
    if args.report == "md":
        print(review.render_markdown(report, scope, args.strict), end="")
        return status
    for finding in report.errors + report.warnings:
        print(finding.format())
    if report.missing_snapshots:
        print(f"snapshots not found in {report.snapshot_dir}: {', '.join(report.missing_snapshots)}")
    if report.tracks:
        print(tracker.format_tracks(report.tracks))
    print(report.format_summary())
    verdict = "FAILED" if report.errors else "OK"
    print(f"verify {verdict}{' (strict)' if args.strict else ''}: {args.sources}")
    if args.fail_on_change and changed:
        print(f"live sources changed: {', '.join(t.source_id for t in changed)}")
    return status


# ---- fetch -----------------------------------------------------------------------------


def _selected(doc: Document, ids: list[str]) -> list:
    unknown = [i for i in ids if i not in doc.sources]
    if unknown:
        raise LoadError(doc.path, 0, f"no source with id {', '.join(map(repr, unknown))}")
    return [doc.sources[i] for i in ids] if ids else list(doc.sources.values())


def _suffix(text: str, url: str) -> str:
    name = Path(urlsplit(url).path).suffix.lower()
    if name in (".md", ".txt"):
        return name
    return ".md" if text.lstrip().startswith("#") else ".txt"


def _fetch_first(client: SafeClient, store: SnapshotStore, sources_path: str, source) -> tuple[str, str, bool]:
    """Archive the pinned text (version_url, else url) of a source: (state, detail, ok)."""
    url = source.version_url or source.url
    if not url:
        return "skipped", "no url or version_url", True
    if source.snapshot is not None and store.open(source.snapshot).state == PRESENT:
        return "ok", f"{source.snapshot.file} is archived and matches its sha256", True
    try:
        live = tracker.fetch_live(client, raw_url(url))
    except FetchError as err:
        return err.kind, str(err), False
    except ValueError as err:
        return "unreadable", f"{url}: {err}", False
    if source.snapshot is not None:
        if live.sha256 != source.snapshot.sha256:
            return (
                "differs",
                (
                    f"{url} gives sha256 {live.sha256}, not the recorded {source.snapshot.sha256} "
                    "(another extractor made the archived text, or the document changed); nothing "
                    "stored. Keep it as a new version: "
                    f"`kdalib sources fetch --new-version {source.id}`"
                ),
                False,
            )
        store.write(source.snapshot.file, live.text)
        return "restored", f"{source.snapshot.file} (sha256 matches)", True
    file = source.id + _suffix(live.text, live.final_url)
    try:
        archived = versions.archive(
            store,
            sources_path,
            source,
            file,
            live.text,
            live.final_url,
            version=f"{url} as served on {_today().isoformat()}",
            origin=_origin(live),
            day=_today(),
            as_version=False,
        )
    except (FileExistsError, LoadError, Busy) as err:
        return "not-stored", str(err), False
    detail = f"stored {file}; recorded its snapshot in {sources_path} and {manifest.MANIFEST_NAME}"
    return "new", detail + _recovery_note(archived), True


def _recovery_note(archived: versions.Archived) -> str:
    if not archived.recovered:
        return ""
    return " (recovered: it replaces the text an interrupted fetch left unrecorded in the store)"


def _origin(live: tracker.LiveText) -> str:
    return "publisher" if live.served_as_is else "extraction"


def _fetch_new_version(
    client: SafeClient, store: SnapshotStore, sources_path: str, doc: Document, source
) -> tuple[str, str, bool]:
    """Fetch a source's live text; keep it as a dated version when it differs from the newest one."""
    latest = source.latest
    if latest is None:
        return "no-snapshot", f"{source.id} has no archived text yet: run `kdalib sources fetch {source.id}`", False
    track = tracker.track_source(doc, source, client, store)
    if track.live is None:
        return track.state, track.detail, False
    if track.state in (tracker.IDENTICAL, tracker.SAME_TEXT):
        return "unchanged", f"{track.url}: {track.detail}; nothing stored", True
    if track.state == tracker.NOT_TRACKED:
        return "not-compared", track.detail, False
    day = _today()
    file = versions.dated_name(source.snapshot.file, day)
    try:
        archived = versions.archive(
            store,
            sources_path,
            source,
            file,
            track.live.text,
            track.live.final_url,
            version=f"live text of {day.isoformat()}",
            origin=_origin(track.live),
            day=day,
            as_version=True,
        )
    except (FileExistsError, LoadError, Busy) as err:
        return "not-stored", str(err), False
    gone = track.quotes_gone
    held = ", ".join(c for c in track.quotes if c not in gone) or "none"
    detail = (
        f"stored {file} (version {day.isoformat()}; {track.detail}). Quotes found in it: {held}. "
        f"Not found: {', '.join(gone) or 'none'}. Move a claim with 'version: {day.isoformat()}', "
        "or mark it superseded by a new claim that quotes the new text" + _recovery_note(archived)
    )
    return "new-version", detail, True


def cmd_fetch(args: argparse.Namespace) -> int:
    """``kdalib sources fetch [ID...] [--new-version]``: archive texts into the snapshot store.

    Without ``--new-version``: the pinned text (version_url, else url) of each source that has
    none yet, recorded as its ``snapshot:``; an archived text is never replaced. With it: the
    live text of each named source, kept as a dated ``versions:`` entry when it changed.
    """
    try:
        doc = _load_clean(args.sources)
        chosen = _selected(doc, args.ids)
    except LoadError as err:
        return _fail(str(err))
    if args.new_version and not args.ids:
        return _fail("--new-version needs the ids of the sources to fetch")
    client, store = _client(args), SnapshotStore(args.snapshots)
    rows = [("source", "result", "detail")]
    failed = False
    for source in chosen:
        source = doc.sources[source.id]  # as recorded by the previous iteration's edit
        if args.new_version:
            state, detail, ok = _fetch_new_version(client, store, args.sources, doc, source)
        else:
            state, detail, ok = _fetch_first(client, store, args.sources, source)
        if state in ("new", "new-version"):
            doc = _load_clean(args.sources)  # the next source is edited on top of this change
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
    rows = [("source", "status", "detail")] + [
        (r.source_id, "refused" if r.refused else r.status, r.detail) for r in results
    ]
    print(_table(rows))
    refused = [r for r in results if r.refused]
    if refused:
        print(f"{len(refused)} URL(s) refused; {args.sources} was not changed", file=sys.stderr)
        return FINDINGS
    if args.write:
        try:
            changed = links.write_link_results(args.sources, results, _today())
        except (LoadError, Busy) as err:
            return _fail(str(err))
        print(f"updated link.checked/status of {changed} source(s) in {args.sources}")
    return FINDINGS if any(r.status != "ok" for r in results) else OK


# ---- add -------------------------------------------------------------------------------


#: Source ids become snapshot file names, so they stay well under any file system's limit.
MAX_ID_LENGTH = 64


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
    slug = re.sub(r"-{2,}", "-", slug)
    if len(slug) > MAX_ID_LENGTH:  # a long URL must not become a file name the system refuses
        slug = slug[:MAX_ID_LENGTH].rsplit("-", 1)[0] if "-" in slug[:MAX_ID_LENGTH] else slug[:MAX_ID_LENGTH]
        slug = slug.strip("-.")
    return re.sub(r"[.-]{2,}", "-", slug) or "source"


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


def _add_locked(args: argparse.Namespace, store: SnapshotStore, source_id: str, data_bytes: bytes, text: str):
    """The read-modify-write of ``sources add`` (the caller holds the locks); a problem, or None when written."""
    try:
        doc = _load_clean(args.sources)
        yaml, data = load_round_trip(args.sources)
    except LoadError as err:
        return str(err)
    if source_id in doc.sources:
        return f"{args.sources}:{doc.sources[source_id].line}: id {source_id!r} exists already (use --id)"
    file = source_id + (Path(args.snapshot).suffix or ".txt")
    sha = sha256_bytes(data_bytes)
    if not isinstance(data.get("sources"), list):
        return f"{args.sources}: 'sources:' is not a list"
    data["sources"].append(_new_entry(args, source_id, file, sha, text))
    buffer = io.StringIO()
    yaml.dump(data, buffer)
    checked = load_text(buffer.getvalue(), args.sources)
    if checked.findings:
        return "the new entry would not validate, nothing written:\n" + "\n".join(f.format() for f in checked.findings)
    existing = store.path_of(file)
    try:
        try:
            if store.read(file) != data_bytes:
                return f"{existing} exists with other content; choose another --id"
        except UnsafeFile as err:
            if not err.missing:
                return f"{existing} cannot be used: {err}"
        try:
            new_manifest = manifest.with_entry(
                store,
                file,
                source_id,
                args.version,
                args.retrieved_from or args.url,
                args.origin,
                data_bytes,
                today=_today(),
            )
        except ValueError as err:
            return f"{store.root / manifest.MANIFEST_NAME}: {err}"
        atomic_write_bytes(existing, data_bytes)
        atomic_write_bytes(store.root / manifest.MANIFEST_NAME, new_manifest)
        atomic_write_bytes(args.sources, buffer.getvalue().encode("utf-8"))
    except OSError as err:
        return f"cannot write {err.filename or existing}: {err.strerror or err}"
    return None


def cmd_add(args: argparse.Namespace) -> int:
    """``kdalib sources add URL --snapshot FILE --origin ORIGIN``: store the text, append a validated
    entry to sources.yaml and the text's entry to the store's manifest."""
    try:
        parse_url(args.url)
    except ValueError as err:
        return _fail(f"URL {redact(args.url)}: {err}")
    if args.kind not in SOURCE_KINDS:
        return _fail(f"--kind {args.kind!r} is not one of {', '.join(SOURCE_KINDS)}")
    source_id = args.source_id or derive_source_id(args.url)
    if not SOURCE_ID.match(source_id):
        return _fail(f"id {source_id[:80]!r} is not kebab-case (lower-case letters, digits, '-' and '.')")
    if len(source_id) > MAX_ID_LENGTH:
        return _fail(f"id {source_id[:40]!r}... is {len(source_id)} characters long; use at most {MAX_ID_LENGTH}")
    try:
        data_bytes = read_capped(args.snapshot, MAX_SNAPSHOT_BYTES)
        text = data_bytes.decode("utf-8")
    except (UnsafeFile, UnicodeDecodeError) as err:
        return _fail(f"--snapshot {args.snapshot}: cannot read UTF-8 text ({err})")
    store = SnapshotStore(args.snapshots)
    try:
        with locked(args.sources, store.root / manifest.MANIFEST_NAME):
            problem = _add_locked(args, store, source_id, data_bytes, text)
    except Busy as err:
        return _fail(str(err))
    if problem is not None:
        return _fail(problem)
    file = source_id + (Path(args.snapshot).suffix or ".txt")
    sha = sha256_bytes(data_bytes)
    print(
        f"added source {source_id!r} (snapshot {file}, sha256 {sha}) to {args.sources} "
        f"and {store.root / manifest.MANIFEST_NAME}"
    )
    print(
        "next: check title/publisher/kind, add version_url, then `kdalib sources quote "
        f'{source_id} "..."` for each claim'
    )
    return OK


# ---- quote -----------------------------------------------------------------------------


def _print_nearest(text, wanted: str) -> None:
    """Show how far the words of ``wanted`` match, and how the snapshot continues from there."""
    words = wanted.split()
    for count in range(len(words) - 1, 0, -1):
        match = text.find(" ".join(words[:count]))
        if match is not None:
            following = text.raw[match.end : match.end + 60].split("\n", 1)[0]
            print(f"the first {count} of {len(words)} words occur at line {match.line}; the snapshot goes on:")
            print(f"  | {match.span}{following}")
            return


#: Markdown markup a reader does not see in the rendered page: emphasis, code, table bars, headings.
MARKUP = "*_`|#"


def find_ignoring_markup(raw: str, wanted: str) -> tuple[int, int] | None:
    """Where the words of ``wanted`` (as a reader sees them rendered) occur in the Markdown ``raw``
    with markup between or around them: (start, end) of the source span, opening and closing
    emphasis included; None when they do not."""
    words = [w for w in re.split(rf"[\s{re.escape(MARKUP)}]+", wanted) if w]
    if not words:
        return None
    gap = rf"[\s{re.escape(MARKUP)}]+"
    found = re.search(gap.join(re.escape(w) for w in words), raw)
    if found is None:
        return None
    start, end = found.start(), found.end()
    while start > 0 and raw[start - 1] in "*_`":
        start -= 1
    while end < len(raw) and raw[end] in "*_`":
        end += 1
    return start, end


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
    snapshot = source.snapshot_for(args.version)
    if snapshot is None:
        known = ", ".join(v.label for v in source.all_snapshots())
        return _fail(f"--version {args.version!r}: source {source.id!r} has the versions {known}")
    state = SnapshotStore(args.snapshots).open(snapshot)
    if state.state != PRESENT or state.text is None:
        hint = " (run `kdalib sources fetch` or set KDALIB_SNAPSHOTS)" if state.state == MISSING else ""
        return _fail(f"snapshot {state.path} is {state.state}{hint}")
    match = state.text.find(args.text)
    if match is None:
        span = find_ignoring_markup(state.text.raw, args.text)
        if span is not None:
            start, end = span
            line = state.text.raw.count("\n", 0, start) + 1
            exact = state.text.raw[start:end]
            print(f"found ignoring Markdown markup in {snapshot.file}, line {line}")
            print("a quote is the source's text as written (its Markdown), not the page as rendered:")
            for text_line in exact.splitlines() or [exact]:
                print(f"  | {text_line}")
            print("quote for sources.yaml:")
            print(f"  quote: {json.dumps(normalize(exact), ensure_ascii=False)}")
            return OK
        print(f"not found in {snapshot.file} (even ignoring whitespace and Markdown markup): {args.text!r}")
        _print_nearest(state.text, args.text)
        return FINDINGS
    print(f"found ({match.kind}) in {snapshot.file}, line {match.line}")
    print("as written in the snapshot:")
    for line in match.span.splitlines() or [match.span]:
        print(f"  | {line}")
    print("quote for sources.yaml:")
    print(f"  quote: {json.dumps(match.normalized, ensure_ascii=False)}")
    return OK

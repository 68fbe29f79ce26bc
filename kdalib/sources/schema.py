"""The sources.yaml schema: allowed keys, types and enums of each entry, unique ids and aliases.

Every problem becomes a :class:`~kdalib.sources.model.Finding` that names the file,
the line, the source or claim id and what was expected, so a contributor can fix it
without reading this module. What one entry says about another (a claim's source, version,
subject, relations, verdict) is checked in :mod:`kdalib.sources.rules`. Entries with a usable id are kept (with ``None`` for a
field that failed) so that later checks still run and one typo is reported once.

The contract itself is documented in notes/sources.md.
Relations (``conflicts_with``, ``supersedes``, ``superseded_by``, ``evidence``,
``reproduced_by``) may be written at the top of a claim or inside a ``notes:`` mapping
(whose free text then goes under ``notes.text``); both spellings mean the same.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kdalib.sources.fields import (
    parse_bool,
    parse_display,
    parse_enum,
    parse_id_list,
    parse_number,
    parse_past_date,
    parse_pattern,
    parse_sha,
    parse_shots,
    parse_text,
    parse_url,
    parse_value,
    parse_version,
)
from kdalib.sources.files import path_problem
from kdalib.sources.model import ERROR, Claim, Document, Finding, ReproducedBy, Snapshot, Source, short_repr
from kdalib.sources.numbers import value_problem
from kdalib.sources.urls import hide_credentials

SOURCE_KINDS = ("model_card", "tech_report", "blog", "repo", "leaderboard", "docs", "seed")
CLAIM_STATUSES = ("verified", "unverified", "contradicted", "superseded", "reproduced", "refuted")
LINK_STATUSES = ("ok", "broken", "moved", "unchecked")
REPORTED_BY = ("first_party", "third_party")
#: The verdict on a claim of a ``seed`` source (the project's starting note): what the evidence
#: says of the statement, separate from ``status``, which only says whether the note's words were found.
SEED_VERDICTS = ("confirmed", "misleading", "overstated", "wrong", "unverifiable")
TOP_KEYS = ("sources", "claims", "subjects")
SOURCE_KEYS = (
    "id",
    "title",
    "publisher",
    "kind",
    "url",
    "version_url",
    "live_url",
    "published",
    "snapshot",
    "versions",
    "link",
    "notes",
)
RELATION_KEYS = ("conflicts_with", "supersedes", "superseded_by", "evidence", "reproduced_by")
CLAIM_KEYS = (
    "id",
    "subject",
    "property",
    "benchmark",
    "value",
    "unit",
    "display",
    "source",
    "quote",
    "version",
    "status",
    "checked",
    "reported_by",
    "verdict",
    "notes",
    "aliases",
    *RELATION_KEYS,
)
NOTES_KEYS = ("text", *RELATION_KEYS)
BENCHMARK_KEYS = ("name", "version", "metric", "setting", "tools", "thinking", "harness", "shots")
SNAPSHOT_KEYS = ("file", "sha256")
VERSION_KEYS = ("file", "sha256", "retrieved", "url")
LINK_KEYS = ("checked", "status")
REPRODUCED_KEYS = ("result", "key", "tolerance")

SOURCE_ID = re.compile(r"^[a-z0-9]+(?:[-.][a-z0-9]+)*$")
CLAIM_ID = re.compile(r"^[a-z0-9][a-z0-9_-]*(?:\.[a-z0-9][a-z0-9_-]*)*$")

_MISSING = object()


class _Reporter:
    """Collects findings for one file; ``error`` keeps call sites one line long."""

    def __init__(self, path: Path):
        self.file = str(path)
        self.findings: list[Finding] = []

    def error(self, line: int, item: str, code: str, message: str, fix: str = "") -> None:
        self.findings.append(Finding(ERROR, code, self.file, line, item, message, fix))


class _Entry:
    """A mapping from the YAML with the reporter and item id bound, for typed field reads."""

    def __init__(self, data: Any, report: _Reporter, item: str, line: int, what: str):
        self.data = data
        self.report = report
        self.item = item
        self.line = line
        self.what = what

    def line_of(self, key: str) -> int:
        return key_line(self.data, key, self.line)

    def fail(self, key: str, code: str, message: str, fix: str = "") -> None:
        self.report.error(self.line_of(key), self.item, code, message, fix)

    def check_keys(self, allowed: tuple[str, ...]) -> None:
        for key in self.data:
            if key not in allowed:
                self.fail(
                    str(key),
                    "unknown-key",
                    f"unknown key {_show(str(key))} in {self.what}",
                    f"use one of: {', '.join(allowed)}",
                )

    def mapping(self, key: str, shape: str, allowed: tuple[str, ...]) -> _Entry | None:
        """The nested mapping under ``key`` as an entry with its keys checked; None when absent or not a mapping."""
        raw = self.data.get(key)
        if raw is None:
            return None
        if not hasattr(raw, "items"):
            self.fail(key, f"bad-{key.replace('_', '-')}", f"{key!r} is {_show(raw)}; expected {shape}")
            return None
        sub = _Entry(raw, self.report, self.item, self.line_of(key), key)
        sub.check_keys(allowed)
        return sub

    def get(self, key: str, parse: Callable[[Any], Any], expected: str, required: bool = False) -> Any:
        """Read ``key`` through ``parse`` (which raises ValueError on a bad value)."""
        value = self.data.get(key, _MISSING)
        if value is _MISSING or value is None:
            if required:
                self.fail(key, "missing-key", f"{self.what} has no {key!r}", f"add '{key}: <{expected}>'")
            return None
        try:
            return parse(value)
        except (ValueError, TypeError) as err:
            detail = f" ({err})" if str(err) else ""
            self.fail(key, f"bad-{key.replace('_', '-')}", f"{key!r} is {_show(value)}; expected {expected}{detail}")
            return None


def key_line(mapping: Any, key: str, default: int = 0) -> int:
    """1-based line of ``key`` in a ruamel mapping (``default`` when unknown)."""
    try:
        return mapping.lc.key(key)[0] + 1
    except (AttributeError, KeyError, TypeError):
        return default


def item_line(sequence: Any, index: int, default: int = 0) -> int:
    """1-based line of item ``index`` of a ruamel sequence (``default`` when unknown)."""
    try:
        return sequence.lc.item(index)[0] + 1
    except (AttributeError, KeyError, TypeError, IndexError):  # a plain list has no .lc
        return default


def node_line(node: Any, default: int = 0) -> int:
    """1-based line where a ruamel mapping or sequence starts."""
    try:
        return node.lc.line + 1
    except AttributeError:
        return default


def _show(value: Any) -> str:
    """A short repr for messages: never longer than 60 characters, never showing URL credentials."""
    return short_repr(hide_credentials(value) if isinstance(value, str) else value)


def _list(items: list[str], shown: int = 8) -> str:
    """The first ``shown`` items, each cut short, and how many more there are."""
    text = ", ".join(_show(item).strip("'") for item in items[:shown])
    return text + (f" and {len(items) - shown} more" if len(items) > shown else "")


# ---- sources ---------------------------------------------------------------------------


def _snapshot_fields(sub: _Entry) -> tuple[str, str] | None:
    file = sub.get("file", parse_text, "a file name inside the snapshot store", required=True)
    sha = sub.get("sha256", parse_sha, "64 lower-case hex digits (sha256sum of the file)", required=True)
    problem = path_problem(file) if file else None
    if problem is not None:
        sub.fail(
            "file",
            "bad-file",
            f"snapshot file {_show(file)} leaves the snapshot store: it {problem}",
            "give a path relative to $KDALIB_SNAPSHOTS without '..'",
        )
        return None
    return (file, sha) if file and sha else None


def _parse_snapshot(entry: _Entry) -> Snapshot | None:
    sub = entry.mapping("snapshot", "{file: NAME, sha256: HEX}", SNAPSHOT_KEYS)
    fields = _snapshot_fields(sub) if sub is not None else None
    return Snapshot(*fields) if fields else None


def _parse_versions(entry: _Entry, first: Snapshot | None) -> list[Snapshot]:
    """``versions:``: later archived texts, each ``{file, sha256, retrieved: DATE, url}``, oldest first."""
    raw = entry.data.get("versions")
    if raw is None:
        return []
    if not isinstance(raw, list):
        entry.fail(
            "versions",
            "bad-versions",
            f"'versions' is {_show(raw)}; expected a list of {{file: NAME, sha256: HEX, retrieved: DATE, url: URL}}",
        )
        return []
    versions: list[Snapshot] = []
    for index, item in enumerate(raw):
        line = item_line(raw, index, entry.line_of("versions"))
        if not hasattr(item, "items"):
            entry.report.error(line, entry.item, "bad-versions", f"a version is {_show(item)}; expected a mapping")
            continue
        sub = _Entry(item, entry.report, entry.item, line, "version")
        sub.check_keys(VERSION_KEYS)
        fields = _snapshot_fields(sub)
        retrieved = sub.get(
            "retrieved", parse_past_date, "the past date the text was fetched, YYYY-MM-DD", required=True
        )
        url = sub.get("url", parse_url, "the http(s) URL the text was fetched from")
        if fields is None or retrieved is None:
            continue
        version = Snapshot(*fields, retrieved=retrieved, url=url)
        earlier = [
            v for v in ([first] if first else []) + versions if v.file == version.file or v.label == version.label
        ]
        if earlier:
            sub.fail(
                "file",
                "duplicate-version",
                f"version {version.label} ({version.file}) repeats an earlier "
                f"archived text ({earlier[0].label}, {earlier[0].file})",
                "give each version its own file and date",
            )
            continue
        if versions and version.retrieved <= versions[-1].retrieved:
            sub.fail(
                "retrieved",
                "versions-out-of-order",
                f"version {version.label} is listed after {versions[-1].label}",
                "list versions oldest first",
            )
        versions.append(version)
    return versions


def _parse_source(raw: Any, report: _Reporter, line: int) -> Source | None:
    if not hasattr(raw, "items"):
        report.error(line, "", "bad-entry", f"a source entry is {_show(raw)}; expected a mapping with 'id:'")
        return None
    entry = _Entry(raw, report, "", node_line(raw, line), "source")
    source_id = entry.get("id", parse_pattern(SOURCE_ID), "a kebab-case id such as kimi-k2-readme", required=True)
    if source_id is None:
        return None
    entry.item = source_id
    entry.check_keys(SOURCE_KEYS)
    kind = entry.get("kind", parse_enum(SOURCE_KINDS), f"one of {', '.join(SOURCE_KINDS)}", required=True)
    source = Source(
        id=source_id,
        title=entry.get("title", parse_text, "the document's title", required=True) or source_id,
        publisher=entry.get("publisher", parse_text, "who published it", required=True) or "",
        kind=kind or "",
        url=entry.get("url", parse_url, "an https:// or http:// URL", required=kind != "seed"),
        version_url=entry.get("version_url", parse_url, "an https:// or http:// URL"),
        published=entry.get("published", parse_past_date, "a past date written YYYY-MM-DD"),
        snapshot=_parse_snapshot(entry),
        live_url=entry.get("live_url", parse_url, "the http(s) URL whose text `verify --online` tracks"),
        notes=entry.get("notes", parse_text, "free text") or "",
        line=entry.line,
        lines={str(k): entry.line_of(str(k)) for k in raw},
    )
    source.versions = _parse_versions(entry, source.snapshot)
    if source.versions and source.snapshot is None:
        entry.fail(
            "versions",
            "versions-without-snapshot",
            "'versions' lists later texts, but the source has no first 'snapshot'",
            "add snapshot: {file, sha256} for the first archived text",
        )
    _parse_link(entry, source)
    return source


def _parse_link(entry: _Entry, source: Source) -> None:
    sub = entry.mapping("link", "{checked: DATE, status: STATUS}", LINK_KEYS)
    if sub is None:
        return
    source.link_checked = sub.get("checked", parse_past_date, "a past date written YYYY-MM-DD")
    source.link_status = (
        sub.get("status", parse_enum(LINK_STATUSES), f"one of {', '.join(LINK_STATUSES)}") or "unchecked"
    )


# ---- claims ----------------------------------------------------------------------------


def _parse_benchmark(entry: _Entry) -> dict[str, Any] | None:
    sub = entry.mapping("benchmark", "a mapping with 'name:'", BENCHMARK_KEYS)
    if sub is None:
        return None
    parsed = {"name": sub.get("name", parse_text, "the benchmark's name", required=True)}
    for key in ("version", "metric", "setting", "harness"):
        parsed[key] = sub.get(key, parse_text, "text")
    parsed["tools"] = sub.get("tools", parse_bool, "true or false")
    parsed["thinking"] = sub.get("thinking", parse_bool, "true or false")
    parsed["shots"] = sub.get("shots", parse_shots, "a whole number of shots or text such as '5-shot'")
    return {k: v for k, v in parsed.items() if v is not None}


def _parse_reproduced_by(entry: _Entry) -> ReproducedBy | None:
    sub = entry.mapping("reproduced_by", "{result: PATH.json, key: NAME, tolerance: NUMBER}", REPRODUCED_KEYS)
    if sub is None:
        return None
    result = sub.get("result", parse_text, "notebooks/results/<device>/<notebook>.json", required=True)
    key = sub.get("key", parse_text, "a name under the result's 'values'", required=True)
    tolerance = sub.get("tolerance", parse_number, "an absolute tolerance >= 0", required=True)
    problem = path_problem(result) if result else None
    if problem is not None:
        sub.fail(
            "result",
            "bad-result",
            f"result {_show(result)} leaves the book's folder: it {problem}",
            "give the path relative to the book root, e.g. notebooks/results/cpu/02_kernel_speed.json",
        )
        return None
    if result is None or key is None or tolerance is None:
        return None
    return ReproducedBy(result, key, tolerance)


def _relations(claim_entry: _Entry) -> tuple[_Entry, str]:
    """Where the relation keys live (the claim or its ``notes:`` mapping) and the free text."""
    notes = claim_entry.data.get("notes")
    if notes is None:
        return claim_entry, ""
    if isinstance(notes, str):
        return claim_entry, notes
    if not hasattr(notes, "items"):
        claim_entry.fail("notes", "bad-notes", f"'notes' is {_show(notes)}; expected text or a mapping")
        return claim_entry, ""
    sub = _Entry(notes, claim_entry.report, claim_entry.item, claim_entry.line_of("notes"), "notes")
    sub.check_keys(NOTES_KEYS)
    for key in RELATION_KEYS:
        if key in notes and key in claim_entry.data:
            sub.fail(
                key, "duplicate-key", f"{key!r} is given both in the claim and in its notes", "keep only one of them"
            )
    return sub, sub.get("text", parse_text, "free text") or ""


def _read_relations(entry: _Entry, claim: Claim) -> None:
    where, claim.text_notes = _relations(entry)
    for place in [entry] if where is entry else [entry, where]:
        claim.conflicts_with += place.get("conflicts_with", parse_id_list, "a claim id or a list of claim ids") or []
        claim.supersedes += place.get("supersedes", parse_id_list, "a claim id or a list of claim ids") or []
        claim.evidence += place.get("evidence", parse_id_list, "a claim id or a list of claim ids") or []
        claim.superseded_by = claim.superseded_by or place.get("superseded_by", parse_pattern(CLAIM_ID), "a claim id")
        claim.reproduced_by = claim.reproduced_by or _parse_reproduced_by(place)
        for key in RELATION_KEYS:
            if key in place.data:
                claim.lines[key] = place.line_of(key)


def _parse_claim(raw: Any, report: _Reporter, line: int) -> Claim | None:
    if not hasattr(raw, "items"):
        report.error(line, "", "bad-entry", f"a claim entry is {_show(raw)}; expected a mapping with 'id:'")
        return None
    entry = _Entry(raw, report, "", node_line(raw, line), "claim")
    claim_id = entry.get(
        "id", parse_pattern(CLAIM_ID), "a dotted lower-case id such as k2.arch.params_total", required=True
    )
    if claim_id is None:
        return None
    entry.item = claim_id
    entry.check_keys(CLAIM_KEYS)
    statuses = ", ".join(CLAIM_STATUSES)
    claim = Claim(
        id=claim_id,
        subject=entry.get("subject", parse_text, "the model or topic, e.g. Kimi K2", required=True) or "",
        status=entry.get("status", parse_enum(CLAIM_STATUSES), f"one of {statuses}", required=True) or "",
        source=entry.get("source", parse_text, "a source id from 'sources:'", required=True) or "",
        value=entry.get("value", parse_value, "a number, or text for names and dates", required=True),
        display=entry.get("display", parse_display, "the text the book prints, e.g. 1T", required=True) or "",
        property=entry.get("property", parse_text, "what is measured, e.g. total parameters"),
        benchmark=_parse_benchmark(entry),
        unit=entry.get("unit", parse_text, "a unit such as 'T parameters' or '%'") or "",
        quote=entry.get("quote", parse_text, "an exact span of the source's snapshot"),
        version=entry.get("version", parse_version, "a date from the source's 'versions:' (YYYY-MM-DD)"),
        checked=entry.get("checked", parse_past_date, "a past date written YYYY-MM-DD"),
        reported_by=entry.get("reported_by", parse_enum(REPORTED_BY), " or ".join(REPORTED_BY)),
        aliases=entry.get("aliases", parse_id_list, "a list of former claim ids") or [],
        verdict=entry.get("verdict", parse_enum(SEED_VERDICTS), f"one of {', '.join(SEED_VERDICTS)}"),
        line=entry.line,
        lines={str(k): entry.line_of(str(k)) for k in raw},
    )
    if (claim.property is None) == ("benchmark" not in raw):
        entry.fail(
            "property" if "property" in raw else "id",
            "property-or-benchmark",
            "a claim needs exactly one of 'property:' or 'benchmark:'",
            "keep 'property:' for a fact about the model, 'benchmark:' for a score",
        )
    _read_relations(entry, claim)
    _check_status_fields(entry, claim)
    problem = value_problem(claim.value, claim.display)
    if problem:
        entry.fail(
            "value",
            "value-not-in-display",
            f"value {short_repr(claim.value)} is not a number that display {_show(claim.display)} writes ({problem})",
            "make 'value' the number the display prints (scale words such as 'billion' may be applied "
            "or not; unit letters go in 'unit'), or correct 'display'",
        )
    return claim


def _check_status_fields(entry: _Entry, claim: Claim) -> None:
    """Fields a status cannot do without (relations between claims are checked later)."""
    needs = {
        "verified": (claim.quote, "quote", "copy the shortest span of the snapshot that holds the number"),
        "contradicted": (claim.conflicts_with, "conflicts_with", "name the claims it disagrees with"),
        "reproduced": (
            claim.reproduced_by,
            "reproduced_by",
            "add reproduced_by: {result: notebooks/results/<device>/<nb>.json, key: NAME, tolerance: X}",
        ),
        "refuted": (
            claim.evidence or claim.text_notes,
            "notes",
            "give the evidence: notes: {evidence: [claim ids], text: ...} or a notes text",
        ),
    }
    if claim.status in needs:
        present, key, fix = needs[claim.status]
        if not present:
            entry.fail(
                "status", f"{claim.status}-needs-{key.replace('_', '-')}", f"a {claim.status} claim needs '{key}'", fix
            )


# ---- the document ----------------------------------------------------------------------


def _entries(data: Any, key: str, report: _Reporter) -> list[tuple[Any, int]]:
    raw = data.get(key)
    line = key_line(data, key, 1)
    if raw is None:
        if key not in data:
            report.error(1, "", "missing-key", f"the file has no top-level {key!r}", f"add '{key}:' with a list")
        return []
    if not isinstance(raw, list):
        report.error(line, "", f"bad-{key}", f"{key!r} is {_show(raw)}; expected a list of entries")
        return []
    return [(item, item_line(raw, i, line)) for i, item in enumerate(raw)]


def build_document(data: Any, path: Path) -> Document:
    """Turn a parsed checklist mapping into a :class:`Document` plus schema findings."""
    report = _Reporter(path)
    doc = Document(path=path)
    top = _Entry(data, report, "", 1, "the file")
    top.check_keys(TOP_KEYS)
    doc.subjects = top.get("subjects", parse_id_list, "a list of subject names") or []
    for raw, line in _entries(data, "sources", report):
        source = _parse_source(raw, report, line)
        if source is not None:
            _add_unique(doc.sources, source, report, "duplicate-source-id")
    for raw, line in _entries(data, "claims", report):
        claim = _parse_claim(raw, report, line)
        if claim is not None:
            _add_unique(doc.claims, claim, report, "duplicate-claim-id")
    _index_aliases(doc, report)
    doc.findings = report.findings
    return doc


def _index_aliases(doc: Document, report: _Reporter) -> None:
    """Fill ``doc.aliases``; an alias that is already a claim id or another claim's alias is an error."""
    for claim in doc.claims.values():
        for alias in claim.aliases:
            if alias in doc.claims or alias in doc.aliases:
                report.error(
                    claim.line_of("aliases"),
                    claim.id,
                    "duplicate-alias",
                    f"alias {_show(alias)} is already a claim id or another claim's alias",
                )
            else:
                doc.aliases[alias] = claim.id


def _add_unique(table: dict[str, Any], entry: Source | Claim, report: _Reporter, code: str) -> None:
    if entry.id in table:
        first = table[entry.id].line
        report.error(
            entry.line,
            entry.id,
            code,
            f"id {_show(entry.id)} is already used on line {first}",
            "give each entry its own id",
        )
        return
    table[entry.id] = entry

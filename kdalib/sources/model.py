"""Plain data types shared by the loader, the checks, the CLI and the book extension.

Everything here is a frozen or simple dataclass with no behaviour beyond small
derived properties, so that every later stage (verify, render) reads the same facts.
"""

from __future__ import annotations

import builtins
import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ERROR = "error"
WARNING = "warning"
#: The version label of a source's first archived text (``snapshot:``).
ARCHIVED = "archived"


def file_location(file: str | Path, line: int) -> str:
    """``file:line`` as editors and CI logs link it, or just ``file`` when ``line`` is 0 (the whole file)."""
    return f"{file}:{line}" if line else str(file)


@dataclass(frozen=True)
class Finding:
    """One problem found in the checklist, ready to print as ``file:line: [severity] id: message``.

    Attributes:
        severity: ``"error"`` (fails verify) or ``"warning"`` (reported only).
        code: short stable rule name, e.g. ``quote-not-found``; tests and JSON consumers key on it.
        file: the file the problem is in (sources.yaml, a note, a result JSON).
        line: 1-based line number, or 0 when the file as a whole is meant.
        item: the claim or source id concerned ('' when none applies).
        message: what is wrong, in one sentence.
        fix: what to change so that the finding goes away.
    """

    severity: str
    code: str
    file: str
    line: int
    item: str
    message: str
    fix: str = ""

    def format(self) -> str:
        where = file_location(self.file, self.line)
        item = f" {self.item}:" if self.item else ""
        fix = f" Fix: {self.fix}" if self.fix else ""
        return f"{where}: {self.severity}: [{self.code}]{item} {self.message}{fix}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "code": self.code,
            "file": self.file,
            "line": self.line,
            "item": self.item,
            "message": self.message,
            "fix": self.fix,
        }


@dataclass
class Snapshot:
    """Where a source's archived text lives in the snapshot store and its expected sha256.

    ``retrieved`` dates a later version (an entry of the source's ``versions:``); it is None
    for the source's first archived text (``snapshot:``), whose date is in the manifest.
    ``url`` is where a later version was fetched from.
    """

    file: str
    sha256: str
    retrieved: dt.date | None = None
    url: str | None = None

    @property
    def label(self) -> str:
        """How a claim names this version: its date, or ``archived`` for the first text."""
        return self.retrieved.isoformat() if self.retrieved else ARCHIVED


@dataclass
class Source:
    """One entry of ``sources:``; ``lines`` maps each key to its 1-based line in sources.yaml."""

    id: str
    title: str
    publisher: str
    kind: str
    url: str | None = None
    version_url: str | None = None
    published: dt.date | None = None
    snapshot: Snapshot | None = None
    versions: list[Snapshot] = field(default_factory=list)
    live_url: str | None = None
    link_checked: dt.date | None = None
    link_status: str = "unchecked"
    notes: str = ""
    line: int = 0
    lines: dict[str, int] = field(default_factory=dict)

    def all_snapshots(self) -> list[Snapshot]:
        """The first archived text, then each later version in the order listed."""
        return ([self.snapshot] if self.snapshot else []) + list(self.versions)

    def snapshot_for(self, version: str | None) -> Snapshot | None:
        """The text a claim with ``version:`` (None: the first archived text) is checked against."""
        if version is None or version == ARCHIVED:
            return self.snapshot
        return next((v for v in self.versions if v.label == version), None)

    @property
    def latest(self) -> Snapshot | None:
        """The newest archived text (the last version, else the first snapshot)."""
        return self.versions[-1] if self.versions else self.snapshot


@dataclass
class ReproducedBy:
    """The recorded notebook result that reproduces a claim (``reproduced_by``)."""

    result: str
    key: str
    tolerance: float


@dataclass
class Claim:
    """One entry of ``claims:``; relations may be written at top level or inside ``notes:``.

    Attributes:
        benchmark: the benchmark mapping (name, version, metric, setting, tools, ...) or None
            for an architecture/property claim, which sets ``property`` instead.
        value: the number (int/float) or, for names and dates, a string.
        version: which archived text of the source the quote is checked against: a
            ``versions:`` date (YYYY-MM-DD), or None for the first archived text.
        conflicts_with / supersedes / evidence: claim ids this claim points at.
        text_notes: free-text notes (the ``notes`` string, or ``notes.text``).
        verdict: for a claim of the starting note (a ``seed`` source), what the evidence says of
            it: confirmed, misleading, overstated, wrong or unverifiable; None for every other claim.
    """

    id: str
    subject: str
    status: str
    source: str
    value: Any
    display: str
    property: str | None = None
    benchmark: dict[str, Any] | None = None
    unit: str = ""
    quote: str | None = None
    version: str | None = None
    checked: dt.date | None = None
    reported_by: str | None = None
    text_notes: str = ""
    conflicts_with: list[str] = field(default_factory=list)
    supersedes: list[str] = field(default_factory=list)
    superseded_by: str | None = None
    evidence: list[str] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)
    reproduced_by: ReproducedBy | None = None
    verdict: str | None = None
    line: int = 0
    lines: dict[str, int] = field(default_factory=dict)

    def line_of(self, key: str) -> int:
        """The line of ``key`` in sources.yaml, falling back to the claim's own line."""
        return self.lines.get(key, self.line)

    @builtins.property  # the field 'property' shadows the builtin here
    def topic(self) -> str:
        """What the claim measures: the property, or the benchmark name and metric."""
        if self.benchmark is None:
            return self.property or ""
        parts = [str(self.benchmark.get("name", ""))]
        if self.benchmark.get("metric"):
            parts.append(f"({self.benchmark['metric']})")
        return " ".join(parts)

    @builtins.property  # the field 'property' shadows the builtin here
    def setting_text(self) -> str:
        """The benchmark settings as one readable line ('' for property claims)."""
        if not self.benchmark:
            return ""
        shown = []
        for key in ("version", "setting", "harness", "shots", "tools", "thinking"):
            if key in self.benchmark and self.benchmark[key] is not None:
                value = self.benchmark[key]
                if isinstance(value, bool):
                    value = "yes" if value else "no"
                shown.append(f"{key}: {value}")
        return "; ".join(shown)


@dataclass
class Document:
    """A loaded and schema-checked sources.yaml.

    Attributes:
        path: the file that was read.
        sources / claims: entries by id, in file order (only entries that passed the schema).
        aliases: alias → claim id, for renamed claims.
        subjects: the optional top-level ``subjects:`` list ('' means any subject is accepted).
        findings: schema findings; later checks append theirs to a Report, not here.
    """

    path: Path
    sources: dict[str, Source] = field(default_factory=dict)
    claims: dict[str, Claim] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    subjects: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def resolve_claim(self, claim_id: str) -> Claim | None:
        """Find a claim by id or by one of its aliases."""
        if claim_id in self.claims:
            return self.claims[claim_id]
        target = self.aliases.get(claim_id)
        return self.claims.get(target) if target else None

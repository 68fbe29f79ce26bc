"""``kdalib verify`` as a function: run every rule and summarise.

:func:`run_verify` is what the CLI, the book extension and the tests call; it returns a
:class:`Report` and never prints. Rules, in order: schema and cross references (load),
snapshots and quotes, the snapshot manifest, conflicts, superseded/refuted relations, reproduced results,
{claim} references in the pages, hand-typed figures in notes/, and (``online=True``)
the spec tracker: each source's live text against its archived one, and each quote
against the live text (:mod:`kdalib.sources.tracker`).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdalib.sources import figures, manifest, rules
from kdalib.sources import snapshots as snap
from kdalib.sources.loader import load_document
from kdalib.sources.model import ERROR, WARNING, Document, Finding
from kdalib.sources.quotes import QuoteMatch
from kdalib.sources.schema import CLAIM_STATUSES


@dataclass
class Report:
    """Everything ``kdalib verify`` found.

    Attributes:
        document: the loaded checklist.
        findings: all findings, errors and warnings, in rule order.
        snapshot_states: source id → present / missing / sha-mismatch / unreadable.
        matches: claim id → where its quote was found in the snapshot.
        unchecked: claim ids whose quotes were not checked because the snapshot is missing,
            does not match its sha256 or cannot be read.
        snapshot_dir: the store that was used.
        tracks: per source, the online check of its live text (``online=True`` only).
    """

    document: Document
    findings: list[Finding] = field(default_factory=list)
    snapshot_states: dict[str, str] = field(default_factory=dict)
    matches: dict[str, QuoteMatch] = field(default_factory=dict)
    unchecked: list[str] = field(default_factory=list)
    snapshot_dir: Path = Path(snap.DEFAULT_DIR)
    tracks: list[Any] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == WARNING]

    @property
    def missing_snapshots(self) -> list[str]:
        return [sid for sid, state in self.snapshot_states.items() if state == snap.MISSING]

    def status_counts(self) -> dict[str, int]:
        counts = Counter(claim.status for claim in self.document.claims.values())
        return {status: counts.get(status, 0) for status in CLAIM_STATUSES}

    @property
    def exit_code(self) -> int:
        return 1 if self.errors else 0

    def summary_rows(self) -> list[tuple[str, str]]:
        """(label, value) rows of the short summary table."""
        rows = [
            ("sources", str(len(self.document.sources))),
            ("snapshots missing", str(len(self.missing_snapshots))),
            ("claims", str(len(self.document.claims))),
        ]
        rows += [(f"  {status}", str(n)) for status, n in self.status_counts().items() if n]
        rows += [
            ("quotes checked", str(len(self.matches))),
            ("quotes not checked", str(len(self.unchecked))),
            ("errors", str(len(self.errors))),
            ("warnings", str(len(self.warnings))),
        ]
        return rows

    def format_summary(self) -> str:
        rows = self.summary_rows()
        width = max(len(label) for label, _ in rows)
        return "\n".join(f"{label:<{width}}  {value:>5}" for label, value in rows)

    def as_json(self) -> dict[str, Any]:
        return {
            "sources_file": str(self.document.path),
            "snapshot_dir": str(self.snapshot_dir),
            "ok": not self.errors,
            "summary": {
                "sources": len(self.document.sources),
                "claims": len(self.document.claims),
                "claims_by_status": self.status_counts(),
                "quotes_checked": len(self.matches),
                "quotes_not_checked": len(self.unchecked),
                "errors": len(self.errors),
                "warnings": len(self.warnings),
            },
            "missing_snapshots": self.missing_snapshots,
            "unchecked_claims": self.unchecked,
            "findings": [f.as_dict() for f in self.findings],
            **({"online": [track.as_dict() for track in self.tracks]} if self.tracks else {}),
        }

    def write_json(self, path: str | Path) -> None:
        data = json.dumps(self.as_json(), indent=2, ensure_ascii=False) + "\n"
        snap.atomic_write_bytes(Path(path), data.encode("utf-8"))


def run_verify(
    sources_path: str | Path = "sources.yaml",
    snapshot_dir: str | Path | None = None,
    root: str | Path | None = None,
    strict: bool = False,
    online: bool = False,
    client: Any = None,
) -> Report:
    """Check a checklist against its snapshots, results and pages.

    Args:
        sources_path: the sources.yaml to check.
        snapshot_dir: the snapshot store (default ``$KDALIB_SNAPSHOTS`` or ``snapshots``).
        root: the book root holding notes/, notebooks/ and the results (default: the folder of
            ``sources_path``).
        strict: a missing snapshot is an error instead of a warning.
        online: also fetch each source's live text and report which sources changed and
            which quotes it no longer holds.
        client: the :class:`~kdalib.sources.http.SafeClient` for ``online`` (default: a new one).

    Raises:
        LoadError: when sources.yaml cannot be used at all.
    """
    document = load_document(sources_path)
    root = Path(root) if root is not None else Path(sources_path).resolve().parent
    store = snap.SnapshotStore(snapshot_dir)
    quotes = rules.check_quotes(
        document, store, strict, lambda source_id, file: manifest.missing_snapshot_fix(source_id, file, store)
    )
    report = Report(document=document, snapshot_dir=store.root)
    report.findings = [
        *document.findings,
        *quotes.findings,
        *manifest.check_manifest(document, store, strict),
        *rules.check_conflicts(document),
        *rules.check_relations(document),
        *rules.check_reproduced(document, root),
        *rules.check_claim_references(document, root),
        *figures.lint_notes(root),
    ]
    report.snapshot_states = {sid: state.state for sid, state in quotes.states.items()}
    report.matches = quotes.matches
    report.unchecked = quotes.unchecked
    if online:
        from kdalib.sources.http import SafeClient
        from kdalib.sources.tracker import track_all, track_findings

        report.tracks = track_all(document, client or SafeClient(), store)
        report.findings += track_findings(document, report.tracks)
    return report

"""The book's view of the checklist: one verified :class:`~kdalib.sources.Report` per build.

Loaded once when the builder starts (before any page is read, so parallel readers share
it; :mod:`kdalib.book.domain` keeps it for the build), from ``sources.yaml`` in the book root (``app.srcdir``) and the snapshot store named
by ``$KDALIB_SNAPSHOTS``. Error findings become Sphinx warnings pointing at
``file:line`` (so the strict ``-W`` build fails on them); a missing snapshot is only
logged, so a reader's build without the archive still succeeds and the Build-status page
lists what was not checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.util import logging

from kdalib.sources.history import History, load_history
from kdalib.sources.loader import LoadError
from kdalib.sources.model import Claim, Source, file_location
from kdalib.sources.snapshots import ENV_VAR, default_snapshot_dir
from kdalib.sources.verify import Report, run_verify

logger = logging.getLogger(__name__)

#: Findings the {claim} role and the spec-table directive report themselves, at the page, while they render.
ROLE_REPORTED = frozenset({"unknown-claim-role", "unknown-claim-spec-table"})


@dataclass
class BookData:
    """What the role and the directives read: the report, or why there is none."""

    report: Report | None
    problem: str = ""
    #: What changed in sources.yaml over its git history (empty, with its reason, where none is readable).
    history: History = field(default_factory=lambda: History(problem="the history was not read"))

    def claim(self, claim_id: str) -> Claim | None:
        return self.report.document.resolve_claim(claim_id) if self.report else None

    def source(self, source_id: str) -> Source | None:
        return self.report.document.sources.get(source_id) if self.report else None

    @property
    def claims(self) -> list[Claim]:
        return list(self.report.document.claims.values()) if self.report else []

    @property
    def sources(self) -> list[Source]:
        return list(self.report.document.sources.values()) if self.report else []


def snapshot_dir_for(srcdir: Path) -> Path:
    """``$KDALIB_SNAPSHOTS`` (or ``snapshots``) as given, else relative to the book root."""
    given = default_snapshot_dir()
    if given.is_absolute() or given.exists():
        return given
    return srcdir / given


def load_book_data(app: Sphinx) -> BookData:
    """Verify the checklist of ``app.srcdir`` and report its errors as Sphinx warnings."""
    srcdir = Path(app.srcdir)
    sources_path = srcdir / app.config.kdalib_sources_file
    try:
        report = run_verify(sources_path, snapshot_dir_for(srcdir), root=srcdir, strict=False)
    except LoadError as err:
        logger.warning(
            f"kdalib: {err.message}", location=file_location(err.path, err.line), type="kdalib", subtype="sources"
        )
        return BookData(None, str(err), load_history(sources_path))
    for finding in report.errors:
        if finding.code in ROLE_REPORTED:
            continue
        logger.warning(
            f"kdalib verify: [{finding.code}] {finding.item + ': ' if finding.item else ''}"
            f"{finding.message}" + (f" Fix: {finding.fix}" if finding.fix else ""),
            location=_location(finding.file, finding.line, srcdir),
            type="kdalib",
            subtype="verify",
        )
    if report.missing_snapshots:
        logger.info(
            f"kdalib: {len(report.missing_snapshots)} snapshot(s) not found in {report.snapshot_dir} "
            f"(set {ENV_VAR}); their quotes were not checked"
        )
    history = load_history(sources_path)
    if not history.available:
        logger.info(f"kdalib: no history of {sources_path.name}: {history.problem}")
    return BookData(report, history=history)


def _location(file: str, line: int, srcdir: Path) -> str:
    path = Path(file)
    return file_location(path if path.is_absolute() else srcdir / path, line)

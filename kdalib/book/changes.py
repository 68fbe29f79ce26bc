"""The ``claims-changes`` directive: the "What changed" page, generated from the history of sources.yaml.

Per date, newest first, a table of the claims added, changed, re-statused, renamed or retracted
that day (:mod:`kdalib.sources.history` reads them from git), each with the commit it came in.
A claim that still exists links to its card on the claims page. Nothing on the page is written by
hand, so it cannot disagree with the checklist's history; where the history cannot be read (no
git, a shallow clone) the page says why and how to get it.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from docutils import nodes

from kdalib.book.data import BookData
from kdalib.book.directive import BookDirective
from kdalib.book.render import claim_anchor, link, literal, table
from kdalib.sources.history import KINDS, Change, describe

#: How each kind of change reads in a date's summary line.
KIND_LABELS = {
    "added": "added",
    "changed": "changed",
    "re-statused": "re-statused",
    "renamed": "renamed",
    "retracted": "retracted",
}


class ClaimsChanges(BookDirective):
    def render(self, data: BookData) -> list[nodes.Node]:
        history = data.history
        if not history.available:
            return [
                nodes.paragraph("", f"The history of sources.yaml is not available in this build: {history.problem}.")
            ]
        by_date: dict[str | None, list[Change]] = defaultdict(list)
        for change in history.changes:
            by_date[change.date].append(change)
        claims_uri = self._claims_uri()
        out: list[nodes.Node] = [
            nodes.paragraph(
                "",
                f"{len(history.changes)} changes to claims in {history.revisions} revisions of sources.yaml.",
                classes=["kdalib-counts"],
            )
        ]
        for date in sorted(by_date, key=lambda d: (d is not None, d or ""), reverse=True):
            changes = by_date[date]
            title = date or "Not committed yet"
            section = nodes.container("", ids=[f"changes-{date or 'uncommitted'}"], classes=["kdalib-change-day"])
            section += nodes.rubric(title, title)
            counts = Counter(c.kind for c in changes)
            summary = ", ".join(f"{counts[kind]} {KIND_LABELS[kind]}" for kind in KINDS if counts[kind])
            section += nodes.paragraph("", f"{len(changes)} claims: {summary}.")
            rows = [
                (
                    self._claim(change, data, claims_uri),
                    change.kind,
                    describe(change),
                    literal(change.commit[:10] or "-"),
                )
                for change in sorted(changes, key=lambda c: (KINDS.index(c.kind), c.claim_id))
            ]
            section += table(("claim", "change", "what", "commit"), rows, classes=["kdalib-changes"])
            out.append(section)
        return out

    def _claims_uri(self) -> str | None:
        page = self.config.kdalib_claims_page
        if page not in self.env.found_docs:
            return None
        return self.env.app.builder.get_relative_uri(self.env.docname, page)

    def _claim(self, change: Change, data: BookData, claims_uri: str | None) -> nodes.Node:
        if claims_uri is None or data.claim(change.claim_id) is None:
            return literal(change.claim_id)  # retracted, or no claims page: nothing to link to
        ref = link("", f"{claims_uri}#{claim_anchor(change.claim_id)}")
        ref += literal(change.claim_id)
        return ref

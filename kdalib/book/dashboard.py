"""The ``claims-dashboard`` directive: every claim, grouped by subject, with its evidence.

Sections, in order: a count of claims per status; one table per subject (claim id as
the row anchor that {claim} roles link to, what is measured with the benchmark
settings, the value, a status badge, the source and the quote); conflicting claims side
by side; refuted claims (the starting note's errors) next to the evidence refuting them.
"""

from __future__ import annotations

from collections import Counter

from docutils import nodes

from kdalib.book.data import BookData
from kdalib.book.directive import BookDirective
from kdalib.book.render import badge, claim_anchor, join, link, literal, short, source_anchor, table
from kdalib.sources.model import Claim
from kdalib.sources.schema import CLAIM_STATUSES


def _slug(text: str) -> str:
    return nodes.make_id(f"subject-{text}")


class ClaimsDashboard(BookDirective):
    def render(self, data: BookData) -> list[nodes.Node]:
        self.data = data
        self.sources_uri = self._sources_uri()
        out: list[nodes.Node] = [self._status_counts()]
        by_subject: dict[str, list[Claim]] = {}
        for claim in self.data.claims:
            by_subject.setdefault(claim.subject, []).append(claim)
        for subject, claims in by_subject.items():
            out.append(nodes.rubric(subject, subject, ids=[_slug(subject)]))
            out.append(self._subject_table(claims))
        out += self._conflicts()
        out += self._refuted()
        return out

    def _sources_uri(self) -> str:
        page = self.config.kdalib_sources_page
        if page not in self.env.found_docs:
            return ""
        return self.env.app.builder.get_relative_uri(self.env.docname, page) if page != self.env.docname else ""

    def _status_counts(self) -> nodes.paragraph:
        counts = Counter(c.status for c in self.data.claims)
        para = nodes.paragraph("", f"{len(self.data.claims)} claims: ", classes=["kdalib-counts"])
        para += join((nodes.inline("", "", badge(s, s), nodes.Text(f" {counts[s]}"))
                      for s in CLAIM_STATUSES if counts[s]), " ")
        return para

    def _source_ref(self, claim: Claim) -> nodes.Node:
        source = self.data.source(claim.source)
        label = source.title if source else claim.source
        if not self.sources_uri and self.config.kdalib_sources_page not in self.env.found_docs:
            return nodes.Text(label)
        return link(label, f"{self.sources_uri}#{source_anchor(claim.source)}")

    def _quote(self, claim: Claim) -> list[nodes.Node]:
        if not claim.quote:
            return [nodes.emphasis("", "no quote")] if not claim.text_notes else [nodes.Text(short(claim.text_notes))]
        out: list[nodes.Node] = [nodes.inline("", f"“{short(claim.quote)}”", classes=["kdalib-quote"])]
        match = self.data.report.matches.get(claim.id) if self.data.report else None
        if match is not None:
            out.append(nodes.inline("", f" (snapshot line {match.line})", classes=["kdalib-where"]))
        return out

    def _what(self, claim: Claim) -> list[nodes.Node]:
        out: list[nodes.Node] = [nodes.paragraph("", claim.topic)]
        if claim.setting_text:
            out.append(nodes.paragraph("", claim.setting_text, classes=["kdalib-setting"]))
        return out

    def _subject_table(self, claims: list[Claim]) -> nodes.table:
        rows = [(literal(c.id), self._what(c), nodes.strong("", c.display), badge(c.status, c.status),
                 self._source_ref(c), self._quote(c)) for c in claims]
        return table(("Claim", "What", "Value", "Status", "Source", "Quote"), rows,
                     classes=["kdalib-claims"], row_ids=[claim_anchor(c.id) for c in claims])

    def _claim_cell(self, claim: Claim) -> list[nodes.Node]:
        head = nodes.paragraph("", "", link(claim.display, f"#{claim_anchor(claim.id)}"), nodes.Text(" "),
                               badge(claim.status, claim.status))
        return [head, nodes.paragraph("", "", self._source_ref(claim)),
                nodes.paragraph("", "", *self._quote(claim))]

    def _conflicts(self) -> list[nodes.Node]:
        pairs, seen = [], set()
        for claim in self.data.claims:
            for target in claim.conflicts_with:
                other = self.data.claim(target)
                key = frozenset((claim.id, other.id)) if other else None
                if other is not None and key not in seen:
                    seen.add(key)
                    pairs.append((claim, other))
        if not pairs:
            return []
        rows = [(nodes.paragraph("", f"{a.subject}: {a.topic}"), self._claim_cell(a), self._claim_cell(b))
                for a, b in pairs]
        title = "Conflicting claims"
        return [nodes.rubric(title, title, ids=["conflicting-claims"]),
                table(("About", "One source says", "Another says"), rows, classes=["kdalib-conflicts"])]

    def _refuted(self) -> list[nodes.Node]:
        refuted = [c for c in self.data.claims if c.status == "refuted"]
        if not refuted:
            return []
        rows = []
        for claim in refuted:
            evidence = [self._claim_cell(e) for e in map(self.data.claim, claim.evidence) if e is not None]
            cell: list[nodes.Node] = [n for part in evidence for n in part]
            if claim.text_notes:
                cell.append(nodes.paragraph("", claim.text_notes))
            rows.append((self._claim_cell(claim), cell))
        title = "Refuted claims and their evidence"
        return [nodes.rubric(title, title, ids=["refuted-claims"]),
                table(("Claim", "Evidence"), rows, classes=["kdalib-refuted"])]


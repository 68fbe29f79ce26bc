"""The ``claims-dashboard`` directive: every claim, grouped by subject, with its evidence.

Sections, in order: a count of claims per status; one table per subject (claim id as
the row anchor that {claim} roles link to, what is measured with the benchmark
settings, the value, a status badge (and, for the starting note's claims, a verdict badge),
the source and the quote); conflicting claims side by side; refuted claims (the starting
note's errors) next to the evidence refuting them; superseded claims, oldest first, each
with the claim that replaced it and the archived version of the source each one quotes
(the figure's history).
"""

from __future__ import annotations

from collections import Counter

from docutils import nodes
from sphinx.util.docutils import SphinxDirective

from kdalib.book.data import book_data, remember_page
from kdalib.book.render import badge, claim_anchor, join, link, literal, short, source_anchor, table
from kdalib.book.spec_table import verdict_badge
from kdalib.sources.model import Claim
from kdalib.sources.schema import CLAIM_STATUSES, SEED_VERDICTS


def _slug(text: str) -> str:
    return nodes.make_id(f"subject-{text}")


class ClaimsDashboard(SphinxDirective):
    has_content = False

    def run(self) -> list[nodes.Node]:
        remember_page(self.env, "generated")
        self.data = book_data(self.env.app)
        if self.data.report is None:
            return [nodes.paragraph("", f"sources.yaml could not be read: {self.data.problem}")]
        self.sources_uri = self._sources_uri()
        out: list[nodes.Node] = [self._status_counts(), *self._verdict_counts()]
        by_subject: dict[str, list[Claim]] = {}
        for claim in self.data.claims:
            by_subject.setdefault(claim.subject, []).append(claim)
        for subject, claims in by_subject.items():
            out.append(nodes.rubric(subject, subject, ids=[_slug(subject)]))
            out.append(self._subject_table(claims))
        out += self._conflicts()
        out += self._refuted()
        out += self._superseded()
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

    def _verdict_counts(self) -> list[nodes.Node]:
        counts = Counter(c.verdict for c in self.data.claims if c.verdict)
        if not counts:
            return []
        para = nodes.paragraph("", f"Starting-note verdicts ({sum(counts.values())} statements): ",
                               classes=["kdalib-counts"])
        para += join((nodes.inline("", "", badge(v, f"verdict-{v}"), nodes.Text(f" {counts[v]}"))
                      for v in SEED_VERDICTS if counts[v]), " ")
        return [para]

    def _status_cell(self, claim: Claim) -> list[nodes.Node]:
        cell: list[nodes.Node] = [badge(claim.status, claim.status)]
        if claim.verdict:
            cell += [nodes.Text(" "), verdict_badge(claim)]
        return cell

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
        rows = [(literal(c.id), self._what(c), nodes.strong("", c.display), self._status_cell(c),
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


    def _history_cell(self, claim: Claim) -> list[nodes.Node]:
        source = self.data.source(claim.source)
        snapshot = source.snapshot_for(claim.version) if source else None
        label = (f"quotes the text of {claim.version}" if claim.version and claim.version != "archived"
                 else "quotes the first archived text")
        if snapshot is not None:
            label += f" ({snapshot.file})"
        return [*self._claim_cell(claim), nodes.paragraph("", label, classes=["kdalib-where"])]

    def _superseded(self) -> list[nodes.Node]:
        rows = []
        for claim in self.data.claims:
            if claim.status != "superseded":
                continue
            newer = [c for c in self.data.claims if any(self.data.claim(t) is claim for t in c.supersedes)]
            if claim.superseded_by and self.data.claim(claim.superseded_by) not in newer:
                newer.append(self.data.claim(claim.superseded_by))
            cell: list[nodes.Node] = [n for c in newer if c is not None for n in self._history_cell(c)]
            rows.append((self._history_cell(claim), cell))
        if not rows:
            return []
        title = "Superseded claims and what replaced them"
        return [nodes.rubric(title, title, ids=["superseded-claims"]),
                table(("Earlier claim", "Replaced by"), rows, classes=["kdalib-superseded"])]

"""The ``claims-dashboard`` directive: every claim, grouped by subject, with its evidence.

Sections, in order: counts of claims per status and of the starting note's verdicts, and
a filter box; one collapsible group per subject, holding one card per claim (the card's id
is the anchor that {claim} roles link to; it shows the value, a status badge and, for the
starting note's claims, a verdict badge, what is measured with the benchmark settings, the
source, and the quote as readable text under it); conflicting claims side by side (value,
status and source; the value links to the card); refuted claims (the starting note's
errors) next to the evidence refuting them; superseded claims, oldest first, each with the
claim that replaced it and the archived version of the source each one quotes (the
figure's history).
Cards, not table rows: they fit any column width, and a quote never hides in a column.
``static/kdalib.js`` opens the group holding a linked claim and runs the filter.
"""

from __future__ import annotations

from collections import Counter

from docutils import nodes

from kdalib.book.data import BookData
from kdalib.book.directive import BookDirective
from kdalib.book.nodes import collapsible
from kdalib.book.render import (
    badge,
    cite_text,
    claim_anchor,
    history_text,
    join,
    link,
    literal,
    readable_quote,
    short,
    source_anchor,
)
from kdalib.book.verdict import verdict_badge
from kdalib.sources.model import Claim
from kdalib.sources.schema import CLAIM_STATUSES, SEED_VERDICTS

FILTER_BOX = (
    '<p class="kdalib-filter"><label>Filter claims <input type="search" '
    'placeholder="id, model, benchmark, words of a quote" autocomplete="off"></label> '
    '<span class="kdalib-filter-count" aria-live="polite"></span></p>'
)


def _slug(text: str) -> str:
    return nodes.make_id(f"subject-{text}")


def _verbatim(node: nodes.Element) -> nodes.Element:
    """Exempt a node's text (a quote, a value) from smart-quote substitution."""
    node["support_smartquotes"] = False
    return node


class ClaimsDashboard(BookDirective):
    def render(self, data: BookData) -> list[nodes.Node]:
        self.data = data
        self.sources_uri = self._sources_uri()
        out: list[nodes.Node] = [
            self._status_counts(),
            *self._verdict_counts(),
            nodes.raw("", FILTER_BOX, format="html"),
        ]
        by_subject: dict[str, list[Claim]] = {}
        for claim in self.data.claims:
            by_subject.setdefault(claim.subject, []).append(claim)
        for subject, claims in by_subject.items():
            group = collapsible(
                "", ids=[_slug(subject)], classes=["kdalib-subject"], summary=f"{subject} ({len(claims)} claims)"
            )
            group.extend(self._card(claim) for claim in claims)
            out.append(group)
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
        para += join(
            (nodes.inline("", "", badge(s, s), nodes.Text(f" {counts[s]}")) for s in CLAIM_STATUSES if counts[s]), " "
        )
        para += nodes.Text(
            ". Each claim is counted once, here and in the filter below; the sections on conflicting, refuted "
            "and superseded claims at the end show some of them again, beside the claims they answer."
        )
        return para

    def _verdict_counts(self) -> list[nodes.Node]:
        counts = Counter(c.verdict for c in self.data.claims if c.verdict)
        if not counts:
            return []
        para = nodes.paragraph(
            "", f"Starting-note verdicts ({sum(counts.values())} statements): ", classes=["kdalib-counts"]
        )
        para += join(
            (
                nodes.inline("", "", badge(v, f"verdict-{v}"), nodes.Text(f" {counts[v]}"))
                for v in SEED_VERDICTS
                if counts[v]
            ),
            " ",
        )
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

    def _quote(self, claim: Claim) -> nodes.paragraph:
        para = nodes.paragraph("", "", classes=["kdalib-quote-line"])
        if not claim.quote:
            para += nodes.emphasis("", "no quote") if not claim.text_notes else nodes.Text(short(claim.text_notes))
            return para
        para += _verbatim(nodes.inline("", f"“{readable_quote(claim.quote)}”", classes=["kdalib-quote"]))
        match = self.data.report.matches.get(claim.id) if self.data.report else None
        if match is not None:
            para += nodes.inline("", f" (snapshot line {match.line})", classes=["kdalib-where"])
        return para

    def _card(self, claim: Claim) -> nodes.container:
        head = nodes.paragraph("", "", classes=["kdalib-card-head"])
        head += [
            _verbatim(nodes.strong("", claim.display)),
            nodes.Text(" "),
            *self._status_cell(claim),
            nodes.Text(" "),
            literal(claim.id),
        ]
        card = nodes.container(
            "",
            head,
            nodes.paragraph("", claim.topic, classes=["kdalib-topic"]),
            ids=[claim_anchor(claim.id)],
            classes=["kdalib-card"],
        )
        if claim.setting_text:
            card += nodes.paragraph("", claim.setting_text, classes=["kdalib-setting"])
        card += nodes.paragraph("", "", nodes.Text("Source: "), self._source_ref(claim), classes=["kdalib-source"])
        card += self._quote(claim)
        history = history_text(claim, self.data.history.of(claim.id))
        if history:
            card += nodes.paragraph("", f"History: {history}", classes=["kdalib-history"])
        cite = cite_text(claim, self.data.source(claim.source), self._claim_url(claim))
        card += nodes.paragraph(
            "", "", nodes.Text("Cite this figure: "), _verbatim(literal(cite)), classes=["kdalib-cite"]
        )
        return card

    def _claim_url(self, claim: Claim) -> str:
        """The claim's address in the published book (``html_baseurl``), else relative to the site."""
        page = self.env.app.builder.get_target_uri(self.env.docname)
        base = (self.config.html_baseurl or "").rstrip("/")
        return f"{base + '/' if base else ''}{page}#{claim_anchor(claim.id)}"

    def _claim_cell(self, claim: Claim, with_quote: bool = True) -> nodes.container:
        head = nodes.paragraph(
            "",
            "",
            link(claim.display, f"#{claim_anchor(claim.id)}"),
            nodes.Text(" "),
            badge(claim.status, claim.status),
        )
        cell = nodes.container("", head, nodes.paragraph("", "", self._source_ref(claim)), classes=["kdalib-side"])
        if with_quote:
            cell += self._quote(claim)
        return cell

    def _pair(self, about: str, *sides: nodes.Node) -> nodes.container:
        return nodes.container(
            "",
            nodes.paragraph("", about, classes=["kdalib-topic"]),
            nodes.container("", *sides, classes=["kdalib-sides"]),
            classes=["kdalib-card"],
        )

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
        title = "Conflicting claims"
        group = collapsible(
            "", ids=["conflicting-claims"], classes=["kdalib-subject"], summary=f"{title} ({len(pairs)} pairs)"
        )
        # value, status and source side by side; each value links to its card, which holds the quote
        group.extend(
            self._pair(f"{a.subject}: {a.topic}", self._claim_cell(a, False), self._claim_cell(b, False))
            for a, b in pairs
        )
        return [group]

    def _refuted(self) -> list[nodes.Node]:
        refuted = [c for c in self.data.claims if c.status == "refuted"]
        if not refuted:
            return []
        title = "Refuted claims and their evidence"
        group = collapsible(
            "", ids=["refuted-claims"], classes=["kdalib-subject"], summary=f"{title} ({len(refuted)})", open=True
        )
        for claim in refuted:
            evidence = nodes.container("", classes=["kdalib-side"])
            evidence += nodes.paragraph("", "Evidence", classes=["kdalib-label"])
            evidence.extend(self._claim_cell(other) for other in filter(None, map(self.data.claim, claim.evidence)))
            if claim.text_notes:
                evidence += nodes.paragraph("", claim.text_notes)
            group += self._pair(f"{claim.subject}: {claim.topic}", self._claim_cell(claim), evidence)
        return [group]

    def _history_cell(self, claim: Claim) -> nodes.container:
        source = self.data.source(claim.source)
        snapshot = source.snapshot_for(claim.version) if source else None
        label = (
            f"quotes the text of {claim.version}"
            if claim.version and claim.version != "archived"
            else "quotes the first archived text"
        )
        if snapshot is not None:
            label += f" ({snapshot.file})"
        cell = self._claim_cell(claim)
        cell += nodes.paragraph("", label, classes=["kdalib-where"])
        return cell

    def _superseded(self) -> list[nodes.Node]:
        pairs = []
        for claim in self.data.claims:
            if claim.status != "superseded":
                continue
            newer = [c for c in self.data.claims if any(self.data.claim(t) is claim for t in c.supersedes)]
            if claim.superseded_by and self.data.claim(claim.superseded_by) not in newer:
                newer.append(self.data.claim(claim.superseded_by))
            replaced = nodes.container("", classes=["kdalib-side"])
            replaced += nodes.paragraph("", "Replaced by", classes=["kdalib-label"])
            replaced.extend(self._history_cell(c) for c in newer if c is not None)
            pairs.append(self._pair(f"{claim.subject}: {claim.topic}", self._history_cell(claim), replaced))
        if not pairs:
            return []
        title = "Superseded claims and what replaced them"
        group = collapsible(
            "", ids=["superseded-claims"], classes=["kdalib-subject"], summary=f"{title} ({len(pairs)})", open=True
        )
        group.extend(pairs)
        return [group]

"""The ``source-checklist`` directive: one row per source of sources.yaml.

Columns: the source (title linked to its URL, id below), publisher, kind, link status
and date, snapshot file with a short sha256 and its state in this build, the number of
claims citing it, and the share of those that are verified or reproduced.
"""

from __future__ import annotations

from docutils import nodes

from kdalib.book.data import BookData
from kdalib.book.directive import BookDirective
from kdalib.book.render import badge, link, literal, source_anchor, table
from kdalib.sources.snapshots import PRESENT

CONFIRMED = ("verified", "reproduced")


class SourceChecklist(BookDirective):
    def render(self, data: BookData) -> list[nodes.Node]:
        states = data.report.snapshot_states
        rows, ids = [], []
        for source in data.sources:
            cited = [c for c in data.claims if c.source == source.id]
            confirmed = sum(c.status in CONFIRMED for c in cited)
            share = f"{confirmed}/{len(cited)} ({100 * confirmed / len(cited):.0f}%)" if cited else "–"
            rows.append((self._title(source), source.publisher, source.kind, self._link(source),
                         self._snapshot(source, states.get(source.id)), str(len(cited)), share))
            ids.append(source_anchor(source.id))
        headers = ("Source", "Publisher", "Kind", "Link", "Snapshot", "Claims", "Verified")
        return [table(headers, rows, classes=["kdalib-sources"], row_ids=ids)]

    @staticmethod
    def _title(source) -> list[nodes.Node]:
        title = link(source.title, source.url) if source.url else nodes.Text(source.title)
        return [nodes.paragraph("", "", title), nodes.paragraph("", "", literal(source.id))]

    @staticmethod
    def _link(source) -> list[nodes.Node]:
        checked = f" {source.link_checked.isoformat()}" if source.link_checked else ""
        return [badge(source.link_status, f"link-{source.link_status}"), nodes.Text(checked)]

    @staticmethod
    def _snapshot(source, state: str | None) -> list[nodes.Node]:
        if source.snapshot is None:
            return [nodes.Text("none")]
        out: list[nodes.Node] = [literal(source.snapshot.file), nodes.Text(" "),
                                 literal(f"sha256 {source.snapshot.sha256[:12]}…")]
        if state and state != PRESENT:
            out += [nodes.Text(" "), badge(state, "error" if state != "missing" else "warning")]
        return out

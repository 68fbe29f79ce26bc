"""The ``source-checklist`` directive: one row per source of sources.yaml.

Four columns, so the table fits a phone's width: the source (title linked to its URL,
then its id, publisher and kind), the link status and date, the snapshot file with a
short sha256 and its state in this build, and the claims citing it with the share of
those that are verified or reproduced.
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
            share = f"{confirmed}/{len(cited)} ({100 * confirmed / len(cited):.0f}%) verified" if cited else ""
            rows.append(
                (
                    self._title(source),
                    self._link(source),
                    self._snapshot(source, states.get(source.id)),
                    [nodes.paragraph("", str(len(cited))), nodes.paragraph("", share)],
                )
            )
            ids.append(source_anchor(source.id))
        headers = ("Source", "Link", "Snapshot", "Claims")
        return [table(headers, rows, classes=["kdalib-sources"], row_ids=ids)]

    @staticmethod
    def _title(source) -> list[nodes.Node]:
        title = link(source.title, source.url) if source.url else nodes.Text(source.title)
        return [
            nodes.paragraph("", "", title),
            nodes.paragraph("", "", literal(source.id)),
            nodes.paragraph("", f"{source.publisher} · {source.kind}", classes=["kdalib-setting"]),
        ]

    @staticmethod
    def _link(source) -> list[nodes.Node]:
        checked = f" {source.link_checked.isoformat()}" if source.link_checked else ""
        return [badge(source.link_status, f"link-{source.link_status}"), nodes.Text(checked)]

    @staticmethod
    def _snapshot(source, state: str | None) -> list[nodes.Node]:
        if source.snapshot is None:
            return [nodes.Text("none")]
        out: list[nodes.Node] = [
            literal(source.snapshot.file),
            nodes.Text(" "),
            literal(f"sha256 {source.snapshot.sha256[:12]}…"),
        ]
        if state and state != PRESENT:
            out += [nodes.Text(" "), badge(state, "error" if state != "missing" else "warning")]
        return out

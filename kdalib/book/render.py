"""Small docutils builders shared by the role and the directives: badges, tables, anchors."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from docutils import nodes

from kdalib.sources.model import Claim, Source
from kdalib.sources.quotes import normalize

Cell = str | nodes.Node | Sequence[nodes.Node]


def claim_anchor(claim_id: str) -> str:
    """The HTML id of a claim's row on the claims page (claim ids are unique and id-safe)."""
    return f"claim-{claim_id}"


def source_anchor(source_id: str) -> str:
    return f"source-{source_id}"


def badge(text: str, kind: str) -> nodes.inline:
    """A coloured status label; kdalib.css styles ``kdalib-badge-<kind>``."""
    return nodes.inline(text, text, classes=["kdalib-badge", f"kdalib-badge-{kind}"])


def short(text: str, limit: int = 160) -> str:
    text = normalize(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def hover_text(claim: Claim, source: Source | None) -> str:
    """The tooltip of a {claim} role: source, status and quote."""
    where = f"{source.title} ({source.publisher})" if source else claim.source
    parts = [f"{claim.subject}, {claim.topic}: {claim.display}", f"source: {where}", f"status: {claim.status}"]
    if claim.setting_text:
        parts.append(claim.setting_text)
    if claim.quote:
        parts.append(f"quote: “{short(claim.quote, 300)}”")
    return "\n".join(parts)


def link(text: str, uri: str) -> nodes.reference:
    return nodes.reference(text, text, refuri=uri)


def _cell_nodes(cell: Cell) -> list[nodes.Node]:
    if isinstance(cell, str):
        return [nodes.paragraph(cell, cell)] if cell else []
    if isinstance(cell, nodes.Node):
        cell = [cell]
    inline = [n for n in cell if isinstance(n, (nodes.Inline, nodes.Text))]
    if len(inline) == len(cell):
        return [nodes.paragraph("", "", *cell)]
    return list(cell)


def table(headers: Sequence[str], rows: Iterable[Sequence[Cell]], classes: Sequence[str] = (),
          row_ids: Iterable[str | None] | None = None) -> nodes.table:
    """A docutils table; each cell is text, a node, or a list of nodes; rows may carry an id."""
    rows = list(rows)
    ids = list(row_ids) if row_ids is not None else [None] * len(rows)
    tab = nodes.table(classes=["kdalib-table", *classes])
    group = nodes.tgroup(cols=len(headers))
    tab += group
    group.extend(nodes.colspec(colwidth=1) for _ in headers)
    head = nodes.thead()
    head += nodes.row("", *(nodes.entry("", nodes.paragraph(h, h)) for h in headers))
    body = nodes.tbody()
    for cells, row_id in zip(rows, ids):
        row = nodes.row("", *(nodes.entry("", *_cell_nodes(c)) for c in cells))
        if row_id:
            row["ids"].append(row_id)
        body += row
    group += head
    group += body
    return tab


def literal(text: str) -> nodes.literal:
    return nodes.literal(text, text)


def join(items: Iterable[nodes.Node], separator: str = ", ") -> list[nodes.Node]:
    out: list[nodes.Node] = []
    for item in items:
        if out:
            out.append(nodes.Text(separator))
        out.append(item)
    return out

"""Small docutils builders shared by the role and the directives: badges, tables, anchors."""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence

from docutils import nodes

from kdalib.sources.history import ClaimHistory
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


_CELL_BREAK = re.compile(r"\s*(?:</t[dh]>\s*<t[dh][^>]*>|</t[dh]>|<t[dh][^>]*>|(?<!\\)\|)\s*", re.I)
_LINE_BREAK = re.compile(r"<br\s*/?>", re.I)
_TAG = re.compile(r"</?[a-z][a-z0-9]*(?:\s[^<>]*)?/?>", re.I)
_EMPHASIS = re.compile(r"(\*\*|__|(?<![\w*])\*(?=\S)|(?<=\S)\*(?![\w*])|`)")


def readable_quote(quote: str) -> str:
    """A quote as a reader should see it: its words in order, without the source's markup.

    HTML tags and Markdown emphasis and code marks are dropped, table-cell boundaries (HTML
    cells or Markdown pipes) become " · ", HTML entities are decoded and whitespace runs
    collapse. No word is changed, added or reordered; the exact quote stays in sources.yaml.
    """
    text = _LINE_BREAK.sub(" ", quote)
    text = _CELL_BREAK.sub(" · ", text)
    text = _TAG.sub("", text)
    text = _EMPHASIS.sub("", text)
    text = normalize(html.unescape(text))
    return re.sub(r"(?:\s*·\s*)+", " · ", text).strip(" ·")


def history_text(claim: Claim, past: ClaimHistory | None) -> str:
    """ "first recorded D · last checked D · earlier: V (status, from D)", from the claim and its history."""
    parts = []
    if past is not None:
        parts.append(f"first recorded {past.first_recorded or 'in this uncommitted change'}")
    if claim.checked:
        parts.append(f"last checked {claim.checked.isoformat()}")
    if past is not None and past.earlier:
        earlier = "; ".join(f"{e.display} ({e.status}, from {e.since or 'uncommitted'})" for e in past.earlier)
        parts.append(f"earlier: {earlier}")
    return " · ".join(parts)


def cite_text(claim: Claim, source: Source | None, url: str) -> str:
    """The "cite this figure" line of a claim: the book, the claim id, its value and status, its URL."""
    checked = f", checked {claim.checked.isoformat()}" if claim.checked else ""
    origin = f"; source: {source.title}" if source else ""
    return f"The Kimi field guide, claim {claim.id}: {claim.display} ({claim.status}{checked}{origin}). {url}"


def popover_data(
    claim: Claim, source: Source | None, snapshot_line: int | None = None, past: ClaimHistory | None = None
) -> dict[str, str]:
    """What a figure's popover shows, as plain text fields (kdalib.js renders them as text)."""
    data = {
        "what": f"{claim.subject}: {claim.topic}",
        "value": claim.display,
        "status": claim.status,
        "source": f"{source.title} ({source.publisher})" if source else claim.source,
        "id": claim.id,
    }
    if claim.setting_text:
        data["setting"] = claim.setting_text
    if claim.quote:
        data["quote"] = short(readable_quote(claim.quote), 400)
        if snapshot_line:
            data["where"] = f"snapshot line {snapshot_line}"
    elif claim.text_notes:
        data["note"] = short(claim.text_notes, 400)
    history = history_text(claim, past)
    if history:
        data["history"] = short(history, 400)
    return data


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


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Cell]],
    classes: Sequence[str] = (),
    row_ids: Iterable[str | None] | None = None,
) -> nodes.table:
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

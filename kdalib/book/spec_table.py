"""The ``spec-table`` directive: a table of properties × models drawn from sources.yaml.

``spec-table`` renders properties × models. Its ``:columns:`` option names the models, and
each content line is a row: the property's label, then one cell per model, separated by
``|`` (the grammar is :mod:`kdalib.sources.spec_rows`, which ``kdalib verify`` also reads). A cell is ``-`` for "not reported", or a sequence of claim ids and text in double
quotes (printed as is, for a label or a caveat). Each id renders as its {claim} role would
(display value, status class, popover with source and quote, link to the claims page); an
unverified or contradicted claim is marked so, and a claim whose conflicting claims the row
does not show names them. An unknown id
or a row with the wrong number of cells is a warning at the directive's line naming the row, so the strict build
fails and the table cannot drift from the checklist::

    ```{spec-table}
    :columns: K2 | K2.5
    total parameters | k2.arch.params_total | k2_5.arch.params_total
    vision encoder | - | "MoonViT," k2_5.arch.vision_encoder_params
    ```
"""

from __future__ import annotations

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util import logging

from kdalib.book.data import BookData
from kdalib.book.directive import BookDirective
from kdalib.book.render import table
from kdalib.book.role import figure_xref
from kdalib.sources.model import Claim
from kdalib.sources.spec_rows import cell_tokens, claim_ids, split_row

logger = logging.getLogger(__name__)

NOT_REPORTED = "not reported"
#: Statuses a table cell marks next to the value, because the figure is not (or no longer) settled.
MARKED_STATUSES = ("unverified", "contradicted", "superseded", "refuted")
#: Quoted text starting with one of these follows the previous token without a space.
CLOSERS = (",", ";", ".", ")", ":")


class SpecTable(BookDirective):
    has_content = True
    page_kind = "claim"  # its cells are figures: re-read when sources.yaml changes
    option_spec = {"columns": lambda text: [c.strip() for c in (text or "").split("|")]}

    def render(self, data: BookData) -> list[nodes.Node]:
        self.data = data
        columns = [c for c in self.options.get("columns", []) if c]
        if not columns:
            return self._warn(self.lineno, "spec-table needs ':columns: MODEL | MODEL | ...'")
        rows = []
        for line in self.content:
            if not line.strip():
                continue
            cells = split_row(line)
            lineno = self.lineno  # the directive's line; the message names the row
            if len(cells) != len(columns) + 1:
                return self._warn(
                    lineno,
                    f"spec-table row {cells[0]!r} has {len(cells) - 1} cells for "
                    f"{len(columns)} columns ({' | '.join(columns)})",
                )
            row_ids = {claim_id for cell in cells[1:] for claim_id in claim_ids(cell)}
            rendered = [self._cell(cell, lineno, row_ids) for cell in cells[1:]]
            if any(cell is None for cell in rendered):
                return []
            rows.append([cells[0], *rendered])
        return [table(["", *columns], rows, classes=["kdalib-spec"])]

    def _warn(self, lineno: int, message: str) -> list[nodes.Node]:
        logger.warning(message, location=(self.env.docname, lineno), type="kdalib", subtype="spec-table")
        return []

    def _cell(self, text: str, lineno: int, row_ids: set[str]) -> list[nodes.Node] | None:
        tokens = cell_tokens(text)
        if not tokens:
            return [nodes.emphasis(NOT_REPORTED, NOT_REPORTED, classes=["kdalib-not-reported"])]
        out: list[nodes.Node] = []
        previous_was_claim = False
        for token in tokens:
            if token.startswith('"'):
                words = token[1:-1]
                out.append(nodes.Text((" " if out and not words.startswith(CLOSERS) else "") + words))
                previous_was_claim = False
                continue
            claim = self.data.claim(token)
            if claim is None:
                reason = self.data.problem or f"no claim {token!r} in {self.config.kdalib_sources_file}"
                self._warn(lineno, f"unknown claim id {token!r} in spec-table cell {text!r}: {reason}")
                return None
            opened = bool(out) and out[-1].astext().endswith("(")
            out.append(nodes.Text("; " if previous_was_claim else " " if out and not opened else ""))
            out += self._claim(claim, row_ids)
            previous_was_claim = True
        return out

    def _claim(self, claim: Claim, row_ids: set[str]) -> list[nodes.Node]:
        """The claim's reference, its status when unsettled, and conflicting claims the row does not show."""
        out: list[nodes.Node] = [figure_xref(claim)]
        if claim.status in MARKED_STATUSES:
            out.append(nodes.Text(f" ({claim.status})"))
        others = [o for o in map(self.data.claim, claim.conflicts_with) if o is not None and o.id not in row_ids]
        if others:
            out.append(nodes.inline("", " (other sources: ", classes=["kdalib-conflict"]))
            for index, other in enumerate(others):
                out.append(nodes.Text(", " if index else ""))
                out.append(figure_xref(other))
            out.append(nodes.Text(")"))
        return out


def setup(app: Sphinx) -> None:
    app.add_directive("spec-table", SpecTable)

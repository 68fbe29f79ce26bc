"""Tables kdalib computes at build time, so a page shows a model's output instead of numbers typed
by hand: ``context-parallel-costs`` prints :func:`kdalib.distributed.cost.cost_table`."""

from __future__ import annotations

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective


def markdown_table_nodes(markdown: str) -> nodes.table:
    """A docutils table from a pipe table (a header row, a rule row, body rows)."""
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in markdown.strip().splitlines()]
    header, body = rows[0], rows[2:]
    table = nodes.table(classes=["kdalib-computed"])
    group = nodes.tgroup(cols=len(header))
    table += group
    group += [nodes.colspec(colwidth=1) for _ in header]

    def row(cells: list[str]) -> nodes.row:
        node = nodes.row()
        for cell in cells:
            node += nodes.entry("", nodes.paragraph(text=cell))
        return node

    head = nodes.thead()
    head += row(header)
    group += head
    tbody = nodes.tbody()
    tbody += [row(cells) for cells in body]
    group += tbody
    return table


class ContextParallelCosts(SphinxDirective):
    """The exchange cost model of context-parallel KDA under the assumed link, as a table."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        from kdalib.distributed.cost import ASSUMED_LINK, cost_table  # imports torch: only where used

        return [markdown_table_nodes(cost_table(link=ASSUMED_LINK))]


def setup(app: Sphinx) -> None:
    app.add_directive("context-parallel-costs", ContextParallelCosts)

"""The ``report-matrix`` directive: the comparison page's tables read as a matrix of what is reported.

Placed once on a page, it renders a legend and a control ("show only what a model reports"), and
once the page is resolved every table of that page becomes a matrix (class ``kdalib-matrix``): a
cell saying only *not reported* (a Markdown cell, or a ``spec-table`` cell without a claim) shows a
quiet mark instead, named in the legend and in the mark's tooltip, so that the reported figures
stand out. The script (``kdalib.js``) fills the control with the models of the tables' header rows
and hides the rows a chosen model does not report; the stylesheet keeps the first column in view
while a wide table scrolls on a phone. Without the script every row stays visible.
"""

from __future__ import annotations

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

NOT_REPORTED = "not reported"
MARK = "–"
CONTROLS = (
    '<div class="kdalib-matrix-controls">'
    '<p class="kdalib-matrix-legend"><span class="kdalib-absent" aria-hidden="true">{mark}</span> '
    "{meaning}: no archived source of that model states it. Every other cell is a figure with its source "
    "(hover or tap it).</p>"
    '<p class="kdalib-matrix-filter"><label>Show only the rows a model reports: '
    '<select><option value="">every row</option></select></label> '
    '<span class="kdalib-matrix-count" aria-live="polite"></span></p></div>'
)


class matrix_controls(nodes.General, nodes.Element):
    """Where the legend and the control go; marks its page as a matrix page."""


def _visit(self, node: matrix_controls) -> None:
    self.body.append(CONTROLS.format(mark=MARK, meaning=NOT_REPORTED.capitalize()))
    raise nodes.SkipNode


def _skip(self, node: matrix_controls) -> None:
    raise nodes.SkipNode


class ReportMatrix(SphinxDirective):
    has_content = False

    def run(self) -> list[nodes.Node]:
        return [matrix_controls()]


def absent_mark() -> nodes.raw:
    return nodes.raw(
        "",
        f'<span class="kdalib-absent" title="{NOT_REPORTED}" aria-label="{NOT_REPORTED}">{MARK}</span>',
        format="html",
    )


def mark_matrix(doctree: nodes.document) -> int:
    """Turns the tables of a page holding ``report-matrix`` into matrices; returns the cells marked."""
    if next(doctree.findall(matrix_controls), None) is None:
        return 0
    marked = 0
    for table in doctree.findall(nodes.table):
        table["classes"].append("kdalib-matrix")
        for entry in table.findall(nodes.entry):
            if entry.astext().strip() == NOT_REPORTED:
                entry.children = []
                entry += nodes.paragraph("", "", absent_mark())
                entry["classes"].append("kdalib-absent-cell")
                marked += 1
    return marked


def _resolved(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    if app.builder.format == "html":
        mark_matrix(doctree)


def setup(app: Sphinx) -> None:
    app.add_node(
        matrix_controls,
        html=(_visit, None),
        latex=(_skip, None),
        text=(_skip, None),
        man=(_skip, None),
        texinfo=(_skip, None),
    )
    app.add_directive("report-matrix", ReportMatrix)
    app.connect("doctree-resolved", _resolved)

"""The checklist as data beside the HTML: ``claims.json`` and ``claims.csv``, and the directive linking them.

When the HTML build finishes, :func:`_write_downloads` writes both files into the output folder
(:mod:`kdalib.sources.export` gives their columns, per-claim history included); the
``claims-downloads`` directive prints a paragraph linking them, relative to the page it is on.
"""

from __future__ import annotations

from pathlib import Path

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util import logging

from kdalib.book.data import BookData
from kdalib.book.directive import BookDirective
from kdalib.book.domain import domain_of
from kdalib.book.render import link
from kdalib.sources.export import write_claims

logger = logging.getLogger(__name__)

DOWNLOADS = ("claims.json", "claims.csv")


class ClaimsDownloads(BookDirective):
    """A paragraph linking the claims.json and claims.csv written beside the HTML."""

    needs_checklist = False
    page_kind = None  # the same two links whatever the checklist holds

    def render(self, data: BookData) -> list[nodes.Node]:
        depth = self.env.docname.count("/")
        prefix = "../" * depth
        para = nodes.paragraph("", "Download the checklist: ", classes=["kdalib-downloads"])
        for index, name in enumerate(DOWNLOADS):
            if index:
                para += nodes.Text(" or ")
            para += link(name, prefix + name)
        para += nodes.Text(" (one row per claim).")
        return [para]


def _write_downloads(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    data = domain_of(app.env).book
    if data.report is None:
        return
    for path in write_claims(data.report.document, Path(app.outdir), data.history):
        logger.info(f"kdalib: wrote {path}")


def setup(app: Sphinx) -> None:
    app.add_directive("claims-downloads", ClaimsDownloads)
    app.connect("build-finished", _write_downloads)

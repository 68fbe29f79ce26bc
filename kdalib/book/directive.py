"""One base for every directive that renders a page from the checklist.

:class:`BookDirective` records the page as generated in the ``kdalib`` domain (so the page
is re-read on every build and can never show a stale checklist), hands the subclass the
build's :class:`~kdalib.book.data.BookData`, and renders the same one-line notice
wherever ``sources.yaml`` could not be read. A subclass writes only :meth:`render` (and says when its page is re-read with
``page_kind``).
"""

from __future__ import annotations

from docutils import nodes
from sphinx.util.docutils import SphinxDirective

from kdalib.book.data import BookData
from kdalib.book.domain import domain_of


class BookDirective(SphinxDirective):
    has_content = False
    #: False for a directive that shows no checklist data (it renders even without one).
    needs_checklist = True
    #: How the page is recorded: ``generated`` (re-read on every build), ``claim`` (re-read
    #: when sources.yaml changes, for content that only depends on the claims), or None.
    page_kind: str | None = "generated"

    def run(self) -> list[nodes.Node]:
        domain = domain_of(self.env)
        if self.page_kind:
            domain.note_page(self.env.docname, self.page_kind)
        data = domain.book
        if self.needs_checklist and data.report is None:
            return [nodes.paragraph("", f"sources.yaml could not be read: {data.problem}")]
        return self.render(data)

    def render(self, data: BookData) -> list[nodes.Node]:
        raise NotImplementedError(f"{type(self).__name__} must define render(data)")

"""The ``kdalib`` Sphinx domain: the one owner of the extension's build state.

Per page, the domain records what the page shows: ``claim`` (it uses the ``{claim}``
role) or ``generated`` (a directive renders it from the checklist). That record lives in
the domain's data, so Sphinx pickles it with the environment, drops a page's entry when
the page is re-read or removed (:meth:`KdalibDomain.clear_doc`) and merges the entries of
parallel readers (:meth:`KdalibDomain.merge_domaindata`), as for every other domain.
``env-get-outdated`` then re-reads generated pages on every build, and pages with claims
when ``sources.yaml`` (or ``$KDALIB_SNAPSHOTS``) changed.

The verified checklist itself (:class:`~kdalib.book.data.BookData`) is loaded once per
build, when the builder starts, and kept on the domain object, which Sphinx creates anew
for every build and never pickles.

The domain also resolves the ``{claim}`` role's cross-references (``kdalib:claim``) to
the claim's row on the claims page, relative to the page the figure is on.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.builders import Builder
from sphinx.domains import Domain
from sphinx.environment import BuildEnvironment

from kdalib.book.data import BookData, load_book_data
from kdalib.book.nodes import CLAIM_ATTRIBUTE, claim_reference
from kdalib.book.render import claim_anchor
from kdalib.sources.snapshots import ENV_VAR

#: What a page records about itself (see the module docstring).
PAGE_KINDS = ("claim", "generated")


class KdalibDomain(Domain):
    name = "kdalib"
    label = "Kimi field guide claims"
    initial_data: dict[str, Any] = {"pages": {}, "sources_digest": None}
    data_version = 1

    def __init__(self, env: BuildEnvironment) -> None:
        super().__init__(env)
        self._book: BookData | None = None

    # -- the verified checklist ------------------------------------------------------------

    @property
    def book(self) -> BookData:
        """This build's :class:`BookData`, loaded on first use."""
        if self._book is None:
            self._book = load_book_data(self.env.app)
        return self._book

    def load(self, app: Sphinx) -> None:
        self._book = load_book_data(app)

    # -- per-page state --------------------------------------------------------------------

    @property
    def pages(self) -> dict[str, list[str]]:
        return self.data["pages"]

    def note_page(self, docname: str, kind: str) -> None:
        if kind not in PAGE_KINDS:
            raise ValueError(f"page kind must be one of {PAGE_KINDS}, not {kind!r}")
        kinds = self.pages.setdefault(docname, [])
        if kind not in kinds:
            kinds.append(kind)

    def pages_of_kind(self, kind: str) -> set[str]:
        return {doc for doc, kinds in self.pages.items() if kind in kinds}

    def clear_doc(self, docname: str) -> None:
        self.pages.pop(docname, None)

    def merge_domaindata(self, docnames: list[str], otherdata: dict[str, Any]) -> None:
        for docname in docnames:
            if docname in otherdata["pages"]:
                self.pages[docname] = list(otherdata["pages"][docname])

    def outdated(self, app: Sphinx) -> list[str]:
        """Generated pages always; pages with claims too when the checklist changed."""
        pages = self.pages_of_kind("generated")
        digest = _sources_digest(app)
        if self.data["sources_digest"] != digest:
            pages |= self.pages_of_kind("claim")
            self.data["sources_digest"] = digest
        return sorted(doc for doc in pages if doc in self.env.found_docs)

    # -- claim cross-references ------------------------------------------------------------

    def resolve_xref(
        self,
        env: BuildEnvironment,
        fromdocname: str,
        builder: Builder,
        typ: str,
        target: str,
        node: pending_xref,
        contnode: nodes.Element,
    ) -> nodes.Element | None:
        if typ != "claim":
            return None
        claims_page = env.config.kdalib_claims_page
        if claims_page not in env.all_docs:
            return contnode  # no claims page in this book: the figure stays, unlinked
        page_uri = "" if fromdocname == claims_page else builder.get_relative_uri(fromdocname, claims_page)
        ref = claim_reference(
            "", "", internal=True, refuri=f"{page_uri}#{claim_anchor(target)}", classes=list(contnode["classes"])
        )
        ref[CLAIM_ATTRIBUTE] = target
        ref.extend(contnode.children)
        return ref

    def resolve_any_xref(
        self,
        env: BuildEnvironment,
        fromdocname: str,
        builder: Builder,
        target: str,
        node: pending_xref,
        contnode: nodes.Element,
    ) -> list[tuple[str, nodes.Element]]:
        return []  # claims are written with {claim}, never with the `any` role

    def get_objects(self) -> Iterable[tuple[str, str, str, str, str, int]]:
        return []


def _sources_digest(app: Sphinx) -> str:
    path = Path(app.srcdir) / app.config.kdalib_sources_file
    try:
        stat = path.stat()
    except OSError:
        return "missing"
    return f"{stat.st_mtime_ns}:{stat.st_size}:{os.environ.get(ENV_VAR, '')}"


def domain_of(env: BuildEnvironment) -> KdalibDomain:
    return env.get_domain(KdalibDomain.name)  # type: ignore[return-value]


def _on_builder_inited(app: Sphinx) -> None:
    domain_of(app.env).load(app)


def _on_env_get_outdated(app: Sphinx, env: BuildEnvironment, added, changed, removed) -> list[str]:
    return domain_of(env).outdated(app)


def setup(app: Sphinx) -> None:
    app.add_domain(KdalibDomain)
    app.connect("builder-inited", _on_builder_inited)
    app.connect("env-get-outdated", _on_env_get_outdated)

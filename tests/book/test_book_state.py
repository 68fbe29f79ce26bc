"""The kdalib domain's per-page state across incremental and parallel builds.

Generated pages must be re-read on every build, pages with figures whenever sources.yaml
changes, and nothing else; a page that is removed must leave no trace in the state.
"""

from __future__ import annotations

import pytest

from kdalib.book.domain import KdalibDomain, domain_of

ALWAYS = {"notes/claims", "notes/sources", "status"}


def _pages(book) -> dict[str, set[str]]:
    return {doc: set(kinds) for doc, kinds in domain_of(book.app.env).pages.items()}


def test_pages_are_recorded_by_kind(book):
    book.build(warningiserror=True)
    pages = _pages(book)
    assert pages["index"] == {"claim"}
    assert pages["notes/claims"] == {"generated"} and pages["status"] == {"generated"}


def test_generated_pages_are_reread_on_every_build_and_claim_pages_when_sources_change(book):
    book.write("plain.md", "# Plain\n\nNo figures here.\n")
    book.write("index.md", (book.src / "index.md").read_text().replace("status\n", "status\nplain\n"))
    book.build(warningiserror=True)
    assert set(book.read) == ALWAYS | {"index", "plain"}

    book.build(warningiserror=True, freshenv=False)
    assert set(book.read) == ALWAYS  # nothing changed: only the generated pages

    sources = (book.src / "sources.yaml").read_text()
    book.write("sources.yaml", sources.replace("title: Model M card", "title: Model M card v2"))
    book.build(warningiserror=True, freshenv=False)
    assert set(book.read) == ALWAYS | {"index"}  # the page with figures, not the plain page
    assert "Model M card v2 (Example Lab)" in book.html("index")


def test_a_removed_page_leaves_no_state(book):
    book.write("extra.md", "# Extra\n\nIt has {claim}`m.context`.\n")
    book.write("index.md", (book.src / "index.md").read_text().replace("status\n", "status\nextra\n"))
    book.build(warningiserror=True)
    assert "extra" in _pages(book)
    (book.src / "extra.md").unlink()
    book.write("index.md", (book.src / "index.md").read_text().replace("status\nextra\n", "status\n"))
    book.build(warningiserror=True, freshenv=False)
    assert "extra" not in _pages(book) and "index" in _pages(book)


def test_parallel_readers_merge_their_pages(book):
    names = [f"page{i}" for i in range(8)]
    for name in names:
        book.write(f"{name}.md", f"# {name}\n\nIt has {{claim}}`m.context`.\n")
    book.write(
        "index.md", (book.src / "index.md").read_text().replace("status\n", "status\n" + "\n".join(names) + "\n")
    )
    book.build(warningiserror=True, parallel=2)
    pages = _pages(book)
    assert all(pages[name] == {"claim"} for name in names)
    assert pages["notes/sources"] == {"generated"}
    assert 'href="notes/claims.html#claim-m.context"' in book.html("page3")


def test_page_kinds_are_checked():
    domain = KdalibDomain.__new__(KdalibDomain)  # the check needs no environment
    domain.data = {"pages": {}, "sources_digest": None}
    with pytest.raises(ValueError, match="page kind must be one of"):
        domain.note_page("index", "figure")

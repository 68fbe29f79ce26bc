"""The claims page shows a superseded figure's history across archived versions of its source."""

from __future__ import annotations

import hashlib
import html


def test_superseded_claim_is_listed_with_its_successor_and_versions(book):
    new_card = (book.snapshots / "card.md").read_text().replace("| 1T |", "| 1.2T |")
    new_sha = hashlib.sha256(new_card.encode()).hexdigest()
    (book.snapshots / "card.2026-12-01.md").write_text(new_card)
    manifest = book.snapshots / "MANIFEST.yaml"
    manifest.write_text(
        manifest.read_text() + "- {file: card.2026-12-01.md, source: card, version: v2, "
        "retrieved_from: test, retrieved_on: 2026-12-01, origin: publisher, "
        f"sha256: {new_sha}, bytes: {len(new_card.encode())}}}\n"
    )
    sources = (
        (book.src / "sources.yaml")
        .read_text()
        .replace(
            "    link: {checked: 2026-11-28, status: ok}\n",
            "    link: {checked: 2026-11-28, status: ok}\n"
            f"    versions:\n      - {{file: card.2026-12-01.md, sha256: {new_sha}, retrieved: 2026-12-01}}\n",
            1,
        )
    )
    sources = sources.replace(
        "    status: verified\n    notes: {conflicts_with: [m.params.total.report]}\n",
        "    status: superseded\n    notes: {conflicts_with: [m.params.total.report]}\n",
        1,
    )
    sources = sources.replace(
        "notes: {evidence: [m.params.total], text: the card says 1T}",
        "notes: {evidence: [m.params.total.v2], text: the card says 1.2T}",
    )
    sources += """\
  - id: m.params.total.v2
    subject: Model M
    property: total parameters (card of 2026-12-01)
    value: 1.2
    unit: T parameters
    display: 1.2T
    source: card
    quote: "Total Parameters** | 1.2T"
    version: 2026-12-01
    status: verified
    supersedes: [m.params.total]
"""
    book.write("sources.yaml", sources)
    assert book.build(warningiserror=True) == ""
    page = html.unescape(book.html("notes/claims"))
    history = page.split("Superseded claims and what replaced them", 1)[1]
    earlier, replaced_by = history.split(">Replaced by<", 1)  # the earlier claim, then what replaced it
    assert ">1T</a>" in earlier and "quotes the first archived text (card.md)" in earlier
    assert ">1.2T</a>" in replaced_by and "quotes the text of 2026-12-01 (card.2026-12-01.md)" in replaced_by
    assert "kdalib-badge-superseded" in earlier

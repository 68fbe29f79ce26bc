"""Docstrings point at sections of the book that exist, and at no file outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Code cites a section of the KDA page by its label: notes/kda.md, section ``kda-gate``.
CITED_LABEL = re.compile(r"``(kda-[\w-]+)``")


def _code_files() -> list[Path]:
    return sorted((ROOT / "kdalib").rglob("*.py")) + sorted((ROOT / "tests").rglob("*.py"))


def test_every_cited_section_of_the_kda_page_has_a_label():
    labels = set(re.findall(r"^\(([\w-]+)\)=$", (ROOT / "notes" / "kda.md").read_text(encoding="utf-8"), re.M))
    cited = {}
    for path in _code_files():
        for label in CITED_LABEL.findall(path.read_text(encoding="utf-8")):
            cited.setdefault(label, path.relative_to(ROOT))
    assert cited, "no docstring cites notes/kda.md any more: drop this test or the labels"
    missing = {label: str(path) for label, path in cited.items() if label not in labels}
    assert not missing, f"cited but not labelled in notes/kda.md: {missing}"


def test_no_reference_to_files_outside_the_repository():
    for path in _code_files():
        if path.name == Path(__file__).name:
            continue
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"\bKDA\.md\b|\bDESIGN\.md\b", text), path.relative_to(ROOT)

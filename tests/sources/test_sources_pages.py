"""The page scanner reads a page in time linear in its length, whatever the markup."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kdalib.sources.pages import claim_roles, code_spans, mask_inline

REPO = Path(__file__).resolve().parents[2]

#: Lines that made the old regular expressions backtrack for minutes (cubic in the run of backticks,
#: quadratic in the others), each preceded by a word so that it is prose, not a code fence.
HOSTILE_LINES = {
    "backticks": "x " + "`" * 20_000,
    "backtick pairs": "x " + "``a" * 60_000,
    "role openers": "{claim}`" * 25_000,
    "comment openers": "<!--" * 50_000,
    "tag openers": "<a" * 100_000,
    "link openers": "](" * 100_000,
    "substitution openers": "{{" * 100_000,
    "figures after words": "Table 1% " * 20_000,
}


def test_code_spans_follow_commonmark():
    assert code_spans("a `b` c") == [(2, 5)]
    assert code_spans("``a ` b`` `c`") == [(0, 9), (10, 13)]
    assert code_spans("``not closed`") == []
    assert code_spans("`" * 7) == []


def test_roles_and_code_are_told_apart():
    line = "see {claim}`k2.total` and `{claim}`code.example`` and {claim}` spaced `"
    assert [claim_id for _, claim_id in claim_roles(line)] == ["k2.total", "spaced"]
    assert mask_inline("x `1T` y {math}`2B` z") == "x      y            z"


@pytest.mark.parametrize("name", sorted(HOSTILE_LINES))
def test_hostile_markup_is_scanned_in_linear_time(tmp_path, name):
    """The checks that read pages finish on a hostile page (the old scanner took minutes)."""
    page = tmp_path / "notes" / "hostile.md"
    page.parent.mkdir()
    page.write_text("# Page\n\n" + HOSTILE_LINES[name] + "\n", encoding="utf-8")
    script = textwrap.dedent(f"""
        from pathlib import Path
        from kdalib.sources.figures import lint_notes
        from kdalib.sources.pages import claim_roles, markdown_blocks
        root = Path({str(tmp_path)!r})
        lint_notes(root)
        for _, _, text in markdown_blocks(root, root / "notes" / "hostile.md"):
            list(claim_roles(text))
    """)
    # a generous bound: the scan takes milliseconds; the quadratic and cubic ones took minutes
    subprocess.run([sys.executable, "-c", script], cwd=REPO, check=True, timeout=60)

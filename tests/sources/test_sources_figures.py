"""The hand-typed-figure lint (definition in kdalib/sources/figures.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdalib.sources.figures import find_figures, lint_notes


def figures(text: str) -> list[str]:
    return [f.text for f in find_figures(text)]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Kimi K2 has 1T parameters and 32B activated.", ["1T", "32B"]),
        ("It has 384 experts in 61 layers with 64 heads.", ["384 experts", "61 layers", "64 heads"]),
        ("trained on 15.5T tokens, 1,024 tokens, 2 trillion", ["15.5T", "1,024 tokens", "2 trillion"]),
        ("a 128K context, 128k window, 50% less, 6× faster, 3x faster", ["128K", "128k", "50%", "6×", "3x"]),
        ("a 1\u00a0T model and 7 params", ["1\u00a0T", "7 params"]),
    ],
)
def test_figures_in_prose_are_found(text, expected):
    assert figures(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Moonlight-16B-A3B, Kimi-K2.5, v1.2 and arXiv 2507.20534 are names.",
        "Released in 2025, see Section 3 and Eq. (5), Table 4, Figure 3 B, §2 K and Appendix 1 T.",
        "The value is {claim}`k2.params.total` and `64 tokens` in code.",
        "Math: $128K$ and $$1T$$ and \\(x\\).",
        "A [link](https://x.org/48B) and <https://x.org/1T> and https://x.org/7B plain.",
        "<span style='width: 100%'>text</span> <!-- 5B hidden -->",
        "0x1F is hex, 2 Kimi models, 3Bn is not a unit, {{ 48B }} substitution",
        "% a MyST comment with 5 B",
        "[ref]: https://example.org/48B",
    ],
)
def test_non_figures_are_ignored(text):
    assert figures(text) == []


def test_block_structure_is_respected():
    text = "\n".join(
        [
            "---",
            "title: 48B model",
            "---",  # front matter
            "```python",
            "x = 48  # B",
            "1T",
            "```",  # code fence
            "```{code-cell} ipython3",
            "64 tokens",
            "```",
            "```{note}",
            ":class: 5 experts",
            "Inside a note, 61 layers.",
            "```",
            ":::{figure} a.png",
            "---",
            "width: 80%",
            "---",
            "Caption with 7 heads",
            ":::",
            "$$",
            "64 K",
            "$$",
            "\\begin{equation}",
            "2 T",
            "\\end{equation}",
            "<!--",
            "12 B",
            "-->",
            "````{tab-set}",
            "```{tab-item} A",
            "Nested 9 experts",
            "```",
            "````",
            "After all blocks, 3 layers.",
        ]
    )
    found = [(f.line, f.text) for f in find_figures(text)]
    assert found == [(13, "61 layers"), (19, "7 heads"), (32, "9 experts"), (35, "3 layers")]


def test_lint_notes_reports_file_line_and_column(tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.md").write_text("# A\n\nfine\nIt has 1T weights.\n")
    (notes / "b.md").write_text("# B\n\nUses {claim}`x.y`.\n")
    (finding,) = lint_notes(tmp_path)
    assert (finding.file, finding.line, finding.code) == ("notes/a.md", 4, "hand-typed-figure")
    assert "column 8" in finding.message and "{claim}" in finding.fix


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="`$:{}[]()<>!-~#%*|\n 0123456789.,BKTx×abc", max_size=200))
def test_the_lint_never_fails_on_odd_markup(text):
    for figure in find_figures(text):
        assert figure.line >= 1 and figure.column >= 1 and figure.text[0].isdigit()


def test_lint_reads_the_markdown_cells_of_notebooks_not_their_code(tmp_path):
    import json

    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    cells = [
        {"cell_type": "markdown", "metadata": {}, "source": ["# N\n", "\n", "Fine, with `48B` in code.\n"]},
        {
            "cell_type": "code",
            "metadata": {},
            "source": ["x = '48B'  # 3 layers\n"],
            "outputs": [],
            "execution_count": None,
        },
        {"cell_type": "markdown", "metadata": {}, "source": ["A {claim}`x.y` role,\n", "then 27 layers.\n"]},
    ]
    (notebooks / "n.ipynb").write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    (finding,) = lint_notes(tmp_path)
    assert (finding.file, finding.line, finding.code) == ("notebooks/n.ipynb", 0, "hand-typed-figure")
    assert "'27 layers'" in finding.message and "cell 2, line 2, column 6" in finding.message

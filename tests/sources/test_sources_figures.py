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
    "text, expected, rule",
    [
        # numbers the book once typed by hand, each of them now a claim or glued from code
        ("ratio set to 0:1 (all MLA), 1:1, 3:1, 7:1 and 15:1", ["0:1", "1:1", "3:1", "7:1", "15:1"], "ratio"),
        ("1:1 matched it while keeping twice as many cache-growing layers", ["1:1", "twice as"], "ratio"),
        ("Against the MLA model at batch size 1, Kimi Linear", ["batch size 1"], "setting"),
        ("clearly faster from about a hundred thousand tokens on", ["a hundred thousand tokens"], "count"),
        ("every evaluation uses temperature 1.0 and", ["temperature 1.0"], "setting"),
        ("(SciCode uses its official temperature of zero)", ["temperature of zero"], "setting"),
        ("seven are MLA (full attention) and the other twenty are KDA", ["seven", "twenty"], "number word"),
        ("hybrid cache = 20 KDA states + 7 growing MLA caches", ["20 KDA states", "7 growing MLA caches"], "count"),
        ("the same 27-layer stack", ["27-layer"], "unit"),
        ("approaching 20/27 from below; the speedup tends to 27/7", ["20/27", "27/7"], "ratio"),
        ("never less than 7/27 of the all-MLA one", ["7/27"], "ratio"),
        ("32 query heads of width 512 + 64 attend", ["32 query heads", "width 512"], "count"),
        ("trains 2-layer models on MQAR", ["2-layer"], "unit"),
        ("three KDA layers, then one full-attention layer", ["three KDA layers"], "count"),
        ("a one-million-token context", ["one-million-token"], "count"),
    ],
)
def test_the_figures_a_reading_found_typed_by_hand(text, expected, rule):
    found = find_figures(text)
    assert [f.text for f in found] == expected
    assert found[0].rule == rule


@pytest.mark.parametrize(
    "text",
    [
        "One token at a time, one head, one value per token, one decay per head.",
        "Thousands of agents, hundreds of runs, a few dozen steps, thousands commas.",
        "Two passages give the gain; two regimes; three additions for stability.",
        "a rank-1 update, 2025-10-31, K2-Instruct-0905, a page at /a/3:1",
        "Write the words `zero` to `twenty`, or {glue:text}`layers` layers and {claim}`x.y` heads.",
    ],
)
def test_ordinary_words_are_not_figures(text):
    assert figures(text) == []


def test_table_values_are_figures_but_header_cells_are_not():
    text = "\n".join(
        [
            "| model | 0905 | layers |",
            "|---|:---:|---|",
            "| K2 | 61 | {claim}`k2.arch.layers` |",
            "| K3 | ~93 | 93 layers |",
            "| Kimi | K2.5 | 1.5% |",
        ]
    )
    found = [(f.line, f.text, f.rule) for f in find_figures(text)]
    assert found == [(3, "61", "table"), (4, "~93", "table"), (4, "93 layers", "unit"), (5, "1.5%", "unit")]


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
        line = text.splitlines()[figure.line - 1]
        assert figure.column >= 1 and line[figure.column - 1 :].startswith(figure.text) and figure.text.strip()


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


def test_lint_reads_notebook_markdown_with_the_new_rules(tmp_path):
    import json

    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    cells = [{"cell_type": "markdown", "metadata": {}, "source": ["* **MLA**: 32 query heads of width 512 + 64\n"]}]
    (notebooks / "n.ipynb").write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    findings = lint_notes(tmp_path)
    assert [f.message.split(" (")[0] for f in findings] == ["'32 query heads'", "'width 512'"]
    assert "(count)" in findings[0].message and "(setting)" in findings[1].message

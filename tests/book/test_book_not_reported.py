"""Every "not reported" cell of the comparison page is checked against the archived texts.

The page (notes/compare.md) marks a fact as *not reported* for a model when no archived text of
that model states it. Each row below gives a pattern that any statement of the row's fact would
match in a source's text (case-insensitive), and each column the archived texts of the model it
stands for (its own card, README, report or blog; a baseline column in another model's card is
that other model's statement, and is not read here). A "not reported" cell, or a ``-`` cell of
the spec table, whose model's texts match the row's pattern fails the test, so a cell cannot keep
saying *not reported* once its evidence is archived; a row or a column without an entry here fails
too, so every such cell is checked.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kdalib.sources.pages import prose_lines
from kdalib.sources.spec_rows import cell_tokens, split_row

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "notes" / "compare.md"
SNAPSHOTS = ROOT / "snapshots"

#: The archived texts of the model each column stands for.
COLUMNS = {
    "k1.5": ("kimi-k1.5-readme.md", "kimi-k1.5-tech-report.txt"),
    "K2": ("kimi-k2-readme.md", "kimi-k2-tech-report.txt"),
    "0905": ("kimi-k2-instruct-0905-card.md",),
    "K2 Th.": ("kimi-k2-thinking-card.md",),
    "Kimi Linear": ("kimi-linear-readme.md", "kimi-linear-tech-report.txt"),
    "K2.5": ("kimi-k2.5-readme.md", "kimi-k2.5-tech-blog-reshare.md"),
    "K2.6": ("kimi-k2.6-card.md",),
    "K3": ("kimi-k3-card.md",),
}

_NUMBER_NEAR = r"[^\n]{0,80}\d"
#: What any statement of the row's fact would match. A benchmark row's pattern names the
#: benchmark in its setting; an operational row's pattern asks for a figure, not a mention.
ROWS = {
    "layers": r"number of layers",
    "attention": r"attention mechanism",
    "routed experts": r"number of experts",
    "licence": r"licen[cs]e",
    "GSM8K": r"GSM-?8K",
    "MATH / MATH-500": r"\bMATH\b",
    "ARC-Challenge": r"\bARC\b",
    "HotpotQA, StrategyQA (multi-hop QA)": r"hotpot|strategyqa",
    "AIME 2025, no tools": r"AIME[ -]?(?:20)?25",
    "AIME 2025, with Python": r"AIME[ -]?(?:20)?25[^\n]{0,40}python|python[^\n]{0,40}AIME[ -]?(?:20)?25",
    "GPQA-Diamond, no tools": r"GPQA",
    "HLE text-only, no tools": r"HLE[^\n]{0,40}text|text[- ]only[^\n]{0,40}HLE|humanity's last exam",
    "HLE full set, no tools": r"HLE[^\n]{0,20}full|HLE-Full",
    "MMLU-Pro": r"MMLU-Pro",
    "HumanEval / MBPP": r"HumanEval|\bMBPP\b",
    "SWE-bench Verified, agentic, single attempt": r"SWE-bench Verified",
    "SWE-bench Verified, other settings": r"agentless|multiple attempts|SWE-bench Verified[^\n]{0,60}(?:multiple|pass@k)",
    "SWE-bench Multilingual, agentic": r"SWE-bench Multilingual",
    "LiveCodeBench v6, no tools": r"LiveCodeBench[^\n]{0,4}v6",
    "Terminal-Bench (any version)": r"Terminal[- ]?Bench",
    "SciCode": r"SciCode",
    "LongBench v2": r"LongBench",
    "MRCR (multi-round retrieval)": r"\bMRCR\b",
    "FRAMES (multi-document)": r"\bFRAMES\b",
    "AA-LCR": r"AA-LCR",
    "RULER": r"\bRULER\b",
    "Tau2-bench (retail / airline / telecom, Avg@4)": r"tau-?2|τ2|tau²|τ²",
    "ACEBench (function calling)": r"ACEBench",
    "HLE text-only, with tools": r"HLE[^\n]{0,60}(?:w/ ?tools|with tools)|(?:w/ ?tools|with tools)[^\n]{0,40}HLE",
    "BrowseComp": r"BrowseComp",
    "BrowseComp, Agent Swarm": r"BrowseComp[^\n]{0,80}swarm|swarm[^\n]{0,80}BrowseComp",
    "Sequential tool calls (vendor claim)": r"\d[\d,–-]*\s*(?:sequential )?tool calls",
    "OSWorld-Verified": r"OSWorld",
    "Released weight format": r"block-fp8|\bfp8\b|\bint4\b|mxfp4|compressed-tensors",
    "Speed claim (condition)": r"\d(?:\.\d+)?\s?(?:x|×)\s?(?:faster|speed|generation|throughput)|speed[- ]?up of",
    "Memory claim (condition)": r"(?:memory|KV[- ]cache)[^\n]{0,60}\d+(?:\.\d+)?\s?%|\d+(?:\.\d+)?\s?%[^\n]{0,40}(?:memory|KV[- ]cache)",
    "Recommended temperature": r"recommend[^\n]{0,80}temperature|temperature[^\n]{0,40}recommend",
    "Run-to-run spread": r"±|\bstd\b|standard deviation",
    "Latency, cost, rate limits": r"\d\s?(?:ms|tokens/s|tokens per second)\b|\$\s?\d[\d.]*\s*(?:/|per)|rate limit|pricing",
}

#: Passages of a model's texts that match a row's pattern but state another model's figure or a
#: figure's axis, with the reason; they are left out before the search.
OTHERS = {
    "K2 Th.": (r"3\.2 The GPT-5 and Grok-4 on the HLE full set[^\n]*",),  # the baselines' full-set scores
    "Kimi Linear": (r"indexer implemented with low-precision fp8",),  # DeepSeek's sparse attention, related work
    "k1.5": (r"(?m)^GPQA$",),  # panel titles of the accuracy-against-length figures; no GPQA score is given
}

NOT_REPORTED = re.compile(r"^\s*not reported\b", re.IGNORECASE)


def _texts(column: str) -> str:
    text = "\n".join((SNAPSHOTS / name).read_text(encoding="utf-8") for name in COLUMNS[column])
    for passage in OTHERS.get(column, ()):
        text, count = re.subn(passage, " ", text)
        assert count, f"{column}: the passage {passage!r} left out of its texts is no longer there"
    return text


def _cells() -> list[tuple[int, str, str]]:
    """(line, row label, column) of every cell of compare.md that says the fact is not reported."""
    found = []
    text = PAGE.read_text(encoding="utf-8")
    lines = text.splitlines()
    columns: list[str] = []
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if stripped.startswith(":columns:"):
            spec_columns = [c.strip() for c in stripped[len(":columns:") :].split("|")]
            for row_number in range(number, len(lines)):
                row = lines[row_number]
                if row.startswith("```"):
                    break
                cells = split_row(row)
                found += [
                    (row_number + 1, cells[0], spec_columns[i])
                    for i, cell in enumerate(cells[1:])
                    if not cell_tokens(cell)
                ]
    for number, line in prose_lines(text):
        if not line.startswith("|") or set(line) <= set("|-: "):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] in ("Benchmark (setting)", "Item"):
            columns = cells[1:]
            continue
        found += [(number, cells[0], columns[i]) for i, cell in enumerate(cells[1:]) if NOT_REPORTED.match(cell)]
    return found


CELLS = _cells()


def test_the_page_has_not_reported_cells_to_check():
    assert len(CELLS) > 50
    assert {column for _, _, column in CELLS} <= set(COLUMNS), "a column has no archived texts listed here"


@pytest.mark.parametrize("line, row, column", CELLS, ids=[f"L{n}-{r[:24]}-{c}" for n, r, c in CELLS])
def test_a_not_reported_cell_is_absent_from_its_models_archived_texts(line, row, column):
    assert row in ROWS, f"compare.md:{line}: row {row!r} has no pattern in this test"
    match = re.search(ROWS[row], _texts(column), re.IGNORECASE)
    assert match is None, (
        f"compare.md:{line}: {row!r} is 'not reported' for {column}, but its archived text says "
        f"{match.group(0)!r}: cite a claim there instead"
    )


@pytest.mark.parametrize("column", sorted(COLUMNS))
def test_every_listed_text_is_archived(column):
    assert _texts(column)

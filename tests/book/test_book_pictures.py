"""The pictures drawn from claims: every mark links to its claim; bad input warns at the line."""

from __future__ import annotations

import datetime as dt
import html
import re

import pytest
from sphinx.errors import SphinxWarning

from kdalib.book.pictures import PictureError, claim_date
from kdalib.sources.model import Claim

EXTRA = """
  - id: m.release
    subject: Model M
    property: release date
    value: "2025-07-11"
    display: "July 11, 2025"
    source: card
    status: unverified
  - id: m.report.arxiv
    subject: Model M
    property: arXiv identifier of the report
    value: "2507.20534"
    display: "2507.20534"
    source: report
    status: unverified
"""


def _claim(value):
    return Claim(id="x.y", subject="X", status="verified", source="s", value=value, display=str(value))


def test_claim_dates():
    assert claim_date(_claim("2025-07-11")) == (dt.date(2025, 7, 11), "day")
    assert claim_date(_claim("2026-01")) == (dt.date(2026, 1, 15), "month")
    assert claim_date(_claim("2501.12599")) == (dt.date(2025, 1, 15), "arXiv first version")
    with pytest.raises(PictureError, match="x.y: value 'soon' is not a date"):
        claim_date(_claim("soon"))


def _links(page: str, figure_class: str = "kdalib-figure") -> list[str]:
    figure = page.split(f'class="{figure_class}', 1)[1].split("</svg>", 1)[0]
    return re.findall(r'<a href="([^"]+)">', figure)


def test_timeline_marks_link_to_their_claims(book):
    book.write("sources.yaml", (book.src / "sources.yaml").read_text() + EXTRA)
    book.write(
        "index.md",
        (book.src / "index.md").read_text() + "\n```{claims-timeline}\nModel M: m.release m.report.arxiv\n```\n",
    )
    assert book.build(warningiserror=True) == ""
    page = html.unescape(book.html("index"))
    assert _links(page) == ["notes/claims.html#claim-m.release", "notes/claims.html#claim-m.report.arxiv"]
    assert "<title>m.release: July 11, 2025 (unverified)</title>" in page
    assert ">2025</text>" in page and ">2026</text>" in page and ">Model M</text>" in page


def _scored(claim_id, subject, name, setting, value):
    return f"""
  - id: {claim_id}
    subject: {subject}
    benchmark: {{name: "{name}", metric: "accuracy (%)", setting: "{setting}", tools: false}}
    value: {value}
    unit: "%"
    display: "{value}"
    source: card
    status: unverified
"""


def test_progression_and_heatmap(book):
    extra = (
        _scored("m.quiz", "Model M", "Quiz", "thinking; 8 shots", 71.5)
        + _scored("n.quiz", "Model N", "Quiz", "no thinking", 80.25)
        + _scored("m.red.basic", "Model M", "Red team: Harmful", "Basic attack strategy; manual review", 98.04)
        + _scored("m.red.crescendo", "Model M", "Red team: Harmful", "Crescendo attack strategy; manual review", 40.5)
    )
    book.write("sources.yaml", (book.src / "sources.yaml").read_text() + extra)
    book.write(
        "status.md",
        (book.src / "status.md").read_text()
        + "\n```{claims-progression}\n:subjects: Model M; Model N\n:min-shared: 2\n```\n"
        + "\n```{claims-heatmap}\n:subject: Model M\n:benchmark-prefix: Red team:\n```\n",
    )
    assert book.build(warningiserror=True) == ""
    page = html.unescape(book.html("status"))
    assert _links(page) == ["notes/claims.html#claim-m.quiz", "notes/claims.html#claim-n.quiz"]
    assert ">Quiz</text>" in page and "thinking; no thinking" in page  # both settings, first parts
    heatmap = page.split('class="kdalib-figure', 2)[2].split("</svg>", 1)[0]
    assert re.findall(r'<a href="([^"]+)">', heatmap) == [
        "notes/claims.html#claim-m.red.basic",
        "notes/claims.html#claim-m.red.crescendo",
    ]
    assert ">Harmful</text>" in heatmap and ">Basic</text>" in heatmap and ">Crescendo</text>" in heatmap
    assert ">98.04</text>" in heatmap and 'fill="#ffffff">98.04' in heatmap  # light text on dark green
    assert 'fill="#d22730"' in heatmap and "red at 40 " in page  # 40.5, the lowest cell, is red


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("```{claims-timeline}\nModel M: m.nope\n```", "no claim 'm.nope'"),
        ("```{claims-timeline}\nModel M m.context\n```", "expected 'Model label: claim.id ...'"),
        ("```{claims-timeline}\nModel M: m.context\n```", "m.context: value '128' is not a date"),
        ("```{claims-progression}\n:subjects: Model M; Model Q\n```", "no claims about 'Model Q'"),
        ("```{claims-heatmap}\n:subject: Model M\n:benchmark-prefix: Nope\n```", "no claims about 'Model M'"),
        ("```{claims-progression}\n:subjects: Model M\n```", "needs at least two subjects"),
    ],
)
def test_bad_input_fails_the_strict_build_at_the_directive(book, text, message):
    book.write("index.md", (book.src / "index.md").read_text() + "\nSome text.\n\n" + text + "\n")
    with pytest.raises(SphinxWarning) as info:
        book.build(warningiserror=True)
    assert "index.md:13" in str(info.value) and message in str(info.value)

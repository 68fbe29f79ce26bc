"""One reading of numbers for every comparison: a quote in its snapshot, the display in the quote
and the value in the display all see the same number boundaries."""

from __future__ import annotations

import pytest
from sources_fixtures import base_sources, claim, sha

from kdalib.sources.loader import load_text
from kdalib.sources.numbers import numbers_written, value_problem
from kdalib.sources.quotes import display_in_quote, find_quote
from kdalib.sources.review import render_markdown


def claim_errors(report, claim_id):
    return [f.code for f in report.errors if f.item == claim_id]


def with_report_text(ws, text: str) -> list[dict]:
    """Sources whose 'report' snapshot holds ``text`` (stored and hashed)."""
    (ws.snapshots / "report.txt").write_text(text, encoding="utf-8")
    sources = base_sources()
    sources[1]["snapshot"] = {"file": "report.txt", "sha256": sha(text)}
    return sources


# ---- a quote never starts or ends inside a number of the snapshot ----------------------------


@pytest.mark.parametrize(
    ("quote", "display", "value"),
    [
        ("5.8</strong></ins></td>", "5.8", 5.8),  # the snapshot says 65.8
        ("28K", "28K", 28),  # inside 128K
        ("2B", "2B", 2),  # inside 32B
        ("5.5T tokens", "5.5T", 5.5),  # inside 15.5T
        ("65", "65", 65),  # ends inside 65.8
    ],
)
def test_a_quote_cut_from_inside_a_number_does_not_verify(ws, quote, display, value):
    text = "| Model | Score |\n<td><ins><strong>65.8</strong></ins></td>\nContext 128K, 32B active, 15.5T tokens\n"
    sources = with_report_text(ws, text)
    ws.write(sources=sources, claims=[claim("m.x", source="report", quote=quote, display=display, value=value)])
    report = ws.verify()
    assert claim_errors(report, "m.x") == ["quote-not-found"]
    assert "m.x" not in report.matches
    assert "quote found" not in render_markdown(report)


def test_a_quote_that_holds_whole_numbers_still_verifies(ws):
    text = "<td><ins><strong>65.8</strong></ins></td> and 128K tokens.\n"
    sources = with_report_text(ws, text)
    ws.write(sources=sources, claims=[claim("m.x", source="report", quote="65.8</strong>", display="65.8", value=65.8)])
    report = ws.verify()
    assert claim_errors(report, "m.x") == [] and report.matches["m.x"].line == 1


def test_a_later_whole_occurrence_is_found_after_a_cut_one():
    match = find_quote("scores 65.8 and then 5.8 alone", "5.8")
    assert match is not None and match.span == "5.8" and match.start == 21


# ---- the whitespace-insensitive match never joins numbers across punctuation -----------------


@pytest.mark.parametrize(
    ("snapshot", "quote"),
    [
        ("sizes from 1. 0 to 33B", "1.0 to 33B"),
        ("rate 3.\n5 per step", "3.5 per step"),
        ("window 1, 024 tokens", "1,024 tokens"),
        ("window 1,024 tokens", "1, 024 tokens"),
        ("lr 2 e-4 here", "2e-4 here"),
    ],
)
def test_whitespace_never_joins_two_numbers(snapshot, quote):
    assert find_quote(snapshot, quote) is None


def test_a_claim_of_one_point_zero_does_not_verify_against_a_numbered_list(ws):
    sources = with_report_text(ws, "Models:\n1. 0 to 33B parameters\n")
    ws.write(sources=sources, claims=[claim("m.x", source="report", quote="1.0 to 33B", display="1.0", value=1.0)])
    assert claim_errors(ws.verify(), "m.x") == ["quote-not-found"]


def test_whitespace_inside_words_is_still_forgiven():
    assert find_quote("Diag(αt ) with 1 T params", "Diag(αt) with 1T params") is not None
    assert find_quote("2 56 heads", "2 56 heads") is not None


# ---- the display in the quote, by the same rule ----------------------------------------------


@pytest.mark.parametrize(
    ("display", "quote"),
    [("1", "lr 1e-3"), ("10", "10⁻⁶ of the tokens"), ("3", "3e5 steps"), ("1.0", "1. 0 to 33B")],
)
def test_a_display_is_never_a_piece_of_a_number_of_its_quote(display, quote):
    assert display_in_quote(display, quote) is None


# ---- the value a reader sees ------------------------------------------------------------------


def test_an_invisible_character_in_display_is_refused():
    doc = load_text(_one_claim('value: 8\n    display: "65.\\u200b8"'))
    assert [f.code for f in doc.findings] == ["bad-display"]
    assert "invisible" in doc.findings[0].message


@pytest.mark.parametrize(("value", "display"), [('"99"', "1T"), ('"9.8T"', "9.9T"), ('"1.5"', "15")])
def test_a_text_value_that_reads_as_a_number_must_be_written_by_display(value, display):
    doc = load_text(_one_claim(f'value: {value}\n    display: "{display}"'))
    assert [f.code for f in doc.findings] == ["value-not-in-display"]


@pytest.mark.parametrize(
    ("value", "display"),
    [('"2412.19437"', "2412.19437"), ('"9.9T"', "9.9T"), ('"Kimi K2"', "Kimi K2"), ('"2025-07-11"', "July 11, 2025")],
)
def test_text_values_that_agree_or_are_not_numbers_pass(value, display):
    assert load_text(_one_claim(f'value: {value}\n    display: "{display}"')).findings == []


def test_numbers_written_reads_the_normalised_display_by_the_shared_tokens():
    assert numbers_written("65.8") == [65.8]
    assert numbers_written("１２８K") == [128.0]  # full-width digits read as the reader reads them
    assert numbers_written("10⁶ tokens") == [1e6]
    assert numbers_written("2e-4") == [2e-4]
    assert numbers_written("1.2.3") == []  # a version, not a number
    assert value_problem(1, "1e-3") is not None
    assert value_problem(3, "3 billion") is None and value_problem(3e9, "3 billion") is None


def _one_claim(fields: str) -> str:
    return f"""\
sources:
  - id: card
    title: Card
    publisher: Lab
    kind: model_card
    url: https://example.org/m
claims:
  - id: m.x
    subject: Model M
    property: size
    {fields}
    source: card
    status: unverified
"""

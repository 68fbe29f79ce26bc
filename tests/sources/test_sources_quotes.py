"""Quote matching: normalisation, the whitespace-insensitive fallback and display-in-quote."""

from __future__ import annotations

import string
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sources_fixtures import REPORT

from kdalib.sources import quotes
from kdalib.sources.numerals import NumeralIndex
from kdalib.sources.quotes import (
    EXACT,
    WHITESPACE_INSENSITIVE,
    NormalizedText,
    compact,
    display_in_quote,
    find_quote,
    normalize,
)


def test_normalize_applies_nfkc_and_collapses_whitespace():
    assert normalize("ﬁ\u00a0\u00a0１Ｔ\n\n\tparams\u200b ") == "fi 1T params"
    assert compact(" a \f b\n c ") == "abc"


def test_exact_match_reports_the_original_span_and_line():
    match = find_quote(REPORT, "1.04T total parameters and 32.6B activated")
    assert match is not None and match.kind == EXACT
    assert match.line == 2
    assert REPORT[match.start : match.end] == match.span == "1.04T total parameters and\n32.6B activated"
    assert match.normalized == "1.04T total parameters and 32.6B activated"


def test_ligatures_in_the_snapshot_match_plain_letters():
    match = find_quote(REPORT, "efficient kernels")
    assert match is not None and match.span == "eﬃcient kernels"


def test_whitespace_insensitive_fallback_covers_stray_pdf_spaces():
    match = find_quote(REPORT, "Diag(αt) with")
    assert match is not None and match.kind == WHITESPACE_INSENSITIVE
    assert match.span == "Diag(αt ) with"


def test_column_by_column_tables_match_as_extracted():
    assert find_quote(REPORT, "MMLU GPQA 87.8 75.1") is not None
    assert find_quote(REPORT, "MMLU 87.8") is None


def test_matching_is_case_sensitive_and_rejects_changed_digits():
    assert find_quote(REPORT, "1.04t total") is None
    assert find_quote(REPORT, "1.05T total") is None
    assert find_quote(REPORT, "   ") is None


def test_decomposed_accents_match_composed_quotes():
    match = find_quote("un cafe\u0301 noir", "café noir")
    assert match is not None and match.span == "cafe\u0301 noir"


def test_display_must_occur_inside_the_quote():
    assert display_in_quote("1T", "Total Parameters | 1T") == EXACT
    assert display_in_quote("32.6 B", "32.6B activated") == WHITESPACE_INSENSITIVE
    assert display_in_quote("4T", "Total Parameters | 1.04T") is None
    assert display_in_quote("1.0", "Total Parameters | 1.04T") is None
    assert display_in_quote("32", "1,320 tokens") is None
    assert display_in_quote("128K", "(128K context)") == EXACT
    assert display_in_quote("2T", "Total Parameters | 1T") is None
    assert display_in_quote("", "anything") is None


_ALPHABET = string.ascii_letters + string.digits + " \n\t.|%" + "ﬁﬃ\u00a0１αβ"


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=_ALPHABET, min_size=1, max_size=200), st.data())
def test_every_substring_that_cuts_no_number_is_found(text, data):
    start = data.draw(st.integers(0, len(text) - 1))
    end = data.draw(st.integers(start + 1, len(text)))
    piece = text[start:end]
    match = NormalizedText(text).find(piece)
    index = NumeralIndex(text)
    if index.cuts(start) or index.cuts(end):
        assert match is None or match.start != start or match.end != end
    elif normalize(piece):
        assert match is not None
        assert compact(match.span) == compact(piece) or compact(piece) in compact(match.span)
    else:
        assert match is None


# ---- no normalisation joins or creates digits ------------------------------------------


@pytest.mark.parametrize(
    "snapshot, quote",
    [
        ("a budget of 10⁶ tokens", "10 6"),  # superscript: NFKC would make it 106
        ("a budget of 10⁶ tokens", "106"),
        ("H₂O and x₁₀", "H2O"),  # subscripts
        ("about ½ of it", "1⁄2"),  # vulgar fraction
        ("step ① then ②", "step 1"),  # circled digits
        ("item ⑴", "(1)"),  # parenthesised digit
        ("a quote 2 56 here", "256"),  # whitespace between digits is never removed
        ("a quote 2\n56 here", "256"),
        ("2\u200b56", "256"),  # a zero-width space separates digits like a space
        ("1,0 24", "1,024"),
    ],
)
def test_normalisation_never_joins_or_creates_digits(snapshot, quote):
    assert find_quote(snapshot, quote) is None


@pytest.mark.parametrize(
    "snapshot, quote, kind",
    [
        ("a budget of 10⁶ tokens", "10⁶ tokens", EXACT),
        ("about ½ of it", "about ½", EXACT),
        ("１２８Ｋ context", "128K context", EXACT),  # full-width digits are digits already
        ("a quote 2 56 here", "2 56", EXACT),
        ("a quote 2\n56 here", "quote 2 56", EXACT),
        ("Diag(αt ) with 2 56", "Diag(αt) with 2 56", WHITESPACE_INSENSITIVE),
        ("x 10 ⁶ y", "10 ⁶", EXACT),
    ],
)
def test_digits_keep_their_form_and_spacing(snapshot, quote, kind):
    match = find_quote(snapshot, quote)
    assert match is not None and match.kind == kind


def test_display_keeps_superscripts_apart():
    assert display_in_quote("6¹", "61 experts") is None
    assert display_in_quote("61", "6¹ experts") is None
    assert display_in_quote("10⁶", "about 10⁶ tokens") == EXACT
    assert normalize("10⁶ ½ ① ₂ １Ｔ") == "10⁶ ½ ① ₂ 1T"
    assert compact("2 56 x ⁶ 7") == "2 56x⁶ 7"


def test_block_index_agrees_with_the_character_map(monkeypatch):
    monkeypatch.setattr(quotes, "BLOCK_CHARS", 8)
    raw = "Total  Parameters | 1T\nDiag(αt ) e\u0301ﬃcient 10⁶ and 2 56\u00a0tokens " * 5
    text = NormalizedText(raw)
    assert len(text._blocks) > 5
    assert text.text == normalize(raw) + " " and text.compact == compact(raw)
    for needle in ("1T Diag", "éfficient 10⁶", "Diag(αt) éfficient", "2 56 tokens"):
        match = text.find(needle)
        assert match is not None and compact(match.span) == compact(needle)


def test_a_large_snapshot_is_indexed_in_bounded_time():
    line = "| Total Parameters | 1T | Diag(αt ) eﬃcient 10⁶ — tokens\n"
    raw = line * (4 * 1024 * 1024 // len(line))  # 4 MiB, non-ASCII on every line
    started = time.perf_counter()
    text = NormalizedText(raw)
    assert time.perf_counter() - started < 6.0
    assert text._maps == {}  # no per-character structure until a quote is found
    match = text.find("1T | Diag(αt) efficient")
    assert match is not None and match.line == 1
    assert len(text._maps) == 1

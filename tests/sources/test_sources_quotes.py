"""Quote matching: normalisation, the whitespace-insensitive fallback and display-in-quote."""

from __future__ import annotations

import string

from hypothesis import given, settings
from hypothesis import strategies as st
from sources_fixtures import REPORT

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
    assert REPORT[match.start:match.end] == match.span == "1.04T total parameters and\n32.6B activated"
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
def test_every_substring_of_a_text_is_found_in_it(text, data):
    start = data.draw(st.integers(0, len(text) - 1))
    end = data.draw(st.integers(start + 1, len(text)))
    piece = text[start:end]
    match = NormalizedText(text).find(piece)
    if normalize(piece):
        assert match is not None
        assert compact(match.span) == compact(piece) or compact(piece) in compact(match.span)
    else:
        assert match is None

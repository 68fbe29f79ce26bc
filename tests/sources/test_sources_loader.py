"""Loading sources.yaml: line numbers, unusable input, and a hypothesis fuzz of the loader."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sources_fixtures import base_claims, base_sources, dump

from kdalib.sources import loader
from kdalib.sources.loader import LoadError, load_document, load_text
from kdalib.sources.schema import BENCHMARK_KEYS, CLAIM_KEYS, CLAIM_STATUSES, SOURCE_KEYS

TEXT = """\
# comment
sources:
  - id: card
    title: Card
    publisher: Lab
    kind: model_card
    url: https://example.org/
claims:
  - id: a.b
    subject: M
    property: size
    value: 1
    display: 1T
    source: card
    status: unverified
    checked: 2026-11-28
"""


def test_a_valid_file_loads_with_line_numbers():
    doc = load_text(TEXT, "x.yaml")
    assert doc.findings == []
    assert doc.sources["card"].line == 3
    claim = doc.claims["a.b"]
    assert claim.line == 9 and claim.line_of("display") == 13 and claim.line_of("status") == 15
    assert claim.checked == dt.date(2026, 11, 28)
    assert claim.value == 1 and claim.display == "1T"


def test_dict_built_fixture_is_clean(ws):
    ws.write()
    doc = load_document(ws.sources_path)
    assert doc.findings == []
    assert list(doc.claims) == [c["id"] for c in base_claims()]
    assert list(doc.sources) == [s["id"] for s in base_sources()]


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("sources:\n  - id: a\n    title: [unclosed\nclaims: []\n", 4, "YAML error"),
        ("sources: []\nclaims: []\nsources: []\n", 3, "duplicate key"),
        ("", 1, "empty"),
        ("- just\n- a list\n", 1, "top level is a list"),
        ("plain string\n", 1, "top level is a string"),
        ("sources: [\n", 2, "YAML error"),
    ],
)
def test_unusable_input_raises_load_error_with_a_line(text, line, words):
    with pytest.raises(LoadError) as info:
        load_text(text, "bad.yaml")
    assert info.value.line == line
    assert words in str(info.value) and str(info.value).startswith(f"bad.yaml:{line}:")


def test_missing_and_non_utf8_files_are_load_errors(tmp_path):
    with pytest.raises(LoadError, match="file not found"):
        load_document(tmp_path / "nope.yaml")
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("title: caf\xe9\n".encode("latin-1"))
    with pytest.raises(LoadError, match="not UTF-8"):
        load_document(bad)


def test_bad_dates_are_findings_not_exceptions():
    doc = load_text(TEXT.replace("2026-11-28", "2026-13-45"))
    (finding,) = doc.findings
    assert (finding.code, finding.line, finding.item) == ("bad-checked", 16, "a.b")
    assert "no such calendar day" in finding.message


def test_round_trip_loader_keeps_real_dates(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(TEXT)
    _yaml, data = loader.load_round_trip(path)
    assert data["claims"][0]["checked"] == dt.date(2026, 11, 28)


def _assert_clean_outcome(text: str) -> None:
    try:
        doc = load_text(text, "fuzz.yaml")
    except LoadError as err:
        assert str(err).startswith("fuzz.yaml")
        return
    for finding in doc.findings:
        assert finding.file == "fuzz.yaml" and finding.line >= 0 and finding.message


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_fuzz_arbitrary_text_never_raises_anything_else(text):
    _assert_clean_outcome(text)


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.dates().map(str),
    st.sampled_from(["https://x.org", "ftp://x", *CLAIM_STATUSES]),
)
_keys = st.sampled_from(sorted(set(CLAIM_KEYS) | set(SOURCE_KEYS) | set(BENCHMARK_KEYS) | {"file", "sha256", "?"}))
_values = st.recursive(
    _scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=5), max_leaves=12
)
_entry = st.dictionaries(_keys, _values, max_size=10)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_entry, max_size=3), st.lists(_entry, max_size=4), st.sampled_from(["sources", "claims", "x"]))
def test_fuzz_schema_shaped_documents_give_findings_not_tracebacks(sources, claims, extra):
    text = dump({"sources": sources, "claims": claims, extra: sources[:1]})
    _assert_clean_outcome(text)


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="[]{}:-'\"&*!|>#\n ab1", max_size=80))
def test_fuzz_yaml_punctuation(text):
    _assert_clean_outcome(text)

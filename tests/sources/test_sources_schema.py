"""Schema rules: every bad input gives one finding with file, line, id and what was expected."""

from __future__ import annotations

import pytest
from sources_fixtures import base_claims, base_sources, claim, codes

from kdalib.sources.loader import load_document, load_text


def findings_for(ws, sources=None, claims=None):
    ws.write(sources=sources, claims=claims)
    return load_document(ws.sources_path).findings


def only(findings, code):
    picked = [f for f in findings if f.code == code]
    assert picked, f"no {code} in {[f.format() for f in findings]}"
    return picked[0]


def test_duplicate_claim_and_source_ids(ws):
    claims = base_claims() + [claim("m.params.total", display="1T")]
    sources = base_sources() + [dict(base_sources()[0])]
    findings = findings_for(ws, sources, claims)
    dup_claim = only(findings, "duplicate-claim-id")
    assert dup_claim.item == "m.params.total" and "already used on line" in dup_claim.message
    assert only(findings, "duplicate-source-id").item == "card"


def test_unknown_source(ws):
    finding = only(findings_for(ws, claims=[claim("m.x", source="nowhere")]), "unknown-source")
    assert finding.item == "m.x" and "'nowhere'" in finding.message and finding.line > 0


@pytest.mark.parametrize(
    "field, bad, code",
    [
        ("status", "probably", "bad-status"),
        ("checked", "2026-02-30", "bad-checked"),
        ("checked", "28/11/2026", "bad-checked"),
        ("reported_by", "someone", "bad-reported-by"),
        ("display", 1.5, "bad-display"),
        ("value", True, "bad-value"),
        ("conflicts_with", 3, "bad-conflicts-with"),
        ("benchmark", "MMLU", "bad-benchmark"),
        ("reproduced_by", "nb.json", "bad-reproduced-by"),
        ("colour", "red", "unknown-key"),
    ],
)
def test_bad_claim_fields_name_the_line_and_the_expectation(ws, field, bad, code):
    findings = findings_for(ws, claims=[claim("m.bad", **{field: bad})])
    finding = only(findings, code)
    assert finding.item == "m.bad" and finding.line > 1
    assert str(ws.sources_path) == finding.file
    assert "expected" in finding.message or "use one of" in finding.fix


@pytest.mark.parametrize("url", ["ftp://example.org/x", "file:///etc/passwd", "javascript:alert(1)", "example.org"])
def test_non_http_schemes_are_rejected(ws, url):
    sources = base_sources()
    sources[0]["url"] = url
    finding = only(findings_for(ws, sources), "bad-url")
    assert finding.item == "card" and "https" in finding.message


@pytest.mark.parametrize(
    "snapshot, code",
    [
        ({"file": "card.md", "sha256": "abc"}, "bad-sha256"),
        ({"file": "../etc/passwd", "sha256": "0" * 64}, "bad-file"),
        ({"file": "card.md"}, "missing-key"),
        ("card.md", "bad-snapshot"),
    ],
)
def test_bad_snapshot_entries(ws, snapshot, code):
    sources = base_sources()
    sources[0]["snapshot"] = snapshot
    assert only(findings_for(ws, sources), code).item == "card"


def test_missing_required_keys_and_kinds(ws):
    sources = base_sources()
    del sources[0]["title"]
    sources[1]["kind"] = "rumour"
    findings = findings_for(ws, sources)
    assert only(findings, "missing-key").item == "card" and "'title'" in only(findings, "missing-key").message
    assert only(findings, "bad-kind").item == "report"


def test_seed_sources_may_have_no_url(ws):
    sources = base_sources()
    sources[0]["kind"] = "seed"
    del sources[0]["url"]
    claims = [claim(c["id"], verdict="confirmed") if c["source"] == "card" else c for c in base_claims()]
    assert findings_for(ws, sources, claims) == []


def test_property_xor_benchmark(ws):
    both = claim("m.both", benchmark={"name": "MMLU"})
    neither = claim("m.neither", property=None)
    findings = findings_for(ws, claims=[both, neither])
    assert [f.item for f in findings if f.code == "property-or-benchmark"] == ["m.both", "m.neither"]


def test_benchmark_keys_and_types(ws):
    bench = claim("m.mmlu", property=None, benchmark={"name": "MMLU", "tools": "yes", "shots": "5-shot", "seed": 1})
    findings = findings_for(ws, claims=[bench])
    assert sorted(codes(findings)) == ["bad-tools", "unknown-key"]


@pytest.mark.parametrize(
    "status, removed, code",
    [
        ("verified", "quote", "verified-needs-quote"),
        ("contradicted", None, "contradicted-needs-conflicts-with"),
        ("reproduced", None, "reproduced-needs-reproduced-by"),
        ("refuted", None, "refuted-needs-notes"),
    ],
)
def test_statuses_need_their_fields(ws, status, removed, code):
    entry = claim("m.s", status=status)
    if removed:
        del entry[removed]
    assert only(findings_for(ws, claims=[entry]), code).item == "m.s"


def test_relations_may_live_in_notes_but_not_twice(ws):
    a = claim("m.a", notes={"conflicts_with": ["m.b"], "text": "rounded"})
    b = claim("m.b", conflicts_with="m.a", notes={"conflicts_with": ["m.a"]})
    ws.write(claims=[a, b])
    doc = load_document(ws.sources_path)
    assert doc.claims["m.a"].conflicts_with == ["m.b"] and doc.claims["m.a"].text_notes == "rounded"
    assert codes(doc.findings) == ["duplicate-key"]


def test_relations_must_name_existing_claims(ws):
    findings = findings_for(ws, claims=[claim("m.a", supersedes=["m.ghost"]), claim("m.b", evidence="m.b")])
    assert only(findings, "unknown-claim").item == "m.a"
    assert only(findings, "self-reference").item == "m.b"


def test_aliases_resolve_and_must_be_unique(ws):
    ws.write(claims=[claim("m.new", aliases=["m.old"]), claim("m.other", aliases=["m.old"], display="1T")])
    doc = load_document(ws.sources_path)
    assert doc.resolve_claim("m.old").id == "m.new"
    assert codes(doc.findings) == ["duplicate-alias"]


def test_subjects_list_restricts_subjects():
    text = (
        "subjects: [Model M]\nsources: []\nclaims:\n  - {id: a.b, subject: Model N, property: p, value: 1,"
        " display: '1', source: s, status: unverified}\n"
    )
    findings = load_text(text).findings
    assert sorted(codes(findings)) == ["unknown-source", "unknown-subject"]


def test_top_level_shape_errors():
    findings = load_text("sources: {a: 1}\nextra: 2\n").findings
    assert sorted(codes(findings)) == ["bad-sources", "missing-key", "unknown-key"]


def test_finding_format_is_file_line_severity_code_id():
    (finding,) = load_text("sources: []\nclaims: []\nextra: 1\n", "s.yaml").findings
    assert finding.format().startswith("s.yaml:3: error: [unknown-key] ")


# ---- value and display agree ------------------------------------------------------------


@pytest.mark.parametrize(
    "value, display, ok",
    [
        (1, "1T", True),
        (99, "61", False),  # the display and quote say 61, value says 99
        (61, "6¹", False),  # a superscript is not a digit of the number
        (6, "6¹", True),
        (1000000, "10⁶", True),
        (1000000, "10^6", True),
        (106, "10⁶", False),
        (262144, "262,144", True),
        (0.0002, "2e-4", True),
        (92.5, "92.50", True),
        (3, "3 billion", True),
        (3e9, "3 billion", True),
        (1000000, "1-million-token", True),
        (5, "five", True),
        (2.5, "K2.5", False),
        (15, "about fifteen", True),
        ("Diag(αt)", "anything", True),  # text values are not checked
    ],
)
def test_numeric_value_must_be_a_number_the_display_writes(ws, value, display, ok):
    claims = [claim("m.x", value=value, display=display, status="unverified", quote=None)]
    found = [f for f in findings_for(ws, claims=claims) if f.code == "value-not-in-display"]
    assert (found == []) == ok, [f.format() for f in found]
    if not ok:
        assert found[0].item == "m.x" and found[0].line > 0 and repr(display) in found[0].message


def test_numbers_written_never_computes_huge_powers():
    from kdalib.sources.numbers import numbers_written

    assert numbers_written("10^999999 and 9" + "9" * 5000 + "^99") == []


def _seed_source() -> dict:
    return {"id": "note", "title": "Starting note", "publisher": "requester", "kind": "seed"}


@pytest.mark.parametrize(
    "fields, code",
    [
        ({}, "seed-needs-verdict"),
        ({"verdict": "partly"}, "bad-verdict"),
        ({"verdict": "wrong"}, "verdict-status-mismatch"),
        ({"verdict": "confirmed", "status": "refuted", "notes": "evidence"}, "verdict-status-mismatch"),
    ],
)
def test_seed_claims_carry_a_verdict_that_agrees_with_the_status(ws, fields, code):
    seed = claim("seed.x", **{"source": "note", "quote": None, "status": "unverified", **fields})
    findings = findings_for(ws, base_sources() + [_seed_source()], base_claims() + [seed])
    finding = only(findings, code)
    assert finding.item == "seed.x" and finding.line > 1
    assert [f.code for f in findings] == [code]


def test_a_verdict_on_a_claim_of_another_source_is_an_error(ws):
    findings = findings_for(ws, claims=base_claims() + [claim("m.judged", verdict="confirmed")])
    assert only(findings, "verdict-not-seed").item == "m.judged"


def test_seed_verdicts_load(ws):
    claims = base_claims() + [
        claim("seed.ok", source="note", quote=None, status="unverified", verdict="misleading"),
        claim("seed.bad", source="note", quote=None, status="refuted", verdict="wrong", notes="evidence"),
    ]
    ws.write(sources=base_sources() + [_seed_source()], claims=claims)
    doc = load_document(ws.sources_path)
    assert doc.findings == []
    assert doc.claims["seed.ok"].verdict == "misleading" and doc.claims["m.params.total"].verdict is None


# ---- numbers that do not fit a float -------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "words"),
    [("value: 1" + "0" * 400, "value"), ("value: .inf", "value"), ("value: -.inf", "value")],
)
def test_values_too_large_for_a_float_are_findings(field, words):
    text = f"""\
sources: []
claims:
  - id: m.x
    subject: M
    property: p
    {field}
    display: "1"
    source: s
    status: unverified
"""
    doc = load_text(text)
    assert "bad-value" in [f.code for f in doc.findings]
    assert all(len(f.format()) < 400 for f in doc.findings)


def test_an_infinite_tolerance_is_a_finding():
    text = """\
sources: []
claims:
  - {id: m.x, subject: M, property: p, value: 2, display: "2", source: s, status: unverified,
     reproduced_by: {result: r.json, key: k, tolerance: .inf}}
"""
    assert "bad-tolerance" in [f.code for f in load_text(text).findings]

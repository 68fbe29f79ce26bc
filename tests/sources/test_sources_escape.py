"""One escaping function per output channel: HTML, JSON inside HTML, the Markdown report, CSV."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sources_fixtures import claim

from kdalib.sources import escape
from kdalib.sources.export import claim_rows, load_claims, to_csv, write_claims
from kdalib.sources.loader import load_document
from kdalib.sources.review import MAX_ROWS, Scope, render_markdown

HOSTILE = [
    '<!--<script src="x">',
    "</script><script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "[all checks passed](https://example.org)",
    "**bold** `code` | pipe \\ back",
    "&lt;entity&gt; \u2028 \u2029",
]


# ---- JSON inside an HTML script element ----------------------------------------------------------


@pytest.mark.parametrize("text", HOSTILE)
def test_json_for_html_never_lets_the_html_tokenizer_see_markup(text):
    payload = escape.json_for_html({"subject": text})
    assert not set(payload) & set("<>&\u2028\u2029")
    assert json.loads(payload) == {"subject": text}


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.text(), lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner)))
def test_json_for_html_round_trips_any_data(data):
    payload = escape.json_for_html(data)
    assert not set(payload) & set("<>&") and json.loads(payload) == data


# ---- HTML text ------------------------------------------------------------------------------------


def test_html_text_escapes_markup_and_quotes():
    assert escape.html_text('<a href="x">&\'') == "&lt;a href=&quot;x&quot;&gt;&amp;&#x27;"


# ---- the Markdown report --------------------------------------------------------------------------


@pytest.mark.parametrize("text", HOSTILE)
def test_markdown_cell_shows_text_as_text(text):
    cell = escape.markdown_cell(text)
    assert "<" not in cell and "|" not in cell.replace("\\|", "") and "\n" not in cell
    assert not re.search(r"(?<!\\)\[", cell) and not re.search(r"(?<!\\)`", cell)


def test_the_report_escapes_what_contributors_wrote(ws):
    ws.write(
        claims=[
            claim("m.a", quote="<img src=x onerror=alert(1)> Total", display="1T"),
            claim("m.b", quote="[all checks passed](https://example.org/ok)", display="1T"),
        ]
    )
    markdown = render_markdown(ws.verify())
    assert "<img" not in markdown
    assert not re.search(r"(?<!\\)\[all checks passed(?<!\\)\]\(", markdown)  # never a link
    assert "&lt;img src=x onerror=alert(1)&gt;" in markdown
    assert "\\[all checks passed\\]" in markdown


def test_every_failing_claim_is_named_even_past_the_table(ws):
    claims = [claim(f"m.c{i:03d}", quote="Total Parameters** | 1T", display="1T") for i in range(MAX_ROWS)]
    claims.insert(0, claim("m.first", quote="not there", display="1T"))
    claims.append(claim("m.late", quote="no such words", display="1T"))  # row 202 of the change
    ws.write(claims=claims)
    report = ws.verify()
    assert {f.item for f in report.errors} == {"m.first", "m.late"}
    scope = Scope("main", changes={c["id"]: "added" for c in claims})
    markdown = render_markdown(report, scope)
    assert "`m.late`" in markdown and "`m.first`" in markdown


def test_the_report_says_how_many_rows_it_left_out(ws):
    claims = [claim(f"m.e{i:03d}", quote=f"missing {i}", display="1T") for i in range(MAX_ROWS + 5)]
    ws.write(claims=claims)
    markdown = render_markdown(ws.verify())
    assert all(f"`m.e{i:03d}`" in markdown for i in range(MAX_ROWS + 5))
    assert "5 more claim(s)" in markdown


# ---- CSV -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ['=HYPERLINK("https://x","y")', "+1+2", "-1+2", "-", "@SUM(A1)", "\tx", "\rx", "'=x"])
def test_csv_cells_never_start_a_formula(text):
    cell = escape.csv_cell(text)
    assert cell.startswith("'") and escape.csv_value(cell) == text


@pytest.mark.parametrize("value", [-1.5, 2, "plain", "", "1'"])
def test_csv_numbers_and_plain_text_are_written_as_they_are(value):
    assert escape.csv_cell(value) == ("" if value == "" else str(value))


def test_claims_csv_escapes_formulas_and_reads_back_the_same(ws, tmp_path):
    ws.write(claims=[claim("m.x", subject='=HYPERLINK("https://x","click")', quote=None, status="unverified")])
    doc = load_document(ws.sources_path)
    written = to_csv(claim_rows(doc))
    row = next(csv.DictReader(io.StringIO(written)))
    assert row["subject"].startswith("'=HYPERLINK")
    json_path, csv_path = write_claims(doc, tmp_path)
    assert load_claims(csv_path).rows[0]["subject"] == '=HYPERLINK("https://x","click")'
    assert json.loads(json_path.read_text())["claims"][0]["subject"] == '=HYPERLINK("https://x","click")'

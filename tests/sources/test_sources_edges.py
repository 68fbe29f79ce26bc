"""Careless input at the edges of the checklist tools: each gives a clean result or a clean error."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
from sources_fixtures import CARD, base_sources, claim, codes, sha
from test_sources_cli import LINKED, add_args, links_args, run, verify_args

from kdalib.sources.loader import MAX_DEPTH, LoadError, load_document, load_text

BOMB = """\
a: &a ["x","x","x","x","x","x","x","x","x"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
sources: {x: *i}
claims: []
"""


def test_an_alias_bomb_is_refused_at_once_with_its_line(ws, capsys):
    # before: 9^9 expanded values formatted into one message, over 120 s
    ws.write(text=BOMB)
    started = time.perf_counter()
    code, _, err = run(capsys, *verify_args(ws))
    assert time.perf_counter() - started < 2.0
    assert code == 2 and f"{ws.sources_path}:1: YAML error: YAML anchor &a is not allowed" in err


@pytest.mark.parametrize(
    "text, words",
    [
        ("sources: []\nclaims:\n  - &c {id: m.a}\n", "anchor &c"),
        ("x: 1\nsources: []\nclaims: [*x]\n", "alias *x"),
        ("base: &b {subject: M}\nsources: []\nclaims:\n  - <<: *b\n    id: m.a\n", "anchor &b"),
    ],
)
def test_anchors_and_aliases_are_load_errors(text, words):
    with pytest.raises(LoadError) as info:
        load_text(text)
    assert words in str(info.value) and info.value.line > 0


def test_nesting_and_size_are_capped():
    deep = "sources: []\nclaims: " + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5) + "\n"
    with pytest.raises(LoadError, match=f"deeper than {MAX_DEPTH}"):
        load_text(deep)
    with pytest.raises(LoadError, match="over the"):
        load_text("sources: []\nclaims: []\n# " + "x" * (5 * 1024 * 1024))


def test_long_values_in_messages_are_cut():
    text = "sources: []\nclaims:\n  - id: m.a\n    subject: [" + ", ".join(["long" * 50] * 2000) + "]\n"
    doc = load_text(text)
    assert doc.findings and max(len(f.format()) for f in doc.findings) < 600


def test_future_dates_are_refused(ws):
    future = dt.date.today() + dt.timedelta(days=30)
    sources = base_sources()
    sources[0]["published"] = future
    sources[0]["link"] = {"checked": dt.date(2100, 1, 1), "status": "ok"}
    ws.write(sources=sources, claims=[claim("m.x", checked=dt.date(2100, 1, 1))])
    found = [f for f in load_document(ws.sources_path).findings if "in the future" in f.message]
    assert sorted(f.code for f in found) == ["bad-checked", "bad-checked", "bad-published"]


def test_a_sha_mismatch_counts_its_claims_as_not_checked(ws):
    (ws.snapshots / "card.md").write_text(CARD + "changed\n", encoding="utf-8")
    ws.write()
    report = ws.verify()
    assert "sha-mismatch" in codes(report)
    assert sorted(report.unchecked) == ["m.params.activated", "m.params.total"]
    assert ("quotes not checked", "2") in report.summary_rows()
    assert report.as_json()["summary"]["quotes_not_checked"] == 2


def test_verify_json_into_a_folder_is_a_clean_error(ws, capsys, tmp_path):
    ws.write()
    code, _, err = run(capsys, *verify_args(ws, "--json", str(tmp_path)))
    assert code == 2 and f"--json {tmp_path}: cannot write the report" in err
    ws.write(text="sources: [\n")
    code, _, err = run(capsys, *verify_args(ws, "--json", str(tmp_path)))
    assert code == 2 and "cannot write the report" in err and "YAML error" in err


def test_a_date_like_title_survives_check_links_write(ws, capsys, server):
    text = LINKED.format(card=server.url("/card.md"), gone=server.url("/card.md"), sha=sha(CARD))
    ws.write(text=text.replace("title: Model M card", "title: 2026-02-30"))
    assert load_document(ws.sources_path).findings == []
    code, out, err = run(capsys, *links_args(ws, "--write"))
    assert code == 0, err
    doc = load_document(ws.sources_path)
    assert doc.findings == [] and doc.sources["card"].title == "2026-02-30"
    assert doc.sources["card"].link_status == "ok"


def test_a_date_like_title_survives_sources_add(ws, capsys, tmp_path):
    text = LINKED.format(card="https://example.org/card", gone="https://example.org/gone", sha=sha(CARD))
    ws.write(text=text.replace("title: Model M card", "title: 2026-02-30"))
    new = tmp_path / "new.md"
    new.write_text("# Model N\n")
    code, _, err = run(capsys, *add_args(ws, "https://example.org/n", "--snapshot", str(new)))
    assert code == 0, err
    assert load_document(ws.sources_path).sources["card"].title == "2026-02-30"


def test_a_very_long_url_gives_a_short_id(ws, capsys, tmp_path):
    ws.write()
    new = tmp_path / "new.md"
    new.write_text("# Model N\n")
    url = "https://example.org/" + "/".join(["section-with-a-long-name"] * 70)
    code, out, err = run(capsys, *add_args(ws, url, "--snapshot", str(new)))
    assert code == 0, err
    (added,) = [s for s in load_document(ws.sources_path).sources if s not in ("card", "report")]
    assert len(added) <= 64 and (ws.snapshots / f"{added}.md").exists()
    before = ws.sources_path.read_bytes()
    code, _, err = run(capsys, *add_args(ws, "https://example.org/x", "--id", "a" * 300, "--snapshot", str(new)))
    assert code == 2 and "at most 64" in err and ws.sources_path.read_bytes() == before


def test_verify_json_is_written_for_a_clean_run(ws, capsys, tmp_path):
    ws.write()
    out_json = tmp_path / "v.json"
    assert run(capsys, *verify_args(ws, "--json", str(out_json)))[0] == 0
    assert json.loads(out_json.read_text())["ok"] is True


def test_huge_names_in_messages_are_cut(ws):
    huge = "x" * 100_000
    text = (
        f"subjects: [{', '.join(['s' + str(i) for i in range(500)])}]\n"
        f"sources: []\nclaims:\n  - {{id: m.a, {'k' * 1000}: 1, subject: {huge}, source: {huge}, "
        f"conflicts_with: [{huge}]}}\n"
    )
    doc = load_text(text)
    assert {"unknown-key", "unknown-subject", "unknown-source", "unknown-claim"} <= set(codes(doc.findings))
    assert max(len(f.format()) for f in doc.findings) < 1000

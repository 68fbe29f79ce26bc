"""The spec tracker: ``verify --online`` and ``sources fetch --new-version`` against a local
HTTP server on 127.0.0.1 that serves an edited copy of a snapshot."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sources_fixtures import CARD, REPORT, base_sources, claim, codes, sha

from kdalib.cli import main
from kdalib.sources import commands, tracker
from kdalib.sources.http import FetchPolicy, SafeClient
from kdalib.sources.loader import load_document
from kdalib.sources.manifest import load_manifest
from kdalib.sources.model import Source

EDITED_CARD = (
    CARD.replace("| **Total Parameters** | 1T |", "| **Total Parameters** | 1.2T |")
    + "\nModel M now supports 256K context.\n"
)
# the day the commands see (kdalib.sources.commands._today, pinned by the tests that store a
# version): a test that read the clock itself could straddle midnight and disagree with them
DAY = dt.date(2026, 12, 7)
TODAY = DAY.isoformat()


def run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


@pytest.fixture
def live(ws, server):
    """The card's live URL serves ``server.card`` (the edited copy unless a test changes it)."""
    server.card = EDITED_CARD
    server.httpd.routes["/live/card.md"] = lambda h, n: h._send(
        200, server.card.encode(), "text/markdown; charset=utf-8"
    )
    sources = base_sources()
    sources[0]["live_url"] = server.url("/live/card.md")
    sources[1]["live_url"] = server.url("/missing.txt")
    ws.write(sources=sources)
    return server


def verify_online(ws, *extra):
    return ws.cli_args("verify", "--online", "--allow-loopback", *extra)


def new_version(ws, *ids):
    return (
        "sources",
        "--sources",
        str(ws.sources_path),
        "--snapshots",
        str(ws.snapshots),
        "fetch",
        "--new-version",
        "--allow-loopback",
        *ids,
    )


@pytest.mark.parametrize(
    "fields, expected",
    [
        ({"url": "https://huggingface.co/org/Model"}, "https://huggingface.co/org/Model/raw/main/README.md"),
        (
            {"url": "https://arxiv.org/abs/2507.20534", "version_url": "https://arxiv.org/abs/2507.20534v2"},
            "https://arxiv.org/pdf/2507.20534",
        ),
        (
            {"url": "https://github.com/o/r", "version_url": "https://github.com/o/r/blob/abc123/docs/tech.pdf"},
            "https://raw.githubusercontent.com/o/r/HEAD/docs/tech.pdf",
        ),
        ({"url": "https://github.com/o/r"}, "https://raw.githubusercontent.com/o/r/HEAD/README.md"),
        ({"url": "https://icml.cc/virtual/2024/poster/1"}, "https://icml.cc/virtual/2024/poster/1"),
        ({"url": "https://github.com/o/r", "live_url": "https://example.org/spec.txt"}, "https://example.org/spec.txt"),
        (
            {"url": "https://huggingface.co/org/Model/blob/main/config.json"},
            "https://huggingface.co/org/Model/raw/main/config.json",
        ),
        ({}, None),
    ],
)
def test_live_url_follows_the_current_document(fields, expected):
    assert tracker.live_url(Source("s", "t", "p", "docs", **fields)) == expected


def test_compare_texts_ignores_layout_but_not_content():
    assert tracker.compare_texts(CARD, CARD).state == tracker.IDENTICAL
    reflowed = CARD.replace("We trained Model M on 15.5T tokens.", "We trained Model M\non  15.5T tokens.")
    assert tracker.compare_texts(CARD, reflowed).state == tracker.SAME_TEXT
    hyphenated = CARD.replace("We trained Model M on 15.5T tokens.", "We trai-\nned Model M on 15.5T tokens.")
    assert tracker.compare_texts(CARD, hyphenated).state == tracker.SAME_TEXT
    assert tracker.compare_texts(CARD, CARD.replace("15.5T", "15.6T")).state == tracker.CHANGED
    table_cell = tracker.compare_texts(REPORT, REPORT.replace("\n87.8\n", "\n88.1\n"))
    assert (table_cell.state, table_cell.lines_gone, table_cell.numbers_gone) == (tracker.CHANGED, [], ["87.8"])
    assert "numbers no longer there: 87.8" in table_cell.describe()
    grown = tracker.compare_texts(CARD, CARD + "\nA new section with more text.\n")
    assert (grown.state, grown.lines_gone, grown.lines_new) == (tracker.GREW, [], ["A new section with more text."])
    change = tracker.compare_texts(CARD, EDITED_CARD)
    assert change.state == tracker.CHANGED
    assert change.lines_gone == ["| **Total Parameters** | 1T |"]
    assert change.lines_new == ["| **Total Parameters** | 1.2T |", "Model M now supports 256K context."]


def test_verify_online_reports_changed_sources_and_each_quote(ws, live, capsys, tmp_path):
    out_json = tmp_path / "online.json"
    code, out = run(capsys, *verify_online(ws, "--json", str(out_json)))
    assert code == 0  # drift is reported, the archived texts still verify
    assert "[source-changed] card:" in out and "[drift] m.params.total:" in out
    assert "[drift] m.params.activated" not in out
    assert "[fetch-failed] report:" in out and "HTTP 404" in out
    online = {row["source"]: row for row in json.loads(out_json.read_text())["online"]}
    assert online["card"]["state"] == "changed" and (online["card"]["lines_gone"], online["card"]["lines_new"]) == (
        1,
        2,
    )
    assert online["card"]["quotes"] == {"m.params.total": False, "m.params.activated": True}
    assert online["report"]["state"] == "unreachable"
    assert run(capsys, *verify_online(ws, "--fail-on-change"))[0] == 1
    code, out = run(capsys, *verify_online(ws, "--report", "md"))
    card_row = next(line for line in out.splitlines() if line.startswith("| `card` |"))
    assert code == 0 and "| changed | 1/2 | `m.params.total` |" in card_row
    assert any(line.startswith("| `m.params.total` (") and "[drift]" in line for line in out.splitlines())


def test_a_grown_text_is_reported_but_does_not_fail(ws, live, capsys):
    live.card = CARD + "\nModel M now supports 256K context.\n"
    code, out = run(capsys, *verify_online(ws, "--fail-on-change"))
    assert code == 0 and "[source-grew] card:" in out and "[drift]" not in out
    assert "every archived line is still there; 1 live line(s) are new" in out


def test_verify_online_sees_a_re_extracted_copy_as_the_same_text(ws, live, capsys):
    live.card = CARD.replace("\n", "\r\n").replace("15.5T tokens.", "15.5T\ntokens.")
    code, out = run(capsys, *verify_online(ws, "--fail-on-change"))
    assert code == 0 and "same-text" in out and "[drift]" not in out and "source-changed" not in out


def test_a_refused_url_is_an_error(ws):
    sources = base_sources()
    sources[0]["live_url"] = "http://169.254.169.254/latest/"
    sources[1]["live_url"] = "http://[::1]:9/report.txt"
    ws.write(sources=sources, claims=[claim("m.params.total")])
    tracks = tracker.track_all(load_document(ws.sources_path), SafeClient(FetchPolicy()), _store(ws))
    findings = tracker.track_findings(load_document(ws.sources_path), tracks)
    assert [(f.severity, f.code, f.item) for f in findings] == [
        ("error", "fetch-failed", "card"),
        ("error", "fetch-failed", "report"),
    ]
    assert "link-local" in findings[0].message


def _store(ws):
    from kdalib.sources.snapshots import SnapshotStore

    return SnapshotStore(ws.snapshots)


def test_new_version_is_kept_beside_the_old_one_and_claims_can_move_to_it(ws, live, capsys, monkeypatch):
    monkeypatch.setattr(commands, "_today", lambda: DAY)
    old_card = (ws.snapshots / "card.md").read_bytes()
    code, out = run(capsys, *new_version(ws, "card"))
    dated = f"card.{TODAY}.md"
    assert code == 0 and f"stored {dated}" in out and "Not found: m.params.total" in out
    assert (ws.snapshots / "card.md").read_bytes() == old_card
    assert (ws.snapshots / dated).read_text() == EDITED_CARD
    source = load_document(ws.sources_path).sources["card"]
    assert [(v.file, v.label, v.url) for v in source.versions] == [(dated, TODAY, live.url("/live/card.md"))]
    entries, problems = load_manifest(ws.snapshots / "MANIFEST.yaml")
    assert problems == [] and entries[dated].source == "card" and entries[dated].origin == "publisher"
    assert ws.verify(strict=True).errors == []

    # the same live text again: nothing new is stored
    code, out = run(capsys, *new_version(ws, "card"))
    assert code == 0 and "unchanged" in out
    assert sorted(p.name for p in ws.snapshots.glob("card*")) == sorted(["card.md", dated])

    # the old figure is superseded by a claim checked against the new version; its history stays checkable
    text = ws.sources_path.read_text()
    claims = [
        claim("m.params.total", status="superseded", superseded_by="m.params.total.v2"),
        claim(
            "m.params.total.v2",
            value=1.2,
            display="1.2T",
            quote="Total Parameters** | 1.2T",
            version=TODAY,
            supersedes=["m.params.total"],
        ),
        claim(
            "m.params.activated",
            property="activated parameters",
            value=32,
            unit="B parameters",
            display="32B",
            quote="Activated Parameters** | 32B",
            version=TODAY,
        ),
    ]
    sources_part = text[: text.index("claims:")]
    from sources_fixtures import dump

    ws.write(text=sources_part + dump({"claims": claims}))
    report = ws.verify(strict=True)
    assert report.errors == [] and {"m.params.total", "m.params.total.v2", "m.params.activated"} <= set(report.matches)

    # a claim checked against the wrong version fails, with the version's file named
    ws.write(
        text=sources_part
        + dump({"claims": [claim("m.params.total.v2", value=1.2, display="1.2T", quote="Total Parameters** | 1.2T")]})
    )
    assert codes(ws.verify().errors) == ["quote-not-found"]


def test_a_claim_naming_an_unknown_version_is_an_error(ws):
    ws.write(claims=[claim("m.params.total", version="2030-01-01")])
    [finding] = ws.verify().errors
    assert finding.code == "unknown-version" and "it has: archived" in finding.message


def test_versions_are_checked_like_snapshots(ws):
    sources = base_sources()
    (ws.snapshots / "card.2026-12-01.md").write_text(EDITED_CARD)
    sources[0]["versions"] = [
        {"file": "card.2026-12-01.md", "sha256": "0" * 64, "retrieved": dt.date(2026, 12, 1)},
        {"file": "card.2026-11-01.md", "sha256": "1" * 64, "retrieved": dt.date(2026, 11, 1)},
    ]
    ws.write(sources=sources)
    found = codes(ws.verify())
    assert "sha-mismatch" in found and "versions-out-of-order" in found and "unlisted-snapshot" in found


def test_new_version_needs_ids(ws, capsys):
    ws.write()
    assert main(["sources", "--sources", str(ws.sources_path), "fetch", "--new-version"]) == 2


def test_quote_searches_the_version_asked_for(ws, capsys):
    sources = base_sources()
    (ws.snapshots / "card.2026-12-01.md").write_text(EDITED_CARD)
    sources[0]["versions"] = [
        {"file": "card.2026-12-01.md", "sha256": sha(EDITED_CARD), "retrieved": dt.date(2026, 12, 1)}
    ]
    ws.write(sources=sources)
    base = (
        "sources",
        "--sources",
        str(ws.sources_path),
        "--snapshots",
        str(ws.snapshots),
        "quote",
        "card",
        "Total Parameters** | 1.2T",
    )
    code, out = run(capsys, *base, "--version", "2026-12-01")
    assert code == 0 and "found (exact) in card.2026-12-01.md" in out
    code, out = run(capsys, *base)
    assert code == 1 and "not found in card.md" in out
    assert main([*base, "--version", "2030-01-01"]) == 2

"""The CLI handlers end to end through kdalib.cli.main (exit codes 0/1/2, output, files written)."""

from __future__ import annotations

import json

import pytest
from sources_fixtures import CARD, base_sources, claim, sha

from kdalib.cli import main
from kdalib.sources.loader import load_document
from kdalib.sources.manifest import load_manifest


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def verify_args(ws, *extra):
    return ws.cli_args("verify", *extra)


def test_verify_clean_prints_the_summary_and_writes_json(ws, capsys, tmp_path):
    ws.write()
    out_json = tmp_path / "out" / "verify.json"
    code, out, _ = run(capsys, *verify_args(ws, "--strict", "--json", str(out_json)))
    assert code == 0
    assert "claims" in out and "verified" in out and "verify OK (strict)" in out
    assert json.loads(out_json.read_text())["summary"]["quotes_checked"] == 3


def test_verify_findings_exit_1_with_file_line_and_fix(ws, capsys):
    ws.write(claims=[claim("m.x", quote="Total Parameters** | 9T", display="9T")])
    code, out, _ = run(capsys, *verify_args(ws))
    line = load_document(ws.sources_path).claims["m.x"].line_of("quote")
    assert code == 1
    assert f"{ws.sources_path}:{line}: error: [quote-not-found] m.x:" in out and "Fix:" in out
    assert "verify FAILED" in out


def test_verify_missing_snapshot_warns_or_fails_under_strict(ws, capsys):
    (ws.snapshots / "report.txt").unlink()
    ws.write()
    assert run(capsys, *verify_args(ws))[0] == 0
    code, out, _ = run(capsys, *verify_args(ws, "--strict"))
    assert code == 1 and "snapshots not found" in out and "report" in out


def test_verify_unusable_input_exits_2(ws, capsys, tmp_path):
    ws.write(text="sources: [\n")
    out_json = tmp_path / "v.json"
    code, _, err = run(capsys, *verify_args(ws, "--json", str(out_json)))
    assert code == 2 and f"{ws.sources_path}:2: YAML error" in err
    assert json.loads(out_json.read_text())["ok"] is False


# ---- quote -----------------------------------------------------------------------------


def test_quote_prints_the_span_to_paste(ws, capsys):
    ws.write()
    code, out, _ = run(
        capsys,
        "sources",
        "--sources",
        str(ws.sources_path),
        "--snapshots",
        str(ws.snapshots),
        "quote",
        "report",
        "Diag(αt) with efficient",
    )
    assert code == 0
    assert "whitespace-insensitive" in out and "line 3" in out
    assert 'quote: "Diag(αt ) with eﬃcient"'.replace("ﬃ", "ffi") in out


def test_quote_not_found_shows_how_far_it_matched(ws, capsys):
    ws.write()
    code, out, _ = run(
        capsys,
        "sources",
        "--sources",
        str(ws.sources_path),
        "--snapshots",
        str(ws.snapshots),
        "quote",
        "card",
        "Total Parameters | 9T",
    )
    assert code == 1
    assert "the first 2 of 4 words occur at line 5" in out and "| Total Parameters** | 1T |" in out


def test_quote_typed_as_rendered_prints_the_markdown_span_to_paste(ws, capsys):
    ws.write()
    args = ("sources", "--sources", str(ws.sources_path), "--snapshots", str(ws.snapshots), "quote", "card")
    code, out, _ = run(capsys, *args, "Total Parameters 1T")
    assert code == 0 and "found ignoring Markdown markup" in out and "line 5" in out
    assert 'quote: "**Total Parameters** | 1T"' in out


@pytest.mark.parametrize("args, code", [(("card", "Total Parameters** | 7T"), 1), (("nope", "x"), 2)])
def test_quote_not_found_or_unknown_source(ws, capsys, args, code):
    ws.write()
    assert (
        run(capsys, "sources", "--sources", str(ws.sources_path), "--snapshots", str(ws.snapshots), "quote", *args)[0]
        == code
    )


# ---- fetch -----------------------------------------------------------------------------


def _online_sources(server, path="/card.md", sha256=None):
    sources = base_sources()
    sources[0]["version_url"] = server.url(path)
    sources[0]["snapshot"] = {"file": "fetched.md", "sha256": sha256 or sha(CARD)}
    return sources


def fetch_args(ws, *extra):
    return ("sources", "--sources", str(ws.sources_path), "--snapshots", str(ws.snapshots), "fetch", *extra)


def test_fetch_restores_a_missing_snapshot_whose_sha256_matches(ws, capsys, server):
    ws.write(sources=_online_sources(server), claims=[])
    code, out, _ = run(capsys, *fetch_args(ws, "card", "--allow-loopback"))
    assert code == 0 and "restored" in out and "sha256 matches" in out
    assert (ws.snapshots / "fetched.md").read_text() == CARD


def test_fetch_leaves_an_archived_snapshot_alone(ws, capsys, server):
    ws.write(sources=_online_sources(server), claims=[])
    (ws.snapshots / "fetched.md").write_text(CARD)
    code, out, _ = run(capsys, *fetch_args(ws, "card", "--allow-loopback"))
    assert code == 0 and "is archived and matches its sha256" in out and server.hits == {}


def test_fetch_stores_nothing_when_the_text_differs_from_the_record(ws, capsys, server):
    ws.write(sources=_online_sources(server, sha256="0" * 64), claims=[])
    before = sorted(p.name for p in ws.snapshots.iterdir())
    code, out, _ = run(capsys, *fetch_args(ws, "card", "--allow-loopback"))
    assert code == 1 and "differs" in out and "--new-version card" in out
    assert sorted(p.name for p in ws.snapshots.iterdir()) == before


def test_fetch_of_a_new_source_records_its_snapshot_and_manifest_entry(ws, capsys, server):
    sources = base_sources()
    sources.append(
        {"id": "page", "title": "Page", "publisher": "Example Lab", "kind": "docs", "url": server.url("/page.html")}
    )
    ws.write(sources=sources)
    code, out, _ = run(capsys, *fetch_args(ws, "page", "--allow-loopback"))
    assert code == 0 and "stored page.txt" in out
    doc = load_document(ws.sources_path)
    stored = (ws.snapshots / "page.txt").read_text()
    assert doc.findings == [] and doc.sources["page"].snapshot.file == "page.txt"
    assert "Total 1T params" in stored and "x=1" not in stored  # extracted from the HTML
    entries, problems = load_manifest(ws.snapshots / "MANIFEST.yaml")
    assert problems == [] and entries["page.txt"].origin == "extraction"
    assert entries["page.txt"].retrieved_from == server.url("/page.html")
    assert run(capsys, *verify_args(ws, "--strict"))[0] == 0


def test_fetch_refuses_loopback_without_the_test_flag(ws, capsys, server):
    ws.write(sources=_online_sources(server), claims=[])
    code, out, _ = run(capsys, *fetch_args(ws, "card"))
    assert code == 1 and "refused" in out and server.hits == {}


def test_fetch_unknown_id_exits_2(ws, capsys):
    ws.write()
    assert run(capsys, *fetch_args(ws, "ghost"))[0] == 2


# ---- check-links -----------------------------------------------------------------------

LINKED = """\
# contributor header, must survive
sources:
  - id: card            # the card
    title: Model M card
    publisher: Example Lab
    kind: model_card
    url: {card}
    snapshot: {{file: card.md, sha256: {sha}}}
    link: {{checked: 2020-01-01, status: unchecked}}   # updated by check-links

  - id: gone
    title: "Gone page"
    publisher: Example Lab
    kind: docs
    url: {gone}
claims: []
"""


def links_args(ws, *extra):
    return ("sources", "--sources", str(ws.sources_path), "check-links", "--allow-loopback", *extra)


def test_check_links_write_updates_in_place_keeping_comments(ws, capsys, server):
    ws.write(text=LINKED.format(card=server.url("/moved"), gone=server.url("/missing"), sha=sha(CARD)))
    before = ws.sources_path.read_text()
    code, out, _ = run(capsys, *links_args(ws, "--write"))
    after = ws.sources_path.read_text()
    assert code == 1 and "moved" in out and "broken" in out
    removed = [line for line in before.splitlines() if line not in after.splitlines()]
    added = [line for line in after.splitlines() if line not in before.splitlines()]
    assert removed == ["    link: {checked: 2020-01-01, status: unchecked}   # updated by check-links"]
    assert len(added) == 2 and "status: moved}" in added[0] and "# updated by check-links" in added[0]
    assert added[1].strip().startswith("link: {checked: 20") and "status: broken}" in added[1]
    assert after.startswith("# contributor header, must survive\n") and 'title: "Gone page"' in after
    doc = load_document(ws.sources_path)
    assert doc.findings == []
    assert (doc.sources["card"].link_status, doc.sources["gone"].link_status) == ("moved", "broken")


def test_check_links_without_write_changes_nothing(ws, capsys, server):
    ws.write(text=LINKED.format(card=server.url("/card.md"), gone=server.url("/card.md"), sha=sha(CARD)))
    before = ws.sources_path.read_bytes()
    assert run(capsys, *links_args(ws))[0] == 0
    assert ws.sources_path.read_bytes() == before


def test_check_links_writes_nothing_when_a_url_is_refused(ws, capsys, server):
    ws.write(text=LINKED.format(card=server.url("/card.md"), gone="http://10.0.0.1/", sha=sha(CARD)))
    before = ws.sources_path.read_bytes()
    code, _, err = run(capsys, *links_args(ws, "--write"))
    assert code == 1 and "was not changed" in err
    assert ws.sources_path.read_bytes() == before


# ---- add -------------------------------------------------------------------------------


def add_args(ws, *extra):
    return (
        "sources",
        "--sources",
        str(ws.sources_path),
        "--snapshots",
        str(ws.snapshots),
        "add",
        "--origin",
        "publisher",
        *extra,
    )


def test_add_scaffolds_a_valid_entry_and_stores_the_snapshot(ws, capsys, tmp_path):
    ws.write()
    text = tmp_path / "new.md"
    text.write_text("# Model N card\n\nModel N has 2T parameters.\n")
    code, out, _ = run(capsys, *add_args(ws, "https://github.com/Example/Model-N", "--snapshot", str(text)))
    assert code == 0 and "example-model-n" in out
    doc = load_document(ws.sources_path)
    assert doc.findings == []
    added = doc.sources["example-model-n"]
    assert (added.title, added.publisher, added.snapshot.file) == ("Model N card", "Example", "example-model-n.md")
    assert (ws.snapshots / "example-model-n.md").read_bytes() == text.read_bytes()
    entries, problems = load_manifest(ws.snapshots / "MANIFEST.yaml")
    assert problems == [] and entries["example-model-n.md"].source == "example-model-n"
    assert (entries["example-model-n.md"].origin, entries["example-model-n.md"].bytes) == (
        "publisher",
        len(text.read_bytes()),
    )
    assert run(capsys, *verify_args(ws, "--strict"))[0] == 0


@pytest.mark.parametrize(
    "extra",
    [
        ("https://example.org/m", "--id", "card"),  # id taken
        ("ftp://example.org/m",),  # scheme
        ("https://example.org/m", "--kind", "rumour"),  # kind
        ("https://example.org/m", "--id", "Not_Kebab"),  # id form
    ],
)
def test_add_refuses_bad_input_and_writes_nothing(ws, capsys, tmp_path, extra):
    ws.write()
    text = tmp_path / "new.md"
    text.write_text("# N\n")
    before = ws.sources_path.read_bytes()
    assert run(capsys, *add_args(ws, *extra, "--snapshot", str(text)))[0] == 2
    assert ws.sources_path.read_bytes() == before


def test_add_refuses_a_missing_snapshot_file(ws, capsys, tmp_path):
    ws.write()
    assert run(capsys, *add_args(ws, "https://example.org/m", "--snapshot", str(tmp_path / "none.md")))[0] == 2


def test_written_files_keep_a_readable_mode(ws, capsys, tmp_path):
    ws.write()
    ws.sources_path.chmod(0o644)
    text = tmp_path / "new.md"
    text.write_text("# N\n")
    assert run(capsys, *add_args(ws, "https://example.org/n", "--snapshot", str(text)))[0] == 0
    assert ws.sources_path.stat().st_mode & 0o777 == 0o644
    assert (ws.snapshots / "example-n.md").stat().st_mode & 0o044 == 0o044


def test_verify_online_refuses_internal_urls_end_to_end(ws, capsys):
    sources = base_sources()
    sources[0]["live_url"] = "http://127.0.0.1:9/card.md"
    sources[1]["url"] = "http://[::1]:9/report.txt"  # no test may reach a real host
    ws.write(sources=sources)
    code, out, _ = run(capsys, *verify_args(ws, "--online"))
    assert code == 1 and "[fetch-failed] card:" in out and "loopback address 127.0.0.1" in out
    assert "[fetch-failed] report:" in out and "loopback address ::1" in out

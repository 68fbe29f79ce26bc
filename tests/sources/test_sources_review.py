"""``kdalib verify --report md [--changed-since REF]``: the pull-request report."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from sources_fixtures import base_claims, claim

from kdalib.cli import main

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def git(ws, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        cwd=ws.root,
        check=True,
        capture_output=True,
    )


@pytest.fixture
def repo(ws):
    ws.write()
    git(ws, "init", "-q")
    git(ws, "add", "-A")
    git(ws, "commit", "-q", "-m", "base")
    return ws


def report_md(ws, capsys, *extra) -> tuple[int, str]:
    code = main(
        [
            "verify",
            "--sources",
            str(ws.sources_path),
            "--snapshots",
            str(ws.snapshots),
            "--root",
            str(ws.root),
            "--report",
            "md",
            *extra,
        ]
    )
    return code, capsys.readouterr().out


def table_rows(markdown: str) -> dict[str, list[str]]:
    rows = {}
    for line in markdown.splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            rows[cells[0].split("`")[1]] = cells
    return rows


def test_only_the_claims_a_change_adds_or_edits_are_reported(repo, capsys):
    claims = base_claims()
    claims[0]["quote"] = "Total Parameters** | 9T"  # edited, now wrong
    claims.append(
        claim(
            "m.context",
            property="context length",
            value=128,
            unit="K tokens",
            display="128K",
            quote="Context Length | 128K",
        )
    )  # added, right
    del claims[2]  # removed
    repo.write(claims=claims)
    code, out = report_md(repo, capsys, "--changed-since", "HEAD")
    rows = table_rows(out)
    assert code == 1 and out.startswith("## kdalib verify\n\n**FAILED**")
    assert set(rows) == {"m.params.total", "m.context"}
    edited, added = rows["m.params.total"], rows["m.context"]
    assert edited[1] == "changed: quote" and edited[2] == "verified"
    assert "error [quote-not-found]" in edited[3] and "kdalib sources quote card" in edited[4]
    assert added[1] == "added" and added[3].startswith("quote found")
    assert "Removed claims: `m.arch.gate`" in out


def test_a_changed_source_entry_brings_its_claims_in(repo, capsys):
    text = repo.sources_path.read_text().replace("https://example.org/m-report", "https://example.org/m-report-v2")
    repo.sources_path.write_text(text)
    code, out = report_md(repo, capsys, "--changed-since", "HEAD")
    assert code == 0 and set(table_rows(out)) == {"m.arch.gate"}
    assert "its source report changed" in out


def test_no_change_says_so_and_pipes_in_quotes_are_escaped(repo, capsys):
    code, out = report_md(repo, capsys, "--changed-since", "HEAD")
    assert code == 0 and "No claim was added or changed." in out
    repo.write(claims=[claim("m.x", quote="Total Parameters** | 9T", display="9T")])
    code, out = report_md(repo, capsys)
    [row] = [line for line in out.splitlines() if line.startswith("| `m.x`")]
    assert code == 1 and "\\| 9T" in row and row.count(" | ") == 3  # claim, status, finding, fix


def test_an_unknown_ref_is_unusable_input(repo, capsys):
    assert main(["verify", "--sources", str(repo.sources_path), "--report", "md", "--changed-since", "nope"]) == 2
    assert "not a commit" in capsys.readouterr().err


def test_changed_since_needs_the_markdown_report(repo, capsys):
    assert main(["verify", "--sources", str(repo.sources_path), "--changed-since", "HEAD"]) == 2

"""The checklist's history from git (kdalib.sources.history) and its columns in claims.json/csv."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kdalib.sources.history import build_history, describe, load_history, parse_claims

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _claim(claim_id: str, display: str, status: str = "verified", aliases: str = "") -> str:
    extra = f"\n    aliases: [{aliases}]" if aliases else ""
    return (
        f"  - id: {claim_id}\n    subject: M\n    property: p\n    value: '{display}'\n    display: '{display}'\n"
        f"    source: card\n    status: {status}{extra}\n"
    )


def _git(repo: Path, *args: str, date: str = "2026-11-01T12:00:00") -> None:
    env = {**os.environ, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
    env |= {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, env=env)


VERSIONS = [
    ("2026-11-01", _claim("a", "1T") + _claim("b", "2B", "unverified") + _claim("c", "3K")),
    ("2026-11-05", _claim("a", "1.2T") + _claim("b", "2B") + _claim("c", "3K")),
    ("2026-11-09", _claim("a", "1.2T") + _claim("d", "2B", aliases="b") + _claim("e", "5%")),
]


@pytest.fixture
def repo(tmp_path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    for date, claims in VERSIONS:
        (repo / "sources.yaml").write_text("sources: []\nclaims:\n" + claims)
        _git(repo, "add", "sources.yaml")
        _git(repo, "commit", "-q", "-m", f"claims of {date}", date=f"{date}T12:00:00")
    return repo


def test_each_commit_is_compared_with_the_one_before(repo):
    history = load_history(repo / "sources.yaml")
    assert history.available and history.revisions == 3
    seen = [(c.date, c.kind, c.claim_id) for c in history.changes]
    assert seen == [
        ("2026-11-01", "added", "a"),
        ("2026-11-01", "added", "b"),
        ("2026-11-01", "added", "c"),
        ("2026-11-05", "changed", "a"),
        ("2026-11-05", "re-statused", "b"),
        ("2026-11-09", "renamed", "d"),
        ("2026-11-09", "added", "e"),
        ("2026-11-09", "retracted", "c"),
    ]
    text = {c.claim_id: describe(c) for c in history.changes if c.date != "2026-11-01"}
    assert text == {
        "a": "1T → 1.2T",
        "b": "status unverified → verified",
        "d": "renamed from b",
        "e": "added: 5% (verified)",
        "c": "retracted: was 3K (verified)",
    }
    assert all(len(c.commit) == 40 for c in history.changes)


def test_per_claim_history_keeps_first_date_and_earlier_values_across_a_rename(repo):
    history = load_history(repo / "sources.yaml")
    a, d = history.of("a"), history.of("d")
    assert (a.first_recorded, a.current_since) == ("2026-11-01", "2026-11-05")
    assert [(e.display, e.status, e.since) for e in a.earlier] == [("1T", "verified", "2026-11-01")]
    assert d.first_recorded == "2026-11-01"
    assert [(e.display, e.status) for e in d.earlier] == [("2B", "unverified")]
    assert history.of("c") is None and history.of("b") is None  # retracted, renamed


def test_uncommitted_work_is_its_own_undated_step(repo):
    path = repo / "sources.yaml"
    path.write_text(path.read_text() + _claim("f", "7B"))
    history = load_history(path)
    assert history.revisions == 4
    assert [(c.date, c.kind, c.claim_id) for c in history.changes][-1] == (None, "added", "f")
    assert history.of("f").first_recorded is None


def test_a_shallow_clone_says_why_it_has_no_history(repo, tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(
        ["git", "clone", "-q", "--depth", "1", f"file://{repo}", str(clone)], check=True, capture_output=True
    )
    history = load_history(clone / "sources.yaml")
    assert not history.available and history.changes == []
    assert "shallow clone" in history.problem and "git fetch --unshallow" in history.problem


def test_outside_a_repository_the_history_is_empty_with_its_reason(tmp_path):
    (tmp_path / "sources.yaml").write_text("claims: []\n")
    history = load_history(tmp_path / "sources.yaml")
    assert not history.available and "not in a git repository" in history.problem


@pytest.mark.parametrize(
    "text",
    [
        "a: &x [1, 2]\nb: *x\nclaims: []\n",  # aliases are refused, not expanded
        "claims: [unclosed\n",
        "- just a list\n",
        "claims:\n  - {subject: no id}\n  - 7\n",
    ],
)
def test_an_unreadable_old_version_has_no_claims(text):
    assert parse_claims(text) == {}


def test_a_claim_that_disappears_and_comes_back_is_retracted_then_added():
    versions = [("d1", "c1", parse_claims("claims:\n" + _claim("a", "1T"))), ("d2", "c2", {}), ("d3", "c3", {})]
    versions.append(("d4", "c4", parse_claims("claims:\n" + _claim("a", "2T"))))
    history = build_history(versions)
    assert [(c.date, c.kind) for c in history.changes] == [("d1", "added"), ("d2", "retracted"), ("d4", "added")]
    assert history.of("a").first_recorded == "d4"


def test_claims_json_and_csv_carry_the_history_and_the_schema_version(repo, tmp_path):
    from kdalib.sources.export import COLUMNS, SCHEMA_VERSION, claim_rows, to_json
    from kdalib.sources.model import Claim, Document

    doc = Document(path=repo / "sources.yaml")
    doc.claims["a"] = Claim(id="a", subject="M", display="1.2T", value="1.2T", source="card", status="verified")
    rows = claim_rows(doc, load_history(repo / "sources.yaml"))
    (row,) = rows
    assert list(row) == list(COLUMNS)
    assert (row["first_recorded"], row["earlier_values"]) == ("2026-11-01", "1T (verified, from 2026-11-01)")
    assert row["schema_version"] == SCHEMA_VERSION == 2
    assert json.loads(to_json(rows))["schema_version"] == SCHEMA_VERSION
    assert claim_rows(doc)[0]["first_recorded"] == ""  # without a history

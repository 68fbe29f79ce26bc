"""The tracker pages: "What changed", per-claim history and citation lines, the live-check status."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from kdalib.book.role import POPOVER_DATA_ID

ROOT = Path(__file__).resolve().parents[2]
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _commit(repo: Path, date: str, message: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_DATE": f"{date}T12:00:00", "GIT_COMMITTER_DATE": f"{date}T12:00:00"}
    env |= {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for args in (["add", "-A"], ["commit", "-q", "-m", message]):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, env=env)


def _text(page: str) -> str:
    """The page's text: tags dropped, entities decoded, whitespace runs collapsed."""
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page)))


def _with_changes_page(book) -> None:
    book.write("changes.md", "# What changed\n\n```{claims-changes}\n```\n")
    index = (book.src / "index.md").read_text().replace("   status\n", "   status\n   changes\n")
    book.write("index.md", index.replace("status\n```", "status\nchanges\n```"))


@needs_git
def test_what_changed_lists_each_days_changes_and_cards_show_history_and_citation(book):
    _with_changes_page(book)
    subprocess.run(["git", "init", "-q"], cwd=book.src, check=True)
    sources = (book.src / "sources.yaml").read_text()
    book.write("sources.yaml", sources.replace("display: 128K", "display: 128K\n    checked: 2026-11-20", 1))
    book.write("sources.yaml", (book.src / "sources.yaml").read_text().replace("status: refuted", "status: unverified"))
    _commit(book.src, "2026-11-20", "first checklist")
    book.write("sources.yaml", (book.src / "sources.yaml").read_text().replace("status: unverified", "status: refuted"))
    _commit(book.src, "2026-11-25", "the seed claim is refuted")
    assert book.build(warningiserror=True) == ""

    page = html.unescape(book.html("changes"))
    assert page.index("2026-11-25") < page.index("2026-11-20")  # newest first
    day = page.split("2026-11-25", 1)[1].split("2026-11-20", 1)[0]
    assert "seed.params" in day and "status unverified → refuted" in day and "re-statused" in day
    assert 'href="notes/claims.html#claim-seed.params"' in day
    assert "added: 1T (verified)" in page.split("2026-11-20", 1)[1]

    claims = html.unescape(book.html("notes/claims"))
    card = _text(claims.split('id="claim-seed.params"', 1)[1].split('<div class="kdalib-card', 1)[0])
    assert "History: first recorded 2026-11-20 · earlier: 2T (unverified, from 2026-11-20)" in card
    context = _text(claims.split('id="claim-m.context"', 1)[1].split('<div class="kdalib-card', 1)[0])
    assert "last checked 2026-11-20" in context
    assert "Cite this figure: " in context and "The Kimi field guide, claim m.context: 128K (verified" in context

    home = book.html("index")
    data = json.loads(re.search(rf'id="{POPOVER_DATA_ID}">(.*?)</script>', home, re.S).group(1))
    assert data["m.context"]["history"] == "first recorded 2026-11-20 · last checked 2026-11-20"


def test_without_git_history_the_page_says_why_and_the_build_passes(book):
    _with_changes_page(book)
    assert book.build(warningiserror=True) == ""
    assert "The history of sources.yaml is not available in this build" in html.unescape(book.html("changes"))


def test_the_status_page_shows_the_last_live_check_or_that_none_is_recorded(book):
    book.write("status.md", "# Status\n\n```{tracker-status}\n```\n")
    assert book.build(warningiserror=True) == ""
    assert "No live check of the sources is recorded in this copy" in html.unescape(book.html("status"))
    record = {
        "checked": "2026-12-05",
        "online": [
            {"source": "card", "state": "identical", "quotes": {"m.params.total": True}},
            {"source": "report", "state": "changed", "quotes": {"m.params.total.report": False}},
        ],
    }
    book.write("tracker/online.json", json.dumps(record))
    assert book.build(warningiserror=True) == ""
    page = _text(book.html("status"))
    assert "Last live check of the sources: 2026-12-05 (2 sources" in page
    assert "report: m.params.total.report" in page and "changed 1" in page
    book.write("tracker/online.json", "{not json")
    assert book.build(warningiserror=True) == ""
    assert "cannot be read (JSONDecodeError" in html.unescape(book.html("status"))


def test_citation_file_matches_the_package_and_the_published_book():
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert citation["cff-version"] == "1.2.0" and citation["title"] == "The Kimi field guide"
    assert f'version = "{citation["version"]}"' in pyproject
    assert citation["url"] == config["sphinx"]["config"]["html_baseurl"]
    assert citation["repository-code"] == config["repository"]["url"]

"""A tiny Sphinx + MyST book with a checklist, built in tmp_path by the tests."""

from __future__ import annotations

import hashlib
import io
import textwrap
from pathlib import Path

import pytest
from sphinx.testing.util import SphinxTestApp

CARD = "# Model M\n\n| **Total Parameters** | 1T |\n| Context | 128K |\n"
REPORT = "Model M has 1.04T total parameters.\nThe seed note was wrong.\n"
SEED = "Model M has 2T parameters, I think.\n"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


SOURCES = f"""\
sources:
  - id: card
    title: Model M card
    publisher: Example Lab
    kind: model_card
    url: https://example.org/m
    snapshot: {{file: card.md, sha256: {_sha(CARD)}}}
    link: {{checked: 2026-11-28, status: ok}}
  - id: report
    title: Model M report
    publisher: Example Lab
    kind: tech_report
    url: https://example.org/r
    snapshot: {{file: report.txt, sha256: {_sha(REPORT)}}}
  - id: seed
    title: Seed note
    publisher: the requester
    kind: seed
    snapshot: {{file: seed.txt, sha256: {_sha(SEED)}}}
claims:
  - id: m.params.total
    subject: Model M
    property: total parameters
    value: 1
    unit: T parameters
    display: 1T
    source: card
    quote: "Total Parameters** | 1T"
    status: verified
    notes: {{conflicts_with: [m.params.total.report]}}
  - id: m.params.total.report
    subject: Model M
    property: total parameters
    value: 1.04
    unit: T parameters
    display: 1.04T
    source: report
    quote: "1.04T total parameters"
    status: verified
    notes: {{conflicts_with: [m.params.total], text: the report is more precise}}
  - id: m.context
    subject: Model M
    benchmark: {{name: Needle, metric: accuracy, setting: long context, tools: false}}
    value: 128
    unit: K tokens
    display: 128K
    source: card
    quote: "Context | 128K"
    status: verified
  - id: seed.params
    subject: Model M
    property: total parameters
    value: 2
    unit: T parameters
    display: 2T
    source: seed
    quote: "2T parameters"
    status: refuted
    verdict: wrong
    notes: {{evidence: [m.params.total], text: the card says 1T}}
"""

PAGES = {
    "conf.py": 'extensions = ["myst_parser", "kdalib.book"]\nmyst_enable_extensions = ["colon_fence"]\n'
    'exclude_patterns = ["_build"]\nhtml_theme = "basic"\n',
    "index.md": textwrap.dedent("""\
        # Home

        Model M has {claim}`m.params.total` of weights and a {claim}`m.context` window.

        ```{toctree}
        notes/claims
        notes/sources
        status
        ```
        """),
    "notes/claims.md": "# Claims\n\n```{claims-dashboard}\n```\n",
    "notes/sources.md": "# Sources\n\n```{source-checklist}\n```\n",
    "status.md": "# Status\n\n```{verify-summary}\n```\n\n```{kdalib-environment}\n```\n",
}


class Book:
    """Writes the project; ``build()`` runs Sphinx and returns the warnings text."""

    def __init__(self, root: Path, monkeypatch):
        self.root = root
        self.src = root / "book"
        self.snapshots = root / "snapshots"
        self.snapshots.mkdir()
        manifest = []
        for name, text, source in (
            ("card.md", CARD, "card"),
            ("report.txt", REPORT, "report"),
            ("seed.txt", SEED, "seed"),
        ):
            (self.snapshots / name).write_text(text)
            manifest.append(
                f"- {{file: {name}, source: {source}, version: v1, retrieved_from: test, "
                f"retrieved_on: 2026-11-28, origin: publisher, sha256: {_sha(text)}, "
                f"bytes: {len(text.encode())}}}\n"
            )
        (self.snapshots / "MANIFEST.yaml").write_text("".join(manifest))
        for name, text in PAGES.items():
            self.write(name, text)
        self.write("sources.yaml", SOURCES)
        monkeypatch.setenv("KDALIB_SNAPSHOTS", str(self.snapshots))
        import kdalib.environment

        monkeypatch.setattr(kdalib.environment, "collect", lambda: {"python": "3.11.test", "torch": "not installed"})

    def write(self, name: str, text: str) -> None:
        path = self.src / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def build(self, warningiserror: bool = False, freshenv: bool = True, parallel: int = 0) -> str:
        """Build the book; ``self.app`` is the finished app, ``self.read`` the pages Sphinx (re-)read."""
        warnings = io.StringIO()
        # SphinxTestApp resets docutils' global registries afterwards, so builds can repeat in one process
        app = SphinxTestApp(
            "html",
            srcdir=self.src,
            builddir=self.root / "build",
            freshenv=freshenv,
            status=io.StringIO(),
            warning=warnings,
            warningiserror=warningiserror,
            parallel=parallel,
        )
        self.read: list[str] = []
        app.connect("env-before-read-docs", lambda app, env, docnames: self.read.extend(docnames))
        try:
            app.build()
        finally:
            app.cleanup()
        self.app = app
        return warnings.getvalue()

    def html(self, page: str) -> str:
        return (self.root / "build" / "html" / f"{page}.html").read_text()


@pytest.fixture
def book(tmp_path, monkeypatch) -> Book:
    return Book(tmp_path, monkeypatch)

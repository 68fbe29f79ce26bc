"""Fixture checklists and snapshots for the kdalib.sources tests.

Two small snapshots stand in for the real archive: a Markdown model card and a
pdftotext-like report (ligatures, stray spaces, a table read column by column).
:class:`Workspace` writes a checklist built from Python dicts (so each test changes only
what it tests) or from literal text (where line numbers matter).
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import io
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from kdalib.sources.verify import Report, run_verify

CARD = """# Model M

| Field | Value |
|---|---|
| **Total Parameters** | 1T |
| **Activated Parameters** | 32B |
| Context Length | 128K |

We trained Model M on 15.5T tokens.
"""

REPORT = (
    "Model M: A Technical Report\n"
    "The model has 1.04T total parameters and\n"
    "32.6B activated parameters. The gate uses Diag(αt ) with\n"
    "eﬃcient kernels.\f\n"
    "Table 1: Results\n"
    "MMLU\nGPQA\n87.8\n75.1\n"
)


CHECKED = dt.date(2026, 11, 28)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def base_sources() -> list[dict]:
    return [
        {"id": "card", "title": "Model M card", "publisher": "Example Lab", "kind": "model_card",
         "url": "https://example.org/m", "snapshot": {"file": "card.md", "sha256": sha(CARD)},
         "link": {"checked": CHECKED, "status": "unchecked"}},
        {"id": "report", "title": "Model M report", "publisher": "Example Lab", "kind": "tech_report",
         "url": "https://example.org/m-report", "snapshot": {"file": "report.txt", "sha256": sha(REPORT)}},
    ]


def claim(claim_id: str, **fields) -> dict:
    """A verified property claim on the card; ``fields`` override or add keys (None removes)."""
    entry = {"id": claim_id, "subject": "Model M", "property": "total parameters", "value": 1,
             "unit": "T parameters", "display": "1T", "source": "card",
             "quote": "Total Parameters** | 1T", "status": "verified", "checked": CHECKED}
    entry.update(fields)
    return {k: v for k, v in entry.items() if v is not None}


def base_claims() -> list[dict]:
    return [
        claim("m.params.total"),
        claim("m.params.activated", property="activated parameters", value=32, unit="B parameters",
              display="32B", quote="Activated Parameters** | 32B"),
        claim("m.arch.gate", property="gate form", value="Diag(αt)", unit=None, display="Diag(αt)",
              source="report", quote="The gate uses Diag(αt)"),
    ]


def dump(data: dict) -> str:
    yaml = YAML(typ="rt")
    yaml.default_flow_style = False
    buffer = io.StringIO()
    yaml.dump(data, buffer)
    return buffer.getvalue()


class Workspace:
    """A book root in tmp_path with sources.yaml, notes/ and a snapshot store."""

    def __init__(self, root: Path):
        self.root = root
        self.snapshots = root / "snapshots"
        self.snapshots.mkdir()
        (self.snapshots / "card.md").write_text(CARD, encoding="utf-8")
        (self.snapshots / "report.txt").write_text(REPORT, encoding="utf-8")
        self.sources_path = root / "sources.yaml"
        (root / "notes").mkdir()

    def write(self, sources: list[dict] | None = None, claims: list[dict] | None = None,
              text: str | None = None) -> Path:
        if text is None:
            data = {"sources": copy.deepcopy(base_sources() if sources is None else sources),
                    "claims": copy.deepcopy(base_claims() if claims is None else claims)}
            text = dump(data)
        self.sources_path.write_text(text, encoding="utf-8")
        return self.sources_path

    def note(self, name: str, text: str) -> Path:
        path = self.root / "notes" / name
        path.write_text(text, encoding="utf-8")
        return path

    def verify(self, strict: bool = False) -> Report:
        return run_verify(self.sources_path, self.snapshots, self.root, strict=strict)


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path)


def codes(report_or_findings) -> list[str]:
    findings = getattr(report_or_findings, "findings", report_or_findings)
    return [f.code for f in findings]

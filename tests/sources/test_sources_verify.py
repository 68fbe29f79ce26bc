"""The cross-entry rules of run_verify: snapshots, quotes, conflicts, relations, reproductions, pages."""

from __future__ import annotations

import json
import time

import pytest
from sources_fixtures import REPORT, base_claims, base_sources, claim, codes, dump

from kdalib.sources.loader import load_document
from kdalib.sources.quotes import WHITESPACE_INSENSITIVE
from kdalib.sources.rules import check_conflicts
from kdalib.sources.verify import run_verify


def errors(report):
    return [f.code for f in report.errors]


def test_the_fixture_verifies_cleanly(ws):
    ws.write()
    report = ws.verify(strict=True)
    assert report.findings == []
    assert set(report.matches) == {c["id"] for c in base_claims()}
    assert report.matches["m.arch.gate"].kind == WHITESPACE_INSENSITIVE
    assert report.matches["m.params.total"].line == 5
    assert report.exit_code == 0


def test_quote_not_found_points_at_the_quote_line(ws):
    ws.write(claims=[claim("m.x", quote="Total Parameters** | 2T", value=2, display="2T")])
    report = ws.verify()
    (finding,) = report.errors
    assert finding.code == "quote-not-found" and finding.item == "m.x"
    assert finding.line == report.document.claims["m.x"].line_of("quote")
    assert "kdalib sources quote card" in finding.fix


def test_value_not_in_quote(ws):
    ws.write(claims=[claim("m.x", display="1.0T")])
    assert errors(ws.verify()) == ["value-not-in-quote"]


def test_sha_mismatch_is_an_error_even_when_not_strict(ws):
    (ws.snapshots / "card.md").write_text("# Model M\n| **Total Parameters** | 1T |\n")
    ws.write()
    report = ws.verify(strict=False)
    assert "sha-mismatch" in errors(report)
    assert report.snapshot_states["card"] == "sha-mismatch"
    assert "m.params.total" not in report.matches


def test_missing_snapshot_is_a_warning_unless_strict(ws):
    (ws.snapshots / "card.md").unlink()
    ws.write()
    lenient = ws.verify(strict=False)
    assert lenient.errors == [] and codes(lenient.warnings) == ["snapshot-missing"]
    assert lenient.missing_snapshots == ["card"]
    assert set(lenient.unchecked) == {"m.params.total", "m.params.activated"}
    strict = ws.verify(strict=True)
    assert errors(strict) == ["snapshot-missing"] and strict.exit_code == 1


def test_unverified_claims_are_not_quote_checked(ws):
    ws.write(claims=[claim("m.x", status="unverified", quote="nowhere in the card", value=9, display="9T")])
    assert ws.verify().findings == []


def test_verified_claim_on_a_source_without_snapshot(ws):
    sources = base_sources()
    del sources[0]["snapshot"]
    ws.write(sources=sources, claims=[claim("m.x")])
    assert errors(ws.verify()) == ["no-snapshot"]


# ---- conflicts -------------------------------------------------------------------------


def _conflicting(**a_fields):
    a = claim("m.total.card", **a_fields)
    b = claim("m.total.report", value=1.04, display="1.04T", source="report", quote="1.04T total parameters")
    return a, b


def test_undeclared_conflict_is_reported_once_naming_both_claims(ws):
    ws.write(claims=list(_conflicting()))
    (finding,) = ws.verify().errors
    assert (finding.code, finding.item) == ("undeclared-conflict", "m.total.card")
    assert "2 claims give 2 different values" in finding.message and "2 conflicts_with entries" in finding.message
    assert "m.total.card (line" in finding.message and "m.total.report (line" in finding.message


def test_mutually_declared_conflicts_may_both_be_verified(ws):
    a, b = _conflicting(conflicts_with=["m.total.report"])
    b["notes"] = {"conflicts_with": ["m.total.card"], "text": "the report is more precise"}
    ws.write(claims=[a, b])
    assert ws.verify().errors == []


def test_one_sided_conflict(ws):
    a, b = _conflicting(conflicts_with=["m.total.report"])
    ws.write(claims=[a, b])
    assert sorted(errors(ws.verify())) == ["one-sided-conflict", "undeclared-conflict"]


def test_conflicts_need_the_same_setting(ws):
    a = claim(
        "m.mmlu.5",
        property=None,
        benchmark={"name": "MMLU", "shots": 5},
        value=87.8,
        unit="%",
        display="87.8",
        source="report",
        quote="87.8",
    )
    b = claim(
        "m.mmlu.0",
        property=None,
        benchmark={"name": "MMLU", "shots": 0},
        value=75.1,
        unit="%",
        display="75.1",
        source="report",
        quote="75.1",
    )
    ws.write(claims=[a, b])
    assert ws.verify().errors == []
    b["benchmark"]["shots"] = 5
    ws.write(claims=[a, b])
    assert errors(ws.verify()) == ["undeclared-conflict"]


@pytest.mark.parametrize("count", [600, 2000])
def test_many_claims_on_one_figure_give_one_bounded_finding_quickly(tmp_path, count):
    # before: 600 claims printed 109 MB of pair findings and 2,000 ran out of memory
    sources = base_sources()[:1]
    claims = [claim(f"m.c{i}", status="unverified", quote=None, value=i, display=f"{i}T") for i in range(count)]
    claims[1]["conflicts_with"] = ["m.c0"]
    claims[0]["conflicts_with"] = ["m.c1"]
    (tmp_path / "notes").mkdir()
    path = tmp_path / "sources.yaml"
    path.write_text(dump({"sources": sources, "claims": claims}), encoding="utf-8")
    doc = load_document(path)
    started = time.perf_counter()
    findings = check_conflicts(doc)
    elapsed = time.perf_counter() - started
    (finding,) = findings
    assert finding.code == "undeclared-conflict"
    assert f"{count} claims give {count} different values" in finding.message
    assert f"{count * (count - 1) - 2} conflicts_with entries are missing" in finding.message
    assert f"and {count - 8} more" in finding.message and len(finding.format()) < 1500
    assert elapsed < 1.0, elapsed
    assert [f.code for f in run_verify(path, tmp_path, tmp_path).errors] == ["undeclared-conflict"]


def test_conflict_groups_with_same_values_are_not_conflicts(ws):
    a = claim("m.a")
    b = claim("m.b", value=1.0, display="1T", quote="Total Parameters** | 1T")
    ws.write(claims=[a, b])
    assert ws.verify().errors == []


def test_refuted_and_superseded_claims_may_disagree(ws):
    a, b = _conflicting(status="refuted", evidence=["m.total.report"])
    ws.write(claims=[a, b])
    assert ws.verify().errors == []
    a, b = _conflicting(status="verified")
    b["supersedes"] = "m.total.card"
    ws.write(claims=[a, b])
    assert ws.verify().errors == []


def test_superseded_needs_a_successor_and_evidence_must_be_verified(ws):
    old = claim("m.old", status="superseded")
    weak = claim("m.weak", status="unverified", display="3T", value=3, quote=None, property="p2")
    wrong = claim(
        "m.wrong",
        status="refuted",
        evidence=["m.weak"],
        property="p2",
        value=3,
        display="3T",
        quote=None,
        notes="seed said so",
    )
    ws.write(claims=[old, weak, wrong])
    assert sorted(errors(ws.verify())) == ["superseded-without-successor", "weak-evidence"]


# ---- reproduced claims -----------------------------------------------------------------


def _reproduced(ws, values, tolerance=0.01, key="speedup"):
    result = ws.root / "notebooks" / "results" / "cpu" / "02_kernel_speed.json"
    result.parent.mkdir(parents=True, exist_ok=True)
    if values is not None:
        result.write_text(json.dumps({"values": values, "device": "cpu", "commit": "abc"}))
    entry = claim(
        "m.speedup",
        status="reproduced",
        property="speedup",
        value=2.0,
        unit="x",
        display="2.0",
        quote=None,
        reproduced_by={"result": "notebooks/results/cpu/02_kernel_speed.json", "key": key, "tolerance": tolerance},
    )
    ws.write(claims=[entry])
    return ws.verify()


@pytest.mark.parametrize(
    "values, tolerance, key, words",
    [
        ({"speedup": 2.005}, 0.01, "speedup", None),
        ({"speedup": 2.5}, 0.01, "speedup", "0.5 away from the claimed 2.0"),
        ({"speedup": 2.0}, 0.01, "other", "records no value 'other' (it has: speedup)"),
        ({"speedup": "fast"}, 0.01, "speedup", "not a number"),
        (None, 0.01, "speedup", "does not exist"),
    ],
)
def test_reproduced_claims_are_checked_against_the_recorded_result(ws, values, tolerance, key, words):
    report = _reproduced(ws, values, tolerance, key)
    if words is None:
        assert report.errors == []
    else:
        (finding,) = report.errors
        assert finding.code == "reproduction-mismatch" and words in finding.message


def test_reproduced_result_without_values_object(ws):
    _reproduced(ws, {"speedup": 2.0})
    (ws.root / "notebooks/results/cpu/02_kernel_speed.json").write_text('{"speedup": 2.0}')
    report = ws.verify()
    assert "no top-level 'values'" in report.errors[0].message


# ---- pages -----------------------------------------------------------------------------


def test_unknown_claim_roles_in_notes_and_notebooks(ws):
    ws.write()
    ws.note(
        "k.md",
        "# K\n\nIt has {claim}`m.params.total` and {claim}`m.nope`.\n"
        "Example: ``{claim}`m.shown_as_code` ``\n```\n{claim}`m.in_code`\n```\n",
    )
    notebook = ws.root / "notebooks" / "01.ipynb"
    notebook.parent.mkdir()
    notebook.write_text(
        json.dumps(
            {
                "cells": [
                    {"cell_type": "code", "source": "{claim}`m.code_cell`"},
                    {"cell_type": "markdown", "source": ["# T\n", "see {claim}`m.cell_typo`\n"]},
                ]
            }
        )
    )
    report = ws.verify()
    found = sorted((f.file, f.line, f.item) for f in report.errors)
    assert found == [("notebooks/01.ipynb", 0, "m.cell_typo"), ("notes/k.md", 3, "m.nope")]
    assert "cell 1, line 2" in report.errors[0].message


def test_unknown_claim_ids_in_spec_tables(ws):
    ws.write()
    ws.note(
        "s.md",
        "# S\n\n```{spec-table}\n:columns: M | N\n"
        'total | m.params.total "(card)" | m.nope\n'
        'gate | "not" m.arch.gate | -\n```\n\nAfter the table: m.not_in_a_table | x\n',
    )
    (finding,) = ws.verify().errors
    assert (finding.code, finding.file, finding.line, finding.item) == (
        "unknown-claim-spec-table",
        "notes/s.md",
        5,
        "m.nope",
    )
    assert "spec-table id 'm.nope'" in finding.message


def test_spec_table_rows_and_cell_tokens():
    from kdalib.sources.spec_rows import cell_tokens, claim_ids, spec_table_rows

    text = 'x | y\n:::{spec-table}\n:columns: A | B\n\nrow | a.b "text, with | nothing" | -\n:::\nafter | z\n'
    assert list(spec_table_rows(text)) == [(5, ["row", 'a.b "text, with', 'nothing"', "-"])]
    assert cell_tokens('a.b "two words" c.d') == ["a.b", '"two words"', "c.d"]
    assert claim_ids('"see" a.b c.d') == ["a.b", "c.d"] and cell_tokens("-") == []


def test_hand_typed_figures_in_notes_are_errors(ws):
    ws.write()
    ws.note("k.md", "# K\n\nModel M has 1T parameters, i.e. {claim}`m.params.total`.\n")
    (finding,) = ws.verify().errors
    assert (finding.code, finding.file, finding.line) == ("hand-typed-figure", "notes/k.md", 3)
    assert "'1T'" in finding.message


def test_report_json_and_summary(ws, tmp_path):
    (ws.snapshots / "report.txt").unlink()
    ws.write()
    report = ws.verify()
    out = tmp_path / "verify.json"
    report.write_json(out)
    data = json.loads(out.read_text())
    assert data["ok"] is True
    assert data["summary"]["claims_by_status"]["verified"] == 3
    assert data["missing_snapshots"] == ["report"] and data["unchecked_claims"] == ["m.arch.gate"]
    assert data["findings"][0]["code"] == "snapshot-missing"
    summary = report.format_summary()
    assert "quotes checked" in summary and "verified" in summary


def test_report_text_constant_is_the_fixture_snapshot(ws):
    assert (ws.snapshots / "report.txt").read_text() == REPORT


def test_a_missing_snapshot_is_fixed_by_where_it_came_from(tmp_path):
    from kdalib.sources.manifest import missing_snapshot_fix
    from kdalib.sources.snapshots import SnapshotStore

    entry = (
        "- file: {file}\n  source: {source}\n  version: v1\n  retrieved_from: {origin_text}\n"
        "  retrieved_on: '2026-11-28'\n  origin: {origin}\n  sha256: \"{sha}\"\n  bytes: 1\n"
    )
    (tmp_path / "MANIFEST.yaml").write_text(
        entry.format(
            file="card.md", source="card", origin_text="Org/Repo@abc:README.md", origin="publisher", sha="a" * 64
        )
        + entry.format(
            file="page.html", source="page", origin_text="https://example.org/page", origin="extraction", sha="b" * 64
        )
    )
    store = SnapshotStore(tmp_path)
    local = missing_snapshot_fix("card", "card.md", store)
    assert "added from a local file (Org/Repo@abc:README.md)" in local and "git checkout -- snapshots/card.md" in local
    assert "kdalib sources add URL --id card --snapshot FILE --origin publisher" in local
    assert "sources fetch" in local and "cannot recreate" in local
    fetched = missing_snapshot_fix("page", "page.html", store)
    assert fetched.startswith("run `kdalib sources fetch page` (it archives https://example.org/page again)")
    unknown = missing_snapshot_fix("other", "other.txt", store)
    assert "git checkout -- snapshots/other.txt" in unknown

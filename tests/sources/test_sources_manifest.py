"""snapshots/MANIFEST.yaml against the store and sources.yaml, and the repository's own store."""

from __future__ import annotations

from pathlib import Path

import pytest
from sources_fixtures import CARD, REPORT, codes, manifest_entry, manifest_text

from kdalib.sources import manifest as mf
from kdalib.sources.loader import load_document
from kdalib.sources.snapshots import SnapshotStore

REPO = Path(__file__).resolve().parents[2]


def manifest_findings(report):
    return [
        f for f in report.findings if f.file.endswith("MANIFEST.yaml") or f.code.startswith(("manifest", "unlisted"))
    ]


def test_a_complete_manifest_gives_no_finding(ws):
    ws.write()
    assert manifest_findings(ws.verify(strict=True)) == []


def test_a_file_without_an_entry_is_an_error_naming_the_file(ws):
    (ws.snapshots / "stray.txt").write_text("left here\n")
    (ws.snapshots / ".card.md.123.tmp").write_text("an interrupted write is not a snapshot\n")
    ws.write()
    [finding] = manifest_findings(ws.verify())
    assert (finding.code, finding.severity, finding.line) == ("unlisted-snapshot", "error", 1)
    assert finding.file == str(ws.snapshots / "stray.txt")


def test_an_entry_whose_sha256_disagrees_points_at_its_sha256_line(ws):
    entries = [manifest_entry("card.md", "card", CARD, sha256="0" * 64), manifest_entry("report.txt", "report", REPORT)]
    (ws.snapshots / "MANIFEST.yaml").write_text(manifest_text(entries))
    ws.write()
    [finding] = manifest_findings(ws.verify())
    lines = (ws.snapshots / "MANIFEST.yaml").read_text().splitlines()
    assert finding.code == "manifest-sha-mismatch" and finding.file == str(ws.snapshots / "MANIFEST.yaml")
    assert lines[finding.line - 1].strip().startswith("sha256:") and "0" * 64 in lines[finding.line - 1]
    assert "kdalib sources fetch --new-version" in finding.fix


@pytest.mark.parametrize(
    "change, code",
    [
        ({"bytes": 3}, "manifest-size-mismatch"),
        ({"source": "ghost"}, "manifest-unknown-source"),
        ({"source": "report"}, "manifest-source-mismatch"),
        ({"origin": "official"}, "bad-origin"),
        ({"retrieved_on": "2026-02-30"}, "bad-retrieved-on"),
        ({"licence": "MIT", "colour": "red"}, "unknown-key"),
    ],
)
def test_each_disagreement_is_a_finding(ws, change, code):
    card = {**manifest_entry("card.md", "card", CARD), **change}
    (ws.snapshots / "MANIFEST.yaml").write_text(manifest_text([card, manifest_entry("report.txt", "report", REPORT)]))
    ws.write()
    report = ws.verify()
    assert code in codes(manifest_findings(report)) and report.exit_code == 1


def test_a_missing_manifest_warns_and_fails_under_strict(ws):
    (ws.snapshots / "MANIFEST.yaml").unlink()
    ws.write()
    assert [(f.code, f.severity) for f in manifest_findings(ws.verify())] == [("manifest-missing", "warning")]
    assert [(f.code, f.severity) for f in manifest_findings(ws.verify(strict=True))] == [("manifest-missing", "error")]


def test_an_unreadable_manifest_is_a_finding_with_its_line(ws):
    (ws.snapshots / "MANIFEST.yaml").write_text("- file: card.md\n  source: [unclosed\n")
    ws.write()
    [finding] = manifest_findings(ws.verify())
    assert finding.code == "manifest-unreadable" and finding.line >= 2


def test_with_entry_appends_and_replaces_keeping_comments(ws):
    store = SnapshotStore(ws.snapshots)
    path = ws.snapshots / "MANIFEST.yaml"
    (ws.snapshots / "new.md").write_text("# New\n")
    path.write_bytes(mf.with_entry(store, "new.md", "card", "v2", "https://example.org/new", "extraction", b"# New\n"))
    path.write_bytes(mf.with_entry(store, "new.md", "card", "v3", "https://example.org/new", "publisher", b"# New\n"))
    entries, findings = mf.load_manifest(path)
    assert path.read_text().startswith("# test manifest\n") and findings == []
    assert list(entries) == ["card.md", "report.txt", "new.md"]
    assert (entries["new.md"].version, entries["new.md"].origin, entries["new.md"].bytes) == ("v3", "publisher", 6)
    with pytest.raises(ValueError, match="origin"):
        mf.with_entry(store, "new.md", "card", "v3", "x", "ours", b"")


def test_with_entry_starts_a_missing_manifest(ws):
    (ws.snapshots / "MANIFEST.yaml").unlink()
    text = mf.with_entry(SnapshotStore(ws.snapshots), "card.md", "card", "v1", "x", "publisher", CARD.encode())
    (ws.snapshots / "MANIFEST.yaml").write_bytes(text)
    entries, findings = mf.load_manifest(ws.snapshots / "MANIFEST.yaml")
    assert text.startswith(b"# The archived texts") and findings == [] and list(entries) == ["card.md"]


def test_the_repository_manifest_lists_every_archived_text_once():
    """The shipped store: every file listed, each entry's source names that file in sources.yaml."""
    doc = load_document(REPO / "sources.yaml")
    store = SnapshotStore(REPO / "snapshots")
    entries, findings = mf.load_manifest(store.root / mf.MANIFEST_NAME)
    assert findings == []
    assert sorted(entries) == mf.store_files(store.root)
    assert mf.check_manifest(doc, store, strict=True) == []
    for entry in entries.values():
        assert entry.file in [s.file for s in doc.sources[entry.source].all_snapshots()]


# ---- the manifest is read by the checklist's safe YAML loader ---------------------------------


def _alias_bomb(levels: int = 6, width: int = 10) -> str:
    lines = ['- file: card.md\n  source: card\n  notes: &a0 ["lol"]\n']
    for level in range(1, levels):
        lines.append(f"  l{level}: &a{level} [{', '.join(f'*a{level - 1}' for _ in range(width))}]\n")
    lines.append(f"- *a{levels - 1}\n")
    return "".join(lines)


def test_a_yaml_alias_bomb_in_the_manifest_is_refused_at_once(ws):
    import tracemalloc

    path = ws.snapshots / "MANIFEST.yaml"
    path.write_text(_alias_bomb())
    tracemalloc.start()
    try:
        entries, findings = mf.load_manifest(path)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024
    assert entries == {} and codes(findings) == ["manifest-unreadable"]
    assert "anchor" in findings[0].message and len(findings[0].message) < 300


def test_a_bad_entry_is_described_in_bounded_length(ws):
    path = ws.snapshots / "MANIFEST.yaml"
    path.write_text("- [" + ", ".join(["x" * 50] * 2000) + "]\n")
    _, findings = mf.load_manifest(path)
    assert codes(findings) == ["manifest-bad-entry"] and len(findings[0].message) < 200


def test_with_entry_refuses_an_alias_in_the_manifest_it_rewrites(ws):
    (ws.snapshots / "MANIFEST.yaml").write_text(_alias_bomb(3, 3))
    with pytest.raises(ValueError, match="anchor"):
        mf.with_entry(SnapshotStore(ws.snapshots), "new.md", "card", "v1", "x", "publisher", b"# New\n")

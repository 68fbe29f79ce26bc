"""Every file verify reads is resolved inside its store: no symbolic links, no absolute or parent
paths, no devices, no file over its size cap, no name the system refuses."""

from __future__ import annotations

import json
import os

import pytest
from sources_fixtures import CARD, REPORT, base_sources, claim, codes, manifest_entry, manifest_text, sha

from kdalib.sources import files
from kdalib.sources.loader import load_text
from kdalib.sources.manifest import load_manifest


def manifest_problems(report):
    return [f for f in report.findings if f.file.endswith("MANIFEST.yaml")]


# ---- the reader itself -----------------------------------------------------------------------


def test_read_inside_returns_a_regular_file_of_the_store(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "b.txt").write_bytes(b"text")
    assert files.read_inside(tmp_path, "a/b.txt", max_bytes=10) == b"text"


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("/etc/hostname", "absolute"),
        ("../outside.txt", "'..'"),
        ("a/../../outside.txt", "'..'"),
        ("a\0b", "control character"),
        ("", "empty"),
        ("a\\b", "backslash"),
    ],
)
def test_read_inside_refuses_names_that_leave_the_store(tmp_path, name, words):
    with pytest.raises(files.UnsafeFile, match=words):
        files.read_inside(tmp_path, name, max_bytes=10)


def test_read_inside_refuses_links_devices_folders_and_big_files(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    store = tmp_path / "store"
    (store / "sub").mkdir(parents=True)
    (store / "link.txt").symlink_to(outside)
    (store / "dirlink").symlink_to(tmp_path)
    (store / "zero").symlink_to("/dev/zero")
    (store / "big.txt").write_bytes(b"x" * 11)
    os.mkfifo(store / "pipe")
    for name, words in [
        ("link.txt", "symbolic link"),
        ("dirlink/outside.txt", "symbolic link"),
        ("zero", "symbolic link"),
        ("sub", "not a regular file"),
        ("pipe", "not a regular file"),
        ("big.txt", "over the 10-byte cap"),
        ("none.txt", "not found"),
    ]:
        with pytest.raises(files.UnsafeFile, match=words):
            files.read_inside(store, name, max_bytes=10)
    with pytest.raises(files.UnsafeFile, match="not found") as caught:
        files.read_inside(store, "none.txt", max_bytes=10)
    assert caught.value.missing


# ---- the snapshot store ----------------------------------------------------------------------


def test_a_snapshot_that_is_a_symbolic_link_does_not_verify(ws, tmp_path):
    outside = tmp_path / "outside" / "card.md"
    outside.parent.mkdir()
    outside.write_text(CARD)
    (ws.snapshots / "card.md").unlink()
    (ws.snapshots / "card.md").symlink_to(outside)
    ws.write()
    report = ws.verify()
    assert "snapshot-unreadable" in codes(report.errors)
    assert "m.params.total" not in report.matches
    assert any("symbolic link" in f.message for f in report.errors)


def test_a_link_to_a_device_in_the_store_is_a_finding(ws):
    (ws.snapshots / "report.txt").unlink()
    (ws.snapshots / "report.txt").symlink_to("/dev/zero")
    ws.write()
    report = ws.verify()
    assert "snapshot-unreadable" in codes(report.errors)
    assert any("symbolic link" in f.message for f in manifest_problems(report))


@pytest.mark.parametrize("name", ["/etc/hostname", "../sources.yaml", "/dev/zero"])
def test_manifest_file_paths_stay_inside_the_store(ws, name):
    entries = [manifest_entry("card.md", "card", CARD), manifest_entry("report.txt", "report", REPORT)]
    entries.append(manifest_entry(name, "card", "x"))
    (ws.snapshots / "MANIFEST.yaml").write_text(manifest_text(entries))
    ws.write()
    report = ws.verify()
    problems = manifest_problems(report)
    assert [f.code for f in problems] == ["manifest-bad-file"]
    assert "leaves the snapshot store" in problems[0].message
    if name == "/etc/hostname" and os.path.exists(name):
        real = sha(open(name, encoding="utf-8", errors="replace").read())
        assert all(real not in f.message for f in report.findings)  # no oracle for the machine's files


def test_a_nul_in_a_snapshot_or_manifest_name_is_a_finding(ws):
    sources = base_sources()
    sources[0]["snapshot"] = {"file": "card\0.md", "sha256": sha(CARD)}
    ws.write(sources=sources)
    assert "bad-file" in codes(ws.verify().findings)
    entries = [manifest_entry("card.md", "card", CARD), manifest_entry("a\0b.txt", "report", REPORT)]
    (ws.snapshots / "MANIFEST.yaml").write_text(manifest_text(entries))
    ws.write()
    assert "manifest-bad-file" in codes(ws.verify().findings)
    _, findings = load_manifest(ws.snapshots / "MANIFEST.yaml")
    assert codes(findings) == ["manifest-bad-file"]


# ---- pages and recorded results --------------------------------------------------------------


def test_a_page_linked_to_a_device_is_a_finding(ws):
    ws.write()
    (ws.root / "notes" / "zero.md").symlink_to("/dev/zero")
    report = ws.verify()
    assert [f.code for f in report.errors] == ["unreadable-page"]
    assert "symbolic link" in report.errors[0].message


def _reproduced(ws, result: str):
    entry = claim(
        "m.speedup",
        status="reproduced",
        property="speedup",
        value=2.0,
        unit="x",
        display="2.0",
        quote=None,
        reproduced_by={"result": result, "key": "speedup", "tolerance": 0.1},
    )
    ws.write(claims=[entry])
    return ws.verify()


def test_a_reproduced_result_outside_the_repository_is_refused(ws, tmp_path):
    outside = tmp_path / "elsewhere" / "r.json"
    outside.parent.mkdir()
    outside.write_text(json.dumps({"values": {"speedup": 2.0}}))
    for result in (str(outside), "../elsewhere/r.json"):
        found = codes(_reproduced(ws, result).errors)
        assert "bad-result" in found and "reproduction-mismatch" not in found  # never read


def test_a_reproduced_result_linked_to_a_device_is_a_finding(ws):
    result = ws.root / "notebooks" / "results" / "r.json"
    result.parent.mkdir(parents=True)
    result.symlink_to("/dev/zero")
    report = _reproduced(ws, "notebooks/results/r.json")
    [finding] = report.errors
    assert finding.code == "reproduction-mismatch" and "symbolic link" in finding.message


def test_the_schema_names_a_bad_result_path():
    text = """\
sources: []
claims:
  - {id: m.x, subject: M, property: p, value: 2, display: "2", source: s, status: unverified,
     reproduced_by: {result: /etc/os-release, key: k, tolerance: 0}}
"""
    doc = load_text(text)
    assert "bad-result" in codes(doc.findings)

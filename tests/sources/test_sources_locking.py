"""``sources add`` and ``sources fetch`` edit sources.yaml and the manifest under a lock, and an
interrupted fetch is recovered by the next one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sources_fixtures import base_sources

from kdalib import locking
from kdalib.cli import main
from kdalib.sources import commands, versions
from kdalib.sources.loader import load_document
from kdalib.sources.manifest import load_manifest

REPO = Path(__file__).resolve().parents[2]


def add_args(ws, url: str, snapshot: Path, source_id: str) -> list[str]:
    return [
        "sources",
        "--sources",
        str(ws.sources_path),
        "--snapshots",
        str(ws.snapshots),
        "add",
        url,
        "--snapshot",
        str(snapshot),
        "--id",
        source_id,
        "--origin",
        "publisher",
    ]


def recorded(ws) -> tuple[set[str], set[str]]:
    """The source ids in sources.yaml, and the sources the manifest has entries for."""
    entries, problems = load_manifest(ws.snapshots / "MANIFEST.yaml")
    assert problems == []
    return set(load_document(ws.sources_path).sources), {e.source for e in entries.values()}


def test_an_add_that_starts_while_another_edits_waits_its_turn(ws, tmp_path, monkeypatch, capsys):
    """Deterministic interleaving: the second add runs while the first one holds the files it read."""
    ws.write()
    for name in ("one", "two"):
        (tmp_path / f"{name}.md").write_text(f"# {name}\n")
    monkeypatch.setattr(locking, "WAIT_SECONDS", 0.2)
    inner: list[int] = []
    original = commands.load_round_trip

    def load_then_interleave(path):
        loaded = original(path)
        if not inner:
            inner.append(main(add_args(ws, "https://example.org/two", tmp_path / "two.md", "two")))
        return loaded

    monkeypatch.setattr(commands, "load_round_trip", load_then_interleave)
    first = main(add_args(ws, "https://example.org/one", tmp_path / "one.md", "one"))
    err = capsys.readouterr().err
    ids, manifest_sources = recorded(ws)
    # the inner add could not take the lock and said so; the outer one finished; nothing is lost
    assert (first, inner) == (0, [2]) and "is being edited by another kdalib command" in err
    assert "one" in ids and "two" not in ids and ids - {"card", "report"} == manifest_sources - {"card", "report"}


def test_concurrent_adds_all_land(ws, tmp_path):
    ws.write()
    count = 4
    procs = []
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for index in range(count):
        text = tmp_path / f"n{index}.md"
        text.write_text(f"# Source {index}\n")
        argv = add_args(ws, f"https://example.org/n{index}", text, f"n{index}")
        procs.append(subprocess.Popen([sys.executable, "-m", "kdalib", *argv], env=env, stdout=subprocess.DEVNULL))
    assert [proc.wait(timeout=120) for proc in procs] == [0] * count
    ids, manifest_sources = recorded(ws)
    assert {f"n{i}" for i in range(count)} <= ids and {f"n{i}" for i in range(count)} <= manifest_sources


def test_the_lock_is_a_hidden_file_beside_what_it_guards(ws):
    ws.write()
    with locking.locked(ws.sources_path, ws.snapshots / "MANIFEST.yaml"):
        with pytest.raises(locking.Busy, match="another kdalib command"):
            with locking.locked(ws.sources_path, wait=0):
                pass
    assert (ws.root / ".sources.yaml.lock").exists()
    assert (ws.snapshots / ".MANIFEST.yaml.lock").exists()


# ---- an interrupted fetch ----------------------------------------------------------------------


def test_a_fetch_killed_after_the_manifest_write_is_recovered(ws, server, capsys, monkeypatch):
    sources = base_sources()
    sources.append({"id": "page", "title": "Page", "publisher": "Lab", "kind": "docs", "url": server.url("/card.md")})
    ws.write(sources=sources)
    argv = ["sources", "--sources", str(ws.sources_path), "--snapshots", str(ws.snapshots), "fetch", "page"]
    real_write = versions.atomic_write_bytes

    def killed_before_sources_yaml(path, data):
        if Path(path) == ws.sources_path:
            raise KeyboardInterrupt  # stands for kill -9 between the manifest and sources.yaml
        real_write(path, data)

    monkeypatch.setattr(versions, "atomic_write_bytes", killed_before_sources_yaml)
    assert main([*argv, "--allow-loopback"]) != 0  # the CLI reports the interruption
    monkeypatch.setattr(versions, "atomic_write_bytes", real_write)
    assert (ws.snapshots / "page.md").exists() and load_document(ws.sources_path).sources["page"].snapshot is None
    # the file and its manifest entry are there, sources.yaml does not name it: the next fetch finishes the job
    server.httpd.routes["/card.md"] = lambda h, n: h._send(200, b"# Model M\n\nchanged since\n", "text/markdown")
    code = main([*argv, "--allow-loopback"])
    out = capsys.readouterr().out
    assert code == 0 and "recovered" in out
    doc = load_document(ws.sources_path)
    assert doc.findings == [] and doc.sources["page"].snapshot.file == "page.md"
    assert main(list(ws.cli_args("verify", "--strict"))) == 0


def test_a_file_named_by_sources_yaml_is_never_replaced(ws, server, capsys):
    sources = base_sources()
    sources.append({"id": "page", "title": "Page", "publisher": "Lab", "kind": "docs", "url": server.url("/card.md")})
    sources[1]["versions"] = [
        {"file": "page.md", "sha256": "0" * 64, "retrieved": "2026-01-01", "url": "https://example.org/x"}
    ]
    ws.write(sources=sources)
    (ws.snapshots / "page.md").write_text("kept\n")
    argv = ["sources", "--sources", str(ws.sources_path), "--snapshots", str(ws.snapshots), "fetch", "page"]
    assert main([*argv, "--allow-loopback"]) == 1
    assert "exists already" in capsys.readouterr().out and (ws.snapshots / "page.md").read_text() == "kept\n"

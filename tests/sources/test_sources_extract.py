"""Text extraction runs in a bounded worker: a hostile page becomes a finding for its source,
within a time and a memory limit, and the rest of the run goes on."""

from __future__ import annotations

import pytest
from sources_fixtures import REPORT, base_sources, codes, pdf_with_stream, tiny_pdf

from kdalib.cli import main
from kdalib.sources import extract, tracker
from kdalib.sources.http import FetchPolicy, SafeClient
from kdalib.sources.loader import load_document
from kdalib.sources.snapshots import SnapshotStore


def test_extraction_gives_the_same_text_as_before():
    assert "Kimi PDF text 1T" in extract.extract_text(tiny_pdf("Kimi PDF text 1T"), "application/pdf")
    assert extract.extract_text(b"<p>a &amp; b</p>", "text/html").split() == ["a", "&", "b"]
    assert extract.extract_text("naïve".encode("latin-1"), "text/plain; charset=latin-1") == "naïve"


@pytest.mark.parametrize(
    ("body", "content_type", "words"),
    [
        (b"<html><![<![ x", "text/html", "AssertionError"),
        (pdf_with_stream(b"BT /F1 12 Tf " + b"[" * 100_000 + b" TJ ET"), "application/pdf", "RecursionError"),
        (b"%PDF-1.4 garbage", "application/pdf", "not a readable PDF"),
    ],
)
def test_a_hostile_body_is_an_extraction_error(body, content_type, words):
    with pytest.raises(extract.ExtractionError, match=words):
        extract.extract_text(body, content_type)


def test_extraction_stops_at_its_time_limit():
    # html.parser needs minutes for this body; the worker is stopped after one second
    with pytest.raises(extract.ExtractionError, match="did not finish within 1 second"):
        extract.extract_text(b"<a" * 150_000, "text/html", extract.ExtractLimits(seconds=1))


def test_extraction_stops_at_its_memory_limit():
    body = b"<p>" + b"x" * (8 << 20) + b"</p>"
    assert len(extract.extract_text(body, "text/html")) > 8 << 20
    with pytest.raises(extract.ExtractionError, match="memory"):
        extract.extract_text(body, "text/html", extract.ExtractLimits(memory_bytes=16 << 20))


def test_a_hostile_live_page_is_a_finding_and_the_run_goes_on(ws, server, capsys, tmp_path):
    server.httpd.routes["/hostile.html"] = lambda h, n: h._send(200, b"<html><![<![ x", "text/html")
    server.httpd.routes["/report.txt"] = lambda h, n: h._send(200, REPORT.encode(), "text/plain; charset=utf-8")
    sources = base_sources()
    sources[0]["live_url"] = server.url("/hostile.html")
    sources[1]["live_url"] = server.url("/report.txt")
    ws.write(sources=sources)
    out_json = tmp_path / "v.json"
    code = main(list(ws.cli_args("verify", "--online", "--allow-loopback", "--json", str(out_json))))
    out = capsys.readouterr().out
    assert code == 0  # drift and unreadable pages are warnings
    assert "[extraction-failed] card:" in out and "AssertionError" in out
    assert "verify OK" in out and out_json.exists()


def test_the_tracker_passes_its_limits_to_the_worker(ws, server):
    server.httpd.routes["/slow.html"] = lambda h, n: h._send(200, b"<a" * 150_000, "text/html")
    sources = base_sources()
    sources[0]["live_url"] = server.url("/slow.html")
    sources[1]["live_url"] = None
    sources[1]["url"] = None
    sources[1]["kind"] = "seed"
    ws.write(sources=sources, claims=[])
    doc = load_document(ws.sources_path)
    client = SafeClient(FetchPolicy(allow_loopback=True, min_interval=0))
    tracks = tracker.track_all(doc, client, SnapshotStore(ws.snapshots), extract.ExtractLimits(seconds=1))
    assert [t.state for t in tracks] == [tracker.UNREADABLE, tracker.NOT_TRACKED]
    assert codes(tracker.track_findings(doc, tracks)) == ["extraction-failed"]

"""Fixture checklists, snapshots and a local HTTP server for the kdalib.sources tests.

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
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

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
        {
            "id": "card",
            "title": "Model M card",
            "publisher": "Example Lab",
            "kind": "model_card",
            "url": "https://example.org/m",
            "snapshot": {"file": "card.md", "sha256": sha(CARD)},
            "link": {"checked": CHECKED, "status": "unchecked"},
        },
        {
            "id": "report",
            "title": "Model M report",
            "publisher": "Example Lab",
            "kind": "tech_report",
            "url": "https://example.org/m-report",
            "snapshot": {"file": "report.txt", "sha256": sha(REPORT)},
        },
    ]


def claim(claim_id: str, **fields) -> dict:
    """A verified property claim on the card; ``fields`` override or add keys (None removes)."""
    entry = {
        "id": claim_id,
        "subject": "Model M",
        "property": "total parameters",
        "value": 1,
        "unit": "T parameters",
        "display": "1T",
        "source": "card",
        "quote": "Total Parameters** | 1T",
        "status": "verified",
        "checked": CHECKED,
    }
    entry.update(fields)
    return {k: v for k, v in entry.items() if v is not None}


def base_claims() -> list[dict]:
    return [
        claim("m.params.total"),
        claim(
            "m.params.activated",
            property="activated parameters",
            value=32,
            unit="B parameters",
            display="32B",
            quote="Activated Parameters** | 32B",
        ),
        claim(
            "m.arch.gate",
            property="gate form",
            value="Diag(αt)",
            unit=None,
            display="Diag(αt)",
            source="report",
            quote="The gate uses Diag(αt)",
        ),
    ]


def manifest_entry(file: str, source: str, text: str, **fields) -> dict:
    """A complete manifest entry for ``text`` stored as ``file``; ``fields`` override keys."""
    entry = {
        "file": file,
        "source": source,
        "version": "v1",
        "retrieved_from": f"https://example.org/{file}",
        "retrieved_on": "2026-11-28",
        "origin": "publisher",
        "sha256": sha(text),
        "bytes": len(text.encode("utf-8")),
    }
    entry.update(fields)
    return entry


def manifest_text(entries: list[dict] | None = None) -> str:
    """MANIFEST.yaml for the store (default: the card and the report)."""
    if entries is None:
        entries = [manifest_entry("card.md", "card", CARD), manifest_entry("report.txt", "report", REPORT)]
    yaml = YAML(typ="rt")
    buffer = io.StringIO()
    yaml.dump(entries, buffer)
    return "# test manifest\n" + buffer.getvalue()


def dump(data: dict) -> str:
    yaml = YAML(typ="rt")
    yaml.default_flow_style = False
    yaml.representer.ignore_aliases = lambda data: True  # a shared date must not become an anchor
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
        (self.snapshots / "MANIFEST.yaml").write_text(manifest_text(), encoding="utf-8")
        self.sources_path = root / "sources.yaml"
        (root / "notes").mkdir()

    def write(
        self, sources: list[dict] | None = None, claims: list[dict] | None = None, text: str | None = None
    ) -> Path:
        if text is None:
            data = {
                "sources": copy.deepcopy(base_sources() if sources is None else sources),
                "claims": copy.deepcopy(base_claims() if claims is None else claims),
            }
            text = dump(data)
        self.sources_path.write_text(text, encoding="utf-8")
        return self.sources_path

    def note(self, name: str, text: str) -> Path:
        path = self.root / "notes" / name
        path.write_text(text, encoding="utf-8")
        return path

    def cli_args(self, command: str = "verify", *extra: str) -> tuple[str, ...]:
        """``kdalib`` arguments for ``command`` pointed at this workspace's files."""
        return (
            command,
            "--sources",
            str(self.sources_path),
            "--snapshots",
            str(self.snapshots),
            "--root",
            str(self.root),
            *extra,
        )

    def verify(self, strict: bool = False) -> Report:
        return run_verify(self.sources_path, self.snapshots, self.root, strict=strict)


def codes(report_or_findings) -> list[str]:
    findings = getattr(report_or_findings, "findings", report_or_findings)
    return [f.code for f in findings]


# ---- a local HTTP server on 127.0.0.1 for the online parts ----------------------------


def pdf_with_stream(stream: bytes) -> bytes:
    """A one-page PDF whose content stream is ``stream`` (xref offsets computed, so pypdf reads it)."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def tiny_pdf(text: str) -> bytes:
    """A one-page PDF showing ``text`` in Helvetica."""
    return pdf_with_stream(f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode())


class _Handler(BaseHTTPRequestHandler):
    """Routes that exercise every rule of the client. Hits are counted per path."""

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, body: bytes = b"", content_type: str = "text/plain", headers: dict | None = None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        hits = self.server.hits
        hits[self.path] = hits.get(self.path, 0) + 1
        count = hits[self.path]
        route = self.server.routes.get(self.path.split("?")[0])
        if route is None:
            self._send(404, b"not found")
        else:
            route(self, count)


def _redirect(target: str, code: int = 302):
    return lambda h, n: h._send(code, headers={"Location": target})


def _slow(handler, count):
    time.sleep(1.0)
    handler._send(200, b"late")


def _streamed_big(handler, count):
    handler.send_response(200)
    handler.send_header("Content-Type", "text/plain")
    handler.end_headers()
    try:
        for _ in range(64):
            handler.wfile.write(b"x" * 1024)
    except (BrokenPipeError, ConnectionResetError):
        pass
    handler.close_connection = True


def _trickle(handler, count):
    """Headers at once, then one byte every 0.1 s: each read succeeds, the body never ends soon."""
    handler.send_response(200)
    handler.send_header("Content-Type", "text/plain")
    handler.send_header("Content-Length", "1000")
    handler.end_headers()
    try:
        for _ in range(1000):
            handler.wfile.write(b"x")
            handler.wfile.flush()
            time.sleep(0.1)
    except (BrokenPipeError, ConnectionResetError):
        pass
    handler.close_connection = True


def _echo_host(handler, count):
    handler._send(200, f"Host: {handler.headers.get('Host')}".encode())


class LocalServer:
    """A ThreadingHTTPServer bound to 127.0.0.1 only, with per-path hit counts.

    With ``tls`` (an ``ssl.SSLContext`` holding a certificate) it serves https.
    """

    def __init__(self, tls=None) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.hits = {}
        scheme = "http"
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
            scheme = "https"
        self.port = self.httpd.server_port
        self.base = f"{scheme}://127.0.0.1:{self.port}"
        self.httpd.routes = {
            "/card.md": lambda h, n: h._send(200, CARD.encode(), "text/markdown; charset=utf-8"),
            "/page.html": lambda h, n: h._send(
                200,
                b"<html><head><style>p{}</style><script>x=1</script></head>"
                b"<body><h1>Model&nbsp;M</h1><p>Total <b>1T</b> params</p>"
                b"<table><tr><td>a</td><td>b</td></tr></table></body></html>",
                "text/html; charset=utf-8",
            ),
            "/doc.pdf": lambda h, n: h._send(200, tiny_pdf("Kimi PDF text 1T"), "application/pdf"),
            "/declared-big": lambda h, n: h._send(200, b"small", headers={"Content-Length": str(10**9)}),
            "/streamed-big": _streamed_big,
            "/rate-limited": lambda h, n: (
                h._send(429, b"slow down", headers={"Retry-After": "0"}) if n == 1 else h._send(200, b"finally")
            ),
            "/flaky": lambda h, n: h._send(503, b"busy") if n < 3 else h._send(200, b"recovered"),
            "/always-500": lambda h, n: h._send(500, b"broken"),
            "/slow": _slow,
            "/redirect-ok": _redirect("/card.md"),
            "/moved": _redirect("/card.md", 301),
            "/redirect-private": _redirect("http://10.0.0.1/admin"),
            "/redirect-metadata": _redirect("http://169.254.169.254/latest/meta-data/"),
            "/redirect-localhost-name": _redirect("http://localhost/"),
            "/loop": _redirect("/loop"),
            "/trickle": _trickle,
            "/echo-host": _echo_host,
            "/redirect-backslash": lambda h, n: h._send(
                302, headers={"Location": f"http://127.0.0.1:{h.server.server_port}\\@public.example/card.md"}
            ),
        }
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def hits(self) -> dict[str, int]:
        return self.httpd.hits

    def url(self, path: str) -> str:
        return self.base + path

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

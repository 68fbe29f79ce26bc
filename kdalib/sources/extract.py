"""Turn a fetched document into the plain text the snapshot store keeps.

HTML goes through the standard library's ``html.parser`` (scripts, styles and templates
dropped, block elements on their own lines, entities decoded); PDF through pypdf's text
extraction, pages separated by form feeds as ``pdftotext`` does; anything else is decoded
with the charset the server declared (UTF-8 otherwise).

A fetched body is hostile until proven otherwise: parsers can be made to fail in odd ways
(an AssertionError, a RecursionError), to take hours or to fill memory. :func:`extract_text`
therefore runs :func:`body_to_text` in a separate worker process bounded by
:class:`ExtractLimits` (wall-clock seconds, and memory as an address-space limit beyond what
the worker holds at start), and turns every failure into an :class:`ExtractionError` naming
what happened, which the callers report as a finding for that source.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

_SKIPPED = frozenset({"script", "style", "noscript", "template", "svg", "head"})
_BLOCKS = frozenset(
    {
        "address",
        "article",
        "aside",
        "blockquote",
        "br",
        "dd",
        "div",
        "dl",
        "dt",
        "figcaption",
        "figure",
        "footer",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "li",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "table",
        "tbody",
        "thead",
        "tr",
        "ul",
    }
)
_CELLS = frozenset({"td", "th"})


class _TextCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip_depth = 0

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in _SKIPPED:
            self.skip_depth += 1
        elif tag in _BLOCKS:
            self.parts.append("\n")
        elif tag in _CELLS:
            self.parts.append(" | ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED:
            self.skip_depth = max(0, self.skip_depth - 1)
        elif tag in _BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skip_depth:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """Visible text of an HTML page, one block per line, blank-line runs collapsed."""
    collector = _TextCollector()
    collector.feed(html)
    collector.close()
    lines = (re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in "".join(collector.parts).split("\n"))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def pdf_to_text(data: bytes) -> str:
    """Text of every page of a PDF, pages separated by form feeds.

    Raises:
        ValueError: when the bytes are not a readable PDF.
    """
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        return "\f".join(page.extract_text() or "" for page in reader.pages)
    except (PdfReadError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"not a readable PDF ({err})") from None


def _charset(content_type: str) -> str:
    match = re.search(r"charset=([\w.-]+)", content_type, re.IGNORECASE)
    return match.group(1) if match else "utf-8"


def body_to_text(body: bytes, content_type: str = "") -> str:
    """Plain text of a fetched body, chosen by Content-Type and, failing that, by its first bytes."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "application/pdf" or body.startswith(b"%PDF-"):
        return pdf_to_text(body)
    try:
        text = body.decode(_charset(content_type), errors="replace")
    except LookupError:
        text = body.decode("utf-8", errors="replace")
    head = text.lstrip()[:200].lower()
    if kind in ("text/html", "application/xhtml+xml") or head.startswith(("<!doctype html", "<html")):
        return html_to_text(text)
    return text


def raw_url(url: str) -> str:
    """The raw-file URL for a GitHub ``/blob/`` page (whose HTML wraps the file), else ``url``."""
    parts = urlsplit(url)
    segments = parts.path.strip("/").split("/")
    if parts.hostname == "github.com" and len(segments) >= 5 and segments[2] == "blob":
        owner, repo, _, ref, *path = segments
        return f"https://raw.githubusercontent.com/{owner}/{repo}/{ref}/{'/'.join(path)}"
    return url


# ---- the bounded worker ------------------------------------------------------------------------


@dataclass(frozen=True)
class ExtractLimits:
    """Bounds of one extraction: wall-clock ``seconds``, and ``memory_bytes`` the worker may add
    to its address space once it holds the body (enforced with RLIMIT_AS where available)."""

    seconds: float = 60.0
    memory_bytes: int = 2 * 1024**3


class ExtractionError(ValueError):
    """The body's text could not be extracted (a parser failure, the time or the memory limit)."""


_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
_WORKER = "import sys; sys.path.insert(0, sys.argv[1]); from kdalib.sources.extract import _worker; _worker()"
_FAILED, _OUT_OF_MEMORY = 3, 4
_MESSAGE_CHARS = 300


def extract_text(body: bytes, content_type: str = "", limits: ExtractLimits | None = None) -> str:
    """:func:`body_to_text` in a worker process bounded by ``limits`` (see the module docstring).

    Raises:
        ExtractionError: the worker failed, ran out of its memory or did not finish in time.
    """
    limits = limits or ExtractLimits()
    command = [sys.executable, "-I", "-c", _WORKER, _PACKAGE_ROOT, content_type, str(limits.memory_bytes)]
    try:
        done = subprocess.run(command, input=body, capture_output=True, timeout=limits.seconds, check=False)
    except subprocess.TimeoutExpired:
        unit = "second" if limits.seconds == 1 else "seconds"
        raise ExtractionError(f"the text extraction did not finish within {limits.seconds:g} {unit}") from None
    if done.returncode == 0:
        return done.stdout.decode("utf-8")
    detail = done.stderr.decode("utf-8", errors="replace").strip().splitlines()
    message = detail[-1][:_MESSAGE_CHARS] if detail else ""
    if done.returncode == _OUT_OF_MEMORY:
        raise ExtractionError(f"the text extraction ran out of its {limits.memory_bytes} bytes of memory")
    if done.returncode == _FAILED:
        raise ExtractionError(f"the text could not be extracted: {message}")
    raise ExtractionError(f"the text extraction stopped with status {done.returncode}: {message}")


def _worker() -> None:
    """The worker's side: body on stdin, text on stdout; exit 3 with the reason on stderr, 4 when out of memory."""
    content_type, memory = sys.argv[2], int(sys.argv[3])
    body = sys.stdin.buffer.read()
    if content_type.split(";", 1)[0].strip().lower() == "application/pdf" or body.startswith(b"%PDF-"):
        import pypdf  # noqa: F401 - imported before the memory limit applies

    _limit_memory(memory)
    try:
        text = body_to_text(body, content_type)
        sys.stdout.buffer.write(text.encode("utf-8"))
        sys.stdout.flush()
    except MemoryError:
        os._exit(_OUT_OF_MEMORY)
    except Exception as err:  # noqa: BLE001 - every parser failure becomes the caller's finding
        try:
            sys.stderr.write(f"{type(err).__name__}: {str(err)[:_MESSAGE_CHARS]}\n")
            sys.stderr.flush()
        except MemoryError:
            os._exit(_OUT_OF_MEMORY)
        os._exit(_FAILED)


def _limit_memory(extra: int) -> None:
    """Cap the address space at what the process holds now plus ``extra`` bytes (where the system allows)."""
    try:
        import resource

        with open("/proc/self/statm", encoding="ascii") as statm:
            held = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (ImportError, OSError, ValueError):
        return
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = held + extra
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))

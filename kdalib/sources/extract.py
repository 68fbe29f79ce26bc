"""Turn a fetched document into the plain text the snapshot store keeps.

HTML goes through the standard library's ``html.parser`` (scripts, styles and templates
dropped, block elements on their own lines, entities decoded); PDF through pypdf's text
extraction, pages separated by form feeds as ``pdftotext`` does; anything else is decoded
with the charset the server declared (UTF-8 otherwise).
"""

from __future__ import annotations

import io
import re
from html.parser import HTMLParser
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

"""Every internal link and anchor of the built book resolves (read from the HTML files)."""

from __future__ import annotations

import html
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

HREF = re.compile(r'<a\s[^>]*?href="([^"]*)"', re.I)
ID = re.compile(r'\sid="([^"]+)"')


def _pages(html_dir: Path) -> list[Path]:
    return sorted(p for p in html_dir.rglob("*.html") if "_static" not in p.parts)


def test_every_internal_link_and_anchor_resolves(html_dir):
    pages = _pages(html_dir)
    ids = {page: {html.unescape(i) for i in ID.findall(page.read_text())} for page in pages}
    broken, links, anchors = [], 0, 0
    for page in pages:
        for raw in HREF.findall(page.read_text()):
            href = html.unescape(raw)
            parts = urlsplit(href)
            if parts.scheme or parts.netloc or href.startswith(("mailto:", "javascript:")):
                continue
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if target.is_dir():
                target = target / "index.html"
            links += 1
            if not target.is_file():
                broken.append(f"{page.relative_to(html_dir)}: {href} (no such file)")
                continue
            fragment = unquote(parts.fragment)
            if fragment and target.suffix == ".html":
                anchors += 1
                known = ids.get(target) or {html.unescape(i) for i in ID.findall(target.read_text())}
                if fragment not in known:
                    broken.append(f"{page.relative_to(html_dir)}: {href} (no id {fragment!r})")
    assert links > 1000 and anchors > 500, f"only {links} links and {anchors} anchors found: is the book complete?"
    assert not broken, f"{len(broken)} of {links} internal links do not resolve:\n" + "\n".join(broken[:40])

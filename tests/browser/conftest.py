"""The built book (``_build/html``) served on 127.0.0.1 and opened in headless Chromium.

Every test here is marked ``browser``: the default run leaves them out (the book is built
after the tests in .ci/run), ``make test-browser`` runs them once ``make book`` has built
the HTML. Without the HTML or a Chromium they are skipped, saying which is missing, except
under ``make test-browser``, where that is a failure.
"""

from __future__ import annotations

import functools
import http.server
import os
import threading
from pathlib import Path

import pytest
from chromium import Browser, find_chromium

ROOT = Path(__file__).resolve().parents[2]
#: Set by `make test-browser`: a missing book or browser is then a failure, not a skip.
REQUIRED = os.environ.get("KDALIB_REQUIRE_BROWSER") == "1"
HTML = Path(os.environ.get("KDALIB_BOOK_HTML", ROOT / "_build" / "html"))
SCREENSHOTS = Path(os.environ.get("KDALIB_SCREENSHOTS", ROOT / "_build" / "screenshots"))


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.browser)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass


def _missing(reason: str) -> None:
    if REQUIRED:
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def html_dir() -> Path:
    if not (HTML / "index.html").is_file():
        _missing(f"no built book at {HTML} (run `make book` first)")
    return HTML


@pytest.fixture(scope="session")
def site(html_dir) -> str:
    """The base URL of the book, served from its folder on 127.0.0.1."""
    handler = functools.partial(_QuietHandler, directory=str(html_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def browser(site) -> Browser:
    executable = find_chromium()
    if executable is None:
        _missing("no Chromium found (apt-get install chromium, or set KDALIB_CHROMIUM)")
    chromium = Browser(executable)
    chromium.viewport(1400)
    yield chromium
    chromium.close()


@pytest.fixture
def screenshot_pages(browser, site):
    """``screenshot_pages({name: page}, width, max_height)``: each page (its path in the book, without
    ``.html``) at that viewport width, once its fonts are in, saved for review as ``<name>-<width>.png``
    under ``$KDALIB_SCREENSHOTS`` (else _build/screenshots), each checked to hold more than a blank page.
    The viewport is wide again afterwards."""

    def shoot(pages: dict[str, str], width: int, max_height: int) -> None:
        browser.viewport(width, 900)
        try:
            for name, page in pages.items():
                browser.open(f"{site}{page}.html")
                browser.js("document.fonts.ready.then(() => true)")
                path = SCREENSHOTS / f"{name}-{width}.png"
                browser.screenshot(path, max_height=max_height)
                assert path.stat().st_size > 20_000, path
        finally:
            browser.viewport(1400)

    return shoot


@pytest.fixture
def wide(browser) -> Browser:
    browser.viewport(1400)
    return browser

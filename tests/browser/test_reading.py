"""The built book as a reader meets it in Chromium: no console errors, tables that fit,
figure popovers by mouse, keyboard and tap, figure links that land on the claim, search,
and screenshots for review (``_build/screenshots``)."""

from __future__ import annotations

import re

import pytest

#: Pages whose tables were too wide for the text column, and the model page with most figures.
LAYOUT_PAGES = ("notes/claims", "notes/corrections", "notes/compare", "notes/sources", "notes/k2")
MARKUP = re.compile(r"<[a-z/][^>]*>|\*\*|</|\|")


REDIRECT = re.compile(r'<meta http-equiv="refresh"', re.IGNORECASE)


def _all_pages(html_dir):
    """Every page a reader lands on; the root's redirect stub is left out, as the page it sends
    to is checked itself and the stub's document is replaced while a check would read it."""
    return sorted(
        str(p.relative_to(html_dir))
        for p in html_dir.rglob("*.html")
        if not {"_static", "_sources"} & set(p.parts) and not REDIRECT.match(p.read_text(errors="replace"))
    )


def test_the_root_page_sends_the_reader_to_the_introduction(browser, site):
    browser.open(site)
    browser.wait_for_event("Page.loadEventFired")  # the page the redirect loads
    assert browser.js("location.pathname") == "/intro.html"
    assert browser.js("document.querySelectorAll('article').length") == 1


def test_no_console_errors_on_any_page(wide, site, html_dir):
    pages = _all_pages(html_dir)
    assert len(pages) > 15
    failures = {}
    for page in pages:
        wide.open(site + page)
        errors = wide.console_errors()
        if errors:
            failures[page] = errors
    assert not failures, "console errors:\n" + "\n".join(f"{p}: {e}" for p, e in failures.items())


TABLE_OVERFLOW = """
Array.from(document.querySelectorAll('article table')).map((table) => {
  const column = table.closest('article').getBoundingClientRect();
  const box = table.getBoundingClientRect();
  const scroller = table.parentElement;
  const hidden = scroller.scrollWidth - scroller.clientWidth;
  return {over: Math.max(box.right - column.right, hidden, table.scrollWidth - table.clientWidth),
          head: (table.querySelector('tr') || table).textContent.trim().slice(0, 60)};
}).filter((t) => t.over > 1)
"""


@pytest.mark.parametrize("page", LAYOUT_PAGES)
def test_no_table_is_wider_than_the_text_column(wide, site, page):
    wide.open(f"{site}{page}.html")
    assert wide.js("document.querySelectorAll('article').length") == 1
    assert wide.js(TABLE_OVERFLOW) == []


def test_no_page_scrolls_sideways_on_a_phone(browser, site, html_dir):
    browser.viewport(400, 860)
    try:
        wide = {}
        for page in _all_pages(html_dir):
            browser.open(site + page)
            # clientWidth, not innerWidth: a phone's layout viewport widens to overflowing content,
            # which would hide the very overflow this looks for
            over = browser.js("document.documentElement.scrollWidth - document.documentElement.clientWidth")
            if over > 1:
                wide[page] = over
    finally:
        browser.viewport(1400)
    assert not wide, f"pages wider than a 400 px screen (extra px): {wide}"


FIGURE_BOX = """
(() => {
  const a = document.querySelectorAll('a.kdalib-claim[data-kdalib-claim]')[%d];
  a.scrollIntoView({block: 'center'});
  const r = a.getBoundingClientRect();
  return {id: a.dataset.kdalibClaim, x: r.left + r.width / 2, y: r.top + r.height / 2};
})()
"""
POPOVER = """
(() => {
  const p = document.getElementById('kdalib-popover');
  if (!p || p.hidden) return null;
  const r = p.getBoundingClientRect();
  return {text: p.innerText, html: p.innerHTML, width: r.width, height: r.height,
          quote: (p.querySelector('.kdalib-pop-quote') || {}).textContent || '',
          described: (document.querySelector('[aria-describedby="kdalib-popover"]') || {getAttribute: () => null})
            .getAttribute('data-kdalib-claim')};
})()
"""


def _quote_figure(browser, start=0):
    """Index and box of the first figure at or after ``start`` whose claim has a quote with markup."""
    data = browser.js("JSON.parse(document.getElementById('kdalib-claims').textContent)")
    ids = browser.js("Array.from(document.querySelectorAll('a.kdalib-claim')).map(a => a.dataset.kdalibClaim)")
    for index in range(start, len(ids)):
        if data[ids[index]].get("quote"):
            return index, browser.js(FIGURE_BOX % index), data[ids[index]]
    raise AssertionError("no figure with a quote on the page")


def _assert_plain_quote(popover, claim):
    assert popover is not None, "the popover did not open"
    assert popover["quote"] == f"“{claim['quote']}”"
    assert not MARKUP.search(popover["quote"]), popover["quote"]
    assert claim["source"] in popover["text"] and claim["status"] in popover["text"]


def test_popover_opens_on_hover_and_shows_the_quote_as_text(wide, site):
    wide.open(f"{site}notes/k2.html")
    _, box, claim = _quote_figure(wide)
    wide.mouse("mouseMoved", box["x"], box["y"])
    popover = wide.wait_until(POPOVER)
    _assert_plain_quote(popover, claim)
    assert popover["described"] == box["id"]  # the figure names the popover for screen readers
    assert "<script" not in popover["html"] and 0 < popover["width"] <= 420
    wide.mouse("mouseMoved", 5, 5)
    wide.wait_until(f"({POPOVER}) === null")


FOCUS_BEFORE = """(() => {
  const focusable = Array.from(document.querySelectorAll('a[href], button, input, [tabindex]'))
    .filter(el => el.tabIndex >= 0 && !el.disabled && el.offsetParent !== null);
  const figure = document.querySelectorAll('a.kdalib-claim[data-kdalib-claim]')[INDEX];
  focusable[focusable.indexOf(figure) - 1].focus();
})()"""


def test_popover_opens_on_keyboard_focus_and_closes_on_escape(wide, site):
    wide.open(f"{site}notes/k2.html")
    index, box, claim = _quote_figure(wide, start=3)
    # focus whatever precedes the figure in tab order, then press Tab to reach it
    wide.js(FOCUS_BEFORE.replace("INDEX", str(index)))
    assert wide.js(POPOVER) is None or wide.js("document.activeElement.classList.contains('kdalib-claim')")
    wide.press_tab()
    assert wide.js("document.activeElement.dataset.kdalibClaim") == box["id"]
    _assert_plain_quote(wide.wait_until(POPOVER), claim)
    wide.send("Input.dispatchKeyEvent", type="keyDown", key="Escape", code="Escape", windowsVirtualKeyCode=27)
    wide.wait_until(f"({POPOVER}) === null")


def test_a_first_tap_opens_the_popover_and_a_second_follows_the_link(browser, site):
    browser.viewport(400, 860)
    browser.send("Emulation.setTouchEmulationEnabled", enabled=True, maxTouchPoints=1)
    try:
        browser.open(f"{site}notes/k2.html")
        _, box, claim = _quote_figure(browser)
        browser.tap(box["x"], box["y"])
        _assert_plain_quote(browser.wait_until(POPOVER), claim)
        assert browser.js("location.pathname").endswith("/notes/k2.html")
        browser.tap(box["x"], box["y"])
        browser.wait_for_event("Page.loadEventFired")
        assert browser.js("location.hash") == f"#claim-{box['id']}"
    finally:
        browser.send("Emulation.setTouchEmulationEnabled", enabled=False)
        browser.viewport(1400)


def test_clicking_a_figure_lands_on_its_claim_with_the_quote_visible(wide, site):
    wide.open(f"{site}notes/k2.html")
    _, box, claim = _quote_figure(wide, start=10)
    wide.click(box["x"], box["y"])
    wide.wait_for_event("Page.loadEventFired")
    assert wide.js("location.pathname").endswith("/notes/claims.html")
    assert wide.js("location.hash") == f"#claim-{box['id']}"
    wide.wait_until("document.getElementById(location.hash.slice(1)).closest('details').open")
    seen = wide.js("""(() => {
      const card = document.getElementById(location.hash.slice(1));
      const quote = card.querySelector('.kdalib-quote');
      const r = quote.getBoundingClientRect();
      return {top: r.top, bottom: r.bottom, text: quote.textContent, height: innerHeight};
    })()""")
    assert 0 <= seen["top"] and seen["bottom"] <= seen["height"], seen
    assert seen["text"] == f"“{claim['quote']}”" or claim["quote"].endswith("…")


@pytest.mark.parametrize("words", ["Kimi Delta Attention", "MuonClip"])
def test_search_finds(wide, site, words):
    wide.open(f"{site}search.html?q={words.replace(' ', '+')}")
    found = wide.wait_until("document.querySelectorAll('#search-results ul.search li').length", timeout=20)
    assert found >= 1
    titles = wide.js("Array.from(document.querySelectorAll('#search-results li a')).map(a => a.textContent)")
    assert any(titles), titles


SHOTS = {"front": "intro", "model": "notes/k2", "claims": "notes/claims", "notebook": "notebooks/01_kda_from_scratch"}


@pytest.mark.parametrize("width", [1400, 400])
def test_screenshots_for_review(screenshot_pages, width):
    screenshot_pages(SHOTS, width, max_height=6000)


MATH = """
(() => {
  const shown = Array.from(document.querySelectorAll('mjx-container'));
  const column = document.querySelector('article').getBoundingClientRect();
  const clipped = shown.filter((m) => m.getAttribute('display') === 'true').filter((m) => {
    const svg = m.querySelector('svg').getBoundingClientRect();
    const fits = svg.right <= column.right + 1 && svg.left >= column.left - 1;
    const scrolls = ['auto', 'scroll'].includes(getComputedStyle(m).overflowX) && m.clientWidth <= column.width;
    // too wide: on a phone it must scroll; at desktop width it must fit
    return !fits && (innerWidth >= 1000 || !scrolls);
  }).length;
  const raw = (document.querySelector('article').innerText.match(/\\$\\$|\\\\begin\\{/g) || []).length;
  const script = Array.from(document.scripts).map((s) => s.src).filter((s) => /mathjax/i.test(s));
  return {rendered: shown.length, clipped, raw, script};
})()
"""


@pytest.mark.parametrize("width", [1400, 400])
def test_equations_render_from_the_bundled_mathjax_and_fit_or_scroll(browser, site, width):
    browser.viewport(width, 900)
    try:
        browser.open(f"{site}notes/kda.html")
        browser.wait_until("document.querySelectorAll('mjx-container svg').length > 10", timeout=30)
        math = browser.js(MATH)
        assert math["script"] and all(s.startswith(site) for s in math["script"]), math["script"]
        assert math["raw"] == 0 and math["clipped"] == 0, math
    finally:
        browser.viewport(1400)

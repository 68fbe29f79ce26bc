"""The reproduction pages results first, the API reference, the comparison matrix, the claims count
and what each page weighs, read in Chromium at 1400 and 400 px."""

from __future__ import annotations

import time

import pytest
from test_reading import TABLE_OVERFLOW, _all_pages

#: Pages reworked to show their results first, and the API reference pages.
RESULT_PAGES = ("notebooks/02_kernel_speed", "notebooks/05_synthetic_tasks")
API_PAGES = ("api/index", "api/ops", "api/nn", "api/distributed")

#: What a page may load, in bytes: HTML, scripts, styles and fonts (every page shares the theme,
#: about 1 MB), plus its figures up to IMAGE_BUDGET; a page that typesets math adds MathJax (about
#: 2.2 MB with what it loads on demand); the claims page carries every claim's card in its HTML.
BUDGET = 1_500_000
IMAGE_BUDGET = 800_000
MATH_ALLOWANCE = 2_400_000
OWN_HTML_ALLOWANCE = {"notes/claims.html": 1_200_000}

WEIGHT = """(() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const parts = performance.getEntriesByType('resource').map((r) => [r.name, r.encodedBodySize]);
  return {total: nav.encodedBodySize + parts.reduce((sum, p) => sum + p[1], 0), parts,
          math: document.querySelectorAll('mjx-container').length,
          mathjax: Array.from(document.scripts).some((s) => /mathjax/i.test(s.src)),
          fontawesome: Array.from(document.scripts).some((s) => /fontawesome/i.test(s.src))};
})()"""


def test_every_page_stays_within_its_weight_budget(wide, site, html_dir):
    over = {}
    for page in _all_pages(html_dir):
        wide.open(site + page)
        time.sleep(0.5)  # MathJax fetches its extensions after the load event
        weight = wide.js(WEIGHT)
        assert not weight["fontawesome"], f"{page} loads Font Awesome's all-in-one script"
        budget = BUDGET + OWN_HTML_ALLOWANCE.get(page, 0) + (MATH_ALLOWANCE if weight["mathjax"] else 0)
        if weight["mathjax"]:
            assert weight["math"] > 0, f"{page} loads MathJax but shows no math"
        images = sum(size for name, size in weight["parts"] if "/_images/" in name)
        if weight["total"] - images > budget or images > IMAGE_BUDGET:
            biggest = sorted(weight["parts"], key=lambda p: -p[1])[:3]
            over[page] = (weight["total"] - images, budget, images, biggest)
    assert not over, (
        "pages over their budget (bytes without images, budget, image bytes, largest parts):\n"
        + "\n".join(f"{page}: {entry}" for page, entry in over.items())
    )


def test_pages_without_math_show_no_raw_tex(wide, site, html_dir):
    raw = {}
    for page in _all_pages(html_dir):
        wide.open(site + page)
        if wide.js("Array.from(document.scripts).some((s) => /mathjax/i.test(s.src))"):
            continue
        text = wide.js("""(() => {
          const article = document.querySelector('article');
          if (!article) return '';
          const copy = article.cloneNode(true);  // archived quotes keep their TeX as written
          copy.querySelectorAll('.kdalib-quote, .kdalib-pop-quote, code, pre').forEach((e) => e.remove());
          return copy.innerText;
        })()""")
        if "\\(" in text or "$$" in text or "\\begin{" in text:
            raw[page] = text[:80]
    assert not raw, f"TeX left untypeset where MathJax was not loaded: {raw}"


FIRST_RESULT = """(() => {
  const article = document.querySelector('article');
  const result = article.querySelector('.cell_output img, .cell_output table, .output img, table.kdalib-bench');
  const visibleCode = Array.from(article.querySelectorAll('.cell_input')).filter((c) => !c.closest('details:not([open])'));
  const top = (el) => el.getBoundingClientRect().top + scrollY;
  return {result: result ? top(result) : null, code: visibleCode.length ? top(visibleCode[0]) : null,
          visible: visibleCode.length, folded: article.querySelectorAll('details.hide').length,
          captions: Array.from(article.querySelectorAll('table caption')).length,
          tables: article.querySelectorAll('.cell_output table').length,
          text: article.innerText};
})()"""
INTERNAL_NAMES = ("chunk_pytorch", "fla_bounded", "sdpa_flash", "fused_recurrent_pytorch", "triton_bf16_graph")


@pytest.mark.parametrize("page", RESULT_PAGES)
@pytest.mark.parametrize("width", [1400, 400])
def test_results_come_first_with_captions_and_reader_names(browser, site, page, width):
    browser.viewport(width, 900)
    try:
        browser.open(f"{site}{page}.html")
        seen = browser.js(FIRST_RESULT)
        assert seen["result"] is not None, "no result on the page"
        assert seen["visible"] == 0 and seen["folded"] >= 3, seen  # the code is folded, still there
        assert seen["captions"] == seen["tables"], "every table has a caption"
        for name in INTERNAL_NAMES:
            assert name not in seen["text"], f"{page} shows the internal name {name}"
        assert "curve_mean_" not in seen["text"] and "peak_mqar" not in seen["text"]
        assert "Recorded run of this notebook" in seen["text"]
        assert browser.js("document.documentElement.scrollWidth - document.documentElement.clientWidth") <= 1
        if width == 1400:
            assert browser.js(TABLE_OVERFLOW) == []
    finally:
        browser.viewport(1400)


def test_the_gpu_picture_names_gpu_commit_and_date(browser, site):
    browser.viewport(400, 860)
    try:
        browser.open(f"{site}notebooks/02_kernel_speed.html")
        text = browser.js("document.querySelector('article').innerText")
        assert "NVIDIA" in text and "commit" in text
        assert "has changed since" in text or "has not changed since" in text
        # the picture is one column of panels: on a phone it keeps most of its width
        box = browser.js("""(() => {
          const img = document.querySelector('article .cell_output img');
          return {width: img.getBoundingClientRect().width, ratio: img.naturalHeight / img.naturalWidth};
        })()""")
        assert box["width"] >= 330 and box["ratio"] > 1.5, box
    finally:
        browser.viewport(1400)


@pytest.mark.parametrize("page", API_PAGES + ("notes/compare",))
def test_api_and_matrix_tables_fit_the_column(wide, site, page):
    wide.open(f"{site}{page}.html")
    assert wide.js(TABLE_OVERFLOW) == []


def test_the_api_reference_documents_the_layer_the_cache_and_the_swap(wide, site):
    wide.open(f"{site}api/nn.html")
    for name in ("KimiDeltaAttention", "KDACache", "KimiLinearConfig", "swap_kda_into_transformers"):
        assert wide.js(f"!!document.getElementById('kdalib.nn.{name}')"), name
    wide.open(f"{site}api/ops.html")
    assert wide.js("!!document.getElementById('kdalib.ops.chunk_kda')")
    wide.open(f"{site}api/index.html")
    outputs = wide.js("Array.from(document.querySelectorAll('.cell_output')).map((o) => o.innerText).join('\\n')")
    assert "decode vs full forward, largest difference" in outputs


def test_search_finds_the_cache(wide, site):
    wide.open(f"{site}search.html?q=KDACache")
    wide.wait_until("document.querySelectorAll('#search-results ul.search li').length", timeout=20)
    links = wide.js("Array.from(document.querySelectorAll('#search-results li a')).map((a) => a.href)")
    assert any("api/nn.html" in link for link in links), links


def test_compare_shows_only_what_a_model_reports(browser, site):
    browser.viewport(400, 860)
    try:
        browser.open(f"{site}notes/compare.html")
        assert browser.js("document.querySelectorAll('.kdalib-absent-cell').length") > 20
        assert "Not reported" in browser.js("document.querySelector('.kdalib-matrix-legend').innerText")
        sticky = browser.js(
            "getComputedStyle(document.querySelector('table.kdalib-matrix tbody tr > :first-child')).position"
        )
        assert sticky == "sticky"
        options = browser.js(
            "Array.from(document.querySelectorAll('.kdalib-matrix-controls option')).map(o => o.value)"
        )
        assert "K3" in options and "K2" in options
        rows = browser.js("document.querySelectorAll('table.kdalib-matrix tbody tr:not([hidden])').length")
        browser.js(
            "(() => { const s = document.querySelector('.kdalib-matrix-controls select'); s.value = 'K3';"
            " s.dispatchEvent(new Event('change')); })()"
        )
        shown = browser.js("document.querySelectorAll('table.kdalib-matrix tbody tr:not([hidden])').length")
        assert 0 < shown < rows
        absent_left = browser.js("""(() => Array.from(document.querySelectorAll('table.kdalib-matrix')).some((t) => {
          const names = Array.from((t.querySelector('thead tr') || t.rows[0]).cells).map((c) => c.innerText.trim());
          const k3 = names.indexOf('K3');
          return k3 > 0 && Array.from(t.querySelectorAll('tbody tr:not([hidden])'))
            .some((r) => r.cells[k3].classList.contains('kdalib-absent-cell'));
        }))()""")
        assert absent_left is False
        assert "what K3 reports" in browser.js("document.querySelector('.kdalib-matrix-count').innerText")
    finally:
        browser.viewport(1400)


def test_the_claims_page_gives_one_count(wide, site):
    wide.open(f"{site}notes/claims.html")
    total = int(wide.js("document.querySelector('.kdalib-counts').innerText.split(' ')[0]"))
    wide.js(
        "(() => { const b = document.querySelector('.kdalib-filter input'); b.value = 'k2';"
        " b.dispatchEvent(new Event('input')); })()"
    )
    count = wide.js("document.querySelector('.kdalib-filter-count').innerText")
    assert count.endswith(f"of {total} claims match"), count


SHOTS = {"notebook02": "notebooks/02_kernel_speed", "notebook05": "notebooks/05_synthetic_tasks", "api": "api/index"}


@pytest.mark.parametrize("width", [1400, 400])
def test_screenshots_of_the_reworked_pages(screenshot_pages, width):
    screenshot_pages(SHOTS, width, max_height=8000)

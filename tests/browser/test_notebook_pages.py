"""The executed notebooks as the book shows them: clean outputs (read from the built HTML)."""

from __future__ import annotations

import html
import re

import pytest

NOTEBOOKS = ("01_kda_from_scratch", "02_kernel_speed", "03_kv_cache_decoding", "04_synthetic_recall")
OUTPUT = re.compile(r'<div class="output (text_plain|stream|stderr)[^"]*"[^>]*>(.*?)</div>\s*</div>', re.S)


def _outputs(page: str) -> list[tuple[str, str]]:
    return [(kind, html.unescape(re.sub(r"<[^>]+>", "", body)).strip()) for kind, body in OUTPUT.findall(page)]


@pytest.mark.parametrize("stem", NOTEBOOKS)
def test_notebook_outputs_read_cleanly(html_dir, stem):
    page = (html_dir / "notebooks" / f"{stem}.html").read_text()
    outputs = _outputs(page)
    assert outputs, "no outputs: was the notebook executed?"
    for _kind, text in outputs:
        assert not re.search(r"\d+%\|", text), f"a progress bar was printed: {text[:120]!r}"
        assert not re.fullmatch(r"[-+0-9.e]+|\[.*\]|\(.*\)", text, re.S), f"a stray value was printed: {text[:120]!r}"
    assert not re.search(r"<td[^>]*>\s*(NaN|None|nan)\s*</td>", page), "a table shows NaN/None cells"
    assert "| value | recorded |" not in page and "|---|" not in page  # no Markdown table printed raw
    assert 'class="kdalib-recorded"' in page, "show_recorded's table is missing"

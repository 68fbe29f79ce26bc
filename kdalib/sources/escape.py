"""One escaping function per output channel, so that text from sources.yaml is always shown as text.

Subjects, quotes, notes and finding messages are written by contributors; wherever kdalib writes
them out they pass through the function of that channel, and through nothing else:

* :func:`html_text`: HTML text and attribute values (``&``, ``<``, ``>``, both quotes);
* :func:`json_for_html`: JSON placed inside a ``<script>`` element: ``<``, ``>`` and ``&`` are
  written as ``\\u003c``, ``\\u003e``, ``\\u0026`` (and U+2028/U+2029 escaped), so no sequence such
  as ``</script>`` or ``<!--<script`` can reach the HTML tokenizer, while ``JSON.parse`` reads the
  same data;
* :func:`markdown_cell`: one cell of a Markdown table (GitHub's flavour, as in the pull-request
  report): one line, HTML special characters as entities, and every character that Markdown
  reads as inline markup backslash-escaped, so a quote never becomes a link, an image, emphasis or a
  new column;
* :func:`csv_cell` / :func:`csv_value`: a CSV cell that a spreadsheet never evaluates: text
  starting with ``=``, ``+``, ``-``, ``@``, a tab, a carriage return or ``'`` gets a leading
  ``'`` (numbers are written as they are), and :func:`csv_value` takes it off again.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

_JSON_IN_HTML = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)
#: The characters GitHub Markdown reads as inline markup (``<``, ``>``, ``&`` become entities first).
_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_\[\]|~])")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def html_text(text: object) -> str:
    """``text`` for HTML text or a quoted attribute value."""
    return html.escape(str(text), quote=True)


def json_for_html(data: Any) -> str:
    """``data`` as JSON that is safe as the text of a ``<script type="application/json">`` element."""
    return json.dumps(data, ensure_ascii=False, sort_keys=True).translate(_JSON_IN_HTML)


def markdown_cell(text: object) -> str:
    """``text`` as the literal content of one Markdown table cell (one line, no markup, no ``|``)."""
    one_line = " ".join(str(text).split())
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", html.escape(one_line, quote=False))


def csv_cell(value: object) -> str:
    """``value`` as a CSV cell that no spreadsheet reads as a formula."""
    text = "" if value is None else str(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and _NUMBER.fullmatch(text):
        return text
    return "'" + text if text.startswith(_FORMULA_START) else text


def csv_value(cell: str) -> str:
    """The text :func:`csv_cell` was given (as text)."""
    return cell[1:] if cell.startswith("'") and cell[1:].startswith(_FORMULA_START) else cell

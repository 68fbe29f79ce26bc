"""The hand-typed-figure lint: numbers in the book's prose that should be {claim} roles.

The prose is every MyST page under notes/ and notebooks/ and every Markdown cell of a notebook
(the pages :func:`kdalib.sources.rules.page_files` lists). Definition (also on the book's
claims page). In that prose, a **figure**
is a number followed by a unit:

* the number: digits, optionally with thousands commas and a decimal part (``48``,
  ``1,024``, ``2.5``) that does not continue an identifier, a version, a path or another
  number (``K2.5``, ``Moonlight-16B-A3B``, ``v1.2``, ``/2507.20534`` are names, not figures);
* then at most one space (plain, no-break or thin) and a unit: ``%``, ``×`` or ``x``;
  one of the letters ``B``, ``M``, ``K``, ``k``, ``T`` standing alone (``48B``, ``128K``,
  ``1 T``, but not ``3Bn`` or ``2 Kimi``); or one of the words ``token(s)``, ``expert(s)``,
  ``layer(s)``, ``head(s)``, ``parameter(s)``, ``params``, ``million``, ``billion``, ``trillion``.

Not linted, because they are not prose a reader takes as a sourced figure
(:func:`kdalib.sources.pages.prose_lines` tells them apart):
YAML front matter; code fences and code-like directives (``code-cell``, ``code-block``,
``math``, ``raw``, ...); the option lines of any MyST directive; ``$...$`` and ``$$...$$``
math and ``\\begin{...}`` environments; inline code; every role (``{claim}`...```,
``{math}`...```, ...); link targets, reference definitions, bare URLs and HTML tags;
comments (``%`` lines and ``<!-- -->``). Years and section, equation, table or figure
numbers carry no unit and are not figures; a number right after ``Section``/``§``/
``Eq.``/``Table``/``Figure``/``Appendix``/``Algorithm``/``Chapter`` is skipped even
when a unit-like letter follows (``Figure 3 B``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from kdalib.sources.model import ERROR, Finding
from kdalib.sources.pages import UnreadablePage, markdown_blocks, mask_inline, page_files, prose_lines

FIGURE = re.compile(
    r"(?<![\w.,/\-+#])"
    r"(?P<number>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)"
    r"(?P<gap>[ \u00a0\u202f]?)"
    r"(?P<unit>%|×|x(?!\w)|[BMKkT](?!\w)"
    r"|(?:tokens?|experts?|layers?|heads?|parameters?|params|million|billion|trillion)\b)"
)
_NUMBERING_WORD = re.compile(
    r"(?:§|\b(?:section|sec\.|eq\.|eqn\.|equation|table|tab\.|figure|fig\.|appendix|algorithm|chapter))\s*\(?$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class HandTypedFigure:
    """One figure found in prose: 1-based line and column, and the text matched."""

    line: int
    column: int
    text: str


def find_figures(text: str) -> list[HandTypedFigure]:
    """All hand-typed figures in a MyST page's text, in order."""
    found = []
    for number, line in prose_lines(text):
        masked = mask_inline(line)
        for match in FIGURE.finditer(masked):
            if _NUMBERING_WORD.search(masked, max(0, match.start() - 40), match.start()):
                continue
            found.append(HandTypedFigure(number, match.start() + 1, match.group(0)))
    return found


def lint_notes(root: Path) -> list[Finding]:
    """Run :func:`find_figures` over the pages under ``root`` and the Markdown cells of its notebooks.

    A figure in a page is reported at its line; one in a notebook cell at line 0 of the notebook,
    with the cell's index and its line inside the cell in the message.
    """
    findings = []
    for path in page_files(root):
        shown = str(path.relative_to(root))
        try:
            blocks = markdown_blocks(root, path)
        except UnreadablePage as err:
            findings.append(Finding(ERROR, "unreadable-page", shown, 0, "", str(err)))
            continue
        for first_line, where, text in blocks:
            for figure in find_figures(text):
                line = first_line + figure.line - 1 if first_line else 0
                place = f"{where}, line {figure.line}, column {figure.column}" if where else f"column {figure.column}"
                findings.append(
                    Finding(
                        ERROR,
                        "hand-typed-figure",
                        shown,
                        line,
                        "",
                        f"{figure.text!r} ({place}) looks like a figure typed by hand",
                        "add the figure as a claim in sources.yaml and write {claim}`its.id` here "
                        "(or use inline code or math if it is not a sourced figure)",
                    )
                )
    return findings

"""The hand-typed-figure lint: numbers in the book's prose that should be {claim} roles.

The prose is every MyST page under notes/ and notebooks/ and every Markdown cell of a notebook
(the pages :func:`kdalib.sources.rules.page_files` lists), tables included. Definition (also on
the book's claims page). In that prose, a **figure** is any of:

* **a number with a unit** (``unit``): digits, optionally with thousands commas and a decimal
  part (``48``, ``1,024``, ``2.5``) that does not continue an identifier, a version, a path or
  another number (``K2.5``, ``Moonlight-16B-A3B``, ``v1.2``, ``/2507.20534`` are names, not
  figures), then at most one space (plain, no-break or thin) and a unit: ``%``, ``×`` or ``x``;
  one of the letters ``B``, ``M``, ``K``, ``k``, ``T`` standing alone (``48B``, ``128K``,
  ``1 T``, but not ``3Bn`` or ``2 Kimi``); or a counted word (below), also after a hyphen
  (``2-layer``);
* **a count** (``count``): a number in digits or words followed, at most two words later, by a
  counted word ``token(s)``, ``expert(s)``, ``layer(s)``, ``head(s)``, ``states``,
  ``caches``, ``parameter(s)``, ``params``, ``million``, ``billion``, ``trillion``
  (``32 query heads``, ``three KDA layers``, ``a hundred thousand tokens``);
* **a ratio or fraction** (``ratio``): two numbers joined by ``:`` or ``/`` (``3:1``, ``20/27``);
* **a setting** (``setting``): ``temperature``, ``batch size``, ``top-p``, ``top-k``, ``learning
  rate`` or ``width``, optionally followed by ``of``, ``=`` or ``:``, then a number in digits or
  words (``batch size 1``, ``temperature of zero``);
* **a number word** (``number word``): a spelled number from ``seven`` up (``seven``,
  ``twenty``, ``hundred``, ``dozen``), which in this book always counts something, and a
  multiple (``twice as``, ``half as``, ``double the``). ``one`` to ``six`` are ordinary words
  unless a counted word follows;
* **a table value** (``table``): a Markdown table cell holding nothing but a number (its unit
  sits in the header).

Not linted, because they are not prose a reader takes as a sourced figure
(:func:`kdalib.sources.pages.prose_lines` tells them apart):
YAML front matter; code fences and code-like directives (``code-cell``, ``code-block``,
``math``, ``raw``, ...); the option lines of any MyST directive; ``$...$`` and ``$$...$$``
math and ``\\begin{...}`` environments; inline code; every role (``{claim}`...```,
``{math}`...```, ``{glue:text}`...```, ...); link targets, reference definitions, bare URLs and
HTML tags; comments (``%`` lines and ``<!-- -->``). Years and section, equation, table or figure
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

_NUMBER = r"(?<![\w.,/\-+#:])(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)"
_SMALL_WORDS = "two|three|four|five|six"
_BIG_WORDS = (
    "seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen"
    "|twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|hundred|thousand"
)
_SCALED = rf"\b(?:a|one|{_SMALL_WORDS}|{_BIG_WORDS})[ -](?:hundred|thousand|million|billion|trillion)\b"
_NUMBER_WORD = rf"(?:{_SCALED}|\b(?:{_SMALL_WORDS}|{_BIG_WORDS})\b)"
_SETTING_WORD = rf"\b(?:zero|one|{_SMALL_WORDS}|{_BIG_WORDS})\b"
_COUNTED = r"(?:tokens?|experts?|layers?|heads?|states|caches|parameters?|params|million|billion|trillion)\b"

#: Each rule, by the name a finding gives it.
RULES: dict[str, re.Pattern[str]] = {
    "unit": re.compile(
        rf"(?P<number>{_NUMBER})"
        r"(?:[ \u00a0\u202f]?(?:%|×|x(?!\w)|[BMKkT](?!\w))|[ \u00a0\u202f-]" + _COUNTED + ")"
    ),
    "count": re.compile(
        rf"(?P<number>{_NUMBER}|{_NUMBER_WORD})(?:[ \u00a0\u202f-][A-Za-z][\w-]*){{0,2}}[ \u00a0\u202f-]{_COUNTED}",
        re.IGNORECASE,
    ),
    "ratio": re.compile(rf"(?P<number>{_NUMBER}) ?[:/] ?\d+(?:\.\d+)?(?![\w/:])"),
    "setting": re.compile(
        r"\b(?:temperature|batch size|top[- ]?[pk]|learning rate|width)\s*(?:of|=|:)?\s*"
        rf"(?P<number>(?:\d+(?:\.\d+)?)(?![\w.])|{_SETTING_WORD})",
        re.IGNORECASE,
    ),
    "number word": re.compile(
        rf"(?P<number>{_SCALED}|\b(?:{_BIG_WORDS})\b|\b(?:twice|thrice|half) as\b|\b(?:double|triple) the\b)",
        re.IGNORECASE,
    ),
}
_TABLE_CELL = re.compile(rf"^\s*[~≈<>]?\s*{_NUMBER}\s*(?:%|×|x)?\s*$".replace("(?<![\\w.,/\\-+#:])", ""))
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(?:\|\s*:?-{3,}:?\s*)*\|?\s*$")
_NUMBERING_WORD = re.compile(
    r"(?:§|\b(?:section|sec\.|eq\.|eqn\.|equation|table|tab\.|figure|fig\.|appendix|algorithm|chapter))\s*\(?$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class HandTypedFigure:
    """One figure found in prose: 1-based line and column, the text matched and the rule that found it."""

    line: int
    column: int
    text: str
    rule: str = "unit"


def find_figures(text: str) -> list[HandTypedFigure]:
    """All hand-typed figures in a MyST page's text, in order (overlapping matches reported once)."""
    found = []
    lines = list(prose_lines(text))
    headers = {n for (n, _), (m, below) in zip(lines, lines[1:]) if m == n + 1 and _TABLE_RULE.match(below)}
    for number, line in lines:
        masked = mask_inline(line)
        spans: list[tuple[int, int, str]] = []
        for rule, pattern in RULES.items():
            for match in pattern.finditer(masked):
                if _NUMBERING_WORD.search(masked, max(0, match.start("number") - 40), match.start("number")):
                    continue
                spans.append((match.start(), match.end(), rule))
        if number not in headers:
            spans += _table_values(masked)
        last_end = -1
        for start, end, rule in sorted(spans, key=lambda s: (s[0], -s[1])):
            if start < last_end:
                continue  # inside a figure already reported
            found.append(HandTypedFigure(number, start + 1, line[start:end], rule))
            last_end = end
    return found


def _table_values(masked: str) -> list[tuple[int, int, str]]:
    """The cells of a Markdown table row that hold nothing but a number."""
    stripped = masked.strip()
    if not (stripped.startswith("|") and stripped.endswith("|")) or set(stripped) <= set("|-: "):
        return []
    spans = []
    position = masked.index("|") + 1
    for cell in re.split(r"(?<!\\)\|", stripped[1:-1]):
        if _TABLE_CELL.match(cell):
            start = position + len(cell) - len(cell.lstrip())
            spans.append((start, start + len(cell.strip()), "table"))
        position += len(cell) + 1
    return spans


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
                        f"{figure.text!r} ({place}) looks like a figure typed by hand ({figure.rule})",
                        "add the figure as a claim in sources.yaml and write {claim}`its.id` here "
                        "(or use inline code or math if it is not a sourced figure)",
                    )
                )
    return findings

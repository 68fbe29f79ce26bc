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

Not linted, because they are not prose a reader takes as a sourced figure:
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kdalib.sources.model import ERROR, Finding

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

#: Directives whose body is code, math or data rather than prose.
CODE_DIRECTIVES = frozenset({
    "code", "code-block", "code-cell", "sourcecode", "literalinclude", "math", "raw", "eval-rst",
    "mermaid", "csv-table", "include", "graphviz", "bibliography", "glue:figure",
})

_FENCE = re.compile(r"^\s*(?P<fence>`{3,}|~{3,}|:{3,})\s*(?P<info>.*)$")
_OPTION = re.compile(r"^\s*:[\w-]+:")
_REF_DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*\S")
_INLINE_MASKS = [
    re.compile(r"\{[\w:.+-]+\}(`+).*?\1"),                  # roles, {claim} included
    re.compile(r"(`+).+?\1"),                               # inline code
    re.compile(r"\$\$.+?\$\$"),                             # display math on one line
    re.compile(r"(?<![\\$])\$(?=\S)[^$\n]*?(?<=\S)\$"),     # inline math (dollarmath rules)
    re.compile(r"<!--.*?-->"),                              # HTML comment
    re.compile(r"</?[A-Za-z][^>]*>"),                       # HTML tags and <autolinks>
    re.compile(r"\]\([^)]*\)"),                             # link targets
    re.compile(r"\b(?:https?|ftp)://\S+|\bwww\.\S+"),       # bare URLs (linkify)
    re.compile(r"\{\{.*?\}\}"),                             # substitutions
]


@dataclass(frozen=True)
class HandTypedFigure:
    """One figure found in prose: 1-based line and column, and the text matched."""

    line: int
    column: int
    text: str


@dataclass
class _Fence:
    marker: str
    skip_body: bool
    in_options: bool = True


def mask_inline(line: str) -> str:
    """Blank out (with spaces, keeping columns) every inline region that is not prose."""
    for pattern in _INLINE_MASKS:
        line = pattern.sub(lambda m: " " * len(m.group(0)), line)
    return line


def prose_lines(text: str) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line) for each line of MyST text that is prose."""
    lines = text.splitlines()
    stack: list[_Fence] = []
    skip_until: re.Pattern[str] | None = None
    start = 0
    if lines and lines[0].strip() == "---":  # YAML front matter
        start = next((i + 1 for i in range(1, len(lines)) if lines[i].strip() in ("---", "...")), len(lines))
    for number, line in enumerate(lines[start:], start=start + 1):
        if skip_until is not None:
            if skip_until.search(line):
                skip_until = None
            continue
        if stack and _closes(stack[-1], line):
            stack.pop()
            continue
        if stack and stack[-1].skip_body:
            continue
        if stack and stack[-1].in_options:
            if _OPTION.match(line):
                continue
            if line.strip() == "---":  # directive options written as a YAML block
                skip_until = re.compile(r"^\s*---\s*$")
                continue
            stack[-1].in_options = False
        opened = _FENCE.match(line)
        if opened and (opened.group("info") or not opened.group("fence").startswith(":")):
            info = opened.group("info").strip()
            name = info[1:info.index("}")] if info.startswith("{") and "}" in info else None
            is_code = name is None and not opened.group("fence").startswith(":")
            stack.append(_Fence(opened.group("fence"), is_code or name in CODE_DIRECTIVES))
            continue
        skip_until = _block_skip(line)
        if skip_until is not None and skip_until.search(line, _opener_end(line)):
            skip_until = None
            continue
        if skip_until is not None or line.lstrip().startswith("%") or _REF_DEFINITION.match(line):
            continue
        yield number, line


def _closes(fence: _Fence, line: str) -> bool:
    stripped = line.strip()
    char = fence.marker[0]
    return len(stripped) >= len(fence.marker) and stripped == char * len(stripped)


def _block_skip(line: str) -> re.Pattern[str] | None:
    """For a line opening a multi-line non-prose block, the pattern of the line closing it."""
    stripped = line.lstrip()
    if stripped.startswith("$$"):
        return re.compile(r"\$\$")
    if stripped.startswith("\\begin{"):
        return re.compile(r"\\end\{")
    if stripped.startswith("<!--"):
        return re.compile(r"-->")
    return None


def _opener_end(line: str) -> int:
    stripped = line.lstrip()
    offset = len(line) - len(stripped)
    for opener in ("$$", "\\begin{", "<!--"):
        if stripped.startswith(opener):
            return offset + len(opener)
    return offset


def find_figures(text: str) -> list[HandTypedFigure]:
    """All hand-typed figures in a MyST page's text, in order."""
    found = []
    for number, line in prose_lines(text):
        masked = mask_inline(line)
        for match in FIGURE.finditer(masked):
            if _NUMBERING_WORD.search(masked[: match.start()]):
                continue
            found.append(HandTypedFigure(number, match.start() + 1, match.group(0)))
    return found


def lint_notes(root: Path) -> list[Finding]:
    """Run :func:`find_figures` over the pages under ``root`` and the Markdown cells of its notebooks.

    A figure in a page is reported at its line; one in a notebook cell at line 0 of the notebook,
    with the cell's index and its line inside the cell in the message.
    """
    from kdalib.sources.rules import markdown_blocks, page_files

    findings = []
    for path in page_files(root):
        shown = str(path.relative_to(root))
        try:
            path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            findings.append(Finding(ERROR, "unreadable-page", shown, 0, "", str(err)))
            continue
        for first_line, where, text in markdown_blocks(path):
            for figure in find_figures(text):
                line = first_line + figure.line - 1 if first_line else 0
                place = f"{where}, line {figure.line}, column {figure.column}" if where else f"column {figure.column}"
                findings.append(Finding(
                    ERROR, "hand-typed-figure", shown, line, "",
                    f"{figure.text!r} ({place}) looks like a figure typed by hand",
                    "add the figure as a claim in sources.yaml and write {claim}`its.id` here "
                    "(or use inline code or math if it is not a sourced figure)"))
    return findings

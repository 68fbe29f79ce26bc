"""The book's pages as kdalib.sources reads them: where they are, and which of their lines are prose.

* :func:`page_files`: the book's folder layout (``notes/`` and ``notebooks/``, recorded
  results and checkpoints left out).
* :func:`markdown_blocks`: the markdown of a page (a ``.md`` file, or each markdown cell of a
  notebook), read as a regular file inside the book (:func:`kdalib.sources.files.read_inside`).
* :func:`prose_lines` and :func:`mask_inline`: the MyST scanner that tells prose from front matter,
  code, math, directive options, comments and inline markup.
* :func:`claim_roles`: the ``{claim}`id``` roles of a page's prose.

Every scan takes time linear in the length of a line: code spans and roles are found by
matching backtick runs of equal length (:func:`code_spans`, the CommonMark rule), and no pattern
looks past the next place where its match could start again.

The claim checks (:mod:`kdalib.sources.rules`) and the hand-typed-figure lint
(:mod:`kdalib.sources.figures`) read pages only through this module.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kdalib.sources.files import UnsafeFile, read_inside

#: A page is Markdown or a notebook with its outputs; a larger one is a mistake.
MAX_PAGE_BYTES = 16 * 1024 * 1024

#: Directives whose body is code, math or data rather than prose.
CODE_DIRECTIVES = frozenset(
    {
        "code",
        "code-block",
        "code-cell",
        "sourcecode",
        "literalinclude",
        "math",
        "raw",
        "eval-rst",
        "mermaid",
        "csv-table",
        "include",
        "graphviz",
        "bibliography",
        "glue:figure",
    }
)

_FENCE = re.compile(r"^\s*(?P<fence>`{3,}|~{3,}|:{3,})\s*(?P<info>.*)$")
_OPTION = re.compile(r"^\s*:[\w-]+:")
_REF_DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*\S")
_BACKTICKS = re.compile(r"`+")
_ROLE_NAME = re.compile(r"\{([\w:.+-]{1,60})\}")
# Each pattern stops at the next place a match could start again, so a line costs linear time.
_INLINE_MASKS = [
    re.compile(r"\$\$.+?\$\$"),  # display math on one line
    re.compile(r"(?<![\\$])\$(?=\S)[^$\n]*?(?<=\S)\$"),  # inline math (dollarmath rules)
    re.compile(r"</?[A-Za-z][^<>]*>"),  # HTML tags and <autolinks>
    re.compile(r"\]\([^)\]]*\)"),  # link targets
    re.compile(r"\b(?:https?|ftp)://\S+|\bwww\.\S+"),  # bare URLs (linkify)
    re.compile(r"\{\{[^{}]*\}\}"),  # substitutions
]


# ---- where the pages are ---------------------------------------------------------------


def page_files(root: Path) -> list[Path]:
    """The pages whose {claim} roles must resolve: notes/**/*.md and notebooks/**/*.{md,ipynb}."""
    found: list[Path] = []
    for folder, patterns in (("notes", ("*.md",)), ("notebooks", ("*.md", "*.ipynb"))):
        base = root / folder
        if base.is_dir():
            for pattern in patterns:
                found.extend(
                    p
                    for p in base.rglob(pattern)
                    if "results" not in p.relative_to(base).parts[:1] and ".ipynb_checkpoints" not in p.parts
                )
    return sorted(found)


class UnreadablePage(Exception):
    """A page that cannot be read (missing, a link, not UTF-8, over the size cap, broken JSON)."""


def markdown_blocks(root: Path, path: Path) -> list[tuple[int, str, str]]:
    """(first line, where, text) for each markdown block of a page: the whole .md, or each notebook cell.

    Raises:
        UnreadablePage: the page is not a regular UTF-8 file inside ``root`` under
            :data:`MAX_PAGE_BYTES`, or a notebook is not readable JSON.
    """
    try:
        text = read_inside(root, path.relative_to(root).as_posix(), MAX_PAGE_BYTES).decode("utf-8")
    except (UnsafeFile, UnicodeDecodeError, ValueError) as err:
        raise UnreadablePage(str(err)) from None
    if path.suffix != ".ipynb":
        return [(1, "", text)]
    try:
        cells = json.loads(text).get("cells", [])
    except (json.JSONDecodeError, AttributeError, RecursionError):
        raise UnreadablePage(f"{path.name} is not a readable notebook (JSON with 'cells')") from None
    blocks = []
    for index, cell in enumerate(cells if isinstance(cells, list) else []):
        if isinstance(cell, dict) and cell.get("cell_type") == "markdown":
            source = cell.get("source", "")
            blocks.append((0, f"cell {index}", "".join(map(str, source)) if isinstance(source, list) else str(source)))
    return blocks


# ---- which lines are prose -------------------------------------------------------------


@dataclass
class _Fence:
    marker: str
    skip_body: bool
    in_options: bool = True


def code_spans(line: str) -> list[tuple[int, int]]:
    """(start, end) of each inline code span of ``line``, backticks included.

    The CommonMark rule: a run of n backticks opens a span that the next run of exactly n
    backticks closes; a run without such a partner is text. Each run is looked at once.
    """
    runs = [(m.start(), m.end()) for m in _BACKTICKS.finditer(line)]
    later: dict[int, deque[int]] = defaultdict(deque)
    for index, (start, end) in enumerate(runs):
        later[end - start].append(index)
    spans: list[tuple[int, int]] = []
    index = 0
    while index < len(runs):
        start, end = runs[index]
        partners = later[end - start]
        while partners and partners[0] <= index:
            partners.popleft()
        if partners:
            closing = partners.popleft()
            spans.append((start, runs[closing][1]))
            index = closing + 1
        else:
            index += 1
    return spans


def _roles_and_code(line: str) -> Iterator[tuple[int, int, str | None, str]]:
    """(start, end, role name or None for code, content) of each role and code span of ``line``."""
    for start, end in code_spans(line):
        ticks = len(_BACKTICKS.match(line, start).group())
        brace = line.rfind("{", max(0, start - 62), start)
        role = _ROLE_NAME.fullmatch(line, brace, start) if brace >= 0 else None
        content = line[start + ticks : end - ticks]
        if role is not None:
            yield brace, end, role.group(1), content
        else:
            yield start, end, None, content


def mask_inline(line: str) -> str:
    """Blank out (with spaces, keeping columns) every inline region that is not prose."""
    chars = list(line)
    for start, end, _, _ in _roles_and_code(line):
        chars[start:end] = " " * (end - start)
    for start, end in _comments("".join(chars)):
        chars[start:end] = " " * (end - start)
    line = "".join(chars)
    for pattern in _INLINE_MASKS:
        line = pattern.sub(lambda m: " " * len(m.group(0)), line)
    return line


def _comments(line: str) -> Iterator[tuple[int, int]]:
    """(start, end) of each ``<!-- ... -->``, found with str.find so that a line of openers costs linear time."""
    position = 0
    while (start := line.find("<!--", position)) >= 0:
        end = line.find("-->", start + 4)
        if end < 0:
            return
        yield start, end + 3
        position = end + 3


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
            name = info[1 : info.index("}")] if info.startswith("{") and "}" in info else None
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


def claim_roles(text: str) -> Iterator[tuple[int, str]]:
    """(1-based line, claim id) of each {claim} role in MyST prose (code and math skipped)."""
    for line_number, line in prose_lines(text):
        for _, _, role, content in _roles_and_code(line):
            if role == "claim":
                yield line_number, content.strip()

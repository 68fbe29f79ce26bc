"""The book's pages as kdalib.sources reads them: where they are, and which of their lines are prose.

* :func:`page_files`: the book's folder layout (``notes/`` and ``notebooks/``, recorded
  results and checkpoints left out).
* :func:`markdown_blocks`: the markdown of a page (a ``.md`` file, or each markdown cell of a notebook).
* :func:`prose_lines` and :func:`mask_inline`: the MyST scanner that tells prose from front matter,
  code, math, directive options, comments and inline markup.
* :func:`claim_roles`: the ``{claim}`id``` roles of a page's prose.

The claim checks (:mod:`kdalib.sources.rules`) and the hand-typed-figure lint
(:mod:`kdalib.sources.figures`) read pages only through this module.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

CLAIM_ROLE_OR_CODE = re.compile(r"\{claim\}`(?P<id>[^`]*)`|(?P<ticks>`+).+?(?P=ticks)")

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
_INLINE_MASKS = [
    re.compile(r"\{[\w:.+-]+\}(`+).*?\1"),  # roles, {claim} included
    re.compile(r"(`+).+?\1"),  # inline code
    re.compile(r"\$\$.+?\$\$"),  # display math on one line
    re.compile(r"(?<![\\$])\$(?=\S)[^$\n]*?(?<=\S)\$"),  # inline math (dollarmath rules)
    re.compile(r"<!--.*?-->"),  # HTML comment
    re.compile(r"</?[A-Za-z][^>]*>"),  # HTML tags and <autolinks>
    re.compile(r"\]\([^)]*\)"),  # link targets
    re.compile(r"\b(?:https?|ftp)://\S+|\bwww\.\S+"),  # bare URLs (linkify)
    re.compile(r"\{\{.*?\}\}"),  # substitutions
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


def markdown_blocks(path: Path) -> Iterable[tuple[int, str, str]]:
    """(first line, where, text) for each markdown block of a page: the whole .md, or each notebook cell."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    if path.suffix != ".ipynb":
        return [(1, "", text)]
    try:
        cells = json.loads(text).get("cells", [])
    except (json.JSONDecodeError, AttributeError):
        return []
    blocks = []
    for index, cell in enumerate(cells):
        if isinstance(cell, dict) and cell.get("cell_type") == "markdown":
            source = cell.get("source", "")
            blocks.append((0, f"cell {index}", "".join(source) if isinstance(source, list) else str(source)))
    return blocks


# ---- which lines are prose -------------------------------------------------------------


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
        for match in CLAIM_ROLE_OR_CODE.finditer(line):
            if match.group("id") is not None:
                yield line_number, match.group("id").strip()

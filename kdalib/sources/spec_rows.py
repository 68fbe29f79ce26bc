"""The grammar of a ``spec-table`` block, shared by ``kdalib verify`` and the book's directive.

A block opens with a fence naming the directive (```` ```{spec-table} ```` or
``:::{spec-table}``), may carry option lines (``:columns: A | B``), and then has one row per
line: a label and one cell per column, separated by ``|``. A cell is ``-`` (nothing reported)
or a sequence of tokens, each either text in double quotes or a claim id. Rows are split on
every ``|``, so quoted text cannot contain one.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

#: A cell's tokens: text in double quotes, or a claim id.
TOKEN = re.compile(r'"[^"]*"|[^\s"]+')
_OPEN = re.compile(r"^\s*(?P<fence>`{3,}|:{3,})\{spec-table\}\s*$")
_OPTION = re.compile(r"^\s*:[\w-]+:")


def split_row(line: str) -> list[str]:
    """The label and the cells of a row, stripped."""
    return [cell.strip() for cell in line.split("|")]


def cell_tokens(cell: str) -> list[str]:
    """The tokens of a cell (quoted text keeps its quotes); none for ``-`` or an empty cell."""
    return [] if cell in ("", "-") else TOKEN.findall(cell)


def claim_ids(cell: str) -> list[str]:
    return [token for token in cell_tokens(cell) if not token.startswith('"')]


def spec_table_rows(text: str) -> Iterator[tuple[int, list[str]]]:
    """(1-based line, cells of the row, label first) for every row of every spec-table in ``text``."""
    fence = None
    for number, line in enumerate(text.splitlines(), start=1):
        if fence is None:
            opened = _OPEN.match(line)
            fence = opened.group("fence") if opened else None
            continue
        stripped = line.strip()
        if stripped and stripped == fence[0] * len(stripped) and len(stripped) >= len(fence):
            fence = None
        elif stripped and not _OPTION.match(line):
            yield number, split_row(line)

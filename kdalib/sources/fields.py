"""Value parsers for sources.yaml fields: each returns the clean value or raises ValueError.

An empty ValueError message means "the expectation named by the caller says it all"; a
message adds a detail (``no such calendar day``). Kept apart from :mod:`kdalib.sources.schema`
so the schema module reads as the list of keys and rules.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

SHA256 = re.compile(r"^[0-9a-f]{64}$")
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("")
    return str(value)


def parse_display(value: Any) -> str:
    """``display`` is text; a bare integer is accepted, a bare float is ambiguous (1.50 → 1.5)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        raise ValueError("write the number in quotes so its digits are kept, e.g. display: '1.50'")
    return parse_text(value)


def parse_date(value: Any) -> dt.date:
    text = str(value) if isinstance(value, (str, dt.date)) else None
    if text is None or not ISO_DATE.match(text):
        raise ValueError("a date written YYYY-MM-DD")
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ValueError("no such calendar day") from None


def parse_version(value: Any) -> str:
    """A claim's ``version``: the date of one of its source's archived versions, or ``archived``."""
    if value == "archived":
        return "archived"
    return parse_date(value).isoformat()


def parse_url(value: Any) -> str:
    text = parse_text(value)
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"scheme {parts.scheme or '(none)'!r} is not allowed, only https or http")
    if not parts.hostname:
        raise ValueError("the URL has no host")
    return text


def parse_enum(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or value not in choices:
            raise ValueError("")
        return value

    return parse


def parse_value(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("")
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return parse_text(value)


def parse_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value < 0:
        raise ValueError("")
    return float(value)


def parse_id_list(value: Any) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) and v.strip() for v in items):
        raise ValueError("")
    return [str(v) for v in items]


def parse_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("")
    return value


def parse_shots(value: Any) -> int | str:
    """A whole number of shots, or text such as '5-shot' or 'not stated'."""
    if isinstance(value, bool):
        raise ValueError("")
    if isinstance(value, int):
        return int(value)
    return parse_text(value)


def parse_sha(value: Any) -> str:
    if not isinstance(value, str) or not SHA256.match(value):
        raise ValueError("")
    return value


def parse_pattern(regex: re.Pattern[str]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or not regex.match(value):
            raise ValueError("")
        return value

    return parse

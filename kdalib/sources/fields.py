"""Value parsers for sources.yaml fields: each returns the clean value or raises ValueError.

An empty ValueError message means "the expectation named by the caller says it all"; a
message adds a detail (``no such calendar day``). Kept apart from :mod:`kdalib.sources.schema`
so the schema module reads as the list of keys and rules.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import unicodedata
from collections.abc import Callable
from typing import Any

from kdalib.sources.urls import UrlError, split_url

SHA256 = re.compile(r"^[0-9a-f]{64}$")
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("")
    return str(value)


#: Character categories a reader cannot see: format (zero-width space, soft hyphen, joiners,
#: bidirectional marks), controls, line and paragraph separators, surrogates, private use, unassigned.
INVISIBLE_CATEGORIES = frozenset({"Cf", "Cc", "Zl", "Zp", "Cs", "Co", "Cn"})


def parse_display(value: Any) -> str:
    """``display`` is text; a bare integer is accepted, a bare float is ambiguous (1.50 → 1.5).

    What the book prints is what the checks read, so a display may not hold a character the
    reader cannot see (``65.\u200b8`` shows as 65.8 but would be checked as two numbers).
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        raise ValueError("write the number in quotes so its digits are kept, e.g. display: '1.50'")
    text = parse_text(value)
    hidden = next((ch for ch in text if unicodedata.category(ch) in INVISIBLE_CATEGORIES), None)
    if hidden is not None:
        raise ValueError(f"it holds the invisible character U+{ord(hidden):04X}; write what the reader sees")
    return text


def parse_date(value: Any) -> dt.date:
    text = str(value) if isinstance(value, (str, dt.date)) else None
    if text is None or not ISO_DATE.match(text):
        raise ValueError("a date written YYYY-MM-DD")
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ValueError("no such calendar day") from None


def parse_past_date(value: Any) -> dt.date:
    """A date that is not in the future (a day of slack for time zones): when a source was
    published or a claim or link was checked."""
    date = parse_date(value)
    latest = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)
    if date > latest:
        raise ValueError(f"{date} is in the future")
    return date


def parse_version(value: Any) -> str:
    """A claim's ``version``: the date of one of its source's archived versions, or ``archived``."""
    if value == "archived":
        return "archived"
    return parse_date(value).isoformat()


def parse_url(value: Any) -> str:
    """An http(s) URL that :func:`kdalib.sources.urls.split_url` accepts (the client's own rules)."""
    text = parse_text(value)
    try:
        split_url(text)
    except UrlError as err:
        raise ValueError(err.problem) from None
    return text


def parse_enum(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or value not in choices:
            raise ValueError("")
        return value

    return parse


def _finite(value: int | float) -> float:
    """``value`` as a finite float; a number no float holds (1e400, .inf, .nan) is refused."""
    try:
        number = float(value)
    except OverflowError:
        raise ValueError("too large for a number the checks can compare") from None
    if not math.isfinite(number):
        raise ValueError("not a finite number")
    return number


def parse_value(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("")
    if isinstance(value, int):
        _finite(value)
        return int(value)
    if isinstance(value, float):
        return _finite(value)
    return parse_text(value)


def parse_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("")
    number = _finite(value)
    if number < 0:
        raise ValueError("")
    return number


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

"""The value/display rule: a claim's numeric ``value`` must be a number its ``display`` writes.

``value`` drives conflict detection and the check of reproduced results, while readers see
``display`` (and the quote proves ``display``), so the two must agree. The display is read
as the reader sees it (normalised as quotes are, :func:`kdalib.sources.quotes.normalize`), cut
into numerals by the tokenizer every check shares (:mod:`kdalib.sources.numerals`), and the
numbers it writes are (rule also stated on the book's sources page):

* each numeral whose digits read as one number: digits with optional thousands commas and
  decimals (``262,144``, ``92.50``), with its exponent if any (``2e-4``; a power ``10^6`` or
  ``10⁶`` is 10 to the 6th, never 106), and not glued to a preceding letter or dot (``K2.5``
  names a model, not 2.5). A numeral such as ``1.2.3`` or ``2,5`` reads as no number;
* the words zero to twenty;
* each of these also multiplied by a scale word that follows it (``thousand``, ``million``,
  ``billion``, ``trillion``, hyphenated or not): ``1-million-token`` writes both 1 and
  1,000,000, and ``3 billion`` with ``unit: B parameters`` is written as 3.

The value agrees when it equals one of these numbers (to 1e-9 relative). Unit letters such as
``B``, ``K`` or ``%`` are not scales: they belong in ``unit``. A text value that reads as a number
(one numeral, optionally followed by unit letters: ``"99"``, ``"9.8T"``) is held to the same
rule, so quoting a number does not skip it; other text values (names, dates, lists) are not
checked, since the quote already holds the display.
"""

from __future__ import annotations

import math
import re

from kdalib.sources.numerals import NUMERAL
from kdalib.sources.quotes import normalize

_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty"
).split()
NUMBER_WORDS = {word: index for index, word in enumerate(_WORDS)}
SCALES = {"thousand": 1e3, "million": 1e6, "billion": 1e9, "trillion": 1e12}
_SUPERSCRIPTS = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻−", "0123456789--")

_MANTISSA = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?")
_SCALE = re.compile(r"[\s-]*(thousand|million|billion|trillion)\b", re.IGNORECASE)
_WORD = re.compile(r"(?<![\w.])(" + "|".join(_WORDS) + r")\b", re.IGNORECASE)
_GLUED = re.compile(r"[\w.]")
#: A text value that reads as a number: one numeral, then at most a word of unit letters, % or ×.
_NUMBER_TEXT = re.compile(r"\s*(?:" + NUMERAL.pattern + r")\s*(?:[^\W\d_]+|%|×)?\s*")
#: Displays longer than this are not read further (no display is a paragraph).
READ_CHARS = 500


def numeral_value(numeral: re.Match[str]) -> float | None:
    """The number a numeral (a match of :data:`kdalib.sources.numerals.NUMERAL`) writes, or None."""
    mantissa = numeral.group("mantissa")
    if not _MANTISSA.fullmatch(mantissa):
        return None  # 1.2.3, 2,5: a version or a list, not one number
    base = float(mantissa.replace(",", ""))
    if numeral.group("e") is not None:
        exponent, power = numeral.group("e"), False
    elif numeral.group("caret") is not None:
        exponent, power = numeral.group("caret"), True
    elif numeral.group("sup") is not None:
        exponent, power = numeral.group("sup").translate(_SUPERSCRIPTS), True
    else:
        return base
    if len(exponent.lstrip("-+")) > 3:
        return None  # no display writes such a power; never compute a huge number
    try:
        number = base ** int(exponent) if power else float(f"{mantissa.replace(',', '')}e{exponent}")
    except (OverflowError, ZeroDivisionError):
        return None
    return number if math.isfinite(number) else None


def numbers_written(display: str) -> list[float]:
    """Every number ``display`` writes, under the rule of the module docstring."""
    text = normalize(display[:READ_CHARS])
    found: list[tuple[int, float, int]] = []  # (position, number, end) in reading order
    for match in NUMERAL.finditer(text):
        if match.start() > 0 and _GLUED.match(text, match.start() - 1):
            continue
        number = numeral_value(match)
        if number is not None:
            found.append((match.start(), number, match.end()))
    for match in _WORD.finditer(text):
        found.append((match.start(), float(NUMBER_WORDS[match.group(1).lower()]), match.end()))
    numbers: list[float] = []
    for _, number, end in sorted(found):
        numbers.append(number)
        scale = _SCALE.match(text, end)
        if scale:
            numbers.append(number * SCALES[scale.group(1).lower()])
    return [n for n in numbers if math.isfinite(n)]


def as_number(value: object) -> float | int | None:
    """``value`` as the number it states: an int or float, a text that reads as one number
    (``"9.8T"``, see the module docstring), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if not isinstance(value, str):
        return None
    shape = _NUMBER_TEXT.fullmatch(normalize(value[:READ_CHARS]))
    return numeral_value(shape) if shape is not None else None


def value_problem(value: object, display: str) -> str | None:
    """Why ``value`` disagrees with ``display``, or None when it agrees (or is text that states no number)."""
    number = as_number(value)
    if number is None or not display:
        return None
    written = numbers_written(display)
    try:
        if any(math.isclose(number, n, rel_tol=1e-9, abs_tol=1e-12) for n in written):
            return None
    except OverflowError:  # an integer beyond any float agrees with no written number
        pass
    if not written:
        return "the display writes no number"
    shown = ", ".join(f"{n:g}" for n in written[:6])
    return f"the display writes {shown}"

"""The value/display rule: a claim's numeric ``value`` must be a number its ``display`` writes.

``value`` drives conflict detection and the check of reproduced results, while readers see
``display`` (and the quote proves ``display``), so the two must agree. The numbers a display
writes are (rule also stated on the book's sources page):

* numerals in ASCII digits, with optional thousands commas, decimals and an exponent
  (``262,144``, ``92.50``, ``2e-4``), not glued to a preceding letter or dot (``K2.5`` names a
  model, not 2.5);
* a power written ``10^6`` or with superscript digits ``10⁶`` (read as 10 to the 6th, never as
  106);
* the words zero to twenty;
* each of these also multiplied by a scale word that follows it (``thousand``, ``million``,
  ``billion``, ``trillion``, hyphenated or not): ``1-million-token`` writes both 1 and
  1,000,000, and ``3 billion`` with ``unit: B parameters`` is written as 3.

The value agrees when it equals one of these numbers (to 1e-9 relative). Unit letters such as
``B``, ``K`` or ``%`` are not scales: they belong in ``unit``. Text values (names, dates,
lists) are not checked, since the quote already holds the display.
"""

from __future__ import annotations

import math
import re

_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty"
).split()
NUMBER_WORDS = {word: index for index, word in enumerate(_WORDS)}
SCALES = {"thousand": 1e3, "million": 1e6, "billion": 1e9, "trillion": 1e12}
_SUPERSCRIPTS = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻", "0123456789-")

_SCALE = r"(?:[\s-]*(?P<scale>thousand|million|billion|trillion)\b)?"
_NUMBER = re.compile(
    r"(?<![\w.])(?:"
    r"(?P<base>\d+)(?:\^(?P<caret>-?\d+)|(?P<sup>⁻?[⁰¹²³⁴⁵⁶⁷⁸⁹]+))"
    r"|(?P<numeral>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?)(?![\d⁰¹²³⁴⁵⁶⁷⁸⁹])"
    r"|(?P<word>" + "|".join(_WORDS) + r")\b"
    r")" + _SCALE,
    re.IGNORECASE,
)


def numbers_written(display: str) -> list[float]:
    """Every number ``display`` writes, under the rule of the module docstring."""
    found: list[float] = []
    for match in _NUMBER.finditer(display[:500]):
        if match.group("base") is not None:
            exponent = match.group("caret") or match.group("sup").translate(_SUPERSCRIPTS)
            if len(exponent.lstrip("-")) > 3 or len(match.group("base")) > 20:
                continue  # no display writes such a power; never compute a huge integer
            try:
                number = float(match.group("base")) ** int(exponent)
            except (OverflowError, ZeroDivisionError):
                continue
        elif match.group("numeral") is not None:
            number = float(match.group("numeral").replace(",", ""))
        else:
            number = float(NUMBER_WORDS[match.group("word").lower()])
        found.append(number)
        if match.group("scale"):
            found.append(number * SCALES[match.group("scale").lower()])
    return [n for n in found if math.isfinite(n)]


def value_problem(value: object, display: str) -> str | None:
    """Why a numeric ``value`` disagrees with ``display``, or None when it agrees (or is text)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not display:
        return None
    written = numbers_written(display)
    if any(math.isclose(value, n, rel_tol=1e-9, abs_tol=1e-12) for n in written):
        return None
    if not written:
        return "the display writes no number"
    shown = ", ".join(f"{n:g}" for n in written[:6])
    return f"the display writes {shown}"

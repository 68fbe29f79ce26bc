"""Where numbers start and end in a text: the one tokenizer behind every comparison of numbers.

A claim is checked three times (a quote in its snapshot, the display in the quote, the value in
the display), and each check must see the same numbers, or a span cut from inside ``65.8`` could
pass as ``5.8``. A **numeral** is, in a normalised text (:func:`kdalib.sources.quotes.normalize`):

* a run of decimal digits, with single ``.`` or ``,`` between digits joining runs into one
  numeral (``65.8``, ``1,024``, ``1.2.3``);
* followed by at most one exponent that belongs to it: ``e``/``E`` with an optional sign and
  digits (``2e-4``), ``^`` with an optional sign and digits (``10^6``), or superscript digits
  with an optional minus sign (``10⁶``, ``10⁻⁶``; normalisation writes the superscript minus as
  ``−``).

Numerals are matched leftmost and longest, so each character belongs to at most one. Everything
else (letters, spaces, other punctuation) lies between numerals: ``K2.5`` holds the numeral
``2.5``, ``1-2`` holds two. A span of text **cuts a numeral** when one of its ends falls strictly
inside one; the matcher refuses such spans, and two texts **write the same numerals** when their
lists of numerals are equal as text.
"""

from __future__ import annotations

import array
import bisect
import re

SUPERSCRIPT_DIGITS = "⁰¹²³⁴⁵⁶⁷⁸⁹"
NUMERAL = re.compile(
    r"(?P<mantissa>\d+(?:[.,]\d+)*)"
    r"(?:[eE](?P<e>[-+]?\d+)|\^(?P<caret>[-+]?\d+)|(?P<sup>[⁻−-]?[" + SUPERSCRIPT_DIGITS + r"]+))?"
)


def numerals(text: str) -> list[str]:
    """The numerals of ``text``, in order, as written."""
    return [match.group() for match in NUMERAL.finditer(text)]


class NumeralIndex:
    """The numeral spans of one text, for asking whether a span cuts one (built once per text)."""

    def __init__(self, text: str):
        self.starts = array.array("q")
        self.ends = array.array("q")
        for match in NUMERAL.finditer(text):
            self.starts.append(match.start())
            self.ends.append(match.end())

    def cuts(self, position: int) -> bool:
        """``position`` (a boundary between two characters) falls strictly inside a numeral."""
        index = bisect.bisect_right(self.starts, position - 1) - 1
        return index >= 0 and self.starts[index] < position < self.ends[index]

    def within(self, text: str, start: int, end: int) -> list[str]:
        """The numerals lying in ``text[start:end]`` (the span must not cut one)."""
        first = bisect.bisect_left(self.starts, start)
        last = bisect.bisect_left(self.starts, end)
        return [text[self.starts[i] : self.ends[i]] for i in range(first, last)]

    def whole(self, text: str, start: int, end: int, wanted: list[str]) -> bool:
        """``text[start:end]`` cuts no numeral and writes exactly the numerals ``wanted``."""
        return not self.cuts(start) and not self.cuts(end) and self.within(text, start, end) == wanted

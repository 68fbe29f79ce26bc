"""Find a claim's quote in a snapshot, tolerant of Unicode forms and whitespace only.

Matching rule (the one ``kdalib verify`` and ``kdalib sources quote`` share):

1. both texts are normalised: Unicode NFKC (so ``ﬁ`` = ``fi``, full-width digits = ASCII
   digits, no-break spaces = spaces), zero-width characters and soft hyphens removed,
   and every run of whitespace (spaces, tabs, newlines, form feeds) made one space;
2. the normalised quote must occur in the normalised snapshot (**exact** match);
3. failing that, the quote is looked for with all whitespace removed from both sides
   (**whitespace-insensitive** match). PDF extraction adds and drops spaces (``Diag(αt )``)
   and breaks lines in tables, so this fallback is what lets a quote copied from the PDF
   viewer verify against ``pdftotext`` output. Letters, digits and punctuation must still
   agree one for one: nothing else is ignored.

Matching is case-sensitive: ``1T`` and ``1t`` are different claims.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

EXACT = "exact"
WHITESPACE_INSENSITIVE = "whitespace-insensitive"

_INVISIBLE = dict.fromkeys(map(ord, "\u00ad\u200b\u200c\u200d\u2060\ufeff"))
_SPACE_RUN = re.compile(r"\s+")


def normalize(text: str) -> str:
    """NFKC, invisible characters dropped, whitespace runs collapsed to one space, ends stripped."""
    text = unicodedata.normalize("NFKC", text).translate(_INVISIBLE)
    return _SPACE_RUN.sub(" ", text).strip()


def compact(text: str) -> str:
    """The normalised text with every whitespace character removed."""
    return _SPACE_RUN.sub("", normalize(text))


@dataclass(frozen=True)
class QuoteMatch:
    """Where a quote was found.

    Attributes:
        kind: ``"exact"`` or ``"whitespace-insensitive"``.
        start / end: character offsets of the matched span in the original (raw) text.
        line: 1-based line of ``start`` in the original text.
        span: the original text of the match, unchanged.
    """

    kind: str
    start: int
    end: int
    line: int
    span: str

    @property
    def normalized(self) -> str:
        """The span as it would be written in ``quote:`` (normalised, one line)."""
        return normalize(self.span)


class NormalizedText:
    """A text's normalised forms with a map back to the original offsets.

    Built once per snapshot and reused for every claim quoting it. Normalisation is applied
    per grapheme segment (a starter character and its combining marks), which is where NFKC
    can change text, so every normalised character knows the original span it came from.
    """

    def __init__(self, raw: str):
        self.raw = raw
        chars: list[str] = []
        origin: list[int] = []
        for start, end in _segments(raw):
            piece = unicodedata.normalize("NFKC", raw[start:end]).translate(_INVISIBLE)
            for ch in piece:
                if ch.isspace():
                    if chars and chars[-1] == " ":
                        continue
                    ch = " "
                chars.append(ch)
                origin.append(start)
        self.text = "".join(chars)
        self.origin = origin
        self.compact_index = [i for i, ch in enumerate(chars) if ch != " "]
        self.compact = "".join(chars[i] for i in self.compact_index)
        self._segment_end = {s: e for s, e in _segments(raw)}

    def _raw_span(self, first: int, last: int) -> tuple[int, int]:
        """Original offsets covering normalised characters ``first..last`` (inclusive)."""
        start = self.origin[first]
        end_start = self.origin[last]
        return start, self._segment_end.get(end_start, end_start + 1)

    def find(self, quote: str) -> QuoteMatch | None:
        """Locate ``quote`` (exact first, then whitespace-insensitive); None when absent."""
        wanted = normalize(quote)
        if not wanted:
            return None
        position = self.text.find(wanted)
        if position >= 0:
            return self._match(EXACT, position, position + len(wanted) - 1)
        squeezed = compact(quote)
        position = self.compact.find(squeezed)
        if position >= 0:
            first = self.compact_index[position]
            last = self.compact_index[position + len(squeezed) - 1]
            return self._match(WHITESPACE_INSENSITIVE, first, last)
        return None

    def _match(self, kind: str, first: int, last: int) -> QuoteMatch:
        start, end = self._raw_span(first, last)
        line = self.raw.count("\n", 0, start) + 1
        return QuoteMatch(kind, start, end, line, self.raw[start:end])


def _segments(raw: str) -> list[tuple[int, int]]:
    """Split ``raw`` into (start, end) spans of one starter plus its combining marks."""
    spans: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(raw) + 1):
        if i == len(raw) or not unicodedata.combining(raw[i]):
            spans.append((start, i))
            start = i
    return spans


def find_quote(snapshot_text: str | NormalizedText, quote: str) -> QuoteMatch | None:
    """Find ``quote`` in a snapshot; see the module docstring for the rule."""
    text = snapshot_text if isinstance(snapshot_text, NormalizedText) else NormalizedText(snapshot_text)
    return text.find(quote)


def _occurs_whole(needle: str, haystack: str) -> bool:
    """``needle`` occurs in ``haystack`` without cutting a number (``4T`` is not in ``1.04T``)."""
    pattern = r"(?<!\d)(?<!\d[.,])" + re.escape(needle) + r"(?!\d)(?![.,]\d)"
    return re.search(pattern, haystack) is not None


def display_in_quote(display: str, quote: str) -> str | None:
    """How the printed value occurs inside the quote: ``"exact"``, ``"whitespace-insensitive"`` or None.

    The value a reader sees must be visible in the cited words, so ``display: 1T`` needs a
    quote such as ``Total Parameters | 1T``. The same normalisation as for quotes applies,
    and the value may not be a piece of a longer number: ``4T`` does not occur in ``1.04T``.
    """
    wanted = normalize(display)
    if not wanted:
        return None
    if _occurs_whole(wanted, normalize(quote)):
        return EXACT
    if _occurs_whole(compact(display), compact(quote)):
        return WHITESPACE_INSENSITIVE
    return None

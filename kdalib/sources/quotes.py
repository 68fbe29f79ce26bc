"""Find a claim's quote in a snapshot, tolerant of Unicode forms and whitespace only.

Matching rule (the one ``kdalib verify`` and ``kdalib sources quote`` share, also stated on
the book's sources page):

1. both texts are normalised: Unicode NFKC applied to each character with its combining
   marks (so ``ﬁ`` = ``fi``, full-width digits = ASCII digits, no-break spaces = spaces),
   **except** where NFKC would turn a character that is not a digit into digits:
   superscripts, subscripts, fractions, circled and parenthesised numbers stay as they are
   (``10⁶`` is not ``106``, ``½`` is not ``1⁄2``). Zero-width characters and soft hyphens
   count as whitespace, and every run of whitespace (spaces, tabs, newlines, form feeds)
   becomes one space;
2. the normalised quote must occur in the normalised snapshot (**exact** match);
3. failing that, the quote is looked for with whitespace removed from both sides
   (**whitespace-insensitive** match), except whitespace between two digits, which stays one
   space: ``2 56`` never becomes ``256``. PDF extraction adds and drops spaces
   (``Diag(αt )``) and breaks lines in tables, so this fallback is what lets a quote copied
   from the PDF viewer verify against ``pdftotext`` output. Letters, digits and punctuation
   must still agree one for one: nothing else is ignored;
4. either way, an occurrence counts only when it cuts no number of the snapshot and writes the
   same numbers as the quote (numbers as :mod:`kdalib.sources.numerals` reads them): ``5.8``
   is not found in ``65.8``, ``28K`` not in ``128K``, and ``1.0`` not in ``1. 0`` or ``1.\n0``.
   The next occurrence is tried instead.

No step joins two numbers or creates a digit. Matching is case-sensitive: ``1T`` and ``1t`` are
different claims. The display is looked for in the quote by the same rule
(:func:`display_in_quote`).
"""

from __future__ import annotations

import array
import bisect
import functools
import re
import unicodedata
from dataclasses import dataclass

from kdalib.sources.numerals import NumeralIndex, numerals

EXACT = "exact"
WHITESPACE_INSENSITIVE = "whitespace-insensitive"

_INVISIBLE = dict.fromkeys(map(ord, "\u00ad\u200b\u200c\u200d\u2060\ufeff"), " ")
_SPACE_RUN = re.compile(r"\s+")


@functools.lru_cache(maxsize=1 << 14)
def fold(piece: str) -> str:
    """One character with its combining marks, normalised: NFKC unless that would create digits."""
    folded = unicodedata.normalize("NFKC", piece)
    if sum(ch.isdigit() for ch in folded) != sum(ch.isdecimal() for ch in piece):
        folded = unicodedata.normalize("NFC", piece)  # ⁶, ½, ①, ₂ ... keep their own form
    return folded.translate(_INVISIBLE)


def normalize(text: str) -> str:
    """The normalised text (see the module docstring): folded, whitespace runs made one space, ends stripped."""
    return _normalize_block(text).strip(" ")


def compact(text: str) -> str:
    """The normalised text with whitespace removed, except one space between two digits."""
    return squeeze_spaces(normalize(text))


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

    Built once per snapshot and reused for every claim quoting it. The text is cut into
    blocks of about :data:`BLOCK_CHARS` characters at places where normalisation cannot
    reach across (two printable ASCII characters in a row), and each block is normalised
    with string operations: ASCII is left as it is, and only runs of other characters go
    through :func:`fold` one grapheme segment at a time. The character-by-character map
    back to the original offsets is built only for a block in which a quote was found, so
    memory stays a small multiple of the text's size (a 24 MiB snapshot is indexed in
    seconds, not minutes).
    """

    def __init__(self, raw: str):
        self.raw = raw
        texts: list[str] = []
        compacts: list[str] = []
        self._blocks: list[tuple[int, int]] = []
        self._text_starts: list[int] = []
        self._compact_starts: list[int] = []
        text_at = compact_at = 0
        for start, end in _blocks(raw):
            block = _normalize_block(raw[start:end])
            squeezed = squeeze_spaces(block)
            self._blocks.append((start, end))
            self._text_starts.append(text_at)
            self._compact_starts.append(compact_at)
            texts.append(block)
            compacts.append(squeezed)
            text_at += len(block)
            compact_at += len(squeezed)
        self.text = "".join(texts)
        self.compact = "".join(compacts)
        self._maps: dict[int, _BlockMap] = {}

    def _map(self, index: int) -> _BlockMap:
        if index not in self._maps:
            start, end = self._blocks[index]
            self._maps[index] = _BlockMap(self.raw, start, end)
        return self._maps[index]

    def _origin(self, position: int) -> tuple[int, int]:
        """Original (start, end) of the segment that normalised character ``position`` came from."""
        index = bisect.bisect_right(self._text_starts, position) - 1
        return self._map(index).origin(position - self._text_starts[index])

    def _text_position(self, compact_position: int) -> int:
        index = bisect.bisect_right(self._compact_starts, compact_position) - 1
        local = self._map(index).compact_index[compact_position - self._compact_starts[index]]
        return self._text_starts[index] + local

    @functools.cached_property
    def _numerals(self) -> NumeralIndex:
        return NumeralIndex(self.text)

    def find(self, quote: str) -> QuoteMatch | None:
        """Locate ``quote`` (exact first, then whitespace-insensitive); None when absent."""
        wanted = normalize(quote)
        if not wanted:
            return None
        written = numerals(wanted)
        position = self.text.find(wanted)
        while position >= 0:
            if self._numerals.whole(self.text, position, position + len(wanted), written):
                return self._match(EXACT, position, position + len(wanted) - 1)
            position = self.text.find(wanted, position + 1)
        squeezed = squeeze_spaces(wanted)
        position = self.compact.find(squeezed)
        while position >= 0:
            first = self._text_position(position)
            last = self._text_position(position + len(squeezed) - 1)
            if self._numerals.whole(self.text, first, last + 1, written):
                return self._match(WHITESPACE_INSENSITIVE, first, last)
            position = self.compact.find(squeezed, position + 1)
        return None

    def _match(self, kind: str, first: int, last: int) -> QuoteMatch:
        start = self._origin(first)[0]
        end = self._origin(last)[1]
        line = self.raw.count("\n", 0, start) + 1
        return QuoteMatch(kind, start, end, line, self.raw[start:end])


#: Characters per block of a :class:`NormalizedText` (a block ends at the next safe cut).
BLOCK_CHARS = 1 << 16
_SAFE_CUT = re.compile(r"[!-~]{2}")
_NON_ASCII_RUN = re.compile(r".?[^\x00-\x7f]+", re.DOTALL)


def _blocks(raw: str) -> list[tuple[int, int]]:
    """(start, end) blocks of ``raw``, each cut between two printable ASCII characters."""
    blocks, start = [], 0
    while start < len(raw):
        cut = _SAFE_CUT.search(raw, start + BLOCK_CHARS) if start + BLOCK_CHARS < len(raw) else None
        end = cut.start() + 1 if cut else len(raw)
        blocks.append((start, end))
        start = end
    return blocks


def _normalize_block(block: str) -> str:
    """A block's normalised text: runs of non-ASCII characters folded, whitespace runs made one space."""
    if not block.isascii():
        block = _NON_ASCII_RUN.sub(lambda m: _fold_run(m.group()), block)
    return _SPACE_RUN.sub(" ", block)


def _fold_run(run: str) -> str:
    if unicodedata.is_normalized("NFKC", run) and not _HAS_INVISIBLE.search(run):
        return run  # nothing to fold: every segment is already in its normal form
    return "".join(fold(run[start:end]) for start, end in _segments(run))


_HAS_INVISIBLE = re.compile("[\u00ad\u200b\u200c\u200d\u2060\ufeff]")


class _BlockMap:
    """Character-level map of one block: where each normalised character came from."""

    def __init__(self, raw: str, start: int, end: int):
        chars: list[str] = []
        self.starts = array.array("q")
        self.ends = array.array("q")
        for seg_start, seg_end in _segments(raw[start:end]):
            for ch in fold(raw[start + seg_start : start + seg_end]):
                if ch.isspace():
                    if chars and chars[-1] == " ":
                        continue
                    ch = " "
                chars.append(ch)
                self.starts.append(start + seg_start)
                self.ends.append(start + seg_end)
        self.compact_index = [i for i, ch in enumerate(chars) if ch != " " or _between_digits(chars, i)]

    def origin(self, local: int) -> tuple[int, int]:
        return self.starts[local], self.ends[local]


def _between_digits(chars, i: int) -> bool:
    """The character at ``i`` sits between two digits (any script, superscripts included)."""
    return 0 < i < len(chars) - 1 and chars[i - 1].isdigit() and chars[i + 1].isdigit()


def squeeze_spaces(normalized: str) -> str:
    """Drop the spaces of a normalised text, except a space between two digits."""
    text = _ASCII_GAP.sub("", normalized)
    return text if text.isascii() else _OTHER_GAP.sub(_keep_digit_gap, text)


# Spaces at the ends or between two ASCII characters that are not both digits go in one C
# pass; spaces next to other characters are decided one by one (str.isdigit knows ⁶ and ①).
_ASCII_GAP = re.compile(r"^ | $|(?<=[\x00-\x2f\x3a-\x7f]) (?=[\x00-\x7f])|(?<=[\x00-\x7f]) (?=[\x00-\x2f\x3a-\x7f])")
_OTHER_GAP = re.compile(r"(?<=(.)) (?=(.))", re.DOTALL)


def _keep_digit_gap(match: re.Match[str]) -> str:
    return " " if match.group(1).isdigit() and match.group(2).isdigit() else ""


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


def display_in_quote(display: str, quote: str) -> str | None:
    """How the printed value occurs inside the quote: ``"exact"``, ``"whitespace-insensitive"`` or None.

    The value a reader sees must be visible in the cited words, so ``display: 1T`` needs a
    quote such as ``Total Parameters | 1T``. The rule is the quote-in-snapshot rule of the
    module docstring, so the value may not be a piece of a longer number: ``4T`` does not
    occur in ``1.04T``, nor ``1`` in ``1e-3``.
    """
    match = NormalizedText(quote).find(display)
    return match.kind if match is not None else None

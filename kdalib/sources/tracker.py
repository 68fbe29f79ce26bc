"""The spec tracker behind ``kdalib verify --online`` and ``kdalib sources fetch --new-version``.

Each source is tracked at its *live* URL: the current text of the document, not the pinned
``version_url`` (which never changes). :func:`live_url` derives it from the entry
(``live_url:`` when given; a Hugging Face card's raw README on ``main``, or the raw form of
a Hugging Face file; the newest arXiv PDF; a pinned GitHub file at ``HEAD``; a GitHub
repository's README at ``HEAD``).

The live text is extracted with :mod:`kdalib.sources.extract`, which need not match the
extractor that made the archived text byte for byte. So a source is compared in three
steps -- identical bytes; the same text after the quote normaliser (Unicode, whitespace);
else line by line, whitespace ignored: ``changed`` when archived lines are gone, ``grew``
when all are still there beside new ones (an abstract archived from a page that now serves
the whole paper grows, it does not change) -- and every claim is checked the way
``verify`` checks it offline: is its quote (normalised) still in the live text?
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from kdalib.sources.extract import ExtractionError, ExtractLimits, extract_text, raw_url
from kdalib.sources.http import FetchError, SafeClient
from kdalib.sources.model import ERROR, WARNING, Claim, Document, Finding, Source
from kdalib.sources.quotes import NormalizedText, compact, normalize
from kdalib.sources.rules import QUOTE_CHECKED_STATUSES
from kdalib.sources.snapshots import SnapshotStore, sha256_bytes

IDENTICAL = "identical"  # the live text is byte for byte the archived one
SAME_TEXT = "same-text"  # equal after normalisation, or the same lines laid out differently
GREW = "grew"  # every archived line is still there, and there are new ones
CHANGED = "changed"  # archived lines were removed or edited
UNREACHABLE = "unreachable"  # fetch failed (HTTP error, timeout, connection)
UNREADABLE = "unreadable"  # fetched, but its text could not be extracted (bounded worker failed)
REFUSED = "refused"  # the URL points at an address the client must not contact
NOT_TRACKED = "not-tracked"  # no URL or no archived text to compare with
#: A line shorter than this (compacted) is too common ("|", "1", "Table") to say anything.
MIN_LINE_CHARS = 8
_ARXIV_VERSION = re.compile(r"v\d+$")
_LINE_END_HYPHEN = re.compile(r"(\w)-[ \t]*\r?\n[ \t]*(\w)")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def live_url(source: Source) -> str | None:
    """The URL whose current text tracks ``source`` (None when it has no URL)."""
    if source.live_url:
        return source.live_url
    for candidate in (source.url, source.version_url):
        if not candidate:
            continue
        parts = urlsplit(candidate)
        host = (parts.hostname or "").removeprefix("www.")
        segments = [s for s in parts.path.split("/") if s]
        if host == "huggingface.co" and len(segments) == 2:
            return f"https://huggingface.co/{segments[0]}/{segments[1]}/raw/main/README.md"
        if host == "huggingface.co" and len(segments) >= 5 and segments[2] == "blob":
            return f"https://huggingface.co/{'/'.join(segments[:2])}/raw/{'/'.join(segments[3:])}"
        if host == "arxiv.org" and len(segments) == 2 and segments[0] in ("abs", "pdf"):
            return f"https://arxiv.org/pdf/{_ARXIV_VERSION.sub('', segments[1])}"
    for candidate in (source.version_url, source.url):
        parts = urlsplit(candidate or "")
        segments = [s for s in parts.path.split("/") if s]
        if parts.hostname == "github.com" and len(segments) >= 5 and segments[2] == "blob":
            return f"https://raw.githubusercontent.com/{segments[0]}/{segments[1]}/HEAD/{'/'.join(segments[4:])}"
        if parts.hostname == "github.com" and len(segments) == 2:
            return f"https://raw.githubusercontent.com/{segments[0]}/{segments[1]}/HEAD/README.md"
    return raw_url(source.url) if source.url else None


@dataclass
class LiveText:
    """A fetched and extracted live text."""

    url: str
    final_url: str
    text: str
    served_as_is: bool  # the text is the served body itself (no HTML/PDF extraction, valid UTF-8)

    @property
    def sha256(self) -> str:
        return sha256_bytes(self.text.encode("utf-8"))


def fetch_live(client: SafeClient, url: str, limits: ExtractLimits | None = None) -> LiveText:
    """GET ``url`` and extract its text in the bounded worker (:func:`kdalib.sources.extract.extract_text`).

    Raises:
        FetchError: refused, timeout, connection failure, or an HTTP status other than 2xx
            (kind ``http-status``).
        ExtractionError: the body's text could not be extracted (a broken or hostile document,
            the time or memory limit).
    """
    result = client.get(url)
    if not result.ok:
        raise FetchError(url, "http-status", f"HTTP {result.status} from {result.final_url}", result.status)
    text = extract_text(result.body, result.content_type, limits)
    return LiveText(url, result.final_url, text, text.encode("utf-8") == result.body)


@dataclass
class TextChange:
    """How a live text differs from the archived one."""

    state: str
    lines_gone: list[str] = field(default_factory=list)
    lines_new: list[str] = field(default_factory=list)
    numbers_gone: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if self.state == IDENTICAL:
            return "byte-identical to the archived text"
        if self.state == SAME_TEXT:
            return "the same text (differences in whitespace, Unicode form or layout only)"
        if self.state == GREW:
            return f"every archived line is still there; {len(self.lines_new)} live line(s) are new"
        example = f"; first gone: {self.lines_gone[0][:80]!r}" if self.lines_gone else ""
        numbers = (
            f"; numbers no longer there: {', '.join(self.numbers_gone[:8])}"
            f"{' ...' if len(self.numbers_gone) > 8 else ''}"
            if self.numbers_gone
            else ""
        )
        return (
            f"{len(self.lines_gone)} archived line(s) are no longer in the live text and "
            f"{len(self.lines_new)} live line(s) are new{example}{numbers}"
        )


def _lines(text: str) -> list[str]:
    return [line for line in (normalize(raw) for raw in text.splitlines()) if len(compact(line)) >= MIN_LINE_CHARS]


def _numbers(text: str) -> Counter[str]:
    return Counter(_NUMBER.findall(normalize(text)))


def _joined(text: str) -> str:
    """Compact text with words that a PDF extractor hyphenated at a line end joined again."""
    return compact(_LINE_END_HYPHEN.sub(r"\1\2", text))


def compare_texts(archived: str, live: str) -> TextChange:
    """Compare an archived text with a live one without needing the same extractor.

    A line counts as gone when its words (whitespace ignored, and a word hyphenated at a line
    end joined) occur nowhere in the other text, so re-wrapped paragraphs and another
    extractor's line breaks are not reported as changes. Every number is also counted, so a
    figure edited in a table cell that sits on a line of its own is a change too.
    """
    if archived == live:
        return TextChange(IDENTICAL)
    if normalize(archived) == normalize(live):
        return TextChange(SAME_TEXT)
    archived_compact, live_compact = _joined(archived), _joined(live)
    gone = [line for line in _lines(archived) if _joined(line) not in live_compact]
    new = [line for line in _lines(live) if _joined(line) not in archived_compact]
    # a figure alone on a short line (a PDF table read column by column) is missed by the lines
    numbers = sorted((_numbers(archived) - _numbers(live)).elements())
    state = CHANGED if gone or numbers else GREW if new else SAME_TEXT
    return TextChange(state, gone, new, numbers)


@dataclass
class SourceTrack:
    """One source's live check: where, what changed, and each quoted claim's verdict."""

    source_id: str
    url: str | None
    state: str
    detail: str
    compared_with: str = ""
    live: LiveText | None = None
    change: TextChange | None = None
    quotes: dict[str, bool] = field(default_factory=dict)

    @property
    def quotes_gone(self) -> list[str]:
        return [claim_id for claim_id, found in self.quotes.items() if not found]

    def as_dict(self) -> dict:
        return {
            "source": self.source_id,
            "url": self.url,
            "state": self.state,
            "detail": self.detail,
            "compared_with": self.compared_with,
            "lines_gone": len(self.change.lines_gone) if self.change else None,
            "lines_new": len(self.change.lines_new) if self.change else None,
            "numbers_gone": self.change.numbers_gone if self.change else None,
            "quotes": self.quotes,
        }


def tracked_claims(doc: Document, source: Source) -> list[Claim]:
    """The claims whose quotes must hold for ``source`` (as offline), retired ones included."""
    return [c for c in doc.claims.values() if c.source == source.id and c.quote and c.status in QUOTE_CHECKED_STATUSES]


def track_source(
    doc: Document, source: Source, client: SafeClient, store: SnapshotStore, limits: ExtractLimits | None = None
) -> SourceTrack:
    """Fetch ``source``'s live text, compare it with its newest archived text, check its quotes."""
    url = live_url(source)
    if url is None:
        return SourceTrack(source.id, None, NOT_TRACKED, "no url to fetch")
    try:
        live = fetch_live(client, url, limits)
    except FetchError as err:
        return SourceTrack(source.id, url, REFUSED if err.kind == "refused" else UNREACHABLE, str(err))
    except ExtractionError as err:
        return SourceTrack(source.id, url, UNREADABLE, str(err))
    text = NormalizedText(live.text)
    track = SourceTrack(
        source.id,
        url,
        NOT_TRACKED,
        "no archived text to compare with",
        live=live,
        quotes={c.id: text.find(c.quote) is not None for c in tracked_claims(doc, source)},
    )
    latest = source.latest
    if latest is not None:
        state = store.open(latest)
        if state.text is not None:
            track.change = compare_texts(state.text.raw, live.text)
            track.state, track.detail = track.change.state, track.change.describe()
            track.compared_with = f"{latest.file} ({latest.label})"
        else:
            track.detail = f"the archived text {latest.file} is {state.state}"
    return track


def track_all(
    doc: Document, client: SafeClient, store: SnapshotStore, limits: ExtractLimits | None = None
) -> list[SourceTrack]:
    """:func:`track_source` for every source with a URL, in file order."""
    return [track_source(doc, source, client, store, limits) for source in doc.sources.values()]


def track_findings(doc: Document, tracks: list[SourceTrack]) -> list[Finding]:
    """Findings of an online check: refused URLs are errors; drift and unreachable sources warnings."""
    file = str(doc.path)
    findings: list[Finding] = []
    for track in tracks:
        source = doc.sources[track.source_id]
        if track.state == REFUSED:
            findings.append(
                Finding(
                    ERROR,
                    "fetch-failed",
                    file,
                    source.line,
                    source.id,
                    f"could not fetch {track.url} to track it: {track.detail}",
                    "use a public http(s) URL (live_url: overrides the derived one)",
                )
            )
        elif track.state == UNREACHABLE:
            findings.append(
                Finding(
                    WARNING,
                    "fetch-failed",
                    file,
                    source.line,
                    source.id,
                    f"could not fetch {track.url} to track it: {track.detail}",
                    "check the URL; set live_url: if the document moved",
                )
            )
        elif track.state == UNREADABLE:
            findings.append(
                Finding(
                    WARNING,
                    "extraction-failed",
                    file,
                    source.line,
                    source.id,
                    f"fetched {track.url} to track it, but {track.detail}",
                    "check what the URL serves; set live_url: to a text, Markdown, HTML or PDF version",
                )
            )
        elif track.state in (CHANGED, GREW):
            findings.append(
                Finding(
                    WARNING,
                    f"source-{track.state}",
                    file,
                    source.line,
                    source.id,
                    f"the live text at {track.url} differs from {track.compared_with}: {track.detail}",
                    f"keep the new text as a version: `kdalib sources fetch --new-version {source.id}`",
                )
            )
        for claim_id in track.quotes_gone:
            claim = doc.claims[claim_id]
            findings.append(
                Finding(
                    WARNING,
                    "drift",
                    file,
                    claim.line_of("quote"),
                    claim_id,
                    f"the live text of {track.url} no longer contains the quote",
                    "the archived text still verifies; fetch the new version, then move the claim "
                    "to it (version:) or mark it superseded by a claim quoting the new text",
                )
            )
    return findings


def format_tracks(tracks: list[SourceTrack]) -> str:
    """A plain-text table: per source, its state and how many of its quotes the live text still holds."""
    rows = [("source", "state", "quotes in live text", "url")]
    for track in tracks:
        held = f"{len(track.quotes) - len(track.quotes_gone)}/{len(track.quotes)}" if track.live else "-"
        rows.append((track.source_id, track.state, held, track.url or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)

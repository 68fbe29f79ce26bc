"""Fuzz targets: any input to the loaders or the quote matcher gives a clean result or a clean
error, within a time bound (hypothesis' deadline) and a memory bound (tracemalloc's peak); a
claim that verifies never states a number its snapshot does not print; a file name never reads
outside its folder."""

from __future__ import annotations

import re
import tempfile
import tracemalloc
import unicodedata
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sources_fixtures import dump

from kdalib.sources import quotes, rules
from kdalib.sources.files import UnsafeFile, read_inside
from kdalib.sources.loader import LoadError, load_text
from kdalib.sources.manifest import load_manifest
from kdalib.sources.model import Document
from kdalib.sources.numbers import numbers_written, value_problem
from kdalib.sources.numerals import NumeralIndex, numerals
from kdalib.sources.quotes import NormalizedText, compact, display_in_quote, find_quote, normalize
from kdalib.sources.schema import CLAIM_KEYS, SOURCE_KEYS

MEMORY_BOUND = 64 * 1024 * 1024
FUZZ = settings(max_examples=120, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


def bounded(call, *args):
    """Run ``call`` and check that it allocated at most MEMORY_BOUND bytes at its peak."""
    tracemalloc.start()
    try:
        return call(*args)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < MEMORY_BOUND, peak


def load_and_check(text: str) -> Document | LoadError:
    try:
        doc = load_text(text)
    except LoadError as err:
        assert len(str(err)) < 2000
        return err
    rules.check_conflicts(doc)
    rules.check_relations(doc)
    for finding in doc.findings:
        assert len(finding.format()) < 2000
    return doc


# ---- the loader --------------------------------------------------------------------------

_YAML_ALPHABET = "ab01.: -[]{}&*!|>'\"#\n\t,?%@`~=\\é⁶\u00a0"


@FUZZ
@given(st.text(alphabet=_YAML_ALPHABET, max_size=400))
def test_loader_on_arbitrary_text(text):
    bounded(load_and_check, "sources: []\nclaims: []\n" + text)
    bounded(load_and_check, text)


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True),
    st.text(max_size=40),
    st.dates(),
    st.sampled_from(["2026-02-30", "1T", "10⁶", "6¹"]),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(FUZZ, max_examples=20)  # each example dumps YAML with ruamel, the slow part
@given(
    st.lists(st.dictionaries(st.sampled_from(SOURCE_KEYS), _VALUES, max_size=8), max_size=3),
    st.lists(st.dictionaries(st.sampled_from(CLAIM_KEYS), _VALUES, max_size=12), max_size=5),
)
def test_loader_on_checklists_with_random_fields(sources, claims):
    for entry in sources + claims:
        entry.setdefault("id", "x")
    result = bounded(load_and_check, dump({"sources": sources, "claims": claims}))
    assert isinstance(result, (Document, LoadError))


# ---- the quote matcher -------------------------------------------------------------------


def _reference_normalize(raw: str) -> str:
    folded = "".join(quotes.fold(raw[start:end]) for start, end in quotes._segments(raw))
    return " ".join(folded.split()) if folded.strip() else ""


_TEXT_ALPHABET = "ab AB.|%()\n\t0123456789⁰¹⁶₂½①⑴１２ﬁﬃ\u00a0\u200b\u00ad\u0301\u0308αé㍘⒈"


@FUZZ
@given(
    st.text(alphabet=_TEXT_ALPHABET, max_size=300),
    st.text(alphabet=_TEXT_ALPHABET, max_size=40),
    st.sampled_from([4, 16, 1 << 16]),
)
def test_quote_matcher_on_arbitrary_text(raw, quote, block):
    saved = quotes.BLOCK_CHARS
    quotes.BLOCK_CHARS = block  # small blocks exercise the cuts between blocks
    try:
        text = bounded(NormalizedText, raw)
        match = bounded(text.find, quote)
    finally:
        quotes.BLOCK_CHARS = saved
    # the block-wise index equals the normalisation written out one grapheme segment at a time
    assert text.text.strip(" ") == normalize(raw) == _reference_normalize(raw)
    assert text.compact == compact(raw)
    if match is not None:
        assert raw[match.start : match.end] == match.span
        assert compact(quote) in compact(match.span)
    elif normalize(quote):  # every exact occurrence cuts a number or writes other numbers
        wanted, whole = normalize(quote), normalize(raw)
        index = NumeralIndex(whole)
        places = [i for i in range(len(whole)) if whole.startswith(wanted, i)]
        assert not any(index.whole(whole, i, i + len(wanted), numerals(wanted)) for i in places)
    display_in_quote(quote, raw)
    value_problem(1, quote)


@FUZZ
@given(st.text(alphabet=_TEXT_ALPHABET + "".join(map(chr, range(0x2460, 0x2470))), max_size=200))
def test_normalisation_never_creates_or_joins_digits(raw):
    normalized = normalize(raw)
    digits_before = sum(ch.isdigit() for ch in raw)
    assert sum(ch.isdigit() for ch in normalized) == digits_before
    squeezed = compact(raw)
    gaps = sum(
        1
        for i in range(1, len(normalized) - 1)
        if normalized[i] == " " and normalized[i - 1].isdigit() and normalized[i + 1].isdigit()
    )
    assert squeezed.count(" ") == gaps
    for ch in normalized:
        assert unicodedata.category(ch) != "Cc" or ch == " "


# ---- a claim never verifies for a number its source does not print --------------------------

_NUMBER_ALPHABET = "0123456789.,  \n|TBa<>\u200b\u00a0１"
_REFERENCE_NUMERAL = re.compile(r"\d+(?:[.,]\d+)*")


def _numbers_printed(snapshot: str) -> set[float]:
    """An independent reading of the numbers a snapshot prints: maximal runs of digits joined by
    single '.' or ',', read as one number when their commas group thousands."""
    found = set()
    for numeral in _REFERENCE_NUMERAL.findall(normalize(snapshot)):
        if re.fullmatch(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?", numeral):
            found.add(float(numeral.replace(",", "")))
    return found


@settings(FUZZ, max_examples=1000)
@given(st.text(alphabet=_NUMBER_ALPHABET, max_size=120), st.data())
def test_a_verified_value_is_a_number_the_snapshot_prints(snapshot, data):
    if snapshot:  # quotes are mostly pieces of the snapshot, cut anywhere, re-spaced or not
        start = data.draw(st.integers(0, len(snapshot) - 1))
        end = data.draw(st.integers(start + 1, len(snapshot)))
        quote = snapshot[start:end]
        if data.draw(st.booleans()):
            quote = quote.replace(" ", "").replace("\n", " ")
    else:
        quote = data.draw(st.text(alphabet=_NUMBER_ALPHABET, max_size=20))
    cut = data.draw(st.integers(0, len(quote)))
    display = quote[cut : cut + data.draw(st.integers(1, 8))]
    if find_quote(snapshot, quote) is None or display_in_quote(display, quote) is None:
        return
    for value in numbers_written(display):
        assert value_problem(value, display) is None
        assert value in _numbers_printed(snapshot), (snapshot, quote, display, value)


# ---- the other loaders ---------------------------------------------------------------------------


@FUZZ
@given(st.text(alphabet=_YAML_ALPHABET, max_size=400))
def test_the_manifest_loader_on_arbitrary_text(text):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "MANIFEST.yaml"
        path.write_text("- file: a.md\n" + text, encoding="utf-8")
        entries, findings = bounded(load_manifest, path)
    assert isinstance(entries, dict)
    for finding in findings:
        assert len(finding.format()) < 2000


_NAME_ALPHABET = "ab./\\\0 \n:~"


@FUZZ
@given(st.text(alphabet=_NAME_ALPHABET, max_size=24))
def test_read_inside_never_leaves_its_folder(name):
    with tempfile.TemporaryDirectory() as folder:
        outside, root = Path(folder), Path(folder) / "store"
        (root / "a").mkdir(parents=True)
        (root / "a" / "b").write_bytes(b"inside")
        (root / "ab").symlink_to(outside / "secret")
        (outside / "secret").write_bytes(b"outside")
        try:
            data = read_inside(root, name, max_bytes=100)
        except UnsafeFile:
            return
        assert data == b"inside"

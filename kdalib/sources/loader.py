"""Read sources.yaml with ruamel.yaml, keeping the line of every key for precise messages.

Two readers exist on purpose:

* :func:`load_document` (for checking) keeps dates as the text the contributor typed,
  so a bad date such as ``2026-13-45`` becomes a finding with a line number instead of
  an exception inside the YAML library;
* :func:`load_round_trip` (for ``check-links --write``) is ruamel's plain round-trip
  reader, whose output dumps back with comments, key order and quoting unchanged.

Both refuse what a checklist never needs and what makes a small file expensive: YAML
anchors and aliases (``&name``/``*name``, the "billion laughs" expansion), files over
:data:`MAX_FILE_BYTES` and nesting deeper than :data:`MAX_DEPTH`. Every YAML file kdalib
reads (the snapshot manifest too) goes through :func:`guard` and :func:`load_yaml`.

Input that cannot be read at all (missing file, YAML syntax error, duplicate mapping
keys, an anchor or alias, a file too large or too deep, a top level that is not a
mapping) raises :class:`LoadError`, which the CLI turns into exit status 2. Everything
else becomes a :class:`~kdalib.sources.model.Finding`.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.composer import Composer, ComposerError
from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent

from kdalib.sources.files import UnsafeFile, read_capped
from kdalib.sources.model import Document, file_location
from kdalib.sources.rules import check_references
from kdalib.sources.schema import build_document


class LoadError(Exception):
    """sources.yaml cannot be used at all; ``str(err)`` is ``file:line: what is wrong``."""

    def __init__(self, path: str | Path, line: int, message: str):
        self.path = str(path)
        self.line = line
        self.message = message
        super().__init__(f"{file_location(self.path, line)}: {message}")


#: sources.yaml is a few hundred kilobytes; a checklist sixteen times larger is a mistake or an attack.
MAX_FILE_BYTES = 4 * 1024 * 1024
#: The deepest a checklist goes is top level → claims → claim → notes → reproduced_by → value.
MAX_DEPTH = 16


class _NoAnchorComposer(Composer):
    """The composer with anchors and aliases refused where they appear (an alias can expand a
    few hundred bytes into billions of nodes, and a checklist has no use for either)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.parser.peek_event()
        if isinstance(event, AliasEvent) or event.anchor is not None:
            what = f"alias *{event.anchor}" if isinstance(event, AliasEvent) else f"anchor &{event.anchor}"
            raise ComposerError(
                None,
                None,
                f"YAML {_clip(what)} is not allowed (kdalib's YAML files use none); write the value out in full",
                event.start_mark,
            )
        return super().compose_node(parent, index)


class _DatesAsTextConstructor(RoundTripConstructor):
    """Round-trip constructor that leaves YAML timestamps as the text written."""


_DatesAsTextConstructor.add_constructor("tag:yaml.org,2002:timestamp", lambda self, node: self.construct_scalar(node))


class _LenientDatesConstructor(RoundTripConstructor):
    """Round-trip constructor that keeps a date-like scalar which is no calendar day as text,
    so that ``check-links --write`` and ``sources add`` can rewrite a file whose
    ``title: 2026-02-30`` the schema accepted as text."""

    def construct_yaml_timestamp(self, node: Any, values: Any = None) -> Any:
        try:
            return super().construct_yaml_timestamp(node, values)
        except ValueError:
            return self.construct_scalar(node)


_LenientDatesConstructor.add_constructor(
    "tag:yaml.org,2002:timestamp", _LenientDatesConstructor.construct_yaml_timestamp
)


def guard(yaml: YAML) -> YAML:
    """``yaml`` made to refuse anchors, aliases and nesting deeper than :data:`MAX_DEPTH`."""
    yaml.Composer = _NoAnchorComposer
    yaml.max_depth = MAX_DEPTH
    return yaml


def _checking_yaml() -> YAML:
    yaml = guard(YAML(typ="rt"))
    yaml.Constructor = _DatesAsTextConstructor
    return yaml


def round_trip_yaml() -> YAML:
    """A ruamel YAML configured to write sources.yaml back the way it was laid out."""
    yaml = guard(YAML(typ="rt"))
    yaml.Constructor = _LenientDatesConstructor
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap long quotes or URLs
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def _read_text(path: Path) -> str:
    try:
        return read_capped(path, MAX_FILE_BYTES).decode("utf-8")
    except UnsafeFile as err:
        if err.missing:
            raise LoadError(path, 0, "file not found (pass --sources FILE or run from the book root)") from None
        raise LoadError(path, 0, err.problem) from None
    except UnicodeDecodeError as err:
        raise LoadError(path, 0, f"not UTF-8 text ({err.reason} at byte {err.start})") from None


def parse_yaml_text(text: str, path: str | Path = "sources.yaml") -> CommentedMap:
    """Parse checklist text into a ruamel mapping, dates kept as text.

    Raises:
        LoadError: on a syntax error, duplicate keys, an anchor or alias, a text over the size
            or depth limit, an empty file or a non-mapping top level.
    """
    data = load_yaml(_checking_yaml(), text, path)
    if data is None:
        raise LoadError(path, 1, "the file is empty; expected a mapping with 'sources:' and 'claims:'")
    if not isinstance(data, CommentedMap):
        raise LoadError(path, 1, f"the top level is a {_kind(data)}; expected a mapping with 'sources:' and 'claims:'")
    return data


def load_document(path: str | Path) -> Document:
    """Read and schema-check a checklist file.

    Returns:
        The :class:`Document`; schema problems and broken references between entries
        (:func:`kdalib.sources.rules.check_references`) are in ``document.findings``.

    Raises:
        LoadError: when the file cannot be used at all.
    """
    path = Path(path)
    return _with_references(build_document(parse_yaml_text(_read_text(path), path), path))


def load_text(text: str, path: str | Path = "sources.yaml") -> Document:
    """Like :func:`load_document`, for text already in memory (tests, the fuzzer)."""
    return _with_references(build_document(parse_yaml_text(text, path), Path(path)))


def _with_references(doc: Document) -> Document:
    """The document with the findings of the references between its entries added."""
    doc.findings += check_references(doc)
    return doc


def load_round_trip(path: str | Path) -> tuple[YAML, CommentedMap]:
    """Read a checklist for editing in place; pair with :func:`round_trip_yaml` ``.dump``."""
    path = Path(path)
    yaml = round_trip_yaml()
    data = load_yaml(yaml, _read_text(path), path)
    if not isinstance(data, CommentedMap):
        raise LoadError(path, 1, "the top level is not a mapping")
    return yaml, data


def load_yaml(yaml: YAML, text: str, path: str | Path) -> Any:
    """``yaml.load`` (of a :func:`guard` ed YAML) with every failure turned into a
    :class:`LoadError` of bounded length."""
    if len(text) > MAX_FILE_BYTES:
        raise LoadError(path, 0, f"the text is {len(text)} characters long, over the {MAX_FILE_BYTES} limit")
    try:
        return yaml.load(io.StringIO(text))
    except MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark is not None else 0
        problem = err.problem or err.context or "invalid YAML"
        if "maximum depth" in problem:
            problem = f"nesting deeper than {MAX_DEPTH} levels"
        raise LoadError(path, line, f"YAML error: {_clip(problem)}") from None
    except YAMLError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise LoadError(path, 0, f"YAML error: {_clip(first)}") from None
    except RecursionError:
        raise LoadError(path, 0, f"YAML nesting is deeper than {MAX_DEPTH} levels") from None
    except Exception as err:  # noqa: BLE001 - the YAML library raises assorted errors on odd input
        raise LoadError(path, 0, f"cannot parse the YAML ({type(err).__name__}: {_clip(str(err))})") from None


def _clip(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters: messages never carry an unbounded value."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "list"
    if isinstance(value, str):
        return "string"
    return type(value).__name__

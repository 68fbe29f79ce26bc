"""Link checking and ``check-links --write`` (live texts are tracked in :mod:`kdalib.sources.tracker`).

A link is ``ok`` when it answers 2xx, ``moved`` when a permanent redirect (301/308) leads
elsewhere, and ``broken`` on a 4xx/5xx answer, a timeout or a connection failure. A URL the
client refuses (private address, bad scheme) is not a link state but a finding: with any
refusal nothing is written, so sources.yaml only ever changes after a complete check.
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass
from pathlib import Path

from ruamel.yaml.comments import CommentedMap

from kdalib.locking import locked
from kdalib.sources.http import FetchError, SafeClient
from kdalib.sources.loader import LoadError, load_round_trip
from kdalib.sources.model import Document
from kdalib.sources.snapshots import atomic_write_bytes

PERMANENT_REDIRECTS = (301, 308)


@dataclass
class LinkResult:
    """The outcome of checking one source's ``url``; ``refused`` means it was never contacted."""

    source_id: str
    url: str
    status: str
    detail: str
    refused: bool = False


def check_link(client: SafeClient, source_id: str, url: str) -> LinkResult:
    """Classify one URL as ok / moved / broken (or refused)."""
    try:
        result = client.get(url, read_body=False)
    except FetchError as err:
        return LinkResult(source_id, url, "broken", str(err), refused=err.kind == "refused")
    if not result.ok:
        return LinkResult(source_id, url, "broken", f"HTTP {result.status}")
    permanent = [target for code, target in result.redirects if code in PERMANENT_REDIRECTS]
    if permanent and result.final_url.rstrip("/") != url.rstrip("/"):
        return LinkResult(source_id, url, "moved", f"now at {result.final_url}")
    return LinkResult(source_id, url, "ok", f"HTTP {result.status}")


def check_links(doc: Document, client: SafeClient) -> list[LinkResult]:
    """Check the ``url`` of every source that has one, in file order."""
    return [check_link(client, s.id, s.url) for s in doc.sources.values() if s.url]


def write_link_results(path: str | Path, results: list[LinkResult], today: dt.date) -> int:
    """Record ``link: {checked, status}`` for each result in sources.yaml, keeping its layout.

    The file is re-read with ruamel's round-trip loader (comments, key order and quoting
    survive), changed in memory, dumped to a string and renamed into place in one step.

    Returns:
        How many source entries changed.

    Raises:
        LoadError: when the file cannot be re-read or a result's source is gone.
        Busy: another kdalib command is editing the file.
    """
    with locked(path):
        return _write_link_results(path, results, today)


def _write_link_results(path: str | Path, results: list[LinkResult], today: dt.date) -> int:
    yaml, data = load_round_trip(path)
    by_id = {entry.get("id"): entry for entry in data.get("sources") or [] if isinstance(entry, CommentedMap)}
    changed = 0
    for result in results:
        entry = by_id.get(result.source_id)
        if entry is None:
            raise LoadError(path, 0, f"source {result.source_id!r} disappeared while its link was checked")
        link = entry.get("link")
        if not isinstance(link, CommentedMap):
            link = CommentedMap()
            link.fa.set_flow_style()
            entry["link"] = link
        if link.get("checked") != today or link.get("status") != result.status:
            changed += 1
        # a fresh date object per entry: a shared one would be dumped as a YAML anchor/alias
        link["checked"] = dt.date.fromordinal(today.toordinal())
        link["status"] = result.status
    buffer = io.StringIO()
    yaml.dump(data, buffer)
    atomic_write_bytes(path, buffer.getvalue().encode("utf-8"))
    return changed

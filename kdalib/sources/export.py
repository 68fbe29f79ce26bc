"""The checklist as data: one flat row per claim, written as ``claims.json`` and ``claims.csv``.

The book publishes both files beside its HTML; :func:`load_claims` reads either one back (or
``sources.yaml`` itself) and :meth:`ClaimTable.to_frame` turns it into a pandas DataFrame::

    from kdalib.sources import load_claims
    frame = load_claims("sources.yaml").to_frame()
    frame[frame.status == "unverified"][["id", "subject", "property"]]

Each row also carries the claim's history from the git history of sources.yaml
(:mod:`kdalib.sources.history`): the date it was first recorded, the date it was last checked, and
its earlier values, and the files say which :data:`SCHEMA_VERSION` of these columns they hold (the
JSON at its top level, the CSV in a column). pandas is imported only by ``to_frame``, so this module
(like all of kdalib.sources) stays free of heavy imports.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdalib.sources.escape import csv_cell, csv_value
from kdalib.sources.files import UnsafeFile, read_capped
from kdalib.sources.history import History, load_history
from kdalib.sources.loader import MAX_FILE_BYTES, LoadError, load_document
from kdalib.sources.model import Document
from kdalib.sources.snapshots import atomic_write_bytes

#: The version of the columns below; it changes whenever a column is added, removed or redefined.
#: 2: adds first_recorded, last_checked, earlier_values and schema_version.
SCHEMA_VERSION = 2
#: The columns of claims.json and claims.csv, in order.
COLUMNS = (
    "id",
    "subject",
    "property",
    "value",
    "unit",
    "setting",
    "status",
    "verdict",
    "source",
    "version_url",
    "quote",
    "snapshot_sha256",
    "first_recorded",
    "last_checked",
    "earlier_values",
    "schema_version",
)


def claim_rows(doc: Document, history: History | None = None) -> list[dict[str, Any]]:
    """One mapping per claim with the :data:`COLUMNS` (benchmark claims give their topic as property).

    Without a ``history`` (or for a claim it does not know) ``first_recorded`` and
    ``earlier_values`` are empty; ``earlier_values`` lists "display (status, from date)", oldest first.
    """
    rows = []
    for claim in doc.claims.values():
        source = doc.sources.get(claim.source)
        past = history.of(claim.id) if history is not None else None
        rows.append(
            {
                "id": claim.id,
                "subject": claim.subject,
                "property": claim.topic,
                "value": claim.value,
                "unit": claim.unit,
                "setting": claim.setting_text,
                "status": claim.status,
                "verdict": claim.verdict or "",
                "source": claim.source,
                "version_url": (source.version_url or source.url or "") if source else "",
                "quote": claim.quote or "",
                "snapshot_sha256": source.snapshot.sha256 if source and source.snapshot else "",
                "first_recorded": (past.first_recorded or "") if past else "",
                "last_checked": claim.checked.isoformat() if claim.checked else "",
                "earlier_values": "; ".join(
                    f"{e.display} ({e.status}, from {e.since or 'not committed'})"
                    for e in (past.earlier if past else [])
                ),
                "schema_version": SCHEMA_VERSION,
            }
        )
    return rows


def to_json(rows: list[dict[str, Any]]) -> str:
    payload = {"schema_version": SCHEMA_VERSION, "columns": list(COLUMNS), "claims": rows}
    return json.dumps(payload, ensure_ascii=False, indent=1) + "\n"


def to_csv(rows: list[dict[str, Any]]) -> str:
    """The rows as CSV, each cell through :func:`~kdalib.sources.escape.csv_cell` (no cell starts a formula)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: csv_cell(value) for key, value in row.items()} for row in rows)
    return out.getvalue()


def write_claims(doc: Document, folder: Path, history: History | None = None) -> tuple[Path, Path]:
    """Write ``claims.json`` and ``claims.csv`` into ``folder`` (each atomically); return their paths."""
    rows = claim_rows(doc, history)
    paths = (folder / "claims.json", folder / "claims.csv")
    atomic_write_bytes(paths[0], to_json(rows).encode("utf-8"))
    atomic_write_bytes(paths[1], to_csv(rows).encode("utf-8"))
    return paths


@dataclass
class ClaimTable:
    """The claims as rows of :data:`COLUMNS`."""

    rows: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.rows)

    def to_frame(self):
        """A pandas DataFrame with one row per claim and the :data:`COLUMNS` (pandas imported here)."""
        try:
            import pandas as pd
        except ImportError as err:
            raise ImportError("ClaimTable.to_frame needs pandas: pip install pandas") from err
        return pd.DataFrame(self.rows, columns=list(COLUMNS))


def load_claims(path: str | Path) -> ClaimTable:
    """Read claims from ``claims.json``, ``claims.csv`` or a ``sources.yaml`` checklist.

    Raises :class:`~kdalib.sources.loader.LoadError` naming the file when it cannot be read or
    does not have the expected columns.
    """
    path = Path(path)
    if path.suffix in (".yaml", ".yml"):
        return ClaimTable(claim_rows(load_document(path), load_history(path)))
    try:
        text = read_capped(path, MAX_FILE_BYTES).decode("utf-8")
    except (UnsafeFile, UnicodeDecodeError) as err:
        raise LoadError(path, 0, f"cannot read the claims file: {err}") from None
    if path.suffix == ".json":
        rows = _json_rows(path, text)
    elif path.suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise LoadError(path, 1, f"the header is {reader.fieldnames}; expected {list(COLUMNS)}")
        rows = [{key: csv_value(value) for key, value in row.items()} for row in reader]
    else:
        raise LoadError(path, 0, "expected a .json, .csv or .yaml file of claims")
    return ClaimTable(rows)


def _json_rows(path: Path, text: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise LoadError(path, err.lineno, f"not valid JSON: {err.msg}") from None
    rows = data.get("claims") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and set(r) == set(COLUMNS) for r in rows):
        raise LoadError(path, 1, f"expected {{'claims': [...]}} whose entries have exactly the keys {list(COLUMNS)}")
    return rows

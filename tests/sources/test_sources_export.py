"""claims.json / claims.csv: every claim as one row, read back identically, and as a DataFrame."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sources_fixtures import base_claims, base_sources, claim, sha

from kdalib.sources import LoadError, load_claims, load_document
from kdalib.sources.export import COLUMNS, claim_rows, write_claims


def _document(ws):
    seed = {"id": "note", "title": "Starting note", "publisher": "requester", "kind": "seed"}
    claims = base_claims() + [
        claim(
            "m.bench.x",
            property=None,
            benchmark={"name": "Bench", "metric": "Pass@1", "tools": False},
            value=51.5,
            unit="%",
            display="51.5",
            quote=None,
            status="unverified",
        ),
        claim("seed.y", source="note", quote=None, status="unverified", verdict="overstated"),
    ]
    ws.write(sources=base_sources() + [seed], claims=claims)
    doc = load_document(ws.sources_path)
    assert doc.findings == []
    return doc


def test_rows_carry_the_source_version_quote_and_snapshot_hash(ws):
    rows = {r["id"]: r for r in claim_rows(_document(ws))}
    assert list(rows) == ["m.params.total", "m.params.activated", "m.arch.gate", "m.bench.x", "seed.y"]
    total = rows["m.params.total"]
    assert list(total) == list(COLUMNS)
    assert (total["value"], total["unit"], total["status"], total["quote"]) == (
        1,
        "T parameters",
        "verified",
        "Total Parameters** | 1T",
    )
    assert total["version_url"] == "https://example.org/m"
    assert (
        total["snapshot_sha256"]
        == base_sources()[0]["snapshot"]["sha256"]
        == sha((ws.snapshots / "card.md").read_text(encoding="utf-8"))
    )
    bench = rows["m.bench.x"]
    assert (bench["property"], bench["setting"], bench["quote"]) == ("Bench (Pass@1)", "tools: no", "")
    assert (rows["seed.y"]["verdict"], rows["seed.y"]["snapshot_sha256"], total["verdict"]) == ("overstated", "", "")


def test_json_and_csv_read_back_as_the_same_table(ws, tmp_path):
    doc = _document(ws)
    json_path, csv_path = write_claims(doc, tmp_path / "out")
    from_yaml = load_claims(ws.sources_path)
    from_json = load_claims(json_path)
    from_csv = load_claims(csv_path)
    assert from_json.rows == from_yaml.rows == claim_rows(doc)
    # CSV has no types: every cell comes back as its text
    assert from_csv.rows == [{k: str(v) for k, v in row.items()} for row in from_yaml.rows]
    assert json.loads(json_path.read_text(encoding="utf-8"))["columns"] == list(COLUMNS)


def test_to_frame_has_one_row_per_claim(ws):
    pd = pytest.importorskip("pandas")
    frame = load_claims(ws.write()).to_frame()
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == list(COLUMNS)
    assert list(frame["id"]) == [c["id"] for c in base_claims()]
    assert frame.loc[frame.id == "m.params.activated", "value"].item() == 32


@pytest.mark.parametrize(
    "name, text, fragment",
    [
        ("claims.json", "{not json", "not valid JSON"),
        ("claims.json", json.dumps({"claims": [{"id": "x"}]}), "exactly the keys"),
        ("claims.csv", "id,subject\nx,y\n", "the header is"),
        ("claims.txt", "", "expected a .json, .csv or .yaml"),
    ],
)
def test_a_bad_claims_file_is_named_in_the_error(tmp_path, name, text, fragment):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(LoadError) as err:
        load_claims(path)
    assert str(path) in str(err.value) and fragment in str(err.value)


def test_loading_the_table_does_not_import_pandas():
    code = (
        "import sys, kdalib.sources as s; s.load_claims('sources.yaml'); "
        "print('pandas' in sys.modules, 'torch' in sys.modules)"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.split() == ["False", "False"]

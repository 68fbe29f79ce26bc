"""The book's context-parallel diagram: the committed SVG is what the generator draws from a real layout."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from kdalib.distributed.diagram import OFFSETS, SEQUENCES, context_parallel_svg
from kdalib.distributed.layout import ShardLayout

ROOT = Path(__file__).resolve().parents[2]
SVG = ROOT / "notes" / "images" / "kda-context-parallel.svg"


def test_committed_svg_is_up_to_date():
    assert SVG.read_text(encoding="utf-8") == context_parallel_svg(), (
        "run: python -m kdalib.distributed.diagram notes/images/kda-context-parallel.svg"
    )


def test_one_arrow_each_way_per_boundary_inside_a_sequence():
    root = ET.fromstring(context_parallel_svg())
    paths = [p for p in root.iter("{http://www.w3.org/2000/svg}path") if p.get("marker-end")]
    crossing = [b for b in range(1, len(OFFSETS) - 1) if ShardLayout(0, OFFSETS, 1, SEQUENCES).crosses(b)]
    assert len(crossing) == 2  # sequence 1 crosses two boundaries; sequence 3 starts on the third
    assert sorted(p.get("marker-end") for p in paths) == ["url(#backward)"] * 2 + ["url(#forward)"] * 2

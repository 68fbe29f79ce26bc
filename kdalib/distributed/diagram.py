"""The context-parallel diagram of notes/kda.md (section ``kda-context-parallel``), as an SVG.

``python -m kdalib.distributed.diagram notes/images/kda-context-parallel.svg`` writes it; a
test checks that the committed file is what :func:`context_parallel_svg` draws. The picture is
drawn from a :class:`~kdalib.distributed.layout.ShardLayout` of four ranks, so the arrows are
the messages the code sends: one per boundary that falls inside a sequence, none where a
sequence starts on the boundary.
"""

from __future__ import annotations

import html
import sys
from pathlib import Path

from kdalib.distributed.layout import ShardLayout

OFFSETS = (0, 12, 24, 36, 48)
SEQUENCES = (0, 4, 29, 36, 48)  # sequence 1 runs from mid-rank 0 to mid-rank 2; sequence 3 starts with rank 3
COLOURS = ("#8fb8de", "#f2b36f", "#a7d5a0", "#c9a7e0")
FORWARD, BACKWARD = "#0b5cad", "#b35c00"
WIDTH, LEFT, SCALE = 760, 40, 14.0


def _x(position: float) -> float:
    return LEFT + position * SCALE


def _text(x, y, words, size=13, anchor="middle", weight="normal", colour="#24292f") -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" font-weight="{weight}" '
        f'fill="{colour}" font-family="sans-serif">{html.escape(words)}</text>'
    )


def _arrow(x1, x2, y, colour, marker, bulge, dashed=False, label="") -> list[str]:
    """A curved arrow from x1 to x2, bulging ``bulge`` pixels (negative: upwards), labelled beyond the bulge."""
    dash = ' stroke-dasharray="5 4"' if dashed else ""
    parts = [
        f'<path d="M {x1:.1f} {y:.1f} C {x1 + (x2 - x1) / 3:.1f} {y + bulge:.1f} {x2 - (x2 - x1) / 3:.1f} {y + bulge:.1f} '
        f'{x2:.1f} {y:.1f}" fill="none" stroke="{colour}" stroke-width="2"{dash} marker-end="url(#{marker})"/>'
    ]
    if label:
        parts.append(_text((x1 + x2) / 2, y + bulge + (-6 if bulge < 0 else 16), label, size=12, colour=colour))
    return parts


def _marker(name: str, colour: str) -> str:
    return (
        f'<marker id="{name}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        f'orient="auto"><path d="M 0 0 L 10 5 L 0 10 z" fill="{colour}"/></marker>'
    )


def context_parallel_svg() -> str:
    """The diagram: shards, sequences, the local runs, and the messages forward and backward."""
    layouts = [ShardLayout(rank=r, offsets=OFFSETS, batch=1, cu_seqlens=SEQUENCES) for r in range(len(OFFSETS) - 1)]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} 330" width="{WIDTH}" height="330" '
        'role="img" aria-label="Context-parallel KDA: four ranks, packed sequences, the pass of states">',
        f"<defs>{_marker('forward', FORWARD)}{_marker('backward', BACKWARD)}</defs>",
        '<rect width="100%" height="100%" fill="white"/>',
    ]
    forward_y, ranks_y, sequences_y, backward_y = 70, 78, 150, 186
    parts.append(_text(_x(0) - 8, 22, "forward: the state entering each rank", 12, "start", colour=FORWARD))
    for layout in layouts:
        x0, x1 = _x(layout.start) + 3, _x(layout.end) - 3
        parts.append(
            f'<rect x="{x0:.1f}" y="{ranks_y}" width="{x1 - x0:.1f}" height="44" rx="6" fill="#f6f8fa" stroke="#57606a"/>'
        )
        parts.append(_text((x0 + x1) / 2, ranks_y + 18, f"rank {layout.rank}", weight="bold"))
        role = "passes S ↦ P S + H on" if layout.passes_through else (
            "head, then new pieces" if layout.carried_in else "pieces from initial states"
        )  # fmt: skip
        parts.append(_text((x0 + x1) / 2, ranks_y + 36, role, size=11))
        if layout.carried_out:
            end = _x(layout.end)
            parts += _arrow(end - 40, end + 40, forward_y, FORWARD, "forward", -26, label="S_in")
            parts += _arrow(end + 40, end - 40, backward_y, BACKWARD, "backward", 26, True, "dL/dS_in")
        elif layout.rank + 1 < len(layouts):
            parts.append(_text(_x(layout.end), forward_y - 22, "no message:", 11, colour="#57606a"))
            parts.append(_text(_x(layout.end), forward_y - 9, "a sequence starts here", 11, colour="#57606a"))
    for n in range(len(SEQUENCES) - 1):
        x0, x1 = _x(SEQUENCES[n]) + 1, _x(SEQUENCES[n + 1]) - 1
        parts.append(
            f'<rect x="{x0:.1f}" y="{sequences_y}" width="{x1 - x0:.1f}" height="26" rx="4" '
            f'fill="{COLOURS[n % len(COLOURS)]}" stroke="#57606a"/>'
        )
        parts.append(_text((x0 + x1) / 2, sequences_y + 18, f"sequence {n}" if x1 - x0 > 80 else str(n), 12))
    parts.append(_text(_x(0) - 8, sequences_y - 8, "packed sequences (cu_seqlens)", 12, "start", colour="#57606a"))
    for position in OFFSETS[1:-1]:
        parts.append(
            f'<line x1="{_x(position):.1f}" y1="{ranks_y - 4}" x2="{_x(position):.1f}" y2="{sequences_y + 30}" '
            'stroke="#57606a" stroke-dasharray="2 3"/>'
        )
    parts.append(
        _text(_x(0) - 8, backward_y + 66, "backward: dL/dS_in sent the other way", 12, "start", colour=BACKWARD)
    )
    notes = (
        "1. every rank runs its pieces at once; 2. states pass from rank to rank (only matrix products per hop);",
        "3. each head adds S_inᵀ p to its outputs and, if its sequence ends there, takes P S_in + H as the final state.",
    )
    for i, line in enumerate(notes):
        parts.append(_text(_x(0) - 8, backward_y + 98 + 18 * i, line, 12, "start"))
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m kdalib.distributed.diagram OUTPUT.svg")
    Path(sys.argv[1]).write_text(context_parallel_svg(), encoding="utf-8")

"""Recorded ``kdalib bench`` runs as the book shows them: read generically, named for readers, drawn.

Every ``bench*.json`` of a results folder is read (the JSON that ``kdalib bench --json``
writes: provenance at the top, one row per shape and method under ``rows``), whatever shapes
and methods it holds; a row may carry a ``gate`` (at the top of the row or in its ``shape``),
and rows of the same shape, method and gate from several files keep the newest. The names
readers see for methods and gates come from :mod:`kdalib.repro.names`; an unknown method shows
as "method <name>" rather than vanishing.

:func:`speed_picture` draws the page's one picture (kdalib vs FLA vs softmax attention, time
and memory, prefill and training, with the GPU, commit and date under it); :func:`table_html`
gives the full numbers as captioned HTML tables. matplotlib is imported when used.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdalib.repro.names import GATE_NAMES, METHOD_NAMES

#: The methods of the picture, in drawing order: kdalib's fastest path, FLA, softmax attention.
PICTURE_METHODS = ("triton", "fla", "sdpa_flash")
PICTURE_COLOURS = {"triton": "#1f6fb4", "fla": "#e07b1a", "sdpa_flash": "#6a6a6a"}


def method_name(method: str, gate: str | None = None) -> str:
    """The reader's name of a method, with its gate when the row names one."""
    name = METHOD_NAMES.get(method, f"method {method}")
    return f"{name}, {gate_name(gate)}" if gate else name


def gate_name(gate: str) -> str:
    return GATE_NAMES.get(gate, f"{gate} gate")


def tokens_label(tokens: int) -> str:
    """4096 -> "4K", 65536 -> "64K", 1 -> "1"."""
    return f"{tokens // 1024}K" if tokens >= 1024 and tokens % 1024 == 0 else str(tokens)


def shape_label(batch: int, tokens: int) -> str:
    return f"B{batch} × T{tokens_label(tokens)}"


@dataclass(frozen=True)
class Record:
    """One ``kdalib bench`` JSON file: where it ran and its rows."""

    path: Path
    device_name: str
    commit: str | None
    date: str | None
    worktree: str | None
    suite: str | None
    rows: list[dict[str, Any]] = field(repr=False)

    @property
    def day(self) -> str:
        return (self.date or "undated")[:10]

    def describe(self) -> str:
        """ "NVIDIA H200, commit e254146 (2026-12-01)", marked when the tree was modified."""
        commit = (self.commit or "unknown")[:7]
        modified = " with local changes" if self.worktree == "modified" else ""
        return f"{self.device_name}, commit {commit}{modified} ({self.day})"


def load_records(folder: Path, pattern: str = "bench*.json") -> tuple[list[Record], list[str]]:
    """The readable ``kdalib bench`` files of ``folder`` (oldest first) and one line per file skipped."""
    records, skipped = [], []
    for path in sorted(folder.glob(pattern)):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            skipped.append(f"{path.name}: not readable JSON ({error})")
            continue
        rows = data.get("rows") if isinstance(data, dict) else None
        if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
            skipped.append(f"{path.name}: no list of result rows under 'rows'")
            continue
        records.append(
            Record(
                path=path,
                device_name=str(data.get("device_name") or data.get("device") or "an unnamed device"),
                commit=data.get("commit"),
                date=data.get("date"),
                worktree=data.get("worktree"),
                suite=data.get("suite"),
                rows=rows,
            )
        )
    records.sort(key=lambda r: r.date or "")
    return records, skipped


def _kind(shape: dict) -> str:
    return "decode" if shape.get("decode") else "training" if shape.get("train") else "prefill"


def tidy_rows(records: list[Record]) -> list[dict[str, Any]]:
    """One flat row per (GPU, shape, method, gate), the newest record's where several of one GPU hold
    it: rows measured on different GPUs are never merged."""
    newest: dict[tuple, dict[str, Any]] = {}
    for index, record in enumerate(records):
        for row in record.rows:
            shape = row.get("shape") if isinstance(row.get("shape"), dict) else {}
            method, ms = row.get("method"), row.get("ms")
            if not isinstance(method, str) or not isinstance(ms, (int, float)):
                continue
            gate = row.get("gate", shape.get("gate"))
            flat = {
                "kind": _kind(shape),
                "batch": shape.get("batch"),
                "tokens": shape.get("tokens"),
                "heads": shape.get("heads"),
                "key_dim": shape.get("key_dim"),
                "value_dim": shape.get("value_dim"),
                "packed": bool(shape.get("packed")),
                "dtype": shape.get("dtype"),
                "method": method,
                "gate": gate if isinstance(gate, str) and gate else None,
                "ms": float(ms),
                "peak_gb": row["peak_extra_mb"] / 1e3 if isinstance(row.get("peak_extra_mb"), (int, float)) else None,
                "record": index,
                "device": record.device_name,
            }
            flat["name"] = method_name(method, flat["gate"])
            flat["shape"] = shape_label(flat["batch"] or 0, flat["tokens"] or 0)
            key = (record.device_name, flat["kind"], flat["batch"], flat["tokens"], flat["heads"], flat["dtype"])
            key += (method, flat["gate"])
            newest[key] = flat
    return list(newest.values())


#: The heads of every shape the picture shows (its caption says so); other rows are in the tables.
PICTURE_HEADS = 32


def devices(rows: list[dict]) -> list[str]:
    """The GPUs the rows were measured on, in the order of their first record."""
    return list(dict.fromkeys(r["device"] for r in sorted(rows, key=lambda r: r["record"])))


def picture_rows(rows: list[dict], kind: str) -> list[dict]:
    """The picture's rows of one kind: half precision, the picture's methods, the GPU of the newest
    record that has such rows (times of two GPUs are not compared in one picture), one gate per
    method (none named, else the first in :data:`GATE_NAMES` order)."""
    chosen = [
        r
        for r in rows
        if r["kind"] == kind and r["method"] in PICTURE_METHODS and r["dtype"] != "float32"
        and r["heads"] == PICTURE_HEADS and not r["packed"]
    ]  # fmt: skip
    if chosen:
        newest = max(chosen, key=lambda r: r["record"])["device"]
        chosen = [r for r in chosen if r["device"] == newest]
    order = [None, *GATE_NAMES]
    best: dict[str, Any] = {}
    for row in chosen:
        rank = order.index(row["gate"]) if row["gate"] in order else len(order)
        best[row["method"]] = min(best.get(row["method"], rank), rank)
    return [r for r in chosen if (order.index(r["gate"]) if r["gate"] in order else len(order)) == best[r["method"]]]


def speed_picture(rows: list[dict], records: list[Record]):
    """Time and peak memory of kdalib, FLA and softmax attention, prefill and training, as a
    matplotlib figure sized to stay readable on a phone; None when no row fits the picture."""
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.ticker import FuncFormatter, NullFormatter

    panels = {kind: picture_rows(rows, kind) for kind in ("prefill", "training")}
    kinds = [kind for kind, picked in panels.items() if picked]
    if not kinds:
        return None
    fig, axes = plt.subplots(
        2 * len(kinds), 1, figsize=(6.4, 3.1 * 2 * len(kinds) + 0.9), squeeze=False, layout="constrained"
    )
    for position, kind in enumerate(kinds):
        picked = panels[kind]
        shapes = sorted({(r["batch"], r["tokens"]) for r in picked}, key=lambda s: (s[0] * s[1], s[1]))
        methods = [m for m in PICTURE_METHODS if any(r["method"] == m for r in picked)]
        for panel, (value, unit) in enumerate((("ms", "time (ms, log scale)"), ("peak_gb", "peak memory (GB)"))):
            ax = axes[2 * position + panel, 0]
            width = 0.8 / len(methods)
            for slot, method in enumerate(methods):
                by_shape = {(r["batch"], r["tokens"]): r for r in picked if r["method"] == method}
                heights = [
                    by_shape[s][value] if s in by_shape and by_shape[s][value] is not None else np.nan for s in shapes
                ]
                label = method_name(method)  # the gate, if any, is in the panel's title
                ax.barh(
                    np.arange(len(shapes)) + (slot - (len(methods) - 1) / 2) * width,
                    heights,
                    height=width,
                    color=PICTURE_COLOURS.get(method),
                    label=label,
                )
            ax.set_yticks(np.arange(len(shapes)), [shape_label(*s) for s in shapes], fontsize=11)
            ax.invert_yaxis()
            if value == "ms":
                ax.set_xscale("log")
                # bars start at the decade below the fastest time, so their lengths compare as
                # the log scale says, not from wherever the axis would autoscale
                fastest = min(r["ms"] for r in picked)  # tidy rows always carry a time
                ax.set_xlim(left=10 ** math.floor(math.log10(fastest)))
                ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel(unit, fontsize=11)
            what = "time per call" if value == "ms" else "memory above the inputs"
            gates = sorted({gate_name(r["gate"]) for r in picked if r["gate"]})
            where = ", ".join([picked[0]["device"], *gates])
            ax.set_title(f"{kind} on {where}: {what}", fontsize=12)
            ax.tick_params(axis="x", labelsize=10)
            ax.grid(axis="x", alpha=0.3)
    legend: dict[str, Any] = {}  # every method of any panel, once (panels may differ in methods)
    for ax in axes[:, 0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    handles, labels = list(legend.values()), list(legend)
    fig.legend(handles, labels, loc="outside upper center", ncols=min(3, len(labels)), fontsize=10, frameon=False)
    used = sorted({r["record"] for kind in kinds for r in panels[kind]})
    fig.text(
        0.01,
        -0.01,
        "Recorded with kdalib bench on "
        + "; ".join(dict.fromkeys(records[i].describe() for i in used))  # records of one run named once
        + ". bf16, H32, K = V = 128.",
        fontsize=9,
        wrap=True,
        va="top",
    )
    return fig


def _column(row: dict) -> tuple:
    return row["batch"], row["tokens"], row["heads"], row["packed"]


def _column_label(batch: int, tokens: int, heads: int | None, packed: bool) -> str:
    """A table column's shape: ``B1 × T8K``, with the heads when they are not the tables' 32 and
    whether the batch is packed sequences."""
    label = shape_label(batch, tokens)
    if heads != PICTURE_HEADS:
        label += f" H{heads}"
    return label + (", packed" if packed else "")


def table_html(rows: list[dict], kind: str, dtype: str | None, caption: str, device: str | None = None) -> str | None:
    """One captioned HTML table: a row per method (reader names), a column per shape, each cell the
    time in ms (3 significant figures) over the peak memory in GB (2); None when no row matches.
    ``device``: only the rows measured on that GPU (callers give each GPU its own table)."""
    import html

    from kdalib.repro import significant

    chosen = [
        r
        for r in rows
        if r["kind"] == kind and (dtype is None or r["dtype"] == dtype) and (device is None or r["device"] == device)
    ]
    if not chosen:
        return None
    shapes = sorted({_column(r) for r in chosen}, key=lambda s: (s[0] * s[1], s[1], s[2], s[3]))
    order = list(METHOD_NAMES)
    names = sorted(
        {(r["method"], r["gate"] or "", r["name"]) for r in chosen},
        key=lambda m: (order.index(m[0]) if m[0] in order else len(order), m[1]),
    )
    cells = {(r["method"], r["gate"] or "", *_column(r)): r for r in chosen}
    head = "".join(f"<th>{html.escape(_column_label(*s))}</th>" for s in shapes)
    body = []
    for method, gate, name in names:
        tds = []
        for column in shapes:
            row = cells.get((method, gate, *column))
            if row is None:
                tds.append('<td class="kdalib-absent" title="not timed">–</td>')
                continue
            peak = row["peak_gb"]
            gigabytes = None if peak is None else "&lt; 0.01" if peak < 0.01 else significant(peak, 2)
            memory = f'<br><span class="kdalib-mem">{gigabytes} GB</span>' if gigabytes else ""
            tds.append(f"<td>{significant(row['ms'], 3)}{memory}</td>")
        body.append(f'<tr><th scope="row">{html.escape(name)}</th>{"".join(tds)}</tr>')
    return (
        f'<table class="kdalib-bench"><caption>{html.escape(caption)}</caption>'
        f"<thead><tr><th>method</th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )

"""The benchmark's output: the printed table, the profiles, the targets and the JSON file."""

from __future__ import annotations

import json
import os
from pathlib import Path

from kdalib.bench.methods import method_descriptions
from kdalib.bench.suites import CHUNK_SIZES, SUITES, TARGETS


def write_result(path: Path, result: dict) -> None:
    """Writes ``result`` as JSON to ``path`` in one step (a temporary file renamed over it), so the
    file is always either the previous complete write or the new one."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(temporary, path)


def format_table(result: dict) -> str:
    """The printed table: one line per (shape, method)."""
    head = (
        f"{'shape':<36} {'method':<20} {'ms':>10} {'tokens/s':>12} {'vs peer':>8} {'floor ms':>9} {'x floor':>8}"
        f" {'x mem floor':>11} {'peak MB':>9}"
    )
    lines = [head, "-" * len(head)]
    for row in result["rows"]:
        speed = f"{row['speedup_vs_peer']:.1f}x" if row.get("speedup_vs_peer") else "-"
        floor = f"{row['floor_ms']:.2f}" if "floor_ms" in row else "-"
        ratio = f"{row['x_floor']:.1f}" if "x_floor" in row else "-"
        memory = f"{row['x_memory_floor']:.1f}" if "x_memory_floor" in row else "-"
        peak = f"{row['peak_extra_mb']:,.0f}" if "peak_extra_mb" in row else "-"
        lines.append(
            f"{row['label']:<36} {row['method']:<20} {row['ms']:>10.2f} {row['tokens_per_s']:>12,.0f} "
            f"{speed:>8} {floor:>9} {ratio:>8} {memory:>11} {peak:>9}"
        )
    for row in result.get("first_call", []):
        taken = f"{row['first_call_s']:.1f} s" if "first_call_s" in row else row["error"]
        lines.append(f"first call, cold Triton cache: {row['label']:<44} {row['method']:<8} {taken}")
    rates = ", ".join(f"{k} {v / 1e9:,.0f} GFLOP/s" for k, v in result["matmul_flops_per_s"].items())
    lines.append(f"matmul floor rate (one large torch.matmul, this run): {rates}")
    if "copy_bytes_per_s" in result:
        lines.append(
            f"memory floor: inputs read once and output written once at {result['copy_bytes_per_s'] / 1e9:,.0f} "
            "GB/s (one large device-to-device copy, this run)"
        )
    return "\n".join(lines)


def format_breakdowns(result: dict, width: int = 60) -> str:
    """One block per row that has a breakdown: its most expensive kernels or operators."""
    lines = []
    for row in result["rows"]:
        if not row.get("breakdown"):
            continue
        lines.append(f"{row['label']} {row['method']} ({row['ms']:.2f} ms):")
        for part in row["breakdown"]:
            name = part["name"] if len(part["name"]) <= width else part["name"][: width - 3] + "..."
            lines.append(f"  {part['share']:6.1%} {part['ms']:9.3f} ms {part['calls']:5d}x  {name}")
            if part.get("launches_ms"):
                lines.append(f"  {'':6} launches: {', '.join(f'{ms:.3f}' for ms in part['launches_ms'])} ms")
    return "\n".join(lines)


def check_targets(result: dict) -> list[str]:
    """One line per target row present: the best chunk variant's speed-up over the peer against the target."""
    lines = []
    for label, target in TARGETS.items():
        rows = [
            r for r in result["rows"] if r["label"] == label and r["method"] in CHUNK_SIZES and r.get("speedup_vs_peer")
        ]
        if rows:
            best = max(rows, key=lambda r: r["speedup_vs_peer"])
            verdict = "met" if best["speedup_vs_peer"] >= target else "NOT met"
            lines.append(
                f"target {label}: {best['method']} {best['speedup_vs_peer']:.1f}x the peer "
                f"(>= {target:.0f}x): {verdict}"
            )
    return lines


def listing() -> str:
    """What ``kdalib bench --list`` prints: the suites, then every method."""
    lines = [f"{name:<12} [{suite.device}] {suite.description}" for name, suite in SUITES.items()]
    lines += ["default      'gpu' when the device is cuda, else 'cpu'", "", "methods:"]
    lines += [f"{name:<20} {description}" for name, description in method_descriptions().items()]
    return "\n".join(lines)

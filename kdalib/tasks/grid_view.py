"""A recorded grid in a notebook: what is recorded, what is missing, and Figure 4's two panels.

:func:`show_grid` reads a plan's record (:mod:`kdalib.tasks.grid`), displays the summary and the
status table, and draws peak accuracy against length and accuracy against steps at the curve
length from the runs recorded so far. Nothing is trained here.
"""

from __future__ import annotations

from pathlib import Path

from kdalib.tasks.grid import PLANS, GridStatus, grid_status, record_path, recorded_step_ms
from kdalib.tasks.record import GridRecord
from kdalib.tasks.report_grid import accuracy_curves, peak_accuracy

LABELS = {
    "linear": "linear attention",
    "deltanet": "DeltaNet",
    "gated_deltanet": "Gated DeltaNet",
    "kda": "KDA",
    "mamba2": "Mamba-2 rule",
}


def grid_command(plan: str, device: str) -> str:
    """The command that trains the missing runs of ``plan`` within one 10-minute call."""
    return f"kdalib tasks grid --plan {plan} --device {device} --max-seconds 540"


def load_grid(plan: str = "figure4", device: str | None = None, root: Path | None = None) -> GridStatus:
    """The :class:`~kdalib.tasks.grid.GridStatus` of ``plan``'s record under ``root``'s
    ``notebooks/results/<device>/`` (default: the plan's device and :func:`kdalib.repro.book_root`)."""
    if plan not in PLANS:
        raise ValueError(f"plan: expected one of {', '.join(PLANS)}, got {plan!r}")
    grid = PLANS[plan]
    device = device or grid.device
    record = GridRecord(record_path(grid, device, root))
    fallback = recorded_step_ms(root=root) if device == "cuda" else None
    return grid_status(grid, record, device, fallback_ms_per_step=fallback)


def status_frame(status: GridStatus):
    """The status rows as a pandas DataFrame indexed by tier, task, length and mechanism."""
    import pandas as pd

    rows = [
        {
            "tier": row["tier"],
            "task": row["task"],
            "tokens": row["length"],
            "mechanism": LABELS.get(row["kind"], row["kind"]),
            "seeds": f"{row['recorded']}/{row['seeds']}",
            "steps": row["steps"],
            "peak": row["peak"],
            "chance": row["chance"],
            "transition": ", ".join("never" if s is None else str(s) for s in row["transition"]) or "-",
        }
        for row in status.rows
    ]
    return pd.DataFrame(rows).set_index(["tier", "task", "tokens", "mechanism"])


def grid_figure(status: GridStatus):
    """Peak accuracy against length (top) and accuracy against steps at the plan's curve length
    (bottom) per task, from the recorded runs; None when nothing is recorded."""
    if not status.runs:
        return None
    import matplotlib.pyplot as plt

    profile = status.plan.profile
    table = peak_accuracy(status.runs)
    curves = accuracy_curves(status.runs, profile.curve_length)
    tasks = [task for task in profile.tasks if any(run.task == task for run in status.runs)]
    fig, axes = plt.subplots(2, len(tasks), figsize=(4.2 * len(tasks), 7.5), squeeze=False)
    for column, task in enumerate(tasks):
        top, bottom = axes[0, column], axes[1, column]
        chance = next(row["chance"] for row in status.rows if row["task"] == task)
        for ax in (top, bottom):
            ax.axhline(chance, color="gray", ls=":", label="chance")
        for kind in profile.kinds:
            lengths = sorted(length for (t, k, length) in table if t == task and k == kind)
            if lengths:
                top.plot(lengths, [table[(task, kind, n)]["peak"] for n in lengths], marker="o", label=LABELS[kind])
            if (task, kind) in curves:
                steps, accuracy = curves[(task, kind)]
                bottom.plot(steps, accuracy, label=LABELS[kind])
        top.set(title=f"{task}: peak accuracy", xlabel="sequence length (tokens)", ylim=(0, 1.02))
        top.set_xscale("log", base=2)
        top.set_xticks(profile.lengths, [str(n) for n in profile.lengths])
        bottom.set(title=f"{task}: accuracy at {profile.curve_length} tokens", xlabel="training steps", ylim=(0, 1.02))
    axes[0, 0].set_ylabel("held-out accuracy at answer positions")
    axes[1, 0].set_ylabel("held-out accuracy at answer positions")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"grid {status.plan.name}: recorded runs, mean over the seeds recorded")
    fig.tight_layout()
    return fig


def show_grid(plan: str = "figure4", device: str | None = None, root: Path | None = None) -> GridStatus:
    """Displays ``plan``'s record in a notebook: what is recorded and missing, the status table and,
    when anything is recorded, the figure; returns the :class:`~kdalib.tasks.grid.GridStatus`."""
    from IPython.display import HTML, Markdown, display

    status = load_grid(plan, device, root)
    device = device or status.plan.device
    lines = status.summary(next_runs=3)
    if status.missing:
        lines.append(f"The missing runs are trained, a few per call, by `{grid_command(plan, device)}`.")
    display(Markdown(_markdown(lines)))
    if status.runs:
        import matplotlib.pyplot as plt

        display(HTML(status_frame(status).to_html(float_format="{:.3f}".format, na_rep="-")))
        fig = grid_figure(status)
        display(fig)
        plt.close(fig)
    return status


def _markdown(lines: list[str]) -> str:
    """:meth:`~kdalib.tasks.grid.GridStatus.summary` lines as Markdown: indented lines become
    nested list items, other lines that are not list items paragraphs."""
    out = []
    for line in lines:
        if line.startswith("    "):
            out.append(f"  - {line.strip()}")
        elif line.startswith("- "):
            out.append(line)
        else:
            out.append(f"\n{line}\n")
    return "\n".join(out)

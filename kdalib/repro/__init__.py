"""Recorded reproductions, the notebook side: settings, record, save_figure, show_recorded.

A notebook calls the same functions whether the Jupyter Book build executes it on
the CPU or ``kdalib repro`` executes it on a GPU:

* :func:`settings` reads ``KDALIB_DEVICE`` (auto | cpu | cuda) and ``KDALIB_PROFILE``
  (smoke | full) and says which device and size to run at.
* :func:`record` glues a number for the book's prose (``{glue:text}`name```) and, under
  ``kdalib repro``, also collects it for the result JSON.
* :func:`save_figure` writes a figure's PNG next to that JSON under ``kdalib repro``.
* :func:`show_recorded` displays the recorded GPU results of a notebook as a captioned table
  of the values the notebook names for readers (:class:`Shown`), labelled with device, commit
  and date and with whether the code it measured has changed since
  (:func:`code_changes_since`), or says plainly that none exist yet.
* :mod:`kdalib.repro.benchmarks` reads recorded ``kdalib bench`` runs for the book.

``kdalib repro`` tells the kernel where to collect values through the environment
variable ``KDALIB_REPRO_COLLECT`` (a folder); without it (the book build, a user's own
Jupyter) :func:`record` only glues and :func:`save_figure` does nothing, so the cells
are identical in both settings. The command itself is :mod:`kdalib.repro.runner`.
"""

from __future__ import annotations

import html
import json
import math
import numbers
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEVICE_ENV = "KDALIB_DEVICE"
PROFILE_ENV = "KDALIB_PROFILE"
COLLECT_ENV = "KDALIB_REPRO_COLLECT"
DEVICES = ("auto", "cpu", "cuda")
PROFILES = ("smoke", "full")
VALUES_FILE = "values.json"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
REPO_ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    """Where and at what size a notebook runs.

    Attributes:
        device: ``"cpu"`` or ``"cuda"`` (``auto`` already resolved).
        profile: ``"smoke"`` (small, the book's CPU run) or ``"full"`` (sized for an H200).
    """

    device: str
    profile: str

    @property
    def full(self) -> bool:
        """True for the full-size profile."""
        return self.profile == "full"

    def pick(self, smoke: Any, full: Any) -> Any:
        """Returns ``smoke`` or ``full`` according to the profile."""
        return full if self.full else smoke

    @property
    def show_progress(self) -> bool:
        """Progress bars only for full-size runs: a smoke run takes seconds, and in the book
        every redraw of a text bar would stay in the page as one more line of output."""
        return self.full


def resolve_device(requested: str) -> str:
    """Resolves ``auto`` to ``cuda`` when a GPU is visible, else ``cpu``.

    Raises:
        ValueError: for an unknown name, or ``cuda`` without a visible GPU.
    """
    if requested not in DEVICES:
        raise ValueError(f"{DEVICE_ENV}: expected one of {', '.join(DEVICES)}, got {requested!r}")
    if requested == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if requested == "cuda":
        raise ValueError(f"{DEVICE_ENV}=cuda, but torch sees no CUDA device (torch {torch.__version__})")
    return "cpu"


def settings() -> Settings:
    """Reads ``KDALIB_DEVICE`` (default auto) and ``KDALIB_PROFILE`` (default smoke).

    Raises:
        ValueError: naming the variable when its value is not one of the accepted ones.
    """
    profile = os.environ.get(PROFILE_ENV, "smoke").strip() or "smoke"
    if profile not in PROFILES:
        raise ValueError(f"{PROFILE_ENV}: expected one of {', '.join(PROFILES)}, got {profile!r}")
    device = resolve_device(os.environ.get(DEVICE_ENV, "auto").strip() or "auto")
    return Settings(device=device, profile=profile)


# --------------------------------------------------------------------------- notebook side


def _plain_number(name: str, value: Any) -> int | float:
    """Converts ints, floats, numpy and 0-d torch scalars to a finite Python number."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"record({name!r}): expected a real number, got {type(value).__name__}")
    if isinstance(value, numbers.Integral):
        return int(value)
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"record({name!r}): expected a finite number, got {value}")
    return value


def _collect_dir() -> Path | None:
    folder = os.environ.get(COLLECT_ENV)
    return Path(folder) if folder else None


def _glue(name: str, value: Any) -> None:
    try:
        from myst_nb import glue
    except ImportError:  # outside the book toolchain, gluing is simply skipped
        return
    glue(name, value, display=False)


def record(name: str, value: Any) -> int | float:
    """Publishes a result: glued for the book's prose, collected for ``kdalib repro``.

    Args:
        name: identifier-like key (letters, digits, underscores), unique per notebook;
            it is the glue name and the key in the result JSON's ``values``.
        value: a finite real number (Python, numpy or 0-d torch scalar).

    Returns:
        The value as a plain Python int or float.

    Raises:
        ValueError: for a malformed name or a non-numeric or non-finite value.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"record: name must match {_NAME.pattern}, got {name!r}")
    number = _plain_number(name, value)
    _glue(name, number)
    folder = _collect_dir()
    if folder is not None:
        path = folder / VALUES_FILE
        values = json.loads(path.read_text()) if path.exists() else {}
        values[name] = number
        path.write_text(json.dumps(values, indent=1))
    return number


def save_figure(fig, name: str) -> Path | None:
    """Saves a matplotlib figure as ``<name>.png`` when run under ``kdalib repro``.

    Args:
        fig: a ``matplotlib.figure.Figure``.
        name: identifier-like figure name; the recorded file is ``<stem>-<name>.png``.

    Returns:
        The written path, or None outside ``kdalib repro`` (the figure still shows inline).
    """
    if not isinstance(name, str) or not _NAME.match(name.replace("-", "_")):
        raise ValueError(f"save_figure: name must be letters, digits, '_' or '-', got {name!r}")
    folder = _collect_dir()
    if folder is None:
        return None
    path = folder / f"{name}.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


# --------------------------------------------------------------------------- recorded results


def book_root() -> Path:
    """The folder holding ``notebooks/``: the current directory (``kdalib repro`` run from a
    book), its parent (a notebook executes with its own folder as cwd), else this checkout."""
    for candidate in (Path.cwd(), Path.cwd().parent, REPO_ROOT):
        if (candidate / "notebooks").is_dir():
            return candidate
    return REPO_ROOT


def results_dir(device: str = "cuda", root: Path | None = None) -> Path:
    """``notebooks/results/<device>/`` under ``root`` (default: :func:`book_root`)."""
    return (root or book_root()) / "notebooks" / "results" / device


def load_recorded(stem: str, device: str = "cuda", root: Path | None = None) -> dict | None:
    """Loads ``notebooks/results/<device>/<stem>.json``, or None when absent or unreadable.

    A damaged file is reported with a warning rather than failing the book build:
    the live CPU run must still render.
    """
    path = results_dir(device, root) / f"{stem}.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        print(f"warning: {path}: unreadable recorded result ({exc}); ignoring it", file=sys.stderr)
        return None
    if not isinstance(data, dict) or not isinstance(data.get("values"), dict):
        print(f"warning: {path}: no 'values' mapping; ignoring it", file=sys.stderr)
        return None
    data["_path"] = str(path)
    return data


def provenance(data: dict) -> str:
    """One line saying where a recorded result came from (a run from a modified tree says so)."""
    commit = (data.get("commit") or "unknown")[:10]
    if data.get("worktree") == "modified":
        commit += " with uncommitted changes"
    wall = data.get("wall_time_s")
    wall_text = f", {wall:.0f} s" if isinstance(wall, (int, float)) else ""
    return (
        f"recorded on {data.get('device_name', 'an unnamed device')} ({data.get('device', '?')}), "
        f"profile {data.get('profile', '?')}, commit {commit}, {data.get('date', 'undated')}, "
        f"torch {data.get('torch', '?')}{wall_text}"
    )


#: The code a recorded kernel or training number measures.
MEASURED_CODE = ("kdalib/ops",)


@dataclass(frozen=True)
class CodeChanges:
    """The commits that touched ``paths`` after a recorded run's commit.

    Attributes:
        commit: the recorded commit (None when the record names none).
        paths: the folders checked, relative to the repository root.
        commits: ``"<short sha> <subject>"`` per commit, newest first; None when git cannot tell.
        reason: why it cannot tell (no git, a commit outside this clone's history).
        modified: the run was made from a working tree with uncommitted changes.
    """

    commit: str | None
    paths: tuple[str, ...]
    commits: tuple[str, ...] | None
    reason: str = ""
    modified: bool = False

    def sentence(self) -> str:
        """What a reader needs to know, in one sentence."""
        where = " or ".join(f"{path}/" for path in self.paths)
        local = (
            " The run was made with uncommitted changes on top of that commit, which this history does not hold."
            if self.modified
            else ""
        )
        if self.commits is None:
            return f"Whether {where} changed since the recorded commit is unknown here: {self.reason}.{local}"
        if not self.commits:
            return f"The code it measured ({where}) has not changed since.{local}"
        count = len(self.commits)
        latest = self.commits[0] if len(self.commits[0]) <= 72 else self.commits[0][:71] + "…"
        return (
            f"The code it measured ({where}) has changed since: {count} commit{'s' if count > 1 else ''}, "
            f"latest {latest}.{local}"
        )


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


def code_changes_since(
    commit: str | None, paths: tuple[str, ...] = MEASURED_CODE, root: Path | None = None, modified: bool = False
) -> CodeChanges:
    """The commits after ``commit`` that touched the code under ``paths`` (their Markdown notes
    aside) in the git history of ``root`` (default: :func:`book_root`); the answer says so when
    git, or the commit, is not there."""
    root = root or book_root()
    paths = tuple(paths)
    if not commit or not re.fullmatch(r"[0-9a-fA-F]{7,40}", commit):
        return CodeChanges(commit, paths, None, "the record names no commit", modified)
    if _git(root, "rev-parse", "--is-inside-work-tree") is None:
        return CodeChanges(commit, paths, None, "no git history in this copy of the book", modified)
    if _git(root, "cat-file", "-e", f"{commit}^{{commit}}") is None:
        reason = f"commit {commit[:10]} is not in this clone's history (a shallow clone?)"
        return CodeChanges(commit, paths, None, reason, modified)
    # the folders' Markdown (measurement notes such as kdalib/ops/triton/NOTES.md) is prose, not code
    log = _git(root, "log", "--format=%h %s", f"{commit}..HEAD", "--", *paths, ":(exclude,glob)**/*.md")
    if log is None:
        return CodeChanges(commit, paths, None, "git log failed", modified)
    return CodeChanges(commit, paths, tuple(line for line in log.splitlines() if line.strip()), "", modified)


@dataclass(frozen=True)
class Shown:
    """How a recorded value is shown to readers: its name, its unit, and the significant figures
    the measurement supports."""

    label: str
    unit: str = ""
    digits: int = 3


def significant(value: float, digits: int) -> str:
    """``value`` to ``digits`` significant figures: thousands separated, tiny values with an exponent."""
    if isinstance(value, int) or float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    rounded = float(f"{value:.{digits}g}")
    if rounded != 0 and (abs(rounded) < 1e-3 or abs(rounded) >= 1e15):
        return f"{rounded:.{digits - 1}e}"
    if abs(rounded) >= 10 ** (digits - 1):
        return f"{rounded:,.0f}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(rounded)))) if rounded else 0
    return f"{rounded:,.{decimals}f}"


def recorded_table(data: dict, shown: dict[str, Shown], changes: CodeChanges | None = None) -> dict[str, str]:
    """A recorded result as a display bundle: a captioned HTML table of the values ``shown`` names
    (reader labels and units, rounded; values the record lacks are left out), and the same as text.

    Raises:
        ValueError: when ``shown`` names none of the recorded values (a renamed key would
            otherwise empty the table silently).
    """
    values = data["values"]
    rows = [
        (spec.label, significant(values[key], spec.digits) + (f" {spec.unit}" if spec.unit else ""))
        for key, spec in shown.items()
        if isinstance(values.get(key), (int, float)) and not isinstance(values.get(key), bool)
    ]
    if not rows:
        raise ValueError(f"recorded_table: none of {sorted(shown)} is among the recorded values {sorted(values)}")
    caption = f"Recorded run of this notebook: {provenance(data)}."
    if changes is not None:
        caption += " " + changes.sentence()
    body = "".join(f"<tr><td>{html.escape(label)}</td><td>{html.escape(text)}</td></tr>" for label, text in rows)
    table = (
        f'<table class="kdalib-recorded"><caption>{html.escape(caption)}</caption>'
        f"<thead><tr><th>quantity</th><th>recorded</th></tr></thead><tbody>{body}</tbody></table>"
    )
    width = max(len(label) for label, _ in rows)
    plain = "\n".join([caption, *(f"{label:<{width}}  {text}" for label, text in rows)])
    return {"text/html": table, "text/plain": plain}


def show_recorded(
    stem: str,
    shown: dict[str, Shown] | None = None,
    device: str = "cuda",
    root: Path | None = None,
    measured: tuple[str, ...] = MEASURED_CODE,
    figures: bool = True,
) -> dict | None:
    """Displays a notebook's recorded results: a captioned table of the values ``shown`` names
    (none: only where and when it ran), whether the code under ``measured`` changed since, and
    the recorded figures (``figures=False``: the notebook draws its own).

    Returns:
        The loaded record, or None (after saying so) when no record exists yet.
    """
    from IPython.display import HTML, Image, Markdown, display

    data = load_recorded(stem, device, root)
    if data is None:
        display(
            Markdown(
                f"**No recorded {device.upper()} result for `{stem}` yet.** It is produced by "
                f"`kdalib repro --device {device} --profile full notebooks/{stem}.ipynb` and committed "
                f"to `notebooks/results/{device}/`."
            )
        )
        return None
    changes = code_changes_since(data.get("commit"), measured, root, data.get("worktree") == "modified")
    data["_changes"] = changes
    if shown:
        display(recorded_table(data, shown, changes), raw=True)
    else:
        line = f"Recorded run of this notebook: {provenance(data)}. {changes.sentence()}"
        display(HTML(f'<p class="kdalib-provenance">{html.escape(line)}</p>'))
    folder = Path(data["_path"]).parent
    for figure in (data.get("figures") or []) if figures else []:
        if (folder / figure).is_file():
            display(Image(filename=str(folder / figure)))
            day = str(data.get("date") or "undated")[:10]
            commit = str(data.get("commit") or "unknown")[:7]
            display(
                HTML(
                    f'<p class="kdalib-figure-note">{html.escape(figure)}: recorded on '
                    f"{html.escape(str(data.get('device_name', device)))}, commit {commit}, {day}.</p>"
                )
            )
    return data

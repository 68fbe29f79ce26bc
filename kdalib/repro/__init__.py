"""Recorded reproductions, the notebook side: settings, record, save_figure, show_recorded.

A notebook calls the same functions whether the Jupyter Book build executes it on
the CPU or ``kdalib repro`` executes it on a GPU:

* :func:`settings` reads ``KDALIB_DEVICE`` (auto | cpu | cuda) and ``KDALIB_PROFILE``
  (smoke | full) and says which device and size to run at.
* :func:`record` glues a number for the book's prose (``{glue:text}`name```) and, under
  ``kdalib repro``, also collects it for the result JSON.
* :func:`save_figure` writes a figure's PNG next to that JSON under ``kdalib repro``.
* :func:`show_recorded` displays the recorded GPU results of a notebook, labelled with
  device, commit and date, or says plainly that none exist yet.

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
    """One line saying where a recorded result came from."""
    commit = (data.get("commit") or "unknown")[:10]
    wall = data.get("wall_time_s")
    wall_text = f", {wall:.0f} s" if isinstance(wall, (int, float)) else ""
    return (
        f"recorded on {data.get('device_name', 'an unnamed device')} ({data.get('device', '?')}), "
        f"profile {data.get('profile', '?')}, commit {commit}, {data.get('date', 'undated')}, "
        f"torch {data.get('torch', '?')}{wall_text}"
    )


def recorded_table(data: dict) -> dict[str, str]:
    """A recorded result's numbers as a display bundle: an HTML table (the book's Markdown
    renderer shows no Markdown tables) and the same rows as plain text."""
    numbers_ = [
        (key, value)
        for key, value in sorted(data["values"].items())
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    ]
    head = f"Recorded result — {provenance(data)}."
    rows = "".join(f"<tr><td><code>{html.escape(key)}</code></td><td>{value:.6g}</td></tr>" for key, value in numbers_)
    table = (
        f"<p><strong>Recorded result</strong> — {html.escape(provenance(data))}.</p>\n"
        f'<table class="kdalib-recorded"><thead><tr><th>value</th><th>recorded</th></tr></thead>'
        f"<tbody>{rows}</tbody></table>"
    )
    width = max((len(key) for key, _ in numbers_), default=0)
    plain = "\n".join([head, *(f"{key:<{width}}  {value:.6g}" for key, value in numbers_)])
    return {"text/html": table, "text/plain": plain}


def show_recorded(stem: str, device: str = "cuda", root: Path | None = None) -> dict | None:
    """Displays a notebook's recorded results (provenance, values, figures) in the notebook.

    Returns:
        The loaded record, or None (after saying so) when no record exists yet.
    """
    from IPython.display import Image, Markdown, display

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
    display(recorded_table(data), raw=True)
    folder = Path(data["_path"]).parent
    for figure in data.get("figures") or []:
        if (folder / figure).is_file():
            display(Markdown(f"*{figure}* ({data.get('device_name', device)})"))
            display(Image(filename=str(folder / figure)))
    return data

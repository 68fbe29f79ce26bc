"""Recorded reproductions: the notebook side (record, save_figure) and ``kdalib repro``.

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
are identical in both settings.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import numbers
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdalib.environment import cpu_name, git_commit

DEVICE_ENV = "KDALIB_DEVICE"
PROFILE_ENV = "KDALIB_PROFILE"
COLLECT_ENV = "KDALIB_REPRO_COLLECT"
DEVICES = ("auto", "cpu", "cuda")
PROFILES = ("smoke", "full")
VALUES_FILE = "values.json"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
REPO_ROOT = Path(__file__).resolve().parent.parent


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


def measure_seconds(fn, repeats: int = 5, warmup: int = 1, device: str = "cpu") -> float:
    """Best-of-``repeats`` wall time of ``fn()`` in seconds (CUDA work is synchronised).

    The minimum, not the mean, because on a shared machine noise only ever adds time.

    Raises:
        ValueError: if ``repeats`` < 1 or ``warmup`` < 0.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"measure_seconds: need repeats >= 1 and warmup >= 0, "
                         f"got repeats = {repeats}, warmup = {warmup}")
    synchronize = (lambda: None)
    if device == "cuda":
        import torch

        synchronize = torch.cuda.synchronize
    for _ in range(warmup):
        fn()
    synchronize()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize()
        best = min(best, time.perf_counter() - start)
    return best


# --------------------------------------------------------------------------- recorded results


def book_root() -> Path:
    """The folder holding ``notebooks/``: this checkout for an editable install, else the
    current directory or its parent (notebooks execute with their own folder as cwd)."""
    for candidate in (REPO_ROOT, Path.cwd(), Path.cwd().parent):
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


def show_recorded(stem: str, device: str = "cuda", root: Path | None = None) -> dict | None:
    """Displays a notebook's recorded results (provenance, values, figures) in the notebook.

    Returns:
        The loaded record, or None (after saying so) when no record exists yet.
    """
    from IPython.display import Image, Markdown, display

    data = load_recorded(stem, device, root)
    if data is None:
        display(Markdown(
            f"**No recorded {device.upper()} result for `{stem}` yet.** It is produced by "
            f"`kdalib repro --device {device} --profile full notebooks/{stem}.ipynb` and committed "
            f"to `notebooks/results/{device}/`."
        ))
        return None
    rows = "\n".join(f"| `{key}` | {value:.6g} |" for key, value in sorted(data["values"].items())
                     if isinstance(value, (int, float)))
    display(Markdown(f"**Recorded result** — {provenance(data)}.\n\n| value | recorded |\n|---|---|\n{rows}"))
    folder = Path(data["_path"]).parent
    for figure in data.get("figures") or []:
        if (folder / figure).is_file():
            display(Markdown(f"*{figure}* ({data.get('device_name', device)})"))
            display(Image(filename=str(folder / figure)))
    return data


# --------------------------------------------------------------------------- kdalib repro


def _versions() -> dict[str, str | None]:
    import torch

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return {"torch": torch.__version__, "triton": triton_version, "python": platform.python_version()}


def _device_name(device: str) -> str:
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name(0)
    return f"{cpu_name()} ({os.cpu_count()} cores)"


def _find_notebooks(names: list[str], root: Path) -> list[Path]:
    if not names:
        found = sorted((root / "notebooks").glob("*.ipynb"))
        if not found:
            raise FileNotFoundError(f"no notebooks in {root / 'notebooks'}")
        return found
    paths = []
    for name in names:
        path = Path(name)
        candidates = [path, root / "notebooks" / path, root / "notebooks" / f"{name}.ipynb"]
        match = next((c for c in candidates if c.is_file() and c.suffix == ".ipynb"), None)
        if match is None:
            raise FileNotFoundError(f"notebook {name!r}: no such .ipynb (looked in ., notebooks/)")
        paths.append(match.resolve())
    return paths


def execute_notebook(path: Path, device: str, profile: str, out_dir: Path, timeout: int) -> dict:
    """Executes one notebook and writes its executed copy, result JSON and figures.

    Args:
        path: the ``.ipynb`` to run (executed with its own folder as working directory).
        device: ``cpu`` or ``cuda``, passed as ``KDALIB_DEVICE``.
        profile: ``smoke`` or ``full``, passed as ``KDALIB_PROFILE``.
        out_dir: results folder; receives ``<stem>.ipynb``, ``<stem>.json``, ``<stem>-<fig>.png``.
        timeout: per-cell timeout in seconds.

    Returns:
        The result record written to ``<stem>.json``.

    Raises:
        nbclient.exceptions.CellExecutionError: when a cell fails; ``CellTimeoutError`` or
            ``DeadKernelError`` when it hangs or crashes the kernel (the partly executed
            notebook is still written, for diagnosis).
    """
    import nbformat
    from nbclient import NotebookClient

    stem = path.stem
    notebook = nbformat.read(path, as_version=4)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"kdalib-repro-{stem}-") as collect:
        overrides = {DEVICE_ENV: device, PROFILE_ENV: profile, COLLECT_ENV: collect}
        saved = {key: os.environ.get(key) for key in overrides}
        os.environ.update(overrides)  # the kernel inherits this process's environment
        start = time.perf_counter()
        try:
            NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                           resources={"metadata": {"path": str(path.parent)}}).execute()
        finally:
            wall = time.perf_counter() - start
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            nbformat.write(notebook, out_dir / f"{stem}.ipynb")
        values_path = Path(collect) / VALUES_FILE
        values = json.loads(values_path.read_text()) if values_path.exists() else {}
        figures = []
        for png in sorted(Path(collect).glob("*.png")):
            target = f"{stem}-{png.name}"
            shutil.copyfile(png, out_dir / target)
            figures.append(target)
    result = {
        "notebook": f"notebooks/{path.name}",
        "device": device,
        "device_name": _device_name(device),
        **_versions(),
        "commit": git_commit(),
        "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "wall_time_s": round(wall, 2),
        "profile": profile,
        "values": values,
        "figures": figures,
    }
    (out_dir / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def cmd_repro(args) -> int:
    """``kdalib repro``: run notebooks with nbclient and record their results.

    Returns 0 when every notebook ran, 1 when some failed, 2 for unusable input
    (unknown notebook, ``--device cuda`` without a GPU).
    """
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    root = Path.cwd() if (Path.cwd() / "notebooks").is_dir() else REPO_ROOT
    try:
        device = resolve_device(args.device)
        notebooks = _find_notebooks(list(args.notebooks), root)
    except (ValueError, FileNotFoundError) as exc:
        print(f"kdalib repro: {exc}", file=sys.stderr)
        return 2
    out_dir = Path(args.out) if args.out else results_dir(device, root)
    failures = 0
    for path in notebooks:
        print(f"kdalib repro: {path.name} on {device}, profile {args.profile} ...", flush=True)
        try:
            result = execute_notebook(path, device, args.profile, out_dir, args.timeout)
        except (CellExecutionError, CellTimeoutError, DeadKernelError) as exc:
            failures += 1
            print(f"kdalib repro: {path.name} FAILED (executed copy in {out_dir}):\n{exc}", file=sys.stderr)
            continue
        print(f"  {result['wall_time_s']:.1f} s, {len(result['values'])} values, "
              f"{len(result['figures'])} figures -> {out_dir / (path.stem + '.json')}", flush=True)
    return 1 if failures else 0

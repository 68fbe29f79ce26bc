"""What the code is running on: Python, torch, device, kdalib version and git commit.

Used by ``kdalib info``, by the book's Build-status page and by recorded results, so
that every number the project prints can say where it came from. torch is optional
here: the torch-free parts of kdalib (sources, book) must work without it.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import subprocess
from pathlib import Path

from kdalib import __version__

NOT_INSTALLED = "not installed"


def git_commit(repo: Path | None = None) -> str | None:
    """The commit the results come from: ``$KDALIB_COMMIT`` when set, else ``git rev-parse HEAD``
    for ``repo`` (default: this checkout), else None.

    The variable comes first because whoever sets it knows which commit was copied: a working
    tree copied to a GPU machine may carry a ``.git`` folder from another state, or none.
    """
    explicit = os.environ.get("KDALIB_COMMIT")
    if explicit:
        return explicit
    cwd = repo or Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def worktree_state(repo: Path | None = None) -> str | None:
    """Whether the tracked files of ``repo`` (default: this checkout) match its commit: ``"clean"``,
    ``"modified"``, or None when git cannot tell (no git, not a checkout).

    With ``$KDALIB_COMMIT`` set (a copied working tree), the copy's own git state says nothing
    about it: ``$KDALIB_WORKTREE`` (``clean`` or ``modified``) is used if set, else None.
    """
    if os.environ.get("KDALIB_COMMIT"):
        stated = os.environ.get("KDALIB_WORKTREE", "").strip()
        return stated if stated in ("clean", "modified") else None
    cwd = repo or Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return "modified" if out.stdout.strip() else "clean"


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it, falling back to ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def triton_version() -> str | None:
    """Triton's version from package metadata, or None when it is not installed.

    Read without importing triton: an import here would fix Triton's interpreter/compiler
    choice (``TRITON_INTERPRET``) for the rest of the process.
    """
    try:
        return importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        return None


def utc_now() -> str:
    """The current UTC time as ISO 8601 to the second (``2026-01-31T12:00:00+00:00``)."""
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()


def provenance(device: str) -> dict[str, object]:
    """Where a recorded result came from, with the same keys for every record the project writes.

    Keys: ``device`` (``cpu`` or ``cuda``), ``device_name``, ``torch``, ``triton``, ``python``,
    ``threads`` (torch's CPU threads), ``commit`` (None outside a git checkout without
    ``$KDALIB_COMMIT``), ``worktree`` (:func:`worktree_state`: a run from a modified tree is
    recorded as ``"modified"``, so its numbers are never read as the clean commit's), ``date``
    (:func:`utc_now`). Imports torch.
    """
    import torch

    if device == "cuda":
        name = torch.cuda.get_device_name(0)
    else:
        name = f"{cpu_name()} ({os.cpu_count()} cores)"
    return {
        "device": device,
        "device_name": name,
        "torch": torch.__version__,
        "triton": triton_version(),
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "commit": git_commit(),
        "worktree": worktree_state(),
        "date": utc_now(),
    }


def _torch_facts() -> dict[str, str]:
    try:
        import torch
    except ImportError:
        return {"torch": NOT_INSTALLED, "device": f"cpu ({cpu_name()}, {os.cpu_count()} cores)"}
    facts = {"torch": torch.__version__, "torch threads": str(torch.get_num_threads())}
    if torch.cuda.is_available():
        facts["device"] = f"cuda ({torch.cuda.get_device_name(0)}, CUDA {torch.version.cuda})"
    else:
        facts["device"] = f"cpu ({cpu_name()}, {os.cpu_count()} cores)"
    facts["triton"] = triton_version() or NOT_INSTALLED
    return facts


def collect() -> dict[str, str]:
    """Return the environment as display strings, in the order a reader wants them."""
    facts = {
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "kdalib": __version__,
        "commit": git_commit() or "unknown (not a git checkout)",
    }
    facts.update(_torch_facts())
    facts["date"] = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return facts


def cmd_info(args) -> int:
    """``kdalib info``: print the environment as aligned text or JSON."""
    facts = collect()
    if args.json:
        print(json.dumps(facts, indent=2))
        return 0
    width = max(map(len, facts))
    for key, value in facts.items():
        print(f"{key:<{width}}  {value}")
    return 0

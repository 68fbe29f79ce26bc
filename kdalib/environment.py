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
    """Return ``git rev-parse HEAD`` for ``repo`` (default: this checkout).

    Outside a git checkout (a copied working tree on a GPU machine, an installed wheel)
    the commit comes from ``$KDALIB_COMMIT`` when set, else None.
    """
    cwd = repo or Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("KDALIB_COMMIT") or None
    return out.stdout.strip() or os.environ.get("KDALIB_COMMIT") or None


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it, falling back to ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
    # Read the version without importing triton: an import here would fix Triton's
    # interpreter/compiler choice (TRITON_INTERPRET) for the rest of the process.
    try:
        facts["triton"] = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        facts["triton"] = NOT_INSTALLED
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
    facts["date"] = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
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

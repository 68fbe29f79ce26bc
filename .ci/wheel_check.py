"""Build kdalib's wheel and prove it installs and imports as a user gets it, without the extras.

    python .ci/wheel_check.py [--out build/wheel-check]

1. ``python -m build --wheel`` (an isolated build, as pip would do it) into ``OUT/dist``.
2. The wheel's metadata: its unconditional requirements are torch and numpy only, the
   ``sources`` and ``book`` extras exist, ``py.typed`` ships, the version is kdalib's.
3. A clean virtualenv in ``OUT/venv`` (no system site-packages) that is given only torch and
   numpy and what they require, linked from the environment running this script (no
   download of torch, whose CPU build this project installs from its own index).
4. ``pip install --no-index`` of the wheel: pip itself checks that nothing beyond those
   packages is required.
5. In that venv, from a folder outside the checkout: ``import kdalib.ops``, ``kdalib.nn``, one
   forward of ``chunk_kda``; the extras' modules are absent; ``kdalib verify`` and ``kdalib
   repro`` exit 2 naming the extra to install.

Exit status 0 when every check passes; a failed check prints what was found and exits 1.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
CORE = {"torch", "numpy"}
EXTRAS = {"sources", "book"}

IN_VENV = r"""
import importlib.util, sys
import torch
import kdalib, kdalib.ops, kdalib.nn
from kdalib.ops import chunk_kda
assert "site-packages" in kdalib.__file__, kdalib.__file__
B, T, H, D = 1, 16, 2, 8
q, k, v = (torch.randn(B, T, H, D) for _ in range(3))
g = -torch.rand(B, T, H, D)
beta = torch.rand(B, T, H)
o, _ = chunk_kda(q, k, v, g, beta)
assert o.shape == (B, T, H, D) and torch.isfinite(o).all()
absent = [m for m in ("ruamel", "urllib3", "pypdf", "nbclient", "matplotlib", "pandas") if importlib.util.find_spec(m)]
assert not absent, f"extras' modules importable in the clean venv: {absent}"
print("kdalib", kdalib.__version__, "from", kdalib.__file__, "with torch", torch.__version__)
"""


def fail(message: str) -> None:
    print(f"wheel check FAILED: {message}", file=sys.stderr)
    raise SystemExit(1)


def run(*command: str | Path, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    shown = [str(c) if "\n" not in str(c) else "<check script>" for c in command]
    print("+", " ".join(shown), flush=True)
    return subprocess.run([str(c) for c in command], cwd=cwd, env=env, text=True, capture_output=True)


def checked(result: subprocess.CompletedProcess) -> str:
    if result.returncode != 0:
        fail(f"exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result.stdout


def build_wheel(dist: Path) -> Path:
    shutil.rmtree(dist, ignore_errors=True)
    checked(run(sys.executable, "-m", "build", "--wheel", "--outdir", dist, ROOT))
    wheels = sorted(dist.glob("kdalib-*.whl"))
    if len(wheels) != 1:
        fail(f"expected one kdalib wheel in {dist}, found {[w.name for w in wheels]}")
    return wheels[0]


def check_metadata(wheel: Path) -> list[Requirement]:
    """The wheel's unconditional requirements, after checking its metadata and files."""
    sys.path.insert(0, str(ROOT))
    from kdalib import __version__

    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        text = archive.read(info).decode("utf-8")
    fields = [line.split(": ", 1) for line in text.splitlines() if ": " in line and not line.startswith(" ")]
    requires = [Requirement(value) for key, value in fields if key == "Requires-Dist"]
    core = [r for r in requires if r.marker is None]
    extras = {value for key, value in fields if key == "Provides-Extra"}
    version = next(value for key, value in fields if key == "Version")
    if {canonicalize_name(r.name) for r in core} != CORE:
        fail(f"unconditional requirements {sorted(str(r) for r in core)}; expected only {sorted(CORE)}")
    if not EXTRAS <= extras:
        fail(f"extras {sorted(extras)}; expected at least {sorted(EXTRAS)}")
    if version != __version__:
        fail(f"wheel version {version} != kdalib.__version__ {__version__}")
    if "kdalib/py.typed" not in names:
        fail("kdalib/py.typed is not in the wheel")
    stray = [n for n in names if n.split("/")[0] in {"tests", "notebooks", "notes", "snapshots"}]
    if stray:
        fail(f"files outside the package in the wheel: {stray[:5]}")
    for needed in ("kdalib/ops/__init__.py", "kdalib/nn/__init__.py", "kdalib/book/static/kdalib.js"):
        if needed not in names:
            fail(f"{needed} is not in the wheel")
    print(f"metadata: kdalib {version}, requires {', '.join(map(str, core))}; extras {', '.join(sorted(extras))}")
    return core


def closure(requirements: list[Requirement]) -> list[metadata.Distribution]:
    """The installed distributions that ``requirements`` need, transitively (markers evaluated)."""
    environment = default_environment()
    found: dict[str, metadata.Distribution] = {}
    todo = list(requirements)
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in found:
            continue
        try:
            dist = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            fail(f"{requirement.name} (needed by the wheel) is not installed in {sys.prefix}")
        found[name] = dist
        for line in dist.requires or []:
            needed = Requirement(line)
            if needed.marker is None or needed.marker.evaluate({**environment, "extra": ""}):
                todo.append(needed)
    return list(found.values())


def link_into(venv_site: Path, dists: list[metadata.Distribution]) -> None:
    """Symlinks each distribution's top-level files and its .dist-info into ``venv_site``."""
    for dist in dists:
        base = Path(dist.locate_file(""))
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in sorted(tops):
            source, target = base / top, venv_site / top
            if source.exists() and not target.exists() and not top.endswith(".pth"):
                target.symlink_to(source)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "wheel-check")
    out = parser.parse_args(argv).out.resolve()
    wheel = build_wheel(out / "dist")
    core = check_metadata(wheel)

    venv = out / "venv"
    shutil.rmtree(venv, ignore_errors=True)
    checked(run(sys.executable, "-m", "venv", venv))
    python = venv / "bin" / "python"
    site = Path(checked(run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))")).strip())
    if Path(sysconfig.get_path("purelib")).resolve() == site.resolve():
        fail("the clean venv shares this interpreter's site-packages")
    dists = closure(core)
    link_into(site, dists)
    print("linked from this environment:", ", ".join(sorted(d.metadata["Name"] for d in dists)))
    checked(run(python, "-m", "pip", "install", "--no-index", "--no-cache-dir", "--quiet", wheel))

    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    with tempfile.TemporaryDirectory(prefix="kdalib-wheel-") as elsewhere:
        cwd = Path(elsewhere)
        print(checked(run(python, "-c", IN_VENV, cwd=cwd, env=env)).strip())
        for command, extra in ((["verify"], "sources"), (["repro", "--device", "cpu"], "book")):
            result = run(venv / "bin" / "kdalib", *command, cwd=cwd, env=env)
            expected = f"pip install 'kdalib[{extra}]'"
            if result.returncode != 2 or expected not in result.stderr or "Traceback" in result.stderr:
                fail(f"kdalib {command[0]} without the {extra} extra: exit {result.returncode}, {result.stderr!r}")
            print(f"kdalib {command[0]} without the extra: {result.stderr.strip()}")
        checked(run(venv / "bin" / "kdalib", "info", cwd=cwd, env=env))
    print(f"wheel check passed: {wheel.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""``kdalib repro``: execute notebooks with nbclient and record their results.

Each notebook runs in a fresh kernel with ``KDALIB_DEVICE``/``KDALIB_PROFILE`` set and a
collection folder in ``KDALIB_REPRO_COLLECT``, where :func:`kdalib.repro.record` and
:func:`kdalib.repro.save_figure` leave values and figures. This module turns them into
``notebooks/results/<device>/<stem>.json`` (with device, versions, commit, date and wall
time), the PNGs beside it and the executed ``.ipynb``. The notebook-side API lives in
:mod:`kdalib.repro`; the arguments are parsed in :mod:`kdalib.cli`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from kdalib.environment import provenance
from kdalib.repro import (
    COLLECT_ENV,
    DEVICE_ENV,
    PROFILE_ENV,
    VALUES_FILE,
    book_root,
    resolve_device,
    results_dir,
)


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
            NotebookClient(
                notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
            ).execute()
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
        **provenance(device),
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

    root = book_root()
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
        print(
            f"  {result['wall_time_s']:.1f} s, {len(result['values'])} values, "
            f"{len(result['figures'])} figures -> {out_dir / (path.stem + '.json')}",
            flush=True,
        )
    return 1 if failures else 0

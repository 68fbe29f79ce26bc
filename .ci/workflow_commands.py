"""The shell commands a GitHub workflow job runs, so .ci/run can replay them here.

    python .ci/workflow_commands.py WORKFLOW.yml JOB OUT_DIR

writes one script per ``run:`` step of JOB into OUT_DIR (``01.sh``, ``02.sh``, ...), in
order, each exporting the step's and the job's ``env:``. Steps that only prepare a GitHub
runner are left out: ``uses:`` actions (checkout, setup-python, artifacts) and ``run:``
steps whose ``id`` starts with ``setup`` (this machine's setup is ``make install``).
An ``env:`` value holding a GitHub expression (``${{ ... }}``) is left unset, so the
command's own shell default applies. Needs PyYAML (in .venv once ``make install`` ran).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import yaml


def replayed_steps(workflow: Path, job: str) -> list[tuple[str, dict[str, str], str]]:
    """(name, env, command) of each run step of ``job`` that .ci/run replays, in order."""
    data = yaml.safe_load(workflow.read_text(encoding="utf-8"))
    jobs = data.get("jobs") or {}
    if job not in jobs:
        raise SystemExit(f"{workflow}: no job {job!r} (it has: {', '.join(jobs) or 'none'})")
    job_env = jobs[job].get("env") or {}
    out = []
    for index, step in enumerate(jobs[job].get("steps") or [], start=1):
        if "run" not in step or str(step.get("id", "")).startswith("setup"):
            continue
        env = {k: str(v) for k, v in {**job_env, **(step.get("env") or {})}.items() if "${{" not in str(v)}
        out.append((step.get("name", f"step {index}"), env, step["run"]))
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    workflow, job, out_dir = Path(argv[0]), argv[1], Path(argv[2])
    out_dir.mkdir(parents=True, exist_ok=True)
    for number, (name, env, command) in enumerate(replayed_steps(workflow, job), start=1):
        exports = "".join(f"export {key}={shlex.quote(value)}\n" for key, value in env.items())
        script = f"# {workflow}: {name}\n{exports}{command.rstrip()}\n"
        (out_dir / f"{number:02d}.sh").write_text(script, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

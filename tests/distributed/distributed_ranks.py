"""Runs test cases in real processes: one per rank, a gloo group over a FileStore in a temporary folder.

:func:`run_ranks` starts ``world_size`` Python processes running this file. They rendezvous
through a file (no TCP port is chosen, so parallel test runs cannot collide), run each named
case of :mod:`distributed_cases` and save what it returns; the parent waits with a deadline and kills
every process when it passes, so a hang fails the test instead of blocking it.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
#: How long one collective may wait inside a worker before gloo gives up.
COLLECTIVE_TIMEOUT_S = 60


#: The world sizes the tests run, and the cases every one of them runs in one set of processes.
WORLD_SIZES = (2, 3, 4)
FAST_CASES = ("spanning64", "boundary64", "batched64", "spanning32", "triton32", "layer64", "layer-grouped64", "errors")


class RanksFailed(AssertionError):
    pass


def process_env() -> dict[str, str]:
    """The environment of a rank process: kdalib and this folder importable, one thread each (the
    ranks share the machine's cores), and gloo on the loopback interface when it has one."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE), env.get("PYTHONPATH", "")])
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    names = {name for _, name in socket.if_nameindex()}
    loopback = next((name for name in ("lo", "lo0") if name in names), None)
    if loopback is not None:
        env.setdefault("GLOO_SOCKET_IFNAME", loopback)
    return env


def run_ranks(world_size: int, cases: list[str], folder: Path, timeout_s: float = 300.0) -> list[dict]:
    """Every rank's ``{case: result}`` for ``cases`` run on ``world_size`` gloo ranks.

    Raises:
        RanksFailed: a process failed or the deadline passed; the message has every rank's output.
    """
    folder.mkdir(parents=True, exist_ok=True)
    env = process_env()
    logs = [folder / f"rank{rank}.log" for rank in range(world_size)]
    processes = []
    for rank in range(world_size):
        with open(logs[rank], "w") as log:
            command = [sys.executable, str(Path(__file__)), str(rank), str(world_size), str(folder), *cases]
            processes.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT))
    deadline = time.monotonic() + timeout_s
    timed_out = False
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
            break
    if timed_out:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    failed = timed_out or any(p.returncode != 0 for p in processes)
    if failed:
        outputs = "\n".join(
            f"--- rank {r} (exit {p.returncode}) ---\n{logs[r].read_text()}" for r, p in enumerate(processes)
        )
        reason = f"timed out after {timeout_s:.0f} s" if timed_out else "a rank failed"
        raise RanksFailed(f"{world_size} ranks, cases {cases}: {reason}\n{outputs}")
    return [torch.load(folder / f"rank{rank}.pt", weights_only=False) for rank in range(world_size)]


def _worker(rank: int, world_size: int, folder: Path, cases: list[str]) -> None:
    import distributed_cases
    import torch.distributed as dist

    torch.set_num_threads(1)
    store = dist.FileStore(str(folder / "store"), world_size)
    dist.init_process_group(
        "gloo", store=store, rank=rank, world_size=world_size, timeout=dt.timedelta(seconds=COLLECTIVE_TIMEOUT_S)
    )
    try:
        results = {name: distributed_cases.CASES[name](rank, world_size) for name in cases}
        torch.save(results, folder / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    try:
        _worker(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4:])
    except BaseException:
        traceback.print_exc()
        sys.exit(1)

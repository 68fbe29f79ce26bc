"""The ``kdalib`` command line: parsing, dispatch and the environment report."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from kdalib import __version__
from kdalib.cli import main
from kdalib.environment import collect, git_commit

# argv -> (module, function) that the command must run.
COMMANDS = {
    "verify": ("kdalib.sources.commands", "cmd_verify"),
    "sources fetch": ("kdalib.sources.commands", "cmd_fetch"),
    "sources check-links": ("kdalib.sources.commands", "cmd_check_links"),
    "sources add https://example.org --snapshot x.txt --origin publisher": ("kdalib.sources.commands", "cmd_add"),
    "sources quote some-id text": ("kdalib.sources.commands", "cmd_quote"),
    "bench": ("kdalib.bench.command", "cmd_bench"),
    "repro": ("kdalib.repro.runner", "cmd_repro"),
    "tasks grid": ("kdalib.tasks.command", "cmd_grid"),
    "dev ptxas": ("kdalib.ops.triton.ptxas_report", "cmd_ptxas"),
    "info": ("kdalib.environment", "cmd_info"),
}


@pytest.mark.parametrize("argv", COMMANDS)
def test_every_command_runs_its_handler(argv, monkeypatch):
    module_name, function_name = COMMANDS[argv]
    module = importlib.import_module(module_name)
    seen = []
    monkeypatch.setattr(module, function_name, lambda args: seen.append(args) or 7)
    assert main(argv.split()) == 7
    assert len(seen) == 1


def test_missing_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


def test_version_flag(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"kdalib {__version__}"


def test_info_json_names_python_torch_and_device(capsys):
    assert main(["info", "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert {"python", "torch", "device", "kdalib", "commit", "date"} <= facts.keys()
    assert facts["kdalib"] == __version__


def test_python_dash_m_runs_the_same_cli():
    out = subprocess.run([sys.executable, "-m", "kdalib", "info"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].startswith("python")


def test_collect_without_git_uses_the_recorded_commit(tmp_path, monkeypatch):
    monkeypatch.setenv("KDALIB_COMMIT", "abc123")
    assert git_commit(tmp_path) == "abc123"
    monkeypatch.delenv("KDALIB_COMMIT")
    assert git_commit(tmp_path) is None
    assert collect()["python"].count(".") == 2


def test_the_recorded_commit_wins_over_the_checkouts_own(monkeypatch):
    """A working tree copied to another machine may carry a stale ``.git``: the commit named by
    whoever ran it is the one recorded."""
    own = git_commit()
    if own is None:
        pytest.skip("not a git checkout")
    monkeypatch.setenv("KDALIB_COMMIT", "0" * 40)
    assert git_commit() == "0" * 40


@pytest.mark.parametrize(
    ("argv", "extra", "module"),
    [
        (["verify"], "sources", "pypdf"),
        (["sources", "quote", "x", "y"], "sources", "ruamel.yaml"),
        (["repro"], "book", "nbclient"),
    ],
)
def test_a_command_without_its_extra_names_the_extra_to_install(monkeypatch, capsys, argv, extra, module):
    from kdalib import cli

    monkeypatch.setattr(cli, "_importable", lambda name: name != module)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"pip install 'kdalib[{extra}]'" in err and f"not installed: {module}" in err


def test_every_extra_module_of_the_cli_is_in_pyproject():
    import tomllib

    from kdalib.cli import EXTRAS

    extras = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    declared = {extra: " ".join(extras[extra]).lower() for extra in EXTRAS}
    distributions = {"ruamel.yaml": "ruamel.yaml", "myst_nb": "jupyter-book"}
    for extra, modules in EXTRAS.items():
        for module in modules:
            assert distributions.get(module, module) in declared[extra], (extra, module)
    core = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["dependencies"]
    assert sorted(d.split(">")[0] for d in core) == ["numpy", "torch"]


def test_a_closed_stdout_ends_the_command_quietly(monkeypatch):
    import io
    import os

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader (`| head`) is gone
    saved = os.dup(1)
    os.dup2(write_end, 1)
    try:
        monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True))
        assert main(["info"]) == 141
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(write_end)

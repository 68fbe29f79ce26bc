"""The GitHub workflows, checked offline: every make target, kdalib command, path and action
they name exists here, they verify from snapshots/ without fetching, and .ci/run replays
exactly the run steps of checks.yml."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest
import yaml

from kdalib.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
#: Programs a GitHub ubuntu runner provides, and shell keywords.
KNOWN_PROGRAMS = {
    "python",
    "gh",
    "cat",
    "tee",
    "printf",
    "head",
    "tail",
    "exit",
    "echo",
    "if",
    "then",
    "else",
    "fi",
    "[",
    "]",
    "test",
}
CONTROL = {"&&", "||", ";", "|", "(", ")"}
REDIRECTS = {">", ">>", "<", "2>&1", "&>"}
ACTION = re.compile(r"^[A-Za-z0-9-]+/[A-Za-z0-9._-]+@v\d+$")


def _load(path: Path) -> dict:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and data.get("jobs"), f"{path.name}: no jobs"
    return data


def _steps(path: Path):
    for job_name, job in _load(path)["jobs"].items():
        for step in job.get("steps") or []:
            yield job_name, step


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return {m.group(1) for m in re.finditer(r"^([A-Za-z][\w.-]*)\s*:(?!=)", text, re.MULTILINE)}


def _substitutions(line: str) -> tuple[str, list[str]]:
    """``line`` with each ``$( ... )`` replaced by X, and the substituted commands."""
    inner: list[str] = []
    while "$(" in line:
        start = line.index("$(")
        depth, end = 0, start + 1
        for end in range(start + 1, len(line)):
            depth += {"(": 1, ")": -1}.get(line[end], 0)
            if depth == 0:
                break
        inner.append(line[start + 2 : end])
        line = line[:start] + "X" + line[end + 1 :]
    return line, inner


def simple_commands(script: str) -> list[list[str]]:
    """Each simple command of a run script as words (assignments and redirect targets dropped)."""
    commands: list[list[str]] = []
    lines = script.replace("\\\n", " ").splitlines()
    while lines:
        line, inner = _substitutions(lines.pop(0))
        lines.extend(inner)
        line = re.sub(r"\$\{\w+:\+([^}]*)\}", r"\1", line)  # ${VAR:+words}: check the words as if VAR were set
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|()<>")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        words: list[str] = []
        skip_next = False
        for token in lexer:
            if skip_next:
                skip_next = False
            elif token in CONTROL or token in ("if", "then", "else"):
                commands.append(words)
                words = [] if token in CONTROL else [token]
            elif token in REDIRECTS or token in (">", ">>"):
                skip_next = token in (">", ">>", "<")
            elif not words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", token):
                continue
            else:
                words.append(token)
        commands.append(words)
    return [c for c in commands if c]


def _expand(word: str) -> str:
    return re.sub(r"\$\{[^}]*\}|\$\w+", "X", word)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_command_a_workflow_runs_exists_here(path):
    targets = make_targets()
    parser = build_parser()
    for job, step in _steps(path):
        if "run" not in step:
            continue
        for words in simple_commands(step["run"]):
            program = words[0]
            where = f"{path.name} job {job} step {step.get('name', '?')!r}: {' '.join(words)}"
            if program == "make":
                named = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
                assert named and set(named) <= targets, f"{where}: unknown make target"
            elif program.endswith("bin/kdalib"):
                try:
                    parser.parse_args([_expand(w) for w in words[1:]])
                except SystemExit:
                    pytest.fail(f"{where}: kdalib rejects these arguments")
            elif program.startswith(".venv/bin/"):
                assert program.split("/")[-1] in ("pip", "python", "kdalib"), where
            elif program.startswith((".", "/")) or "/" in program:
                assert (ROOT / program).exists(), f"{where}: no such file"
            else:
                assert program in KNOWN_PROGRAMS, f"{where}: unknown program {program!r}"


# What a make target leaves for a later step to upload.
MAKE_OUTPUTS = {"make book": "_build/html", "make test-browser": "_build/screenshots"}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_actions_and_paths_a_workflow_names_exist(path):
    data = _load(path)
    for job_name, job in data["jobs"].items():
        if "uses" in job:  # a reusable workflow of this repository
            assert (ROOT / job["uses"]).is_file(), f"{path.name} job {job_name}: {job['uses']} is missing"
        made: set[str] = set()  # what earlier steps of the job write
        for step in job.get("steps") or []:
            for command, output in MAKE_OUTPUTS.items():
                if command in step.get("run", ""):
                    made.add(output)
            made.update(re.findall(r"--json\s+(\S+)", step.get("run", "")))  # kdalib verify's JSON report
            if "uses" in step:
                assert ACTION.match(step["uses"]), f"{path.name}: action {step['uses']!r} is not owner/name@vN"
            artefact = (step.get("with") or {}).get("path")
            if artefact and "download" in step.get("uses", ""):
                made.add(artefact)
            elif artefact and "upload" in step.get("uses", ""):
                assert (ROOT / artefact).exists() or artefact in made, (
                    f"{path.name}: uploads {artefact}, which no earlier step of job {job_name} makes"
                )


def test_workflows_verify_offline_from_the_repository_snapshots():
    for path in WORKFLOWS:
        text = path.read_text(encoding="utf-8")
        assert "sources fetch" not in text and "actions/cache" not in text, path.name
        assert "KDALIB_SNAPSHOTS" not in text, f"{path.name}: the store is snapshots/, not another folder"
    assert (ROOT / "snapshots" / "MANIFEST.yaml").is_file()


def _workflow_commands():
    spec = importlib.util.spec_from_file_location("workflow_commands", ROOT / ".ci" / "workflow_commands.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ci_run_replays_the_run_steps_of_checks_yml(tmp_path):
    checks = ROOT / ".github" / "workflows" / "checks.yml"
    steps = _load(checks)["jobs"]["test-and-build"]["steps"]
    expected = [s["run"] for s in steps if "run" in s and not str(s.get("id", "")).startswith("setup")]
    replayed = _workflow_commands().replayed_steps(checks, "test-and-build")
    assert [command for _, _, command in replayed] == expected
    assert any(words[:2] in (["make", "test"], ["make", "test-all"]) for c in expected for words in simple_commands(c))
    assert any("--report" in words for c in expected for words in simple_commands(c))
    # the GitHub-only expression is left unset, so the command's default applies
    assert all("${{" not in value for _, env, _ in replayed for value in env.values())
    ci_run = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert ".ci/workflow_commands.py" in ci_run and "workflow=.github/workflows/checks.yml" in ci_run
    assert _workflow_commands().main([str(checks), "test-and-build", str(tmp_path)]) == 0
    scripts = sorted(tmp_path.glob("*.sh"))
    assert [p.read_text().split("\n", 1)[1].rstrip() for p in scripts] == [c.rstrip() for c in expected]


def test_pages_deploys_only_after_the_same_checks():
    pages = _load(ROOT / ".github" / "workflows" / "pages.yml")
    assert pages["jobs"]["checks"]["uses"] == "./.github/workflows/checks.yml"
    assert pages["jobs"]["deploy"]["needs"] == "checks"


def test_issue_templates_are_valid_forms():
    templates = sorted((ROOT / ".github" / "ISSUE_TEMPLATE").glob("*.yml"))
    assert {p.stem for p in templates} >= {"wrong-number", "new-source", "new-model"}
    for path in templates:
        form = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert form["name"] and form["description"], path.name
        ids = [item["id"] for item in form["body"]]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate ids"
        for item in form["body"]:
            assert item["type"] in ("input", "textarea", "dropdown", "markdown", "checkboxes"), path.name
            assert item["attributes"]["label"], path.name
            if item["type"] == "dropdown":
                assert item["attributes"]["options"], path.name
    assert (ROOT / ".github" / "pull_request_template.md").is_file()


def test_the_kdalib_commands_contributing_shows_are_accepted():
    text = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8").replace("\\\n", " ")
    commands = [shlex.split(line.split("$ ", 1)[1], comments=True) for line in text.splitlines() if "$ kdalib " in line]
    commands += [shlex.split(m) for m in re.findall(r"`(kdalib [^`]+)`", text)]
    assert len(commands) >= 5
    parser = build_parser()
    for words in commands:
        try:
            parser.parse_args(words[1:])
        except SystemExit:
            pytest.fail(f"CONTRIBUTING.md shows a command kdalib rejects: {' '.join(words)}")

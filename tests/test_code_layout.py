"""CONTRIBUTING.md's "How the code is laid out" matches the tree: its paths exist, every package is
named, the operator table is the registry's, and the imports of kdalib.ops run the way it says."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from kdalib.ops import OPERATORS
from kdalib.ops.router import TRITON_PATHS

ROOT = Path(__file__).resolve().parents[1]
PATH = re.compile(r"`((?:kdalib|notes|notebooks|tests|snapshots)/[\w./-]*|sources\.yaml)`")


def _section() -> str:
    text = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    match = re.search(r"^## How the code is laid out\n(.*?)(?=^## )", text, re.M | re.S)
    assert match, "CONTRIBUTING.md has no section 'How the code is laid out'"
    return match.group(1)


def _table(header: str) -> list[list[str]]:
    """Cells of the body of the Markdown table whose header line starts with ``header``."""
    lines = _section().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    body = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        body.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return body


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_every_path_it_names_exists():
    named = set(PATH.findall(_section()))
    assert named
    assert not sorted(p for p in named if not (ROOT / p).exists())


def test_every_package_and_top_level_module_is_in_the_folder_table():
    listed = {cell.strip("`") for cell, *_ in _table("| Folder or module |")}
    packages = {f"kdalib/{p.parent.name}/" for p in (ROOT / "kdalib").glob("*/__init__.py")}
    modules = {f"kdalib/{p.name}" for p in (ROOT / "kdalib").glob("*.py") if not p.name.startswith("__")}
    assert sorted((packages | modules) - listed) == []


def test_the_operator_table_is_the_registry():
    rows = {name.strip("`"): function.strip("`") for name, function, _ in _table("| Name | Function |")}
    assert sorted(rows) == sorted(OPERATORS)
    for name, operator in OPERATORS.items():
        target = operator.target if isinstance(operator.target, str) else operator.target.__name__
        assert rows[name] == target, name


def test_the_routing_rule_names_every_triton_path():
    rule = _section().split("**The routing rule**", 1)[1]
    assert all(f"`{path.name}`" in rule for path in TRITON_PATHS)


@pytest.mark.parametrize("form", ["chunk.py", "recurrent.py", "naive.py", "_prepare.py", "_layout.py", "_validate.py"])
def test_the_pytorch_forms_import_nothing_of_triton_or_above(form):
    imported = _imports(ROOT / "kdalib" / "ops" / form)
    above = ("triton", "kdalib.ops.triton", "kdalib.ops.router", "kdalib.ops.registry", "kdalib.ops.dispatch")
    assert not sorted(name for name in imported if name.startswith(above) or name == "kdalib.ops")


def test_the_triton_package_never_imports_the_router_or_the_table():
    for path in sorted((ROOT / "kdalib" / "ops" / "triton").glob("*.py")):
        imported = _imports(path)
        above = ("kdalib.ops.router", "kdalib.ops.registry", "kdalib.ops.dispatch")
        assert not sorted(name for name in imported if name.startswith(above) or name == "kdalib.ops"), path.name

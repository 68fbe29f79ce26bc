"""kdalib.sources' modules import each other without a cycle (counting imports inside functions)."""

from __future__ import annotations

import ast
from pathlib import Path

import kdalib.sources

PACKAGE = Path(kdalib.sources.__file__).parent


def _imports(path: Path) -> set[str]:
    """The kdalib.sources modules that ``path`` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module == "kdalib.sources":
            found.update(alias.name for alias in node.names if (PACKAGE / f"{alias.name}.py").is_file())
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("kdalib.sources."):
            found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[2] for a in node.names if a.name.startswith("kdalib.sources."))
    return found


def test_the_module_graph_has_no_cycle():
    graph = {path.stem: _imports(path) for path in PACKAGE.glob("*.py") if path.stem != "__init__"}
    assert {"loader", "schema", "pages", "rules", "figures"} <= graph.keys()
    done: set[str] = set()

    def visit(module: str, trail: tuple[str, ...]) -> None:
        assert module not in trail, "import cycle: " + " -> ".join((*trail, module))
        if module in done:
            return
        for imported in graph.get(module, ()):
            visit(imported, (*trail, module))
        done.add(module)

    for module in sorted(graph):
        visit(module, ())


def test_pages_are_read_only_through_the_pages_module():
    """The book's folder layout is known in one place."""
    for path in PACKAGE.glob("*.py"):
        if path.stem != "pages":
            text = path.read_text(encoding="utf-8")
            assert 'rglob("*.md")' not in text and "rglob(pattern)" not in text, path.name

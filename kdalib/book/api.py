"""The API reference: kdalib's docstrings through Sphinx autodoc and napoleon, strict.

The book's API pages (``api/``) use ``automodule``; this module makes the strict (nitpicky)
build read kdalib's docstrings as they are written:

* A property's or attribute's docstring is a sentence ("N: packed sequences, or the B rows"),
  not napoleon's ``type: description`` form: napoleon would take the words before the first
  colon for a type, so these docstrings are kept as written (the type comes from the annotation).
* A cross-reference that Sphinx cannot resolve is resolved here when it names a real object:
  to the page documenting it when the object is documented under another (public) name
  (``kdalib.ops.registry.OPERATORS`` is ``kdalib.ops.OPERATORS``), else as plain code when it
  is importable but has no page (torch's classes, kdalib's internal helpers: the book has no
  network for intersphinx). A reference to nothing importable stays a warning, so the strict
  build still fails on a misspelt name.
"""

from __future__ import annotations

import importlib
import re

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.nodes import make_refnode

#: ``pending_xref`` types of the Python domain that name an object.
PY_ROLES = {"class", "func", "meth", "data", "attr", "obj", "exc", "mod", "const"}
_DOCSTRING_OF = re.compile(r"docstring of ([\w.]+)")


ATTRIBUTES = ("attribute", "property", "data")


def _keep_attribute_docstring(app, what, name, obj, options, lines: list[str]) -> None:
    if what in ATTRIBUTES:
        app.env.temp_data.setdefault("kdalib_api_as_written", {})[name] = list(lines)


def _restore_attribute_docstring(app, what, name, obj, options, lines: list[str]) -> None:
    written = app.env.temp_data.get("kdalib_api_as_written", {}).pop(name, None)
    if what in ATTRIBUTES and written is not None:
        lines[:] = written


def resolve_object(target: str):
    """The object a dotted name imports to (a module, or an attribute of one), or None."""
    parts = target.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            value = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        except Exception:  # importing a module may fail for reasons of its own: not a reference
            return None
        for attribute in parts[cut:]:
            if not hasattr(value, attribute):
                return None
            value = getattr(value, attribute)
        return value
    return None


def candidates(target: str, node: nodes.Element) -> list[str]:
    """Full names ``target`` may mean where it is written: as given, then relative to the
    current module and class, then relative to the module whose docstring holds it."""
    names = [target.lstrip("~.")]
    contexts = [node.get("py:module"), ".".join(filter(None, (node.get("py:module"), node.get("py:class"))))]
    found = _DOCSTRING_OF.search(str(node.source or ""))
    if found:
        parts = found.group(1).split(".")
        contexts += [".".join(parts[:cut]) for cut in range(len(parts), 0, -1)]
    names += [f"{context}.{names[0]}" for context in contexts if context]
    return list(dict.fromkeys(names))


def _documented(env) -> dict[int, str]:
    """id(object) -> the full name it is documented under, for every Python object of the book."""
    cache = getattr(env, "_kdalib_api_documented", None)
    objects = env.get_domain("py").objects
    if cache is None or cache[0] != len(objects):
        by_id = {}
        for name in objects:
            value = resolve_object(name)
            if value is not None:
                by_id.setdefault(id(value), name)
        cache = (len(objects), by_id)
        env._kdalib_api_documented = cache
    return cache[1]


def _resolve_missing(app: Sphinx, env, node: nodes.Element, contnode: nodes.Element):
    if node.get("refdomain") != "py" or node.get("reftype") not in PY_ROLES:
        return None
    for name in candidates(node["reftarget"], node):
        value = resolve_object(name)
        if value is None:
            continue
        documented = _documented(env).get(id(value))
        if documented is not None and not isinstance(value, (int, float, str, bool, type(None))):
            entry = env.get_domain("py").objects[documented]
            return make_refnode(app.builder, node["refdoc"], entry.docname, entry.node_id, contnode, documented)
        return contnode  # a real object without a page: shown as code, not a broken link
    return None


def setup(app: Sphinx) -> None:
    app.setup_extension("sphinx.ext.autodoc")
    app.setup_extension("sphinx.ext.napoleon")
    # around napoleon's own listener (priority 500)
    app.connect("autodoc-process-docstring", _keep_attribute_docstring, priority=400)
    app.connect("autodoc-process-docstring", _restore_attribute_docstring, priority=600)
    app.connect("missing-reference", _resolve_missing)

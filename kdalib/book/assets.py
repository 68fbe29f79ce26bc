"""What every HTML page loads: MathJax from this build (not a CDN), each script once, a favicon.

MathJax: when the ``mathjax`` package (PyPI ``django-static-mathjax``, MathJax 3) is
installed and ``mathjax_path`` is still Sphinx's CDN default, the build uses the copy in
``_static/mathjax/``: the SVG output (it needs no web fonts, which browsers refuse to load
from ``file://`` pages) and the TeX extensions it may load on demand, copied once the
build has finished. A book built here then shows its equations offline, also when opened
straight from disk.

Scripts: several extensions (sphinx-thebe, sphinx-togglebutton) register their inline
setup script once per environment read, so a page could declare ``THEBE_JS_URL`` twice,
a console ``SyntaxError``. Each page keeps the first of identical scripts. A favicon and
the theme's first-visit colour mode avoid two more console errors.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.ext.mathjax import MATHJAX_URL
from sphinx.util import logging

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
MATHJAX_DIR = "mathjax"  # under _static/
MATHJAX_ENTRY = "tex-svg.js"
#: What the SVG build of MathJax may load besides its entry script.
MATHJAX_PARTS = ("input/tex/extensions", "ui", "a11y")


def bundled_mathjax() -> Path | None:
    """The installed MathJax 3 ``es5`` folder, or None."""
    try:
        import mathjax  # django-static-mathjax: static files only, no Django needed
    except ImportError:
        return None
    es5 = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    return es5 if (es5 / MATHJAX_ENTRY).is_file() else None


def _use_bundled_mathjax(app: Sphinx, config) -> None:
    if config.mathjax_path != MATHJAX_URL:
        return  # the book chose its own MathJax
    if bundled_mathjax() is None:
        logger.warning(
            "kdalib: MathJax is not installed (pip install django-static-mathjax); "
            "equations load from a CDN and need a network connection",
            type="kdalib",
            subtype="mathjax",
        )
        return
    config.mathjax_path = f"{MATHJAX_DIR}/{MATHJAX_ENTRY}"


def _copy_mathjax(app: Sphinx, exception: Exception | None) -> None:
    es5 = bundled_mathjax()
    if exception is not None or es5 is None or app.builder.format != "html":
        return
    if app.config.mathjax_path != f"{MATHJAX_DIR}/{MATHJAX_ENTRY}":
        return
    target = Path(app.outdir) / "_static" / MATHJAX_DIR
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(es5 / MATHJAX_ENTRY, target / MATHJAX_ENTRY)
    for part in MATHJAX_PARTS:
        shutil.copytree(es5 / part, target / part, dirs_exist_ok=True)


def _once(files: list) -> list:
    seen, kept = set(), []
    for item in files:
        attributes = getattr(item, "attributes", {})
        key = (str(getattr(item, "filename", item) or ""), tuple(sorted((k, str(v)) for k, v in attributes.items())))
        if key not in seen:
            seen.add(key)
            kept.append(item)
    return kept


def _dedupe_page_assets(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    for name in ("script_files", "css_files"):
        if isinstance(context.get(name), list):
            # in place: the list is the builder's own, to which later listeners (MathJax) still add
            context[name][:] = _once(context[name])


def _add_favicon(app: Sphinx, config) -> None:
    """The page's icon, and ``favicon.ico`` at the site's root, which browsers also ask for."""
    if not config.html_favicon:
        config.html_favicon = str(STATIC_DIR / "favicon.svg")
        config.html_extra_path = [*config.html_extra_path, str(STATIC_DIR / "favicon.ico")]


def _first_visit_colour_mode(app: Sphinx, config) -> None:
    """pydata-sphinx-theme reads the colour mode from ``html_context``; left empty, a reader's
    first page logs "Got invalid theme mode" before the theme falls back to ``auto``."""
    config.html_context.setdefault("default_mode", "auto")


def setup(app: Sphinx) -> None:
    app.connect("config-inited", _use_bundled_mathjax)
    app.connect("config-inited", _add_favicon)
    app.connect("config-inited", _first_visit_colour_mode)
    app.connect("build-finished", _copy_mathjax)
    # early: a later listener may return a template name, which ends the event (emit_firstresult)
    app.connect("html-page-context", _dedupe_page_assets, priority=100)

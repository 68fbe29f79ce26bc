"""What every HTML page loads: MathJax from this build (not a CDN) and only on pages with math,
Font Awesome cut to the icons the book shows, each script once, a favicon.

MathJax: when the ``mathjax`` package (PyPI ``django-static-mathjax``, MathJax 3) is
installed and ``mathjax_path`` is still Sphinx's CDN default, the build uses the copy in
``_static/mathjax/``: the SVG output (it needs no web fonts, which browsers refuse to load
from ``file://`` pages) and the TeX extensions it may load on demand, copied once the
build has finished. A book built here then shows its equations offline, also when opened
straight from disk.

MathJax's entry script is 2 MB, and myst-nb asks Sphinx to load it on every page (a notebook's
outputs may hold TeX): a page whose doctree has no math node and whose raw HTML (notebook
outputs) holds no TeX delimiter does not load it.

Font Awesome: the theme loads a 1.5 MB script holding every icon to draw the few it uses
(menu, search, colour mode, GitHub). Once the build has finished, the icons the pages and
scripts name are written into one small stylesheet (each icon an SVG mask drawn in the text
colour) and every page loads that stylesheet instead of the script.

Scripts: several extensions (sphinx-thebe, sphinx-togglebutton) register their inline
setup script once per environment read, so a page could declare ``THEBE_JS_URL`` twice,
a console ``SyntaxError``. Each page keeps the first of identical scripts. A favicon and
the theme's first-visit colour mode avoid two more console errors.
"""

from __future__ import annotations

import re
import shutil
import urllib.parse
from pathlib import Path

from docutils import nodes
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


#: TeX in a notebook's raw HTML output that MathJax would typeset.
TEX_DELIMITERS = re.compile(r"\\\(|\\\[|\$\$|\\begin\{")


def page_has_math(doctree) -> bool:
    """Whether a page shows math: a math node, or TeX delimiters in raw HTML (notebook outputs)."""
    if doctree is None:
        return False
    if next(doctree.findall(lambda n: isinstance(n, (nodes.math, nodes.math_block))), None) is not None:
        return True
    return any(TEX_DELIMITERS.search(raw.astext()) for raw in doctree.findall(nodes.raw))


def _is_mathjax(script, mathjax_path: str) -> bool:
    name = str(getattr(script, "filename", script) or "")
    body = str(getattr(script, "attributes", {}).get("body", ""))
    # Sphinx files a local script under _static/ (``_static/mathjax/tex-svg.js``)
    return name in (mathjax_path, f"_static/{mathjax_path}") or body.startswith(
        ("window.MathJax", "MathJax.Hub.Config")
    )


def _mathjax_only_with_math(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    scripts = context.get("script_files")
    if not isinstance(scripts, list) or page_has_math(doctree):
        return
    scripts[:] = [s for s in scripts if not _is_mathjax(s, app.config.mathjax_path)]


# --------------------------------------------------------------------------- Font Awesome

FONTAWESOME_SCRIPT = re.compile(
    r'\s*<script[^>]*src="(?P<prefix>[^"]*?)_static/scripts/fontawesome\.js[^"]*"[^>]*></script>'
)
ICONS_CSS = "kdalib-icons.css"
FAMILY_CLASSES = {"brands": ("fa-brands", "fab"), "regular": ("fa-regular", "far"), "solid": ("fa-solid", "fas")}
#: Class names of Font Awesome that are not icons.
MODIFIERS = {
    "fa-solid", "fa-brands", "fa-regular", "fa-lg", "fa-sm", "fa-xs", "fa-fw", "fa-2x", "fa-3x", "fa-spin",
    "fa-pulse", "fa-inverse", "fa-border", "fa-stack", "fa-ul", "fa-li",
}  # fmt: skip
_ICON = re.compile(r'(?<![\w-])"?([a-z0-9][a-z0-9-]*)"?:\[(\d+),(\d+),\[([^\]]*)\],"[0-9a-f]*",("[^"]*"|\[[^\]]*\])\]')
_FAMILY_CALL = re.compile(r'\bd\("(fab|far|fas)",')


def fontawesome_icons(script: str) -> dict[str, dict[str, tuple[int, int, str]]]:
    """The icons of Font Awesome's all-in-one script: family -> name (and alias) -> (width,
    height, SVG path). Each family's table precedes the call that registers it."""
    calls = [
        (m.start(), {"fab": "brands", "far": "regular", "fas": "solid"}[m.group(1)])
        for m in _FAMILY_CALL.finditer(script)
    ]
    icons: dict[str, dict[str, tuple[int, int, str]]] = {family: {} for family in FAMILY_CLASSES}
    for match in _ICON.finditer(script):
        family = next((f for position, f in calls if position > match.start()), None)
        if family is None:
            continue
        name, width, height, aliases, path = match.groups()
        path = " ".join(re.findall(r'"([^"]*)"', path)) if path.startswith("[") else path.strip('"')
        for key in [name, *re.findall(r'"([a-z0-9-]+)"', aliases)]:
            icons[family].setdefault(key, (int(width), int(height), path))
    return icons


def used_icons(texts) -> set[tuple[str, str]]:
    """(family, icon name) of every Font Awesome icon that the HTML or script texts name."""
    used = set()
    for text in texts:
        for classes in re.findall(r'(?:class|className|classList)\s*[=:]\s*["\']([^"\']*fa-[^"\']*)["\']', text):
            tokens = classes.split()
            family = next((f for f, names in FAMILY_CLASSES.items() if set(names) & set(tokens)), "solid")
            used.update((family, t[3:]) for t in tokens if t.startswith("fa-") and t not in MODIFIERS)
        # a script adding one class at a time: classList.add("fa-solid", "fa-xmark")
        used.update(
            ("solid", name) for name in re.findall(r'["\']fa-([a-z0-9-]+)["\']', text) if f"fa-{name}" not in MODIFIERS
        )
    return used


def icons_stylesheet(icons: dict, used: set[tuple[str, str]]) -> str:
    """CSS drawing each used icon as an SVG mask in the text colour (``::before`` of the element)."""
    rules = [
        ".fa-lg{font-size:1.25em;line-height:.05em;vertical-align:-.075em}",
        ".fa-fw{text-align:center;width:1.25em}",
    ]
    for family, name in sorted(used):
        found = icons.get(family, {}).get(name) or icons["solid"].get(name)
        if found is None:
            continue
        width, height, path = found
        svg = f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {width} {height}'><path d='{path}'/></svg>"
        mask = 'url("data:image/svg+xml,' + urllib.parse.quote(svg, safe=" /=:',.-") + '")'
        selectors = ",".join(f".{c}.fa-{name}::before" for c in FAMILY_CLASSES[family])
        if family == "solid":
            selectors += f",.fa.fa-{name}::before,i.fa-{name}:not([class*=fa-brands]):not(.fab)::before"
        rules.append(
            f"{selectors}{{content:'';display:inline-block;width:{width / height:.4f}em;height:1em;"
            f"vertical-align:-.125em;background-color:currentColor;-webkit-mask:{mask} center/contain no-repeat;"
            f"mask:{mask} center/contain no-repeat}}"
        )
    return "\n".join(rules) + "\n"


def _replace_fontawesome(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    out = Path(app.outdir)
    script = out / "_static" / "scripts" / "fontawesome.js"
    if not script.is_file():
        return
    pages = [p for p in out.rglob("*.html") if "_static" not in p.parts]
    texts = [p.read_text(encoding="utf-8") for p in pages]
    scripts = [p.read_text(encoding="utf-8", errors="replace") for p in (out / "_static").rglob("*.js") if p != script]
    icons = fontawesome_icons(script.read_text(encoding="utf-8"))
    used = used_icons(texts + scripts)
    (out / "_static" / ICONS_CSS).write_text(icons_stylesheet(icons, used), encoding="utf-8")
    for page, text in zip(pages, texts):
        replaced = FONTAWESOME_SCRIPT.sub(
            lambda m: f'\n    <link rel="stylesheet" href="{m.group("prefix")}_static/{ICONS_CSS}" />', text, count=1
        )
        if replaced != text:
            page.write_text(replaced, encoding="utf-8")


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
    app.connect("build-finished", _replace_fontawesome)
    # after sphinx.ext.mathjax's listener (priority 500) has added its scripts
    app.connect("html-page-context", _mathjax_only_with_math, priority=900)
    # early: a later listener may return a template name, which ends the event (emit_firstresult)
    app.connect("html-page-context", _dedupe_page_assets, priority=100)

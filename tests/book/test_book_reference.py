"""The API reference (kdalib.book.api), the comparison matrix (kdalib.book.matrix) and what each
page loads (kdalib.book.assets: MathJax only with math, Font Awesome cut to the icons used)."""

from __future__ import annotations

import re
import textwrap

from docutils import nodes
from docutils.utils import new_document

from kdalib.book.api import candidates, resolve_object
from kdalib.book.assets import fontawesome_icons, icons_stylesheet, page_has_math, used_icons
from kdalib.book.matrix import mark_matrix, matrix_controls


def test_autodoc_reference_is_strict_about_names_that_do_not_exist(book):
    book.write("conf.py", book.src.joinpath("conf.py").read_text() + "nitpicky = True\n")
    book.write(
        "api.md",
        textwrap.dedent("""\
            # API

            See {py:class}`kdalib.ops.registry.Operator`, {py:func}`kdalib.ops.validate.no_such_function`
            and {py:class}`torch.Tensor`.

            ```{eval-rst}
            .. automodule:: kdalib.ops
               :members: chunk_kda, Operator, KDAShapes
            ```
            """),
    )
    book.write("index.md", book.src.joinpath("index.md").read_text().replace("status\n", "status\napi\n"))
    warnings = book.build()
    page = book.html("api")
    assert 'id="kdalib.ops.chunk_kda"' in page and "KDAShapes.group_size" in page
    # a re-export resolves to the page that documents it; an importable name without a page is code
    assert re.search(r'<a class="reference internal" href="#kdalib.ops.Operator"[^>]*>', page)
    assert "no_such_function" in warnings and "torch.Tensor" not in warnings
    # napoleon does not read a property's "G = HV / H: ..." as a type
    assert "G = HV / H" not in warnings and "reference target not found" in warnings


def test_reference_candidates_follow_the_docstring_module():
    node = nodes.Element(reftarget="triton_path")
    node.source = "/x/kdalib/ops/__init__.py:docstring of kdalib.ops.router.chunk_kda"
    node["py:module"] = "kdalib.ops"
    assert "kdalib.ops.router.triton_path" in candidates("triton_path", node)
    assert resolve_object("kdalib.ops.router.triton_path") is not None
    assert resolve_object("kdalib.ops.no_such_name") is None and resolve_object("no_such_module.x") is None


def test_a_page_without_math_does_not_count_as_math():
    document = new_document("page")
    document += nodes.paragraph("", "words and $5 of text")
    assert not page_has_math(document)
    document += nodes.raw("", "<div class='output'>\\(x^2\\)</div>", format="html")
    assert page_has_math(document)
    plain = new_document("plain")
    plain += nodes.math("", "x")
    assert page_has_math(plain) and not page_has_math(None)


SCRIPT = (
    'var b={github:[496,512,[],"f09b","M1 1L2 2"]};d("fab",b);'
    'var s={bars:[448,512,["navicon"],"f0c9","M0 96L1 1"],"magnifying-glass":[512,512,[128269,"search"],"f002","M4 4"],'
    'xmark:[384,512,[],"f00d","M5 5"],file:[384,512,[],"f15b","M6 6"]};d("fas",s);'
)


def test_font_awesome_is_cut_to_the_icons_the_pages_use():
    icons = fontawesome_icons(SCRIPT)
    assert set(icons["brands"]) == {"github"} and {"bars", "navicon", "search", "magnifying-glass"} <= set(
        icons["solid"]
    )
    used = used_icons(
        [
            '<i class="fa-brands fa-github"></i><span class="fa-solid fa-search fa-lg"></span>',
            'x.classList="fa-solid fa-xmark";y.classList.add("fa-solid","fa-bars")',
        ]
    )
    assert used == {("brands", "github"), ("solid", "search"), ("solid", "xmark"), ("solid", "bars")}
    css = icons_stylesheet(icons, used)
    assert ".fa-brands.fa-github::before" in css and ".fa-solid.fa-search::before" in css
    assert "fa-file" not in css and "fa-navicon" not in css  # unused icons and aliases stay out
    assert len(css) < 4000


def test_the_matrix_marks_only_cells_that_say_not_reported():
    document = new_document("compare")
    document += matrix_controls()
    table = nodes.table("", nodes.tgroup("", nodes.tbody()))
    row = nodes.row(
        "",
        *(
            nodes.entry("", nodes.paragraph("", text))
            for text in ("GSM8K", "not reported", "not reported (AIME 2024: 1)", "92.1")
        ),
    )
    table[0][0] += row
    document += table
    assert mark_matrix(document) == 1
    assert "kdalib-matrix" in table["classes"]
    cells = list(row.findall(nodes.entry))
    assert cells[1]["classes"] == ["kdalib-absent-cell"] and isinstance(cells[1][0][0], nodes.raw)
    assert 'aria-label="not reported"' in cells[1][0][0].astext()
    assert [c.astext() for c in cells[2:]] == ["not reported (AIME 2024: 1)", "92.1"]
    assert mark_matrix(new_document("other")) == 0


def test_mathjax_loads_only_on_pages_with_math(book):
    conf = book.src.joinpath("conf.py").read_text()
    # as myst-nb does: ask Sphinx for MathJax on every page
    book.write("conf.py", conf + "def setup(app):\n    app.set_html_assets_policy('always')\n")
    book.write("math.md", "# Math\n\nAn equation: {math}`x^2`.\n")
    book.write("index.md", book.src.joinpath("index.md").read_text().replace("status\n", "status\nmath\n"))
    book.build()
    assert "mathjax" in book.html("math").lower() and "window.MathJax" not in book.html("notes/sources")
    assert not re.search(r"<script[^>]*mathjax", book.html("notes/sources"), re.IGNORECASE)

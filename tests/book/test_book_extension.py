"""kdalib.book in a real Sphinx build: role, generated pages, warnings, and no torch import."""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys

import pytest
from sphinx.errors import SphinxWarning


@pytest.fixture
def built(book):
    warnings = book.build(warningiserror=True)
    return book, warnings


def test_claim_role_renders_display_linked_to_the_claims_row(built):
    book, warnings = built
    assert warnings == ""
    page = html.unescape(book.html("index"))
    assert 'href="notes/claims.html#claim-m.params.total"' in page
    assert ">1T</a>" in page and ">128K</a>" in page
    assert "kdalib-claim kdalib-status-verified" in page
    anchor = re.search(r'<a class="kdalib-claim[^>]*>', page).group(0)
    assert 'data-kdalib-claim="m.params.total"' in anchor and "title=" not in anchor
    assert '<script defer="defer" src="_static/kdalib.js' in page


def _popover_data(page: str) -> dict:
    found = re.search(r'<script type="application/json" id="kdalib-claims">(.*?)</script>', page, re.S)
    return json.loads(found.group(1))


def test_popover_data_is_plain_text_for_the_figures_on_the_page(built):
    book, _ = built
    data = _popover_data(book.html("index"))
    assert set(data) == {"m.params.total", "m.context"}  # only this page's figures
    total = data["m.params.total"]
    assert total["source"] == "Model M card (Example Lab)" and total["status"] == "verified"
    assert total["quote"] == "Total Parameters · 1T"  # the card's markup (** and |) is not shown
    assert total["where"] == "snapshot line 3" and total["value"] == "1T"
    assert data["m.context"]["setting"] == "setting: long context; tools: no"
    assert "kdalib-claims" not in book.html("status")  # no figures, no data


def test_benchmark_settings_appear_in_the_dashboard(built):
    book, _ = built
    assert "setting: long context; tools: no" in html.unescape(book.html("notes/claims"))


def test_claims_dashboard(built):
    book, _ = built
    page = html.unescape(book.html("notes/claims"))
    assert 'id="claim-m.params.total"' in page and 'id="claim-seed.params"' in page
    assert '<details class="kdalib-subject" id="subject-model-m"><summary>Model M (4 claims)</summary>' in page
    card = page.split('id="claim-m.params.total"', 1)[1].split('id="claim-', 1)[0]
    assert "“Total Parameters · 1T”" in card and "<table" not in page
    assert "kdalib-badge kdalib-badge-verified" in page and "kdalib-badge kdalib-badge-refuted" in page
    conflicts = page.split("Conflicting claims", 1)[1].split("Refuted claims", 1)[0]
    assert ">1T</a>" in conflicts and ">1.04T</a>" in conflicts
    refuted = page.split("Refuted claims and their evidence", 1)[1]
    assert ">2T</a>" in refuted and ">1T</a>" in refuted and "the card says 1T" in refuted
    assert "sources.html#source-card" in page
    assert "(snapshot line 3)" in page


def test_source_checklist(built):
    book, _ = built
    page = html.unescape(book.html("notes/sources"))
    assert 'id="source-card"' in page and 'href="https://example.org/m"' in page
    assert "kdalib-badge-link-ok" in page and "card.md" in page
    card_row = page.split('id="source-card"', 1)[1].split("</tr>", 1)[0]
    assert "2/2 (100%) verified" in card_row and "Example Lab · model_card" in card_row
    seed_row = page.split('id="source-seed"', 1)[1].split("</tr>", 1)[0]
    assert "0/1 (0%) verified" in seed_row


def test_status_page_and_stylesheet(built):
    book, _ = built
    page = html.unescape(book.html("status"))
    assert "3.11.test" in page and "not installed" in page
    assert "kdalib verify found nothing to fix." in page
    assert "Every snapshot was found" in page
    assert (book.root / "build" / "html" / "_static" / "kdalib.css").exists()
    assert "_static/kdalib.css" in book.html("index")


def test_unknown_claim_id_fails_the_strict_build_with_file_and_line(book):
    book.write("index.md", "# Home\n\nText\n\nIt has {claim}`m.nope`.\n\n```{toctree}\nnotes/claims\n```\n")
    with pytest.raises(SphinxWarning) as info:
        book.build(warningiserror=True)
    message = str(info.value)
    assert "index.md:5" in message and "unknown claim id in {claim}`m.nope`" in message


def test_verify_errors_become_warnings_at_the_yaml_line(book):
    broken = (book.src / "sources.yaml").read_text().replace('"1.04T total parameters"', '"1.05T total parameters"')
    book.write("sources.yaml", broken)
    line = broken.splitlines().index('    quote: "1.05T total parameters"') + 1
    warnings = book.build()
    assert f"sources.yaml:{line}" in warnings and "[quote-not-found] m.params.total.report" in warnings
    assert "kdalib sources quote report" in warnings
    status = html.unescape(book.html("status"))  # the Build-status page lists the same finding
    assert f"sources.yaml:{line}</span>" in status and "m.params.total.report" in status


def test_missing_snapshots_do_not_warn_but_are_listed(book, monkeypatch, tmp_path):
    empty = tmp_path / "no-snapshots"
    empty.mkdir()
    monkeypatch.setenv("KDALIB_SNAPSHOTS", str(empty))
    assert book.build(warningiserror=True) == ""
    page = html.unescape(book.html("status"))
    assert "Snapshots not found in this build" in page and "report" in page


def test_the_extension_and_verify_do_not_import_torch():
    code = "import sys, kdalib.book, kdalib.sources.commands, kdalib.cli; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_mathjax_comes_from_the_build_not_a_cdn(book):
    book.write("index.md", (book.src / "index.md").read_text() + "\nAn equation: {math}`a^2 + b^2 = c^2`.\n")
    assert book.build(warningiserror=True) == ""
    page = book.html("index")
    assert "cdn.jsdelivr" not in page and "_static/mathjax/tex-svg.js" in page
    static = book.root / "build" / "html" / "_static" / "mathjax"
    assert (static / "tex-svg.js").stat().st_size > 1_000_000
    assert (static / "input" / "tex" / "extensions" / "boldsymbol.js").is_file()


def test_each_inline_script_and_the_favicon_appear_once(book):
    book.write(
        "twice.py",
        "def setup(app):\n    app.add_js_file(None, body='const ONCE = 1;')\n"
        "    app.add_js_file(None, body='const ONCE = 1;')\n",
    )
    conf = (book.src / "conf.py").read_text()
    book.write(
        "conf.py",
        "import sys, os\nsys.path.insert(0, os.path.dirname(__file__))\n"
        + conf.replace('"kdalib.book"]', '"kdalib.book", "twice"]'),
    )
    book.build(warningiserror=True)
    page = book.html("index")
    assert page.count("const ONCE = 1;") == 1
    assert 'rel="icon" href="_static/favicon.svg"' in page
    assert (book.root / "build" / "html" / "_static" / "favicon.svg").is_file()
    assert (book.root / "build" / "html" / "favicon.ico").read_bytes()[:4] == b"\x00\x00\x01\x00"  # an ICO


def test_smart_quotes_never_change_a_quote(book):
    book.write(
        "sources.yaml",
        (book.src / "sources.yaml").read_text()
        + """
  - id: m.speed
    subject: Model M
    property: "decoding speed-up"
    value: 3
    unit: x
    display: "3x"
    source: report
    quote: "Model M's \\"fast\\" mode -- about 3x"
    status: unverified
""",
    )
    assert book.build(warningiserror=True) == ""
    card = book.html("notes/claims").split('id="claim-m.speed"', 1)[1].split("</div>", 1)[0]
    card = html.unescape(card)
    assert '“Model M\'s "fast" mode -- about 3x”' in card  # straight quotes and -- kept as written


SPEC_PAGE = """# Spec

```{spec-table}
:columns: Model M | Model N
total parameters | m.params.total | -
context | m.context | "see the card"
both sources | m.params.total | "report:" m.params.total.report "(more precise)"
```

The note's verdict: {verdict}`seed.params`.

```{claims-downloads}
```
"""


def _with_spec_page(book, text=SPEC_PAGE):
    book.write("notes/spec.md", text)
    book.write(
        "index.md", (book.src / "index.md").read_text().replace("notes/sources\n", "notes/sources\nnotes/spec\n")
    )


def test_spec_table_renders_claims_not_reported_and_conflicts(book):
    _with_spec_page(book)
    assert book.build(warningiserror=True) == ""
    page = html.unescape(book.html("notes/spec"))
    table = page.split('class="kdalib-table kdalib-spec', 1)[1].split("</table>", 1)[0]
    rows = table.split("<tr")[2:]
    assert ">Model M<" in page and ">Model N<" in page
    total = rows[0]
    assert 'href="claims.html#claim-m.params.total"' in total and ">1T</a>" in total
    assert "other sources:" in total and ">1.04T</a>" in total  # the conflicting claim is shown
    assert "not reported" in total
    assert ">128K</a>" in rows[1] and "see the card" in rows[1]
    both = rows[2]  # a conflict the row already shows is not repeated
    assert "other sources" not in both and "report: " in both and ">1.04T</a> (more precise)" in both
    assert "kdalib-badge-verdict-wrong" in page and ">wrong<" in page
    assert 'href="../claims.json"' in page and 'href="../claims.csv"' in page


def test_the_html_build_writes_claims_json_and_csv(built):
    book, _ = built
    import json

    out = book.root / "build" / "html"
    rows = json.loads((out / "claims.json").read_text())["claims"]
    assert [r["id"] for r in rows] == ["m.params.total", "m.params.total.report", "m.context", "seed.params"]
    assert rows[3]["verdict"] == "wrong" and rows[0]["snapshot_sha256"]
    assert (out / "claims.csv").read_text().splitlines()[0].startswith("id,subject,property,value")


@pytest.mark.parametrize(
    "cells, message",
    [
        ("total parameters | m.nope | -", "unknown claim id 'm.nope' in spec-table"),
        ("total parameters | m.params.total", "has 1 cells for 2 columns"),
    ],
)
def test_a_bad_spec_table_row_fails_the_strict_build_at_its_line(book, cells, message):
    _with_spec_page(book, f"# Spec\n\nOne.\n\nTwo.\n\n```{{spec-table}}\n:columns: Model M | Model N\n{cells}\n```\n")
    with pytest.raises(SphinxWarning) as info:
        book.build(warningiserror=True)
    assert "notes/spec.md:7" in str(info.value) and message in str(info.value)

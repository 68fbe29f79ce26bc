"""``kdalib.book``: the Sphinx extension behind the field guide's claims.

Registers the ``{claim}`` role (:mod:`kdalib.book.role`), the ``source-checklist``
(:mod:`kdalib.book.checklist`) and ``claims-dashboard`` (:mod:`kdalib.book.dashboard`)
directives, ``verify-summary`` and ``kdalib-environment`` for the Build-status page
(:mod:`kdalib.book.status`), the ``spec-table`` directive (:mod:`kdalib.book.spec_table`), the
``{verdict}`` role (:mod:`kdalib.book.verdict`), the ``claims-downloads`` directive and the
claims.json and claims.csv it links (:mod:`kdalib.book.downloads`), and the ``claims-timeline``, ``claims-progression`` and
``claims-heatmap`` pictures drawn from the claims (:mod:`kdalib.book.pictures`), all on
one base (:mod:`kdalib.book.directive`); the ``kdalib`` domain (:mod:`kdalib.book.domain`)
holds the build's state; a stylesheet and a script serve badges, figure popovers and the
claims page's filter.
The ``claims-changes`` directive renders the "What changed" page from the git history of
sources.yaml (:mod:`kdalib.book.changes`); ``tracker-status`` shows the last live check of the
sources on the Build-status page. The ``report-matrix`` directive (:mod:`kdalib.book.matrix`) makes the comparison page's
tables a matrix of what each model reports. The API reference's autodoc and napoleon are set up by
:mod:`kdalib.book.api`. Configuration (all optional): ``kdalib_sources_file`` (default
``sources.yaml``, relative to the book root), ``kdalib_claims_page`` (``notes/claims``),
``kdalib_sources_page`` (``notes/sources``), ``kdalib_tracker_record`` (``tracker/online.json``). Never imports torch except inside ``kdalib-environment`` and ``context-parallel-costs``.
"""

from __future__ import annotations

from sphinx.application import Sphinx

from kdalib import __version__
from kdalib.book import (
    api,
    assets,
    changes,
    checklist,
    computed,
    dashboard,
    domain,
    downloads,
    matrix,
    nodes,
    pictures,
    role,
    spec_table,
    status,
    verdict,
)


def _add_static_path(app: Sphinx) -> None:
    if str(assets.STATIC_DIR) not in app.config.html_static_path:
        app.config.html_static_path.append(str(assets.STATIC_DIR))


def setup(app: Sphinx) -> dict[str, object]:
    app.add_config_value("kdalib_sources_file", "sources.yaml", "env")
    app.add_config_value("kdalib_claims_page", "notes/claims", "env")
    app.add_config_value("kdalib_sources_page", "notes/sources", "env")
    app.add_config_value("kdalib_tracker_record", "tracker/online.json", "env")
    domain.setup(app)
    nodes.setup(app)
    assets.setup(app)
    api.setup(app)
    role.setup(app)
    spec_table.setup(app)
    verdict.setup(app)
    matrix.setup(app)
    downloads.setup(app)
    computed.setup(app)
    app.add_directive("source-checklist", checklist.SourceChecklist)
    app.add_directive("claims-dashboard", dashboard.ClaimsDashboard)
    app.add_directive("verify-summary", status.VerifySummary)
    app.add_directive("kdalib-environment", status.KdalibEnvironment)
    app.add_directive("tracker-status", status.TrackerStatus)
    app.add_directive("claims-changes", changes.ClaimsChanges)
    app.add_directive("claims-timeline", pictures.ClaimsTimeline)
    app.add_directive("claims-progression", pictures.ClaimsProgression)
    app.add_directive("claims-heatmap", pictures.ClaimsHeatmap)
    app.connect("builder-inited", _add_static_path)
    app.add_css_file("kdalib.css")
    app.add_js_file("kdalib.js", loading_method="defer")
    return {"version": __version__, "parallel_read_safe": True, "parallel_write_safe": True}

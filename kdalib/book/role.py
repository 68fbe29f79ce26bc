"""The ``{claim}`id``` role: a claim's display value, linked to its row on the claims page.

The role renders ``display`` exactly as sources.yaml gives it, with the status as a CSS
class. It records the page in the ``kdalib`` domain and leaves a ``kdalib:claim``
cross-reference, which the domain resolves to the claims page relative to the page the
figure is on. Each HTML page that shows figures carries their popover data (source,
status, setting, the quote as readable text, the claim's history: first recorded, last
checked, earlier values) as one JSON script element, which
``static/kdalib.js`` reads on hover, keyboard focus or tap. An unknown id is a Sphinx
warning at the page's file:line, which the strict (``-W``) build turns into a failure.
"""

from __future__ import annotations

from docutils import nodes
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.util import logging

from kdalib.book.domain import domain_of
from kdalib.book.nodes import CLAIM_ATTRIBUTE, claim_reference
from kdalib.book.render import popover_data
from kdalib.sources.escape import json_for_html
from kdalib.sources.model import Claim

logger = logging.getLogger(__name__)

#: The id of the JSON script element holding a page's popover data.
POPOVER_DATA_ID = "kdalib-claims"


def claim_role(name, rawtext, text, lineno, inliner, options=None, content=None):
    """Docutils role function; see the module docstring."""
    env = inliner.document.settings.env
    domain = domain_of(env)
    domain.note_page(env.docname, "claim")
    claim_id = text.strip()
    data = domain.book
    claim = data.claim(claim_id)
    if claim is None:
        reason = data.problem or f"no claim {claim_id!r} in {env.config.kdalib_sources_file}"
        logger.warning(
            f"unknown claim id in {{claim}}`{claim_id}`: {reason}",
            location=(env.docname, lineno),
            type="kdalib",
            subtype="claim",
        )
        return [nodes.inline(rawtext, claim_id, classes=["kdalib-claim", "kdalib-claim-unknown"])], []
    return [figure_xref(claim, rawtext)], []


def figure_xref(claim: Claim, rawtext: str = "") -> pending_xref:
    """A claim's figure as the {claim} role renders it: its display value, to be linked to the
    claim by the ``kdalib`` domain (and given its popover) when the page is resolved."""
    figure = nodes.inline(rawtext, claim.display, classes=["kdalib-claim", f"kdalib-status-{claim.status}"])
    figure[CLAIM_ATTRIBUTE] = claim.id
    return pending_xref(
        rawtext, figure, refdomain="kdalib", reftype="claim", reftarget=claim.id, refexplicit=True, refwarn=True
    )


def popover_script(app: Sphinx, doctree: nodes.document) -> str:
    """The page's ``<script type="application/json">`` with the popover data of its figures ('' if none)."""
    book = domain_of(app.env).book
    shown: dict[str, dict[str, str]] = {}
    for ref in doctree.findall(claim_reference):
        claim = book.claim(ref[CLAIM_ATTRIBUTE])
        if claim is not None and claim.id not in shown:
            match = book.report.matches.get(claim.id) if book.report else None
            shown[claim.id] = popover_data(
                claim, book.source(claim.source), match.line if match else None, book.history.of(claim.id)
            )
    if not shown:
        return ""
    return f'<script type="application/json" id="{POPOVER_DATA_ID}">{json_for_html(shown)}</script>\n'


def _on_html_page_context(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    if doctree is not None and "body" in context:
        context["body"] += popover_script(app, doctree)


def setup(app: Sphinx) -> None:
    app.add_role("claim", claim_role)
    app.connect("html-page-context", _on_html_page_context)

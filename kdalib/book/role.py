"""The ``{claim}`id``` role: a claim's display value, linked to its row on the claims page.

The role renders ``display`` exactly as sources.yaml gives it, with the status as a CSS
class and source, status and quote in the hover title. The link target is filled in
once the page is resolved (``doctree-resolved``), when the relative URI of the claims
page from the current page is known. An unknown id is a Sphinx warning at the page's
file:line, which the strict (``-W``) build turns into a failure.
"""

from __future__ import annotations

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util import logging

from kdalib.book.data import book_data, remember_page
from kdalib.book.render import claim_anchor, hover_text

logger = logging.getLogger(__name__)

CLAIM_ATTRIBUTE = "kdalib_claim"


def claim_role(name, rawtext, text, lineno, inliner, options=None, content=None):
    """Docutils role function; see the module docstring."""
    env = inliner.document.settings.env
    remember_page(env, "claim")
    claim_id = text.strip()
    data = book_data(env.app)
    claim = data.claim(claim_id)
    if claim is None:
        reason = data.problem or f"no claim {claim_id!r} in {env.config.kdalib_sources_file}"
        logger.warning(f"unknown claim id in {{claim}}`{claim_id}`: {reason}",
                       location=(env.docname, lineno), type="kdalib", subtype="claim")
        return [nodes.inline(rawtext, claim_id, classes=["kdalib-claim", "kdalib-claim-unknown"])], []
    ref = nodes.reference(rawtext, claim.display, internal=True, refuri="",
                          classes=["kdalib-claim", f"kdalib-status-{claim.status}"])
    ref["reftitle"] = hover_text(claim, data.source(claim.source))
    ref[CLAIM_ATTRIBUTE] = claim.id
    return [ref], []


def _resolve_claim_links(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    """Point every claim reference at the claims page, relative to the page it is on."""
    claims_page = app.config.kdalib_claims_page
    has_page = claims_page in app.env.all_docs
    for ref in list(doctree.findall(nodes.reference)):
        claim_id = ref.get(CLAIM_ATTRIBUTE)
        if claim_id is None:
            continue
        if not has_page:
            ref.replace_self(nodes.inline(ref.rawsource, "", *ref.children, classes=ref["classes"]))
            continue
        page_uri = "" if docname == claims_page else app.builder.get_relative_uri(docname, claims_page)
        ref["refuri"] = f"{page_uri}#{claim_anchor(claim_id)}"


def setup(app: Sphinx) -> None:
    app.add_role("claim", claim_role)
    app.connect("doctree-resolved", _resolve_claim_links)

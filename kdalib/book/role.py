"""The ``{claim}`id``` role: a claim's display value, linked to its row on the claims page.

The role renders ``display`` exactly as sources.yaml gives it, with the status as a CSS
class and source, status and quote in the hover title. It records the page in the
``kdalib`` domain and leaves a ``kdalib:claim`` cross-reference, which the domain
resolves to the claims page relative to the page the figure is on. An unknown id is a
Sphinx warning at the page's file:line, which the strict (``-W``) build turns into a
failure.
"""

from __future__ import annotations

from docutils import nodes
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.util import logging

from kdalib.book.domain import domain_of
from kdalib.book.render import hover_text

logger = logging.getLogger(__name__)

CLAIM_ATTRIBUTE = "kdalib_claim"


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
        logger.warning(f"unknown claim id in {{claim}}`{claim_id}`: {reason}",
                       location=(env.docname, lineno), type="kdalib", subtype="claim")
        return [nodes.inline(rawtext, claim_id, classes=["kdalib-claim", "kdalib-claim-unknown"])], []
    figure = nodes.inline(rawtext, claim.display, classes=["kdalib-claim", f"kdalib-status-{claim.status}"])
    figure["reftitle"] = hover_text(claim, data.source(claim.source))
    figure[CLAIM_ATTRIBUTE] = claim.id
    xref = pending_xref(rawtext, figure, refdomain="kdalib", reftype="claim", reftarget=claim.id,
                        refexplicit=True, refwarn=True)
    return [xref], []


def setup(app: Sphinx) -> None:
    app.add_role("claim", claim_role)

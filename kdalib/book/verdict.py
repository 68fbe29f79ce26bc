"""The ``{verdict}`seed.id``` role: the verdict of a claim of the starting note, as a badge.

A claim of the starting note carries a *verdict* (confirmed, misleading, overstated, wrong,
unverifiable) beside its status; the role prints it where the corrections page discusses the
statement, and the claims dashboard uses :func:`verdict_badge` for the same badge. An unknown
id, or a claim without a verdict, is a warning at the page's line, so the strict build fails.
"""

from __future__ import annotations

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util import logging

from kdalib.book.domain import domain_of
from kdalib.book.render import badge
from kdalib.sources.model import Claim

logger = logging.getLogger(__name__)


def verdict_badge(claim: Claim) -> nodes.inline:
    return badge(claim.verdict or "", f"verdict-{claim.verdict}")


def verdict_role(name, rawtext, text, lineno, inliner, options=None, content=None):
    """``{verdict}`seed.id```: the verdict badge of a starting-note claim."""
    env = inliner.document.settings.env
    domain = domain_of(env)
    domain.note_page(env.docname, "claim")
    claim = domain.book.claim(text.strip())
    if claim is None or claim.verdict is None:
        what = "no claim" if claim is None else "no verdict on claim"
        logger.warning(
            f"{{verdict}}`{text.strip()}`: {what} {text.strip()!r} in {env.config.kdalib_sources_file}",
            location=(env.docname, lineno),
            type="kdalib",
            subtype="verdict",
        )
        return [nodes.inline(rawtext, text, classes=["kdalib-claim-unknown"])], []
    return [verdict_badge(claim)], []


def setup(app: Sphinx) -> None:
    app.add_role("verdict", verdict_role)

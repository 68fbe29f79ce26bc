"""The extension's own doctree nodes and their HTML: a claim's figure and a collapsible group.

``claim_reference`` is a link that carries its claim id (``data-kdalib-claim``), which the
popover script (``static/kdalib.js``) reads to show the claim's source, status and quote.
``collapsible`` is an HTML ``<details>`` element with a ``<summary>`` line. Builders other
than HTML render only the children.
"""

from __future__ import annotations

from docutils import nodes
from sphinx.application import Sphinx

CLAIM_ATTRIBUTE = "kdalib_claim"


class claim_reference(nodes.reference):  # noqa: N801 (docutils names nodes in lower case)
    """A figure linked to its claim; ``node[CLAIM_ATTRIBUTE]`` is the claim id."""


class collapsible(nodes.General, nodes.Element):  # noqa: N801
    """``<details>``; ``node["summary"]`` is the always-visible line, ``node["open"]`` its state."""


def visit_claim_reference_html(self, node: claim_reference) -> None:
    atts = {"href": node["refuri"], "class": "reference internal", "data-kdalib-claim": node[CLAIM_ATTRIBUTE]}
    self.body.append(self.starttag(node, "a", "", **atts))


def depart_claim_reference_html(self, node: claim_reference) -> None:
    self.body.append("</a>")


def visit_collapsible_html(self, node: collapsible) -> None:
    atts = {"open": "open"} if node.get("open") else {}
    self.body.append(self.starttag(node, "details", "", **atts))
    self.body.append(f"<summary>{self.encode(node['summary'])}</summary>\n")


def depart_collapsible_html(self, node: collapsible) -> None:
    self.body.append("</details>\n")


def _children_only(self, node: nodes.Element) -> None:
    pass


def setup(app: Sphinx) -> None:
    others = {name: (_children_only, _children_only) for name in ("latex", "text", "man", "texinfo")}
    app.add_node(claim_reference, html=(visit_claim_reference_html, depart_claim_reference_html), **others)
    app.add_node(collapsible, html=(visit_collapsible_html, depart_collapsible_html), **others)

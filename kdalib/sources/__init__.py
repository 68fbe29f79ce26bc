"""The source checklist: load sources.yaml, verify quotes against snapshots, check links.

Torch-free by design: ``kdalib verify`` and the book extension import only this package.
The main entry points are :func:`load_document`, :func:`run_verify` and :func:`load_claims`
(the claims as a table, ``.to_frame()`` for pandas); the CLI handlers
live in :mod:`kdalib.sources.commands`.
"""

from __future__ import annotations

from kdalib.sources.export import ClaimTable, load_claims
from kdalib.sources.loader import LoadError, load_document, load_text
from kdalib.sources.model import Claim, Document, Finding, Source
from kdalib.sources.quotes import display_in_quote, find_quote, normalize
from kdalib.sources.verify import Report, run_verify

__all__ = [
    "Claim",
    "ClaimTable",
    "Document",
    "Finding",
    "LoadError",
    "Report",
    "Source",
    "display_in_quote",
    "find_quote",
    "load_claims",
    "load_document",
    "load_text",
    "normalize",
    "run_verify",
]

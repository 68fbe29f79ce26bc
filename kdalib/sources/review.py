"""``kdalib verify --report md``: the verify report as Markdown, for a pull request's summary.

With ``--changed-since REF`` the report covers the claims that the change adds or edits
(compared with the sources.yaml of the git ref ``REF``, and including the claims of a
source whose entry changed); otherwise every claim that has a finding. Each row gives the
claim's status, what verify found and the fix; findings not tied to a claim follow. Claims with
errors come first; past :data:`MAX_ROWS` rows the report still names every failing claim. All
text from sources.yaml or a finding goes through :func:`kdalib.sources.escape.markdown_cell`.
"""

from __future__ import annotations

import dataclasses
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from kdalib.sources.escape import markdown_cell
from kdalib.sources.loader import LoadError, load_text
from kdalib.sources.model import Claim, Document, Finding, Source, file_location
from kdalib.sources.verify import Report

#: Findings listed at most, per table, so a summary stays readable.
MAX_ROWS = 200
_POSITIONAL = ("line", "lines")


@dataclass
class Scope:
    """Which claims a change touches, compared with ``ref``."""

    ref: str
    changes: dict[str, str] = field(default_factory=dict)  # claim id -> "added" / "changed: keys"
    removed: list[str] = field(default_factory=list)


def _fields(entry: Claim | Source) -> dict:
    return {k: v for k, v in dataclasses.asdict(entry).items() if k not in _POSITIONAL}


def base_document(sources_path: str | Path, ref: str) -> Document | None:
    """The checklist as it was at git ref ``ref`` (None when the file did not exist there).

    Raises:
        LoadError: ``ref`` is unknown to git, git is missing, or that version cannot be read.
    """
    path = Path(sources_path).resolve()
    try:
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], cwd=path.parent, capture_output=True, text=True, check=True
        ).stdout.strip()
        subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
            cwd=top,
            capture_output=True,
            text=True,
            check=True,
        )
    except FileNotFoundError:
        raise LoadError(sources_path, 0, "--changed-since needs git, which is not installed") from None
    except subprocess.CalledProcessError:
        raise LoadError(
            sources_path,
            0,
            f"--changed-since {ref!r}: not a commit of the repository holding "
            f"{sources_path} (fetch it first, e.g. `git fetch origin main`)",
        ) from None
    relative = path.relative_to(Path(top).resolve()).as_posix()
    shown = subprocess.run(["git", "show", f"{ref}:{relative}"], cwd=top, capture_output=True, text=True)
    if shown.returncode != 0:
        return None
    return load_text(shown.stdout, f"{ref}:{relative}")


def changes_since(doc: Document, base: Document | None, ref: str) -> Scope:
    """The claims of ``doc`` that are new or differ from ``base``, and the ids that were removed."""
    scope = Scope(ref)
    old_claims = base.claims if base else {}
    old_sources = base.sources if base else {}
    changed_sources = {
        sid
        for sid, source in doc.sources.items()
        if sid not in old_sources or _fields(source) != _fields(old_sources[sid])
    }
    for claim_id, claim in doc.claims.items():
        before = old_claims.get(claim_id)
        if before is None:
            scope.changes[claim_id] = "added"
            continue
        old, new = _fields(before), _fields(claim)
        keys = [k for k in new if new[k] != old.get(k)]
        if keys:
            scope.changes[claim_id] = "changed: " + ", ".join(keys)
        elif claim.source in changed_sources:
            scope.changes[claim_id] = f"its source {claim.source} changed"
    scope.removed = [claim_id for claim_id in old_claims if claim_id not in doc.claims]
    return scope


def _finding_cell(finding: Finding) -> str:
    """``severity [code] file:line: message``; the code is the rule's own name, the rest is escaped."""
    where = markdown_cell(file_location(finding.file, finding.line))
    return f"{finding.severity} [{finding.code}] {where}: {markdown_cell(finding.message)}"


def _claim_rows(report: Report, claim_ids: list[str], scope: Scope | None) -> list[str]:
    rows = []
    for claim_id in claim_ids[:MAX_ROWS]:
        claim = report.document.claims[claim_id]
        where = file_location(report.document.path, claim.line)
        problems = [f for f in report.findings if f.item == claim_id]
        if problems:
            finding = "<br>".join(_finding_cell(f) for f in problems)
            fix = "<br>".join(markdown_cell(f.fix) for f in problems if f.fix)
        else:
            match = report.matches.get(claim_id)
            finding = f"quote found ({match.kind}, snapshot line {match.line})" if match else "no finding"
            fix = ""
        change = f" | {markdown_cell(scope.changes[claim_id])}" if scope else ""
        rows.append(f"| `{claim_id}` ({markdown_cell(where)}){change} | {claim.status} | {finding} | {fix} |")
    hidden = claim_ids[MAX_ROWS:]
    if hidden:
        failing = {f.item for f in report.errors}
        rows.append(f"\n{len(hidden)} more claim(s) not shown; run `kdalib verify` for all.")
        named = [claim_id for claim_id in hidden if claim_id in failing]
        if named:
            rows.append(f"Failing among them ({len(named)}): " + ", ".join(f"`{c}`" for c in named))
    return rows


def render_markdown(report: Report, scope: Scope | None = None, strict: bool = False) -> str:
    """The Markdown report: verdict, the claims in scope, other errors, and the online check if run."""
    doc = report.document
    verdict = "FAILED" if report.errors else "OK"
    lines = [
        "## kdalib verify",
        "",
        f"**{verdict}**{' (strict)' if strict else ''}: {len(doc.claims)} claims, "
        f"{len(report.matches)} quotes checked, {len(report.errors)} error(s), {len(report.warnings)} warning(s).",
        "",
    ]
    if scope is not None:
        claim_ids = list(scope.changes)
        lines.append(f"### Claims added or changed since {markdown_cell(scope.ref)}: {len(claim_ids)}")
        header = "| claim | change | status | finding | fix |\n|---|---|---|---|---|"
    else:
        with_findings = {f.item for f in report.findings}
        claim_ids = [cid for cid in doc.claims if cid in with_findings]
        lines.append(f"### Claims with findings: {len(claim_ids)}")
        header = "| claim | status | finding | fix |\n|---|---|---|---|"
    lines.append("")
    failing = {f.item for f in report.errors}
    claim_ids.sort(key=lambda claim_id: claim_id not in failing)  # stable: failures first, in file order
    if claim_ids:
        lines += [header, *_claim_rows(report, claim_ids, scope)]
    else:
        lines.append("None." if scope is None else "No claim was added or changed.")
    if scope is not None and scope.removed:
        lines += ["", "Removed claims: " + ", ".join(f"`{c}`" for c in scope.removed)]
    shown = set(claim_ids)
    others = [f for f in report.errors if f.item not in shown]
    if others:
        lines += ["", f"### Other errors: {len(others)}", ""]
        lines += [
            f"- {_finding_cell(f)}" + (f" Fix: {markdown_cell(f.fix)}" if f.fix else "") for f in others[:MAX_ROWS]
        ]
    if report.tracks:
        lines += [
            "",
            "### Live sources",
            "",
            "| source | state | quotes still in the live text | quotes gone | detail |",
            "|---|---|---|---|---|",
        ]
        for track in report.tracks:
            held = f"{len(track.quotes) - len(track.quotes_gone)}/{len(track.quotes)}" if track.live else "-"
            gone = ", ".join(f"`{c}`" for c in track.quotes_gone) or "-"
            lines.append(f"| `{track.source_id}` | {track.state} | {held} | {gone} | {markdown_cell(track.detail)} |")
    return "\n".join(lines) + "\n"

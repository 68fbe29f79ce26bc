"""The checks that need more than one entry: the references between entries (a claim's
source, version, subject, relations and verdict), quotes against snapshots, conflicts,
superseded and refuted claims, reproduced claims against recorded results, and the
{claim} references used in the pages.

Each ``check_*`` function takes what it needs, returns a list of findings and has no
side effects, so the CLI, the tests and the book extension all run the same rules.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdalib.sources import snapshots as snap
from kdalib.sources.files import UnsafeFile, read_inside
from kdalib.sources.model import ERROR, WARNING, Claim, Document, Finding, Snapshot, short_repr
from kdalib.sources.pages import UnreadablePage, claim_roles, markdown_blocks, page_files
from kdalib.sources.quotes import QuoteMatch, compact, display_in_quote, normalize
from kdalib.sources.schema import SEED_VERDICTS

#: Statuses whose quote, when given, must occur in the snapshot (an unverified claim's quote
#: is a lead to follow up, not yet a checked citation).
QUOTE_CHECKED_STATUSES = ("verified", "contradicted", "superseded", "refuted", "reproduced")
#: Statuses that no longer state the current value, so they may disagree with others freely.
RETIRED_STATUSES = ("superseded", "refuted")
EVIDENCE_STATUSES = ("verified", "reproduced")
#: A notebook's recorded result is a small JSON file.
MAX_RESULT_BYTES = 4 * 1024 * 1024

# A {claim} role, or an inline code span (which may show a role as an example and is skipped):
# the leftmost match wins, so ``{claim}`x` `` is code and {claim}`x` is a role.


@dataclass
class QuoteResults:
    """What the snapshot pass learned, for the summary and the book.

    Attributes:
        states: source id → snapshot state (present / missing / sha-mismatch / unreadable).
        matches: claim id → where its quote was found.
        unchecked: claim ids whose quote could not be checked (snapshot missing, changed or unreadable).
        findings: the problems found.
    """

    states: dict[str, snap.SnapshotState] = field(default_factory=dict)
    matches: dict[str, QuoteMatch] = field(default_factory=dict)
    unchecked: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)


def check_quotes(
    doc: Document, store: snap.SnapshotStore, strict: bool, missing_fix: Callable[[str, str], str] | None = None
) -> QuoteResults:
    """Open every snapshot (sha256 checked) and look for every quote that must verify.

    ``missing_fix(source_id, file)`` words the fix of a missing snapshot (by where the text came
    from: :func:`kdalib.sources.manifest.missing_snapshot_fix`); without it the fix is generic.
    """
    out = QuoteResults()
    file = str(doc.path)
    for source in doc.sources.values():
        for snapshot in source.all_snapshots():
            state = store.open(snapshot)
            out.states[state_key(source.id, snapshot)] = state
            line = source.lines.get("snapshot" if snapshot is source.snapshot else "versions", source.line)
            if state.state == snap.MISSING:
                out.findings.append(
                    Finding(
                        ERROR if strict else WARNING,
                        "snapshot-missing",
                        file,
                        line,
                        source.id,
                        f"snapshot {snapshot.file!r} is not in {store.root}; its quotes were not checked",
                        missing_fix(source.id, snapshot.file)
                        if missing_fix
                        else f"restore it (`git checkout -- snapshots/{snapshot.file}`) or run "
                        f"`kdalib sources fetch {source.id}`, or set {snap.ENV_VAR} to the archive",
                    )
                )
            elif state.state == snap.SHA_MISMATCH:
                out.findings.append(
                    Finding(
                        ERROR,
                        "sha-mismatch",
                        file,
                        line,
                        source.id,
                        f"{state.path} has sha256 {state.actual_sha256}, not the recorded {snapshot.sha256}",
                        "restore the archived file (a changed source is kept as a new version: "
                        f"`kdalib sources fetch --new-version {source.id}`)",
                    )
                )
            elif state.state == snap.UNREADABLE:
                out.findings.append(
                    Finding(
                        ERROR, "snapshot-unreadable", file, line, source.id, f"cannot read {state.path}: {state.detail}"
                    )
                )
    for claim in doc.claims.values():
        out.findings.extend(_check_claim_quote(doc, claim, out))
    return out


def state_key(source_id: str, snapshot: Snapshot) -> str:
    """The key of a snapshot's state: the source id for its first text, ``id@DATE`` for a later version."""
    return source_id if snapshot.retrieved is None else f"{source_id}@{snapshot.label}"


def _check_claim_quote(doc: Document, claim: Claim, out: QuoteResults) -> Iterator[Finding]:
    file = str(doc.path)
    if claim.status not in QUOTE_CHECKED_STATUSES or not claim.quote:
        return
    if claim.display and display_in_quote(claim.display, claim.quote) is None:
        yield Finding(
            ERROR,
            "value-not-in-quote",
            file,
            claim.line_of("display"),
            claim.id,
            f"display {short_text(claim.display, 40)!r} does not occur in the quote {short_text(claim.quote)!r}",
            "quote the span that prints the value, or correct 'display' to the value as the source prints it",
        )
    source = doc.sources.get(claim.source)
    if source is None:
        return  # already reported as unknown-source
    if source.snapshot is None:
        yield Finding(
            ERROR,
            "no-snapshot",
            file,
            claim.line_of("source"),
            claim.id,
            f"source {source.id!r} has no snapshot, so the quote cannot be checked",
            f"add snapshot: {{file: ..., sha256: ...}} to {source.id}, or mark the claim unverified",
        )
        return
    snapshot = source.snapshot_for(claim.version)
    if snapshot is None:
        return  # already reported as unknown-version
    state = out.states.get(state_key(source.id, snapshot))
    if state is None or state.text is None:
        out.unchecked.append(claim.id)  # the snapshot's own finding says why
        return
    match = state.text.find(claim.quote)
    if match is None:
        yield Finding(
            ERROR,
            "quote-not-found",
            file,
            claim.line_of("quote"),
            claim.id,
            f"the quote {short_text(claim.quote)!r} does not occur in {snapshot.file} (even ignoring whitespace)",
            f'run `kdalib sources quote {source.id} "<a few words of it>"`'
            + (f" --version {claim.version}" if snapshot.retrieved else "")
            + " and paste the span it prints",
        )
        return
    out.matches[claim.id] = match


def short_text(text: str, limit: int = 70) -> str:
    """``text`` normalised and cut to ``limit`` characters (only the start is normalised)."""
    text = normalize(text[: limit * 4])
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---- references between entries ------------------------------------------------------


def check_references(doc: Document) -> list[Finding]:
    """Every source, version and claim a claim names exists; subjects are known; verdicts fit.

    The loader appends these findings to the document's own (:func:`kdalib.sources.loader.load_document`),
    so every command that refuses a checklist with schema errors refuses these too.
    """
    file = str(doc.path)
    findings: list[Finding] = []

    def error(claim: Claim, key: str, code: str, message: str, fix: str = "") -> None:
        findings.append(Finding(ERROR, code, file, claim.line_of(key) if key else claim.line, claim.id, message, fix))

    for claim in doc.claims.values():
        source = doc.sources.get(claim.source)
        if claim.source and source is None:
            error(
                claim,
                "source",
                "unknown-source",
                f"source {short_repr(claim.source)} is not in 'sources:'",
                "add the source first, or fix the id (see `kdalib sources add`)",
            )
        if claim.version and source is not None and source.snapshot_for(claim.version) is None:
            known = ", ".join(v.label for v in source.all_snapshots()) or "none"
            error(
                claim,
                "version",
                "unknown-version",
                f"source {source.id!r} has no archived version {claim.version!r} (it has: {known})",
                f"use one of its versions, or run `kdalib sources fetch --new-version {source.id}`",
            )
        if source is not None:
            _check_verdict(claim, source.kind, source.id, error)
        if doc.subjects and claim.subject and claim.subject not in doc.subjects:
            listed = ", ".join(short_repr(s).strip("'") for s in doc.subjects[:8])
            more = f" and {len(doc.subjects) - 8} more" if len(doc.subjects) > 8 else ""
            error(
                claim,
                "subject",
                "unknown-subject",
                f"subject {short_repr(claim.subject)} is not in the top-level 'subjects:' list",
                f"use one of: {listed}{more}",
            )
        named = [
            (key, target) for key in ("conflicts_with", "supersedes", "evidence") for target in getattr(claim, key)
        ]
        if claim.superseded_by:
            named.append(("superseded_by", claim.superseded_by))
        for key, target in named:
            resolved = doc.resolve_claim(target)
            if resolved is None:
                error(claim, key, "unknown-claim", f"{key} names {short_repr(target)}, which is not a claim id")
            elif resolved is claim:
                error(claim, key, "self-reference", f"{key} names the claim itself")
    return findings


def _check_verdict(claim: Claim, kind: str, source_id: str, error) -> None:
    """A seed claim carries a verdict, no other claim does, and 'wrong' goes with status refuted."""
    if kind == "seed" and claim.verdict is None and "verdict" not in claim.lines:
        error(
            claim,
            "",
            "seed-needs-verdict",
            f"a claim of the seed source {source_id!r} needs a 'verdict'",
            f"add 'verdict:' with one of {', '.join(SEED_VERDICTS)}",
        )
    elif kind != "seed" and claim.verdict is not None:
        error(
            claim,
            "verdict",
            "verdict-not-seed",
            f"'verdict' is only for claims of a seed source; {source_id!r} is a {kind}",
            "remove 'verdict'; the claim's status says whether its quote was found",
        )
    elif claim.verdict is not None and (claim.verdict == "wrong") != (claim.status == "refuted"):
        error(
            claim,
            "verdict",
            "verdict-status-mismatch",
            f"verdict {claim.verdict!r} with status {claim.status!r}: a 'wrong' verdict and status "
            "'refuted' go together",
            "make both say the statement is wrong, or neither",
        )


# ---- conflicts and relations -----------------------------------------------------------


def topic_key(claim: Claim) -> tuple[Any, ...]:
    """What two claims must share to be about the same figure: subject, property or benchmark setting."""
    subject = normalize(claim.subject).casefold()
    if claim.benchmark is None:
        return (subject, "property", normalize(claim.property or "").casefold())
    fields = ("name", "version", "metric", "setting", "tools", "thinking", "harness", "shots")
    return (subject, "benchmark", *(normalize(str(claim.benchmark.get(k, ""))).casefold() for k in fields))


def value_key(claim: Claim) -> tuple[Any, ...]:
    """Claims with equal keys agree: the same unit and number (or text up to case and spacing)."""
    unit = normalize(claim.unit).casefold()
    if isinstance(claim.value, (int, float)) and not isinstance(claim.value, bool):
        return (unit, "number", float(claim.value))
    return (unit, "text", compact(str(claim.value)).casefold())


def _supersession(doc: Document) -> set[frozenset[str]]:
    pairs = set()
    for claim in doc.claims.values():
        targets = list(claim.supersedes)
        for target in targets:
            other = doc.resolve_claim(target)
            if other is not None:
                pairs.add(frozenset((claim.id, other.id)))
        if claim.superseded_by and doc.resolve_claim(claim.superseded_by) is not None:
            pairs.add(frozenset((claim.id, doc.resolve_claim(claim.superseded_by).id)))
    return pairs


def conflict_groups(doc: Document) -> list[list[Claim]]:
    """Claims on the same subject, property/benchmark and setting, where not all values agree
    (retired claims left out), each group in file order."""
    groups: dict[tuple[Any, ...], list[Claim]] = defaultdict(list)
    for claim in doc.claims.values():
        if claim.value is not None and claim.status not in RETIRED_STATUSES:
            groups[topic_key(claim)].append(claim)
    return [group for group in groups.values() if len({value_key(c) for c in group}) > 1]


#: How many members and undeclared pairs one conflict finding lists before "and N more".
SHOWN_MEMBERS = 8


def _named(doc: Document, claim: Claim) -> set[str]:
    resolved = (doc.resolve_claim(t) for t in claim.conflicts_with)
    return {other.id for other in resolved if other is not None}


def check_conflicts(doc: Document) -> list[Finding]:
    """Disagreeing claims must name each other; named conflicts must be mutual.

    A group of claims on one figure whose values differ gives **one** finding, listing the
    members that leave a disagreement undeclared and how many pairs are missing, so the
    report grows with the number of claims, not with the number of pairs. Claims related
    by ``supersedes``/``superseded_by`` need not name each other.
    """
    file = str(doc.path)
    findings: list[Finding] = []
    partners: dict[str, set[str]] = defaultdict(set)
    for pair in _supersession(doc):
        first, second = tuple(pair) if len(pair) == 2 else (*pair, *pair)
        partners[first].add(second)
        partners[second].add(first)
    named = {claim.id: _named(doc, claim) for claim in doc.claims.values()}
    for group in conflict_groups(doc):
        findings.extend(_group_finding(file, group, named, partners))
    for claim in doc.claims.values():
        for target in claim.conflicts_with:
            other = doc.resolve_claim(target)
            if other is not None and other is not claim and claim.id not in named[other.id]:
                findings.append(
                    Finding(
                        ERROR,
                        "one-sided-conflict",
                        file,
                        claim.line_of("conflicts_with"),
                        claim.id,
                        f"names {other.id} in conflicts_with, but {other.id} does not name it back",
                        f"add {claim.id} to the conflicts_with of {other.id} (line {other.line})",
                    )
                )
    return findings


def _group_finding(
    file: str, group: list[Claim], named: dict[str, set[str]], partners: dict[str, set[str]]
) -> list[Finding]:
    """At most one finding for a conflict group, in time linear in its size and its relations."""
    by_value: dict[tuple[Any, ...], list[Claim]] = defaultdict(list)
    for claim in group:
        by_value[value_key(claim)].append(claim)
    members = {claim.id: claim for claim in group}
    missing_pairs = 0
    lacking: list[tuple[Claim, Claim | None]] = []
    for claim in group:
        key = value_key(claim)
        excused = {i for i in named[claim.id] | partners[claim.id] if i in members and value_key(members[i]) != key}
        missing = len(group) - len(by_value[key]) - len(excused)
        if missing:
            missing_pairs += missing
            example = None
            if len(lacking) < 1:  # one concrete example is enough to show what to add
                example = next(o for o in group if value_key(o) != key and o.id not in excused)
            lacking.append((claim, example))
    if not lacking:
        return []
    first, example = lacking[0]
    assert example is not None
    shown = "; ".join(f"{c.id} (line {c.line}) gives {short_text(c.display, 30)!r}" for c, _ in lacking[:SHOWN_MEMBERS])
    more = f"; and {len(lacking) - SHOWN_MEMBERS} more" if len(lacking) > SHOWN_MEMBERS else ""
    return [
        Finding(
            ERROR,
            "undeclared-conflict",
            file,
            first.line,
            first.id,
            f"{len(group)} claims give {len(by_value)} different values for the same "
            f"{short_text(first.topic or 'figure', 60)} of {short_text(first.subject, 60)}, and "
            f"{missing_pairs} conflicts_with entr{'y is' if missing_pairs == 1 else 'ies are'} missing "
            f"(e.g. {first.id} does not name {example.id}); undeclared: {shown}{more}",
            "list each disagreeing claim in the others' conflicts_with, or mark the wrong ones refuted/superseded",
        )
    ]


def check_relations(doc: Document) -> list[Finding]:
    """A superseded claim is replaced by a named claim; a refuted claim's evidence is itself verified."""
    file = str(doc.path)
    findings: list[Finding] = []
    replaced = {id_ for pair in _supersession(doc) for id_ in pair}
    for claim in doc.claims.values():
        if claim.status == "superseded" and claim.id not in replaced:
            findings.append(
                Finding(
                    ERROR,
                    "superseded-without-successor",
                    file,
                    claim.line_of("status"),
                    claim.id,
                    "is superseded, but no claim says it supersedes it",
                    "add 'supersedes: [this id]' to the newer claim, or superseded_by: NEW_ID here",
                )
            )
        for target in claim.evidence:
            other = doc.resolve_claim(target)
            if other is not None and other.status not in EVIDENCE_STATUSES:
                findings.append(
                    Finding(
                        ERROR,
                        "weak-evidence",
                        file,
                        claim.line_of("evidence"),
                        claim.id,
                        f"cites {other.id} as evidence, but that claim is {other.status}",
                        "cite a verified or reproduced claim",
                    )
                )
    return findings


# ---- reproduced claims -----------------------------------------------------------------


def check_reproduced(doc: Document, root: Path) -> list[Finding]:
    """Each ``reproduced`` claim's recorded result exists and agrees within the tolerance."""
    findings: list[Finding] = []
    for claim in doc.claims.values():
        if claim.status == "reproduced" and claim.reproduced_by is not None:
            problem = _reproduction_problem(claim, root)
            if problem:
                message, fix = problem
                findings.append(
                    Finding(
                        ERROR,
                        "reproduction-mismatch",
                        str(doc.path),
                        claim.line_of("reproduced_by"),
                        claim.id,
                        message,
                        fix,
                    )
                )
    return findings


def _reproduction_problem(claim: Claim, root: Path) -> tuple[str, str] | None:
    spec = claim.reproduced_by
    assert spec is not None
    rerun = f"run `kdalib repro notebooks/{Path(spec.result).stem}.ipynb` and commit the result"
    try:
        recorded = json.loads(read_inside(root, spec.result, MAX_RESULT_BYTES).decode("utf-8"))
    except UnsafeFile as err:
        if err.missing:
            return f"the recorded result {spec.result} does not exist", rerun
        return f"the recorded result {err}", rerun
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        return f"the recorded result {spec.result} is not readable JSON ({short_text(str(err), 120)})", rerun
    values = recorded.get("values") if isinstance(recorded, dict) else None
    if not isinstance(values, dict):
        return f"{spec.result} has no top-level 'values' object", rerun
    if spec.key not in values:
        names = sorted(map(str, values))
        known = (", ".join(short_text(n, 40) for n in names[:12]) + (" ..." if len(names) > 12 else "")) or "none"
        return f"{spec.result} records no value {short_text(spec.key, 60)!r} (it has: {known})", "fix reproduced_by.key"
    got = values[spec.key]
    if isinstance(got, bool) or not isinstance(got, (int, float)):
        return f"{spec.result} records {spec.key} = {short_repr(got)}, not a number", rerun
    if isinstance(claim.value, bool) or not isinstance(claim.value, (int, float)):
        return "a reproduced claim needs a numeric value", "write the value as a number"
    difference = abs(float(got) - float(claim.value))
    if not difference <= spec.tolerance:  # also catches NaN
        return (
            f"{spec.result} records {spec.key} = {got}, {difference:.6g} away from the claimed "
            f"{claim.value} (tolerance {spec.tolerance})",
            "re-run the notebook, or correct the claim if the recorded value is right",
        )
    return None


# ---- {claim} references in pages -------------------------------------------------------


def check_claim_references(doc: Document, root: Path) -> list[Finding]:
    """Every {claim}`id` and every claim id of a spec-table in notes/ and notebooks/ names a claim or alias."""
    from kdalib.sources.spec_rows import claim_ids, spec_table_rows

    findings: list[Finding] = []
    for path in page_files(root):
        shown = _relative(path, root)
        try:
            blocks = markdown_blocks(root, path)
        except UnreadablePage:
            continue  # the page lint reports it (unreadable-page)
        for first_line, where, text in blocks:
            used = [(n, c, "unknown-claim-role", f"{{claim}}`{c}`") for n, c in claim_roles(text)]
            used += [
                (n, c, "unknown-claim-spec-table", f"spec-table id {c!r}")
                for n, cells in spec_table_rows(text)
                for cell in cells[1:]
                for c in claim_ids(cell)
            ]
            for line_number, claim_id, code, what in sorted(used):
                if doc.resolve_claim(claim_id) is None:
                    line = first_line + line_number - 1 if first_line else 0
                    place = f" ({where}, line {line_number})" if where else ""
                    findings.append(
                        Finding(
                            ERROR,
                            code,
                            shown,
                            line,
                            claim_id,
                            f"{what} names no claim in {doc.path.name}{place}",
                            "fix the id, or add the claim to sources.yaml",
                        )
                    )
    return findings


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)

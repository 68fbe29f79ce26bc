"""The checklist over time, read from the git history of ``sources.yaml``.

Each commit that changed ``sources.yaml`` on the current branch (first parents only, so a merge
counts once, on the day it landed) is compared with the one before it, claim by claim:

* **added**: a claim id appears (a new id that lists the vanished one in ``aliases`` is a
  **renamed** claim instead);
* **retracted**: a claim id disappears;
* **re-statused**: only the status changed (``unverified`` → ``verified``, ...);
* **changed**: the value, display, quote or source changed (with the status, if it changed too).

A working-tree ``sources.yaml`` that differs from the last commit adds one more step, dated
``None`` ("not committed yet"). Per claim, :class:`ClaimHistory` gives the date it was first
recorded and the earlier values it had. The history is read, never written: the "What changed"
page and the per-claim history of the book and of ``claims.json`` are generated from it.

Old versions are parsed leniently (only the claims' ids and the fields above are read), with
YAML aliases refused, so a schema change does not break the history. Without git, outside a
repository or in a shallow clone, :func:`load_history` returns a history that is not
``available`` and says why, instead of raising.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: The fields of a claim whose change the history records, in the order a change lists them.
TRACKED = ("value", "display", "status", "quote", "source")
KINDS = ("added", "changed", "re-statused", "renamed", "retracted")


@dataclass(frozen=True)
class Change:
    """One claim's change in one revision; ``date`` is None for uncommitted work."""

    date: str | None
    commit: str
    kind: str
    claim_id: str
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    renamed_from: str = ""

    @property
    def fields(self) -> list[str]:
        """The tracked fields that differ between ``before`` and ``after``."""
        if self.before is None or self.after is None:
            return []
        return [key for key in TRACKED if self.before.get(key) != self.after.get(key)]


@dataclass(frozen=True)
class EarlierValue:
    """A value a claim had before, and the date it was recorded (None: not committed)."""

    display: str
    status: str
    since: str | None


@dataclass
class ClaimHistory:
    """When a claim was first recorded, since when it has its current value, and what it had before."""

    first_recorded: str | None
    current_since: str | None = None
    earlier: list[EarlierValue] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.current_since is None:
            self.current_since = self.first_recorded


@dataclass
class History:
    """What changed, per revision and per claim; ``problem`` says why it is empty when it is."""

    changes: list[Change] = field(default_factory=list)
    claims: dict[str, ClaimHistory] = field(default_factory=dict)
    revisions: int = 0
    problem: str = ""

    @property
    def available(self) -> bool:
        return not self.problem

    def of(self, claim_id: str) -> ClaimHistory | None:
        return self.claims.get(claim_id)


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _safe_load(text: str) -> Any:
    """YAML with the safe loader, refusing anchors and aliases (a version could hold an alias bomb)."""
    for event in yaml.parse(text, Loader=_LOADER):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise yaml.YAMLError("YAML anchors and aliases are not read")
    return yaml.load(text, Loader=_LOADER)  # noqa: S506 (a safe loader)


def _git(top: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=top, capture_output=True, text=True, check=True).stdout


def parse_claims(text: str) -> dict[str, dict[str, Any]]:
    """The claims of one version of sources.yaml: id -> the tracked fields and ``aliases``.

    Entries without an id are skipped; a version that is not a YAML mapping gives no claims.
    """
    try:
        data = _safe_load(text)
    except yaml.YAMLError:
        return {}
    claims = data.get("claims") if isinstance(data, dict) else None
    out: dict[str, dict[str, Any]] = {}
    for entry in claims if isinstance(claims, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("id"), str):
            kept = {key: _plain(entry.get(key)) for key in TRACKED}
            kept["aliases"] = [a for a in entry.get("aliases") or [] if isinstance(a, str)]
            out[entry["id"]] = kept
    return out


def _plain(value: Any) -> Any:
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


def diff(before: dict[str, dict], after: dict[str, dict], date: str | None, commit: str) -> list[Change]:
    """The changes from one version's claims to the next's."""
    changes: list[Change] = []
    gone = set(before) - set(after)
    for claim_id, new in after.items():
        old = before.get(claim_id)
        if old is None:
            renamed = next((a for a in new["aliases"] if a in gone), "")
            if renamed:
                gone.discard(renamed)
                changes.append(Change(date, commit, "renamed", claim_id, before[renamed], new, renamed))
            else:
                changes.append(Change(date, commit, "added", claim_id, None, new))
            continue
        differing = [key for key in TRACKED if old.get(key) != new.get(key)]
        if differing == ["status"]:
            changes.append(Change(date, commit, "re-statused", claim_id, old, new))
        elif differing:
            changes.append(Change(date, commit, "changed", claim_id, old, new))
    changes += [Change(date, commit, "retracted", claim_id, before[claim_id], None) for claim_id in sorted(gone)]
    return changes


def load_history(sources_path: str | Path) -> History:
    """The history of ``sources_path`` in its git repository (see the module docstring)."""
    path = Path(sources_path).resolve()
    try:
        top = Path(_git(path.parent, "rev-parse", "--show-toplevel").strip())
        if _git(top, "rev-parse", "--is-shallow-repository").strip() == "true":
            return History(
                problem="this is a shallow clone, so the history of sources.yaml is incomplete; "
                "fetch the whole history (`git fetch --unshallow`) and build again"
            )
        relative = path.relative_to(top.resolve()).as_posix()
        log = _git(top, "log", "--first-parent", "--reverse", "--format=%H %cs", "--", relative)
    except FileNotFoundError:
        return History(problem="git is not installed, so the history of sources.yaml cannot be read")
    except (subprocess.CalledProcessError, ValueError):
        return History(problem=f"{path} is not in a git repository with commits, so it has no history to read")
    versions: list[tuple[str | None, str, dict]] = []
    for line in log.splitlines():
        commit, date = line.split()
        shown = subprocess.run(["git", "show", f"{commit}:{relative}"], cwd=top, capture_output=True, text=True)
        versions.append((date, commit, parse_claims(shown.stdout) if shown.returncode == 0 else {}))
    try:
        current = parse_claims(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        current = versions[-1][2] if versions else {}
    if not versions or current != versions[-1][2]:
        versions.append((None, "", current))
    return build_history(versions)


def build_history(versions: list[tuple[str | None, str, dict]]) -> History:
    """Changes and per-claim histories from (date, commit, claims) versions, oldest first."""
    history = History(revisions=len(versions))
    previous: dict[str, dict] = {}
    for date, commit, claims in versions:
        for change in diff(previous, claims, date, commit):
            history.changes.append(change)
            _note(history, change)
        previous = claims
    return history


def _note(history: History, change: Change) -> None:
    if change.kind == "added":
        history.claims[change.claim_id] = ClaimHistory(change.date)
        return
    if change.kind == "retracted":
        history.claims.pop(change.claim_id, None)
        return
    if change.kind == "renamed":
        history.claims[change.claim_id] = history.claims.pop(change.renamed_from, None) or ClaimHistory(change.date)
    record = history.claims.setdefault(change.claim_id, ClaimHistory(change.date))
    old, new = change.before or {}, change.after or {}
    if (old.get("display"), old.get("status")) != (new.get("display"), new.get("status")):
        record.earlier.append(EarlierValue(str(old.get("display")), str(old.get("status")), record.current_since))
        record.current_since = change.date


def describe(change: Change) -> str:
    """A one-line account of a change, for the page and for reports."""
    old, new = change.before or {}, change.after or {}
    if change.kind == "added":
        return f"added: {new.get('display')} ({new.get('status')})"
    if change.kind == "retracted":
        return f"retracted: was {old.get('display')} ({old.get('status')})"
    if change.kind == "renamed":
        return f"renamed from {change.renamed_from}"
    if change.kind == "re-statused":
        return f"status {old.get('status')} → {new.get('status')}"
    parts = []
    for key in change.fields:
        if key in ("value", "display"):
            if key == "display" or "display" not in change.fields:
                parts.append(f"{old.get('display')} → {new.get('display')}")
        elif key == "status":
            parts.append(f"status {old.get('status')} → {new.get('status')}")
        else:
            parts.append(f"{key} edited")
    return "; ".join(parts)

"""Directives for the book's Build-status page: ``verify-summary``, ``tracker-status`` and ``kdalib-environment``.

``tracker-status`` shows the last live check of the sources (``kdalib verify --online --json``,
committed as the record named by ``kdalib_tracker_record``): its date, how many sources were
identical, unchanged in text, grown, changed or unreachable, and which quotes had left the live
text. Without a record it says that no live check is recorded in this copy.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

from docutils import nodes

from kdalib.book.data import BookData
from kdalib.book.directive import BookDirective
from kdalib.book.render import badge, join, literal, table
from kdalib.sources.model import file_location
from kdalib.sources.snapshots import ENV_VAR


class VerifySummary(BookDirective):
    """Counts by status, the findings, and which snapshots were missing in this build."""

    def render(self, data: BookData) -> list[nodes.Node]:
        report = data.report
        counts = report.status_counts()
        rows = [(badge(status, status), str(n)) for status, n in counts.items()]
        rows += [
            ("sources", str(len(report.document.sources))),
            ("quotes checked against snapshots", str(len(report.matches))),
            ("quotes not checked (snapshot missing or changed)", str(len(report.unchecked))),
            ("errors", str(len(report.errors))),
            ("warnings", str(len(report.warnings))),
        ]
        out: list[nodes.Node] = [table(("claims", "count"), rows, classes=["kdalib-summary"])]
        out.append(self._snapshots_paragraph(report))
        out.append(self._findings(report))
        return out

    def _snapshots_paragraph(self, report) -> nodes.paragraph:
        missing = report.missing_snapshots
        if not missing:
            text = (
                f"Every snapshot was found in the store and matched its sha256 ({len(report.snapshot_states)} files)."
            )
            return nodes.paragraph(text, text)
        para = nodes.paragraph(
            "", f"Snapshots not found in this build (set {ENV_VAR}); quotes of these sources were not checked: "
        )
        para.extend(join(literal(source_id) for source_id in missing))
        return para

    def _findings(self, report) -> nodes.Node:
        if not report.findings:
            return nodes.paragraph("", "kdalib verify found nothing to fix.")
        items = nodes.bullet_list(classes=["kdalib-findings"])
        for finding in report.findings:
            para = nodes.paragraph(
                "",
                "",
                badge(finding.severity, finding.severity),
                nodes.Text(" "),
                literal(file_location(finding.file, finding.line)),
                nodes.Text(f" {finding.item} {finding.message}"),
            )
            items += nodes.list_item("", para)
        return items


class TrackerStatus(BookDirective):
    """The spec tracker's last live-drift result, with its date."""

    needs_checklist = False

    def render(self, data: BookData) -> list[nodes.Node]:
        path = Path(self.env.srcdir) / self.config.kdalib_tracker_record
        shown = self.config.kdalib_tracker_record
        if not path.is_file():
            para = nodes.paragraph("", f"No live check of the sources is recorded in this copy ({shown} is absent): ")
            para += [
                nodes.Text("the weekly source check runs "),
                literal("kdalib verify --online"),
                nodes.Text(" on GitHub, and its JSON report, committed as that file, is shown here."),
            ]
            return [para]
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            tracks = record["online"]
            states = Counter(str(track["state"]) for track in tracks)
            gone = sorted(
                (str(track["source"]), claim)
                for track in tracks
                for claim, found in track["quotes"].items()
                if not found
            )
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as err:
            text = f"The tracker record {shown} cannot be read ({type(err).__name__}: {err}); run the live check again."
            return [nodes.paragraph(text, text)]
        date = str(record.get("checked") or _commit_date(path) or "date unknown (the record is not committed)")
        out: list[nodes.Node] = [
            nodes.paragraph("", f"Last live check of the sources: {date} ({len(tracks)} sources, from {shown}).")
        ]
        rows = [(state, str(count)) for state, count in sorted(states.items())]
        out.append(table(("sources", "count"), rows, classes=["kdalib-summary"]))
        if gone:
            para = nodes.paragraph("", "Quotes no longer found in the live text: ")
            para.extend(join(literal(f"{source}: {claim}") for source, claim in gone))
            out.append(para)
        else:
            out.append(nodes.paragraph("", "Every checked quote was still in its source's live text."))
        return out


def _commit_date(path: Path) -> str:
    """The date of the last commit of ``path`` (empty without git or outside a repository)."""
    try:
        done = subprocess.run(
            ["git", "log", "-1", "--format=%cs", "--", path.name], cwd=path.parent, capture_output=True, text=True
        )
    except OSError:
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


class KdalibEnvironment(BookDirective):
    """``kdalib.environment.collect()`` as a two-column table (imported here, lazily: it may import torch)."""

    needs_checklist = False

    def render(self, data: BookData) -> list[nodes.Node]:
        from kdalib.environment import collect

        facts = collect()
        return [
            table(("", "value"), [(key, str(value)) for key, value in facts.items()], classes=["kdalib-environment"])
        ]

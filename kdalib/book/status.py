"""Directives for the book's Build-status page: ``verify-summary`` and ``kdalib-environment``."""

from __future__ import annotations

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
            ("quotes not checked (snapshot missing)", str(len(report.unchecked))),
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


class KdalibEnvironment(BookDirective):
    """``kdalib.environment.collect()`` as a two-column table (imported here, lazily: it may import torch)."""

    needs_checklist = False

    def render(self, data: BookData) -> list[nodes.Node]:
        from kdalib.environment import collect

        facts = collect()
        return [
            table(("", "value"), [(key, str(value)) for key, value in facts.items()], classes=["kdalib-environment"])
        ]

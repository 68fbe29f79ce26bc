"""Pictures drawn from the claims at build time, as inline SVG: every mark is a claim.

Three directives, each mark a link to its claim's card on the claims page with the claim
id, value, status and setting in its SVG ``<title>``; nothing is typed by hand:

``claims-timeline``
    One line per model, ``Label: claim.id [claim.id ...]``; each claim's value is a date
    (``YYYY-MM-DD``), a month (``YYYY-MM``) or an arXiv identifier (``YYMM.NNNNN``, the
    month of its first version). Unverified dates are drawn hollow.
``claims-progression``
    ``:subjects:`` (``;``-separated, in order) on every benchmark that at least
    ``:min-shared:`` of them report as a percentage; per benchmark, one dot per subject on
    a 0-100 scale, joined in subject order, and the settings each value was measured under.
    Where a subject has several claims on one benchmark, the first in sources.yaml is used.
``claims-heatmap``
    The ``:subject:``'s claims whose benchmark name starts with ``:benchmark-prefix:``:
    rows are the rest of the name, columns the first ``;``-part of the setting, cells the
    value on a 0-100 colour scale.

A line, option or claim that does not fit is a warning at the directive's line (the strict
build fails on it), naming what is wrong.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from docutils import nodes
from docutils.parsers.rst import directives

from kdalib.book.data import BookData
from kdalib.book.directive import BookDirective
from kdalib.book.render import claim_anchor
from kdalib.sources.escape import html_text
from kdalib.sources.model import Claim

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
COLOURS = ("#0b5cad", "#b35c00", "#1a7f37", "#8250df", "#cf222e", "#57606a")
FONT = 'font-family="inherit"'
_ARXIV = re.compile(r"^(\d{2})(\d{2})\.\d{4,5}(v\d+)?$")


class PictureError(ValueError):
    pass


def claim_date(claim: Claim) -> tuple[dt.date, str]:
    """The date a claim's value names, and what kind of evidence it is."""
    value = str(claim.value).strip()
    try:
        return dt.date.fromisoformat(value), "day"
    except ValueError:
        pass
    if re.fullmatch(r"\d{4}-\d{2}", value):
        year, month = map(int, value.split("-"))
        return dt.date(year, month, 15), "month"
    found = _ARXIV.match(value)
    if found:
        return dt.date(2000 + int(found.group(1)), int(found.group(2)), 15), "arXiv first version"
    raise PictureError(f"claim {claim.id}: value {value!r} is not a date, a month or an arXiv identifier")


_e = html_text


@dataclass
class Mark:
    claim: Claim
    href: str

    def link(self, inner: str, extra: str = "") -> str:
        c = self.claim
        title = f"{c.id}: {c.display} ({c.status})" + (f"; {c.setting_text}" if c.setting_text else "")
        return f'<a href="{_e(self.href)}"{extra}><title>{_e(title)}</title>{inner}</a>'


def _svg(width: int, height: int, label: str, body: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{_e(label)}" {FONT} font-size="13" fill="currentColor">' + "".join(body) + "</svg>"
    )


class PictureDirective(BookDirective):
    """Shared parts: claim links relative to this page, errors as warnings, the figure wrapper."""

    caption = ""

    def render(self, data: BookData) -> list[nodes.Node]:
        self.data = data
        page = self.config.kdalib_claims_page
        self.claims_uri = (
            "" if page == self.env.docname else self.env.app.builder.get_relative_uri(self.env.docname, page)
        )
        try:
            svg, caption = self.draw()
        except PictureError as err:
            return [self.state.document.reporter.warning(f"{self.name}: {err}", line=self.lineno)]
        figure = nodes.container("", nodes.raw("", svg, format="html"), classes=["kdalib-figure"])
        figure += nodes.paragraph("", caption, classes=["kdalib-figure-caption"])
        return [figure]

    def mark(self, claim: Claim) -> Mark:
        return Mark(claim, f"{self.claims_uri}#{claim_anchor(claim.id)}")

    def claim(self, claim_id: str) -> Claim:
        claim = self.data.claim(claim_id)
        if claim is None:
            raise PictureError(f"no claim {claim_id!r} in {self.config.kdalib_sources_file}")
        return claim

    def draw(self) -> tuple[str, str]:
        raise NotImplementedError


class ClaimsTimeline(PictureDirective):
    has_content = True

    def draw(self) -> tuple[str, str]:
        rows: list[tuple[str, list[tuple[dt.date, str, Claim]]]] = []
        for line in self.content:
            if not line.strip():
                continue
            label, sep, ids = line.partition(":")
            if not sep or not ids.split():
                raise PictureError(f"expected 'Model label: claim.id ...', got {line!r}")
            rows.append((label.strip(), [(*claim_date(c), c) for c in map(self.claim, ids.split())]))
        if not rows:
            raise PictureError("no models given")
        dates = [d for _, marks in rows for d, _, _ in marks]
        start = dt.date(min(dates).year, 1, 1)
        end = dt.date(max(dates).year + 1, 1, 1)
        left = 20 + round(7.4 * max(len(label) for label, _ in rows))
        right, top, row_h, width = 24, 34, 34, 760
        span = (end - start).days

        def x(day: dt.date) -> float:
            return left + (width - left - right) * (day - start).days / span

        height = top + row_h * len(rows) + 12
        body = []
        year = start.year
        while dt.date(year, 1, 1) <= end:
            for month in (1, 4, 7, 10):
                tick = dt.date(year, month, 1)
                if start <= tick <= end:
                    strong = month == 1
                    body.append(
                        f'<line x1="{x(tick):.1f}" x2="{x(tick):.1f}" y1="{top - 8}" y2="{height - 8}" '
                        f'stroke="currentColor" stroke-opacity="0.25" stroke-width="{1.2 if strong else 0.6}"/>'
                    )
                    text = str(year) if strong else MONTHS[month - 1]
                    body.append(
                        f'<text x="{x(tick):.1f}" y="{top - 14}" text-anchor="middle" '
                        f'fill="currentColor" fill-opacity="0.7" font-size="{12 if strong else 10}">{text}</text>'
                    )
            year += 1
        for i, (label, marks) in enumerate(rows):
            y = top + row_h * i + row_h / 2
            body.append(f'<text x="{left - 10}" y="{y + 4:.1f}" text-anchor="end">{_e(label)}</text>')
            body.append(
                f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="currentColor" stroke-opacity="0.12"/>'
            )
            last_x = None
            for day, kind, claim in sorted(marks, key=lambda m: m[0]):
                colour = COLOURS[i % len(COLOURS)]
                # marks closer than their size sit side by side instead of on top of each other
                mx = x(day) if last_x is None else max(x(day), last_x + 13)
                last_x = mx
                fill = "#ffffff" if claim.status == "unverified" else colour
                shape = (
                    f'<circle cx="{mx:.1f}" cy="{y:.1f}" r="6" fill="{fill}" stroke="{colour}" stroke-width="2"/>'
                    if kind != "arXiv first version"
                    else f'<rect x="{mx - 5.5:.1f}" y="{y - 5.5:.1f}" width="11" height="11" fill="{fill}" '
                    f'stroke="{colour}" stroke-width="2"/>'
                )
                body.append(self.mark(claim).link(shape))
        caption = (
            "Dates from the claims: squares are the month of an arXiv identifier's first version, "
            "circles a day or month a source states; hollow marks are unverified. "
            "Each mark links to its claim."
        )
        return _svg(width, height, "Timeline of Kimi models from dated claims", body), caption


#: Words in a unit or metric that mark a 0-100 score.
SCORE_WORDS = ("%", "score", "acc", "pass", "rate", "avg@", "mean")


def _percent(claim: Claim) -> bool:
    """A 0-100 score: a number in that range whose unit or metric names a percentage or score."""
    words = f"{claim.unit} {(claim.benchmark or {}).get('metric', '')}".lower()
    return (
        isinstance(claim.value, (int, float))
        and not isinstance(claim.value, bool)
        and 0 <= claim.value <= 100
        and any(word in words for word in SCORE_WORDS)
    )


class ClaimsProgression(PictureDirective):
    option_spec = {"subjects": directives.unchanged_required, "min-shared": directives.positive_int}

    def draw(self) -> tuple[str, str]:
        subjects = [s.strip() for s in self.options.get("subjects", "").split(";") if s.strip()]
        if len(subjects) < 2:
            raise PictureError(":subjects: needs at least two subjects separated by ';'")
        known = {c.subject for c in self.data.claims}
        missing = [s for s in subjects if s not in known]
        if missing:
            raise PictureError(f":subjects: no claims about {', '.join(map(repr, missing))}")
        need = self.options.get("min-shared", len(subjects))
        table: dict[str, dict[str, Claim]] = {}
        for claim in self.data.claims:
            if claim.subject in subjects and claim.benchmark and _percent(claim):
                table.setdefault(str(claim.benchmark["name"]), {}).setdefault(claim.subject, claim)
        shared = [(name, row) for name, row in table.items() if len(row) >= need]
        if not shared:
            raise PictureError(f"no benchmark is reported by {need} of the subjects")
        shared.sort(key=lambda item: (-len(item[1]), item[0].lower()))
        left, right, top, row_h = 200, 30, 46, 44
        width = 760

        def x(value: float) -> float:
            return left + (width - left - right) * value / 100

        height = top + row_h * len(shared) + 10
        body = []
        for j, subject in enumerate(subjects):  # legend
            lx = 10 + j * 185
            body.append(
                f'<circle cx="{lx + 6}" cy="12" r="6" fill="{COLOURS[j % len(COLOURS)]}"/>'
                f'<text x="{lx + 16}" y="16">{_e(subject)}</text>'
            )
        for tick in range(0, 101, 20):
            body.append(
                f'<line x1="{x(tick):.1f}" x2="{x(tick):.1f}" y1="{top - 6}" y2="{height - 6}" '
                f'stroke="currentColor" stroke-opacity="0.25" stroke-width="0.6"/><text x="{x(tick):.1f}" y="{top - 10}" '
                f'text-anchor="middle" fill="currentColor" fill-opacity="0.7" font-size="10">{tick}</text>'
            )
        for i, (name, row) in enumerate(shared):
            y = top + row_h * i + 16
            settings = "; ".join(
                dict.fromkeys(
                    str(c.benchmark.get("setting") or "").split(";")[0].strip()
                    for c in row.values()
                    if c.benchmark.get("setting")
                )
            )
            body.append(f'<text x="{left - 10}" y="{y + 4}" text-anchor="end" font-weight="600">{_e(name)}</text>')
            if settings:
                short = settings if len(settings) <= 34 else settings[:33] + "…"
                body.append(
                    f'<text x="{left - 10}" y="{y + 19}" text-anchor="end" fill="currentColor" fill-opacity="0.7" '
                    f'font-size="10.5"><title>{_e(settings)}</title>{_e(short)}</text>'
                )
            points = [(subjects.index(s), row[s]) for s in subjects if s in row]
            path = " ".join(f"{'M' if k == 0 else 'L'}{x(c.value):.1f},{y:.1f}" for k, (_, c) in enumerate(points))
            body.append(
                f'<path d="{path}" stroke="currentColor" stroke-opacity="0.45" stroke-width="1.5" fill="none"/>'
            )
            for j, claim in points:
                colour = COLOURS[j % len(COLOURS)]
                fill = "#ffffff" if claim.status == "unverified" else colour
                body.append(
                    self.mark(claim).link(
                        f'<circle cx="{x(claim.value):.1f}" cy="{y:.1f}" r="6" fill="{fill}" stroke="{colour}" '
                        f'stroke-width="2"/>'
                    )
                )
        caption = (
            f"Scores (0-100) on the benchmarks that at least {need} of these models report; each dot "
            "links to its claim, whose setting (thinking mode, tools, harness) is in its tooltip. "
            "Settings differ between models, so a line is a trend, not a controlled comparison."
        )
        return _svg(width, height, "Benchmark scores across model versions", body), caption


#: The heatmap's colour stops, low to high: red, yellow, green.
STOPS = ((209, 36, 47), (242, 204, 96), (26, 127, 55))


def _shade(value: float, low: float, high: float) -> tuple[str, str]:
    """Fill and text colour of a cell: red at ``low``, yellow half way, green at ``high``."""
    t = 0.0 if high <= low else max(0.0, min(1.0, (value - low) / (high - low)))
    (a, b), u = (STOPS[:2], t * 2) if t < 0.5 else (STOPS[1:], t * 2 - 1)
    rgb = [round(x + (y - x) * u) for x, y in zip(a, b)]
    light = 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2] > 150
    return "#" + "".join(f"{c:02x}" for c in rgb), "#1f2328" if light else "#ffffff"


class ClaimsHeatmap(PictureDirective):
    option_spec = {"subject": directives.unchanged_required, "benchmark-prefix": directives.unchanged_required}

    def draw(self) -> tuple[str, str]:
        subject = self.options.get("subject", "").strip()
        prefix = self.options.get("benchmark-prefix", "").strip()
        if not subject or not prefix:
            raise PictureError("needs :subject: and :benchmark-prefix:")
        cells: dict[tuple[str, str], Claim] = {}
        rows, cols = [], []
        for claim in self.data.claims:
            name = str((claim.benchmark or {}).get("name", ""))
            if claim.subject != subject or not name.startswith(prefix):
                continue
            if not isinstance(claim.value, (int, float)):
                raise PictureError(f"claim {claim.id}: value {claim.value!r} is not a number")
            row = name[len(prefix) :].strip()
            col = str(claim.benchmark.get("setting") or "").split(";")[0].strip()
            rows += [row] if row not in rows else []
            cols += [col] if col not in cols else []
            cells.setdefault((row, col), claim)
        if not cells:
            raise PictureError(f"no claims about {subject!r} on a benchmark named {prefix!r}...")
        values = [float(c.value) for c in cells.values()]
        low, high = 10 * (min(values) // 10), max(100.0, max(values))
        left, top, cell_w, cell_h = 190, 40, 145, 32
        width = left + cell_w * len(cols) + 10
        height = top + cell_h * len(rows) + 8
        body = []
        for j, col in enumerate(cols):
            body.append(
                f'<text x="{left + cell_w * j + cell_w / 2:.1f}" y="{top - 12}" text-anchor="middle" '
                f'font-weight="600">{_e(col.removesuffix(" attack strategy"))}</text>'
            )
        for i, row in enumerate(rows):
            y = top + cell_h * i
            body.append(f'<text x="{left - 10}" y="{y + cell_h / 2 + 4:.1f}" text-anchor="end">{_e(row)}</text>')
            for j, col in enumerate(cols):
                claim = cells.get((row, col))
                if claim is None:
                    continue
                fill, ink = _shade(float(claim.value), low, high)
                cx = left + cell_w * j
                body.append(
                    self.mark(claim).link(
                        f'<rect x="{cx + 1}" y="{y + 1}" width="{cell_w - 2}" height="{cell_h - 2}" rx="3" '
                        f'fill="{fill}"/><text x="{cx + cell_w / 2:.1f}" y="{y + cell_h / 2 + 4:.1f}" '
                        f'text-anchor="middle" fill="{ink}">{_e(claim.display)}</text>'
                    )
                )
        caption = (
            f"{subject}: {prefix.rstrip(':')} results from the claims (columns: the first part of the "
            f"setting; colour from red at {low:g} through yellow to green at {high:g}). "
            "Each cell links to its claim."
        )
        return _svg(width, height, f"{subject} {prefix} heatmap", body), caption

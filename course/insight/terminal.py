"""The class report as a compact rich summary (``course report --terminal``): the same numbers as the pages."""

from __future__ import annotations

from typing import Iterator

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from course.insight.summary import AssignmentSummary, CourseSummary, Histogram, _fmt

BLOCKS = " ▁▂▃▄▅▆▇█"


def spark(h: Histogram) -> str:
    """One character per bin, its height proportional to the bin's count."""
    top = max(h.counts, default=0)
    if not top:
        return "·" * len(h.counts)
    return "".join(BLOCKS[round(c / top * (len(BLOCKS) - 1))] if c else "·" for c in h.counts)


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x * 100:.0f}%"


def render(c: CourseSummary) -> Iterator[RenderableType]:
    overview = Table(title=f"{c.name}: {len(c.students)} student(s)")
    for col in ("assignment", "graded", "not graded", "failed", "missing", "pending", "mean", "median",
                "scores (0 → full)", "late", "cost s (median/p95)", "check"):
        overview.add_column(col)
    for a in c.assignments:
        overview.add_row(
            a.slug, str(len(a.graded)), str(len(a.by_status("not graded"))), str(len(a.by_status("error"))),
            str(len(a.by_status("missing"))), str(len(a.pending)),
            "—" if a.mean is None else f"{_fmt(a.mean)}/{_fmt(a.points)}",
            "—" if a.median is None else _fmt(a.median), spark(a.scores), str(len(a.late_rows)),
            "—" if a.cost_median is None else f"{a.cost_median:.1f}/{a.cost_p95:.1f}",
            Text(str(len(a.flagged)), style="bold red") if a.flagged else Text("none", style="green"))
    yield overview
    for a in c.assignments:
        yield _assignment(a)


def _assignment(a: AssignmentSummary) -> RenderableType:
    if not a.graded:
        return Text(f"{a.slug}: nobody has been graded yet", style="yellow")
    tasks = Table(title=f"{a.slug}: points per task", title_justify="left")
    for col in ("task", "points", "mean", "median", "full marks"):
        tasks.add_column(col)
    for t in a.tasks:
        tasks.add_row(Text(t.task), _fmt(t.max_points), _fmt(round(t.mean, 2)), _fmt(round(t.median, 2)),
                      _pct(t.full_share))
    hardest = Table(title=f"{a.slug}: hardest tests", title_justify="left")
    for col in ("test", "task", "kind", "pass rate", "strong pass", "discrimination", "verdict"):
        hardest.add_column(col, overflow="fold")
    health = {h.test_id: h for h in a.health}
    shown = [t for t in a.tests[:5]] + [t for t in a.tests[5:] if health.get(t.test_id) and health[t.test_id].flags]
    for t in shown:
        h = health.get(t.test_id)
        disc = "—" if h is None or h.discrimination is None else f"{h.discrimination:+.2f}"
        strong = "—" if h is None or not h.strong_n else f"{h.strong_passed}/{h.strong_n}"
        verdict = Text("check this test", style="bold red") if h and h.flags else Text("ok")
        hardest.add_row(Text(t.name), Text(str(t.task)), "hidden" if t.hidden else "public", _pct(t.pass_rate),
                        strong, disc, verdict)
    parts: list[RenderableType] = [tasks, hardest]
    for h in a.flagged:
        parts.append(Text(f"check this test: {h.name}: " + "; ".join(h.flags), style="bold red"))
        for line in h.evidence:
            parts.append(Text("  " + line))
    mix = a.outcome_mix
    parts.append(Text(f"{a.slug}: outcomes " + ", ".join(f"{k} {n}" for k, n in mix.items() if n)
                      + f"; late {len(a.late_rows)} (hours {spark(a.late)}); extensions used {len(a.extensions_used)}"))
    return Group(*parts)

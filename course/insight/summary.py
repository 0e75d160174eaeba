"""The numbers behind the class report: per assignment and per course, computed from the gradebook.

The HTML pages (:mod:`course.insight.pages`) and the terminal summary
(:mod:`course.insight.terminal`) both render these records, so the two always agree.
"""

from __future__ import annotations

import datetime as dt
import statistics
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from course.config import Course
from course.gradebook import Gradebook
from course.insight import health as health_mod
from course.report import Graded, load_graded, tasks as task_rows

CRASH_MARK = "ended abruptly"      # the sandbox's message when a student's process dies (WorkerCrashed)
SCORE_BINS = 10                    # score histograms: a tenth of the points per bin, full marks in the last


@dataclass
class ItemStat:
    """One test across the class (its latest graded submissions)."""

    test_id: str
    name: str
    task: str | None
    hidden: bool
    max_points: float
    outcomes: dict[str, int] = field(default_factory=dict)    # passed/failed/error/timeout/crash/pending/skipped

    @property
    def decided(self) -> int:
        """Students with a pass or a fail (pending and skipped tests are neither)."""
        return sum(n for k, n in self.outcomes.items() if k not in ("pending", "skipped"))

    @property
    def pass_rate(self) -> float | None:
        return self.outcomes.get("passed", 0) / self.decided if self.decided else None


@dataclass
class TaskStat:
    task: str
    max_points: float
    mean: float
    median: float
    full_share: float          # share of graded students with every point of the task
    n: int


@dataclass
class Histogram:
    edges: list[float]
    counts: list[int]


@dataclass
class AssignmentSummary:
    slug: str
    title: str
    points: float
    due: str
    rows: list[Graded]                                   # every student of the gradebook, missing included
    tasks: list[TaskStat] = field(default_factory=list)
    tests: list[ItemStat] = field(default_factory=list)  # hardest first
    health: list[health_mod.TestHealth] = field(default_factory=list)
    scores: Histogram = field(default_factory=lambda: Histogram([], []))
    late: Histogram = field(default_factory=lambda: Histogram([], []))
    cost: Histogram = field(default_factory=lambda: Histogram([], []))
    error_gradings: int = 0                              # infrastructure errors ever recorded (retried since or not)

    @property
    def graded(self) -> list[Graded]:
        return [g for g in self.rows if g.status == "graded"]

    def by_status(self, status: str) -> list[Graded]:
        return [g for g in self.rows if g.status == status]

    @property
    def final_scores(self) -> list[float]:
        return [g.final for g in self.graded]

    @property
    def mean(self) -> float | None:
        s = self.final_scores
        return round(statistics.fmean(s), 2) if s else None

    @property
    def median(self) -> float | None:
        s = self.final_scores
        return round(statistics.median(s), 2) if s else None

    @property
    def late_rows(self) -> list[Graded]:
        return [g for g in self.rows if g.status != "missing" and g.late_by > 0]

    @property
    def submitted(self) -> list[Graded]:
        return [g for g in self.rows if g.status != "missing"]

    @property
    def extensions_used(self) -> list[Graded]:
        """Students who handed in after the course's due date, within their extension."""
        due = dt.datetime.fromisoformat(self.due)
        return [g for g in self.submitted if g.extension and g.submitted_at
                and dt.datetime.fromisoformat(g.submitted_at) > due]

    @property
    def durations(self) -> list[tuple[str, float]]:
        return sorted(((g.student, g.duration) for g in self.graded), key=lambda x: -x[1])

    @property
    def cost_median(self) -> float | None:
        d = [s for _, s in self.durations]
        return round(float(np.median(d)), 2) if d else None

    @property
    def cost_p95(self) -> float | None:
        d = [s for _, s in self.durations]
        return round(float(np.percentile(d, 95)), 2) if d else None

    @property
    def pending(self) -> list[Graded]:
        return [g for g in self.graded if g.pending]

    @property
    def outcome_mix(self) -> dict[str, int]:
        mix = {k: 0 for k in ("passed", "failed", "error", "timeout", "crash", "pending", "skipped")}
        for g in self.graded:
            for r in g.results:
                mix[outcome_of(r)] += 1
        return mix

    @property
    def flagged(self) -> list[health_mod.TestHealth]:
        return [h for h in self.health if h.flags]


@dataclass
class Cell:
    """One student × assignment cell of the course matrix: its state in words and a CSS class."""

    state: str                 # score | late | pending | missing | failed | not graded
    text: str
    detail: str = ""


@dataclass
class CourseSummary:
    name: str
    assignments: list[AssignmentSummary]
    students: list[str]
    total_points: float
    totals: dict[str, float] = field(default_factory=dict)
    total_hist: Histogram = field(default_factory=lambda: Histogram([], []))

    def cell(self, student: str, slug: str) -> Cell:
        a = next(x for x in self.assignments if x.slug == slug)
        g = next((r for r in a.rows if r.student == student), None)
        return cell_for(g)


def outcome_of(r) -> str:
    """A result's outcome, with a crash of the student's process told apart from other errors."""
    if r.outcome == "error" and CRASH_MARK in f"{r.message}\n{r.detail}":
        return "crash"
    return r.outcome


def cell_for(g: Graded | None) -> Cell:
    if g is None or g.status == "missing":
        return Cell("missing", "missing", "no submission collected")
    if g.status == "error":
        return Cell("failed", "grading failed", "infrastructure error: " + (g.message or "")[:300])
    if g.status != "graded":
        return Cell("not graded", "not graded", f"attempt {g.attempt} collected, not graded yet")
    text = f"{_fmt(g.final)}/{_fmt(g.max_points)}"
    late = ""
    if g.late_by > 0:
        late = f" (late {g.late_hours:g} h" + (f", −{g.penalty * 100:.0f} %)" if g.penalty else ")")
    if g.pending:
        return Cell("pending", f"{text} + {g.pending} pending{late}", f"{g.pending} GPU test(s) pending")
    if late:
        return Cell("late", text + late, f"submitted {g.submitted_at}")
    return Cell("score", text, "")


def _fmt(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".") if x != int(x) else str(int(x))


def histogram(values: Sequence[float], lo: float, hi: float, bins: int = SCORE_BINS) -> Histogram:
    """Equal bins over [lo, hi]; numpy's convention: each bin holds its left edge, the last also its right."""
    hi = hi if hi > lo else lo + 1.0
    counts, edges = np.histogram(np.asarray(values, dtype=float), bins=bins, range=(lo, hi))
    return Histogram([round(float(e), 6) for e in edges], [int(c) for c in counts])


def _nice_top(x: float) -> float:
    """A round upper edge at or above ``x`` (1, 2, 5 × 10^k)."""
    if x <= 0:
        return 1.0
    k = 10 ** np.floor(np.log10(x))
    for m in (1, 2, 5, 10):
        if m * k >= x:
            return float(m * k)
    return float(10 * k)


def assignment_summary(course: Course, gb: Gradebook, slug: str, rows: list[Graded]) -> AssignmentSummary:
    a = course.assignment(slug)
    s = AssignmentSummary(slug, a.title, a.points, a.due.isoformat(), rows)
    graded = s.graded
    s.scores = histogram(s.final_scores, 0.0, a.points)
    late_hours = [g.late_hours for g in s.late_rows]
    s.late = histogram(late_hours, 0.0, _nice_top(max(late_hours, default=1.0)))
    seconds = [d for _, d in s.durations]
    s.cost = histogram(seconds, 0.0, _nice_top(max(seconds, default=1.0)))
    s.tasks = _task_stats(graded)
    s.tests = _item_stats(graded)
    history = gb.history([slug])
    s.error_gradings = sum(1 for _, g in history if g.status == "error")
    s.health = health_mod.assess(graded, [(sub, g, gb.results(g.id)) for sub, g in history if g.status == "graded"])
    return s


def _task_stats(graded: list[Graded]) -> list[TaskStat]:
    per: dict[str, list[tuple[float, float]]] = {}
    for g in graded:
        for t in task_rows(g):
            per.setdefault(t["task"], []).append((t["points"], t["max_points"]))
    out = []
    for task, pts in per.items():
        got = [p for p, _ in pts]
        top = max(m for _, m in pts)
        out.append(TaskStat(task, top, round(statistics.fmean(got), 3), round(statistics.median(got), 3),
                            round(sum(1 for p, m in pts if m > 0 and p >= m - 1e-9) / len(pts), 3), len(pts)))
    return sorted(out, key=lambda t: [int(p) if p.isdigit() else 10**6 for p in t.task.split(".")])


def _item_stats(graded: list[Graded]) -> list[ItemStat]:
    items: dict[str, ItemStat] = {}
    for g in graded:
        for r in g.results:
            it = items.setdefault(r.test_id, ItemStat(r.test_id, r.name, r.task, r.hidden, r.max_points))
            key = outcome_of(r)
            it.outcomes[key] = it.outcomes.get(key, 0) + 1
    return sorted(items.values(), key=lambda i: (i.pass_rate if i.pass_rate is not None else 2.0, i.name))


def course_summary(course: Course, gb: Gradebook, slugs: Sequence[str] | None = None) -> CourseSummary:
    assignments = course.select(list(slugs) if slugs else None)
    graded = load_graded(course, gb, [a.slug for a in assignments])
    summaries = [assignment_summary(course, gb, a.slug, [g for g in graded if g.slug == a.slug]) for a in assignments]
    students = sorted({g.student for g in graded})
    total_points = sum(a.points for a in assignments)
    totals = {st: round(sum(g.final for g in graded if g.student == st and g.status == "graded"), 4)
              for st in students}
    out = CourseSummary(course.name, summaries, students, total_points, totals)
    out.total_hist = histogram(list(totals.values()), 0.0, total_points)
    return out

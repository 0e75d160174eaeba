"""``course history STUDENT [SLUG]``: a student's record as it happened, step by step.

Every collected attempt, grading (grader version, isolation, duration), override, manual score,
extension change, slip-day pin, regrade request and published score, in order, each with the score
after it. The order is exact between ledger rows and the gradebook's rows (a ledger row notes the
newest submission and grading it saw); attempts and gradings are ordered by their times. The score
after a step is computed by :func:`course.report.load_graded` itself over :class:`AsOf`, the
gradebook as it stood then (today's course.yml; the extensions as the ledger recorded them).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

from course.config import Course, Extension
from course.gradebook import Gradebook, GradingRow, SubmissionRow
from course.ledger import (Adjustment, Entry, LedgerError, _fmt, entries, extensions_as_of, known_students,
                           manual_scores)


@dataclass(frozen=True)
class Cutoff:
    """A moment in the gradebook's life: the newest submission, grading and ledger row it held."""

    submission: int
    grading: int
    ledger: int


class AsOf:
    """The gradebook as it stood at ``cut``: rows recorded later are not there (for replaying a history)."""

    def __init__(self, gb: Gradebook, cut: Cutoff, every: Sequence[SubmissionRow] | None = None):
        self.gb, self.cut, self.db = gb, cut, gb.db
        self.ledger_upto = cut.ledger
        self.path = gb.path
        self.every = list(every) if every is not None else gb.submissions(latest_only=False)   # all attempts

    def submissions(self, slugs: Sequence[str] | None = None, students: Sequence[str] | None = None,
                    latest_only: bool = True) -> list[SubmissionRow]:
        rows = [s for s in self.every if s.id <= self.cut.submission and (not slugs or s.slug in slugs)
                and (not students or s.student in students)]
        if latest_only:
            last: dict[tuple[str, str], SubmissionRow] = {}
            for s in rows:
                last[(s.student, s.slug)] = s
            rows = [s for s in rows if last[(s.student, s.slug)] is s]
        return rows

    def students(self) -> list[str]:
        return sorted({s.student for s in self.submissions(latest_only=False)})

    def current_grading(self, submission_id: int, *, graded_only: bool = True) -> GradingRow | None:
        from course.gradebook import _grading
        sql = "SELECT * FROM gradings WHERE submission_id=? AND id<=?" + (" AND status='graded'" if graded_only else "")
        row = self.db.execute(sql + " ORDER BY id DESC LIMIT 1", (submission_id, self.cut.grading)).fetchone()
        return _grading(row) if row else None

    def last_error(self, submission_id: int) -> GradingRow | None:
        g = self.current_grading(submission_id, graded_only=False)
        return g if g is not None and g.status == "error" else None

    def results(self, grading_id: int) -> list[Any]:
        return self.gb.results(grading_id)

    def manual_scores(self, student: str, slug: str, upto: int | None = None) -> list[Any]:
        return manual_scores(self.gb, student, slug, min(upto, self.cut.ledger) if upto is not None else self.cut.ledger)


@dataclass
class Step:
    """One step of a history, with the final score after it (None: blank in the exports)."""

    at: str
    kind: str                    # attempt | grading | error | override | undo | manual | request | reject |
    #                              extension | slip | published
    slug: str
    text: str                    # what happened (cleaned; escape where written)
    by: str | None = None
    reason: str = ""
    ref: str = ""                # the ledger entry (#12), attempt or grading it is
    score: float | None = None
    cut: Cutoff | None = field(default=None, repr=False)


def history(course: Course, gb: Gradebook, student: str, slug: str | None = None) -> list[Step]:
    """Every collected attempt, grading, override, manual score, extension, slip-day pin, request and
    published score of ``student`` (for ``slug``, or every assignment), in the order they happened, each
    with the score after it, computed by the same function as every export (today's course.yml)."""
    from course import report
    slugs = [course.assignment(slug).slug] if slug else course.slugs
    if student not in known_students(course, gb):
        raise LedgerError(f"student {student!r}: not in the gradebook or {course.paths.roster.name}")
    subs = [s for s in gb.submissions(slugs, latest_only=False) if s.student == student or student in s.member_list]
    base: list[tuple[dt.datetime, int, int, Step]] = []
    for s in subs:
        collected = gb.db.execute("SELECT collected_at FROM submissions WHERE id=?", (s.id,)).fetchone()[0]
        at = _parse(collected)
        gmax = gb.db.execute("SELECT COALESCE(MAX(id), 0) FROM gradings WHERE finished_at < ?",
                             (collected,)).fetchone()[0]
        lmax = gb.db.execute("SELECT COALESCE(MAX(id), 0) FROM ledger WHERE seen_submission < ?", (s.id,)).fetchone()[0]
        who = f" (group {s.group_name})" if s.group_name and s.student != student else ""
        text = f"attempt {s.attempt} collected{who}: submitted {s.submitted_at} (time from {s.submitted_at_source})"
        base.append((at, 0, s.id, Step(collected, "attempt", s.slug, text,
                                       ref=f"attempt {s.attempt}", cut=Cutoff(s.id, gmax, lmax))))
    for s in subs:
        for r in gb.db.execute("SELECT * FROM gradings WHERE submission_id=? ORDER BY id", (s.id,)):
            at = _parse(r["finished_at"] or r["started_at"])
            smax = max(s.id, gb.db.execute("SELECT COALESCE(MAX(id), 0) FROM submissions WHERE collected_at <= ?",
                                           (r["finished_at"] or r["started_at"],)).fetchone()[0])
            lmax = gb.db.execute("SELECT COALESCE(MAX(id), 0) FROM ledger WHERE seen_grading < ?",
                                 (r["id"],)).fetchone()[0]
            if r["status"] == "graded":
                text = (f"attempt {s.attempt} graded: {_fmt(r['points'])}/{_fmt(r['max_points'])} points by the tests "
                        f"(grader {r['grader_version']}, {r['isolation'] or '-'} isolation, {r['duration'] or 0:.1f} s"
                        + (f", {r['pending']} pending" if r["pending"] else "") + ")")
                kind = "grading"
            else:
                text = f"attempt {s.attempt} could not be graded (grader {r['grader_version']}): {r['message']}"
                kind = "error"
            base.append((at, 1, r["id"], Step(r["finished_at"] or r["started_at"], kind, s.slug, text,
                                              ref=f"grading {r['id']}", cut=Cutoff(smax, r["id"], lmax))))
    base.sort(key=lambda b: (b[0], b[1], b[2]))
    rows = [e for e in entries(gb, student=student) if e.slug in slugs or e.slug == "*"]
    steps: list[Step] = [b[3] for b in base]
    # each ledger row goes after every step it had seen and before the first it had not
    for e in rows:
        pos = 0
        for i, b in enumerate(base):
            seen = b[2] <= (e.seen_submission if b[1] == 0 else e.seen_grading)
            if seen:
                pos = i + 1
        step = Step(e.at, e.kind, e.slug, _describe(e), e.by, e.reason if e.kind not in ("published",) else "",
                    f"#{e.id}", cut=Cutoff(e.seen_submission, e.seen_grading, e.id))
        anchor = base[pos - 1][3] if pos else None
        idx = steps.index(anchor) + 1 if anchor is not None else 0
        while idx < len(steps) and steps[idx].ref.startswith("#"):
            idx += 1
        steps.insert(idx, step)
    every = gb.submissions(latest_only=False)
    for step in steps:
        step.score = _score_at(course, gb, student, slug or step.slug, step.cut, report, every)
    return steps


def _parse(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def _score_at(course: Course, gb: Gradebook, student: str, slug: str, cut: Cutoff | None, report: Any,
              every: Sequence[SubmissionRow]) -> float | None:
    if cut is None or slug == "*":
        return None
    view = AsOf(gb, cut, every)
    then = replace(course, extensions=extensions_as_of(gb, cut.ledger))
    [g] = report.load_graded(then, view, [slug], [student])
    return report.final_score(g, course.missing)


def _describe(e: Entry) -> str:
    if e.kind == "override":
        adj = Adjustment(e.id, e.mode or "points", float(e.value or 0.0), e.item, e.reason, e.by, e.at)
        return f"override #{e.id}: {adj.describe()}" + (f" (answers request #{e.ref})" if e.ref else "") \
            + (" (extra credit allowed)" if e.data.get("extra_credit") else "")
    if e.kind == "undo":
        return f"override #{e.ref} undone"
    if e.kind == "manual":
        score = "needs manual grading" if e.value is None else f"{_fmt(e.value)}/{_fmt(e.max_value)}"
        return f"manual score of {e.item}: {score}"
    if e.kind == "request":
        return f"regrade request #{e.id} filed"
    if e.kind == "reject":
        return f"regrade request #{e.ref} rejected"
    if e.kind == "extension":
        if e.data.get("removed"):
            return "extension removed from extensions.yml"
        rule = Extension("", "", due=dt.datetime.fromisoformat(e.data["due"]) if e.data.get("due") else None,
                         extra=e.data.get("extra"), factor=e.data.get("factor")).rule
        return f"extension ({'every assignment' if e.slug == '*' else e.slug}): {rule}"
    if e.kind == "slip":
        return "slip days: automatic" if e.value is None else f"slip days pinned: {int(e.value)}"
    if e.kind == "published":
        return f"published {_fmt(e.value) if e.value is not None else 'blank'} ({e.item})"
    return e.kind

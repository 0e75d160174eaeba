"""The late policy beyond one penalty rule: which attempt counts, and slip days.

* ``grade_attempt`` (course.yml, per course or assignment): ``latest`` (the last attempt),
  ``best`` (the graded attempt with the highest score after its own late penalty; a tie goes to the
  later one) or ``latest_on_time`` (the last attempt within the due date and grace; the latest one
  if none was on time).
* ``late_policy.slip_days: N``: whole late days each student may spend across the course. They are
  spent automatically in due-date order (the student's own due dates), at most ``max_late`` days
  on one assignment, never more than the submission needs and never where they could not save the
  score; days pinned by staff (``course slip-days``) are reserved first.

Both are applied in :func:`course.report.load_graded`, the one place scores are computed.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from course.config import Assignment, Course, LatePolicy
from course.gradebook import SubmissionRow

DAY = 86400.0


def late_by(sub: SubmissionRow, due: dt.datetime) -> float:
    return max(0.0, (dt.datetime.fromisoformat(sub.submitted_at) - due).total_seconds())


def choose(a: Assignment, attempts: Sequence[SubmissionRow], due: dt.datetime, policy: LatePolicy,
           gradebook: Any) -> SubmissionRow | None:
    """The attempt that counts under ``a.grade_attempt`` (attempts in attempt order)."""
    if not attempts:
        return None
    if a.grade_attempt == "latest" or len(attempts) == 1:
        return attempts[-1]
    if a.grade_attempt == "latest_on_time":
        on_time = [s for s in attempts if late_by(s, due) <= policy.grace]
        return on_time[-1] if on_time else attempts[-1]
    scored = []
    for s in attempts:
        g = gradebook.current_grading(s.id)
        if g is not None:
            scored.append((round((g.points or 0.0) * (1.0 - policy.penalty_fraction(late_by(s, due))), 6),
                           s.attempt, s))
    return max(scored, key=lambda t: (t[0], t[1]))[2] if scored else attempts[-1]


def attempts_to_grade(course: Course, gradebook: Any, slug: str,
                      students: Sequence[str] | None = None) -> list[SubmissionRow]:
    """The attempts ``course grade`` must grade for the attempt rule to choose: the latest one, plus
    the latest on-time one (``latest_on_time``) or every one (``best``)."""
    a = course.assignment(slug)
    if a.grade_attempt == "latest":
        return gradebook.submissions([slug], students)
    by_student: dict[str, list[SubmissionRow]] = {}
    for s in gradebook.submissions([slug], students, latest_only=False):
        by_student.setdefault(s.student, []).append(s)
    out = []
    for student, attempts in by_student.items():
        if a.grade_attempt == "best":
            out += attempts
            continue
        due = course.due_for(student, slug)
        on_time = [s for s in attempts if late_by(s, due) <= course.late_policy.grace]
        out += sorted({s.id: s for s in (on_time[-1:] + attempts[-1:])}.values(), key=lambda s: s.attempt)
    return out


def days_needed(policy: LatePolicy, late: float | None) -> int:
    """Whole days that would make a submission ``late`` seconds late count as on time."""
    if late is None or late <= policy.grace:
        return 0
    return int(math.ceil((late - policy.grace) / DAY - 1e-9))


@dataclass
class SlipDays:
    """One student's slip days: spent per assignment, left, and what could not be honoured."""

    spent: dict[str, int] = field(default_factory=dict)
    left: int = 0
    notes: dict[str, str] = field(default_factory=dict)


def allocate(policy: LatePolicy, items: Sequence[tuple[str, float | None]],
             pins: Mapping[str, int]) -> SlipDays:
    """``items``: (slug, seconds late or None for nothing submitted) in the student's due-date order."""
    out = SlipDays(left=policy.slip_days)
    for slug, late in items:                          # pinned days are reserved first
        if slug not in pins:
            continue
        want = min(pins[slug], days_needed(policy, late))
        take = min(want, out.left)
        if take < want:
            out.notes[slug] = f"{pins[slug]} slip day(s) pinned, only {out.left} left"
        out.spent[slug], out.left = take, out.left - take
    for slug, late in items:                          # then the rest, in due-date order
        if slug in pins:
            continue
        take = min(days_needed(policy, late), out.left, policy.slip_cap)
        if take and late is not None and policy.penalty_fraction(late - take * DAY) >= 1.0:
            take = 0                                  # would not save the score: keep the days
        out.spent[slug], out.left = take, out.left - take
    return out


def apply_slip_days(course: Course, graded: Mapping[str, Any], pins: Mapping[str, int]) -> None:
    """Spend one student's slip days over their Graded records (every assignment of the course), in place."""
    policy = course.late_policy
    if policy.slip_days <= 0:
        return
    order = sorted(graded.values(), key=lambda g: (dt.datetime.fromisoformat(g.due) if g.due else course.assignment(
        g.slug).due, course.slugs.index(g.slug)))
    items = [(g.slug, g.late_by if g.status != "missing" else None) for g in order]
    slips = allocate(policy, items, pins)
    for g in order:
        g.slip_days = slips.spent.get(g.slug, 0)
        g.slip_left = slips.left
        g.slip_note = slips.notes.get(g.slug, "")
        if g.status != "missing":
            g.penalty = policy.penalty_fraction(max(0.0, g.late_by - g.slip_days * DAY))

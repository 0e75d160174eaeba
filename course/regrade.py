"""Regrades that nobody is surprised by: a preview before scores change, and a guard on ``course grade``.

* ``course grade --preview`` grades into a scratch copy of the gradebook and compares, per student and
  assignment, the score the student last saw (the last published one: feedback or an export) or, if
  none was published, today's, with the score after grading, listing the tests whose outcome changed.
  It catches changed graders, points and limits (they re-grade) and a changed late policy, slip days
  or accommodations (the same results, other scores). The real gradebook is not written.
* ``course grade`` grades what a changed grader version would re-grade into a scratch copy first; if
  more than ``regrade_share`` (course.yml, default 0) of those scores would change, it records none of
  them and asks for ``--accept-regrade`` (first gradings of new submissions are recorded as usual).
"""

from __future__ import annotations

import sqlite3
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

from course import ledger, report
from course.config import Course
from course.errors import CourseError
from course.gradebook import Gradebook

EPS = 1e-6


@dataclass
class Change:
    """One student's assignment before and after."""

    student: str
    slug: str
    old: float | None            # the last published score, else the current one (None: blank)
    new: float | None
    seen: bool                   # ``old`` is a score the student was shown
    tests: list[tuple[str, str, str]] = field(default_factory=list)   # (test, outcome before, after)
    graded: bool = False         # graded before or after (counts for the share of the class)

    @property
    def delta(self) -> float | None:
        return None if self.old is None or self.new is None else round(self.new - self.old, 4)

    @property
    def changed(self) -> bool:
        if (self.old is None) != (self.new is None):
            return True
        return bool(self.tests) or (self.old is not None and abs(self.new - self.old) > EPS)


@dataclass
class Preview:
    changes: list[Change]
    rows: list[Any] = field(default_factory=list)     # api.GradeRow of the scratch grading

    @property
    def changed(self) -> list[Change]:
        return [c for c in self.changes if c.changed]

    @property
    def up(self) -> int:
        return sum(1 for c in self.changed if (c.delta or 0) > EPS)

    @property
    def down(self) -> int:
        return sum(1 for c in self.changed if (c.delta or 0) < -EPS)

    @property
    def unchanged(self) -> int:
        return sum(1 for c in self.changes if not c.changed)

    @property
    def share(self) -> float:
        """Changed scores among those graded (before or after)."""
        graded = [c for c in self.changes if c.graded]
        return len([c for c in graded if c.changed]) / len(graded) if graded else 0.0

    def largest(self, n: int = 5) -> list[Change]:
        return sorted((c for c in self.changed if c.delta is not None), key=lambda c: -abs(c.delta or 0))[:n]


class Scratch:
    """A copy of a gradebook in a temporary folder (SQLite's online backup: consistent under WAL)."""

    def __init__(self, gb: Gradebook):
        self._tmp = tempfile.TemporaryDirectory(prefix="course-regrade-")
        self.path = Path(self._tmp.name) / "gradebook.sqlite"
        target = sqlite3.connect(str(self.path))
        try:
            gb.db.backup(target)
        finally:
            target.close()
        self.gb = Gradebook(self.path)

    def close(self) -> None:
        self.gb.close()
        self._tmp.cleanup()


def compare(course: Course, old_gb: Any, new_gb: Any, slugs: Sequence[str] | None = None,
            students: Sequence[str] | None = None, keys: Iterable[tuple[str, str]] | None = None,
            *, published: bool = True) -> list[Change]:
    """Per (student, assignment): the score before (published, else current) and after, and the tests
    whose outcome changed. ``keys`` limits the comparison."""
    old = {(g.student, g.slug): g for g in report.load_graded(course, old_gb, slugs, students)}
    new = {(g.student, g.slug): g for g in report.load_graded(course, new_gb, slugs, students)}
    book = ledger.Book.load(old_gb)
    wanted = set(keys) if keys is not None else set(old) | set(new)
    out = []
    for key in sorted(wanted):
        o, n = old.get(key), new.get(key)
        seen, last = book.published(*key) if published else (False, None)
        before = last if seen else (report.final_score(o, course.missing) if o else None)
        after = report.final_score(n, course.missing) if n else None
        was = {r.test_id: r for r in (o.results if o else [])}
        tests = []
        for r in (n.results if n else []):
            prev = was.get(r.test_id)
            if prev is None or prev.outcome != r.outcome:
                tests.append((r.name, prev.outcome if prev else "-", r.outcome))
        graded = any(g is not None and g.status == "graded" for g in (o, n))
        out.append(Change(key[0], key[1], before, after, seen, tests, graded))
    return out


def preview(course: Course, slugs: Sequence[str] | None = None, students: Sequence[str] | None = None,
            **grade_options: Any) -> Preview:
    """Grade into a scratch copy of the gradebook and compare; the real gradebook is not written."""
    from course import api
    if not course.paths.gradebook.exists():
        raise CourseError(f"{course.paths.gradebook}: no gradebook yet, so nothing to preview (run course grade)")
    with Gradebook(course.paths.gradebook) as real:
        scratch = Scratch(real)
        try:
            scratch_course = replace(course, paths=replace(course.paths, gradebook=scratch.path))
            rep = api.grade(scratch_course, slugs, students, accept_regrade=True, **grade_options)
            selected = [a.slug for a in course.select(list(slugs) if slugs else None)]
            changes = compare(course, real, scratch.gb, selected, students)
        finally:
            scratch.close()
    return Preview(changes, rep.rows)

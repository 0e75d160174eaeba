"""Test health: which tests deserve a second look before their points are trusted.

For each test of an assignment, over the latest graded submissions:

* **pass rate among otherwise-strong students**: those who pass at least 90 % of the *other* tests
  of the test's task (cases of the same parametrised test are not "other"; a task with fewer than
  two other tests uses the rest of the assignment instead, and says so);
* **discrimination**: the correlation of passing the test with the share of the rest of the
  assignment's points (a corrected item-total, point-biserial correlation). A healthy test is
  passed more often by students who do well elsewhere: a value near 0 or below is suspicious.

A test is flagged "check this test" when most otherwise-strong students fail it (a broken
expectation or an unclear specification), or when two gradings of identical content (the same
content hash under the same grader version, whoever submitted it) gave it different outcomes (a
flaky test: a grading bug). Each flag carries its evidence. Nothing here changes a grade.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

STRONG_SHARE = 0.9        # "otherwise strong": passes at least this share of the other tests of the task
MIN_STRONG = 5            # fewer otherwise-strong students than this: no verdict on the pass rate
BROKEN_BELOW = 0.5        # flagged when otherwise-strong students pass it less often than this
MIN_REFERENCE = 2         # a task needs this many other tests to be its own basis
DECIDED = ("passed", "failed", "error", "timeout")


@dataclass
class TestHealth:
    __test__ = False      # not a pytest test class

    test_id: str
    name: str
    task: str | None
    hidden: bool
    decided: int = 0                     # students with a pass or a fail on it
    pass_rate: float | None = None
    basis: str = ""                      # which other tests define "otherwise strong"
    strong_n: int = 0
    strong_passed: int = 0
    discrimination: float | None = None
    flags: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)
    failed_by_strong: list[str] = field(default_factory=list)   # student ids (untrusted text)

    @property
    def strong_pass_rate(self) -> float | None:
        return self.strong_passed / self.strong_n if self.strong_n else None


def base_name(name: str) -> str:
    """A parametrised case's test: ``test_x[3]`` -> ``test_x``."""
    return re.sub(r"\[.*\]$", "", name)


def _passed(outcome: str) -> int | None:
    if outcome == "passed":
        return 1
    return 0 if outcome in DECIDED else None


def assess(graded: Sequence[Any], history: Sequence[tuple[Any, Any, Sequence[Any]]] = ()) -> list[TestHealth]:
    """Health of every test of one assignment.

    ``graded``: the latest graded submissions (:class:`course.report.Graded`); ``history``: every
    graded grading of the assignment as ``(submission, grading, results)`` for the flakiness check.
    """
    tests: dict[str, TestHealth] = {}
    points: dict[str, float] = {}
    table: dict[str, dict[str, tuple[int | None, float]]] = {}   # student -> test_id -> (pass, points)
    for g in graded:
        row = table.setdefault(g.student, {})
        for r in g.results:
            tests.setdefault(r.test_id, TestHealth(r.test_id, r.name, r.task, bool(r.hidden)))
            points[r.test_id] = max(points.get(r.test_id, 0.0), float(r.max_points))
            row[r.test_id] = (_passed(r.outcome), float(r.points))
    # A test already judged broken does not define "otherwise strong" for its neighbours: recompute
    # without the flagged ones until the flags settle (a broken test would otherwise hide its task's strong).
    excluded: set[str] = set()
    for _ in range(len(tests) + 1):
        for test_id, h in list(tests.items()):
            tests[test_id] = _rates(TestHealth(h.test_id, h.name, h.task, h.hidden), tests, points, table,
                                    excluded - {test_id})
        flagged = {t for t, h in tests.items() if h.flags}
        if flagged == excluded:
            break
        excluded = flagged
    for test_id, evidence in flaky_evidence(history).items():
        if test_id in tests:
            tests[test_id].flags.append("outcome differs between gradings of identical content")
            tests[test_id].evidence += evidence
    return sorted(tests.values(), key=lambda h: (not h.flags, h.task or "", h.name))


def _rates(h: TestHealth, tests: dict[str, TestHealth], points: dict[str, float],
           table: dict[str, dict[str, tuple[int | None, float]]], excluded: set[str]) -> TestHealth:
    siblings = {t for t, o in tests.items() if base_name(o.name) == base_name(h.name)}
    same_task = [t for t, o in tests.items() if o.task == h.task and t not in siblings and t not in excluded]
    if len(same_task) >= MIN_REFERENCE:
        reference, h.basis = same_task, f"the other tests of task {h.task}"
    else:
        reference = [t for t in tests if t not in siblings and t not in excluded]
        h.basis = "the other tests of the assignment"
    if excluded & {t for t, o in tests.items() if o.task == h.task}:
        h.basis += " (less those flagged as broken)"
    xs, rests = [], []
    for student, row in sorted(table.items()):
        mine = row.get(h.test_id, (None, 0.0))[0]
        if mine is None:
            continue
        h.decided += 1
        h.pass_rate = (h.pass_rate or 0.0) + mine
        others = [row[t][0] for t in reference if t in row and row[t][0] is not None]
        if len(others) >= min(MIN_REFERENCE, len(reference)) and others and sum(others) >= STRONG_SHARE * len(others):
            h.strong_n += 1
            h.strong_passed += mine
            if not mine:
                h.failed_by_strong.append(student)
        rest_max = sum(points[t] for t in row if t not in siblings and row[t][0] is not None)
        if rest_max > 0:
            xs.append(float(mine))
            rests.append(sum(row[t][1] for t in row if t not in siblings and row[t][0] is not None) / rest_max)
    if h.decided:
        h.pass_rate = round((h.pass_rate or 0.0) / h.decided, 4)
    h.discrimination = _correlation(xs, rests)
    rate = h.strong_pass_rate
    if h.strong_n >= MIN_STRONG and rate is not None and rate < BROKEN_BELOW:
        h.flags.append("failed by most otherwise-strong students")
        disc = "n/a" if h.discrimination is None else f"{h.discrimination:+.2f}"
        h.evidence.append(f"passed by {h.strong_passed} of the {h.strong_n} students who pass ≥ "
                          f"{STRONG_SHARE:.0%} of {h.basis}; discrimination {disc}; class pass rate "
                          f"{h.pass_rate:.0%}")
    return h


def _correlation(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    n = len(xs)
    if n < 3:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx <= 0 or syy <= 0:
        return None
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    return round(sxy / math.sqrt(sxx * syy), 3)


def flaky_evidence(history: Sequence[tuple[Any, Any, Sequence[Any]]]) -> dict[str, list[str]]:
    """Tests whose outcome differs between gradings of identical content under one grader version.

    Pending and skipped outcomes are not compared (a GPU test is pending on a CPU machine by design).
    """
    groups: dict[tuple[str, str], list[tuple[Any, Any, dict[str, str]]]] = {}
    for sub, grading, results in history:
        outcomes = {r.test_id: r.outcome for r in results if r.outcome in DECIDED}
        groups.setdefault((sub.sha256, grading.grader_version), []).append((sub, grading, outcomes))
    out: dict[str, list[str]] = {}
    for (sha, version), runs in groups.items():
        if len(runs) < 2:
            continue
        for test_id in sorted({t for _, _, o in runs for t in o}):
            seen = [(sub, g, o[test_id]) for sub, g, o in runs if test_id in o]
            if len({x for _, _, x in seen} ) > 1:
                who = ", ".join(f"{sub.student} attempt {sub.attempt} grading {g.id}: {x}" for sub, g, x in seen[:6])
                out.setdefault(test_id, []).append(
                    f"content {sha[:12]} under grader {version}: {who}" + (" …" if len(seen) > 6 else ""))
    return out

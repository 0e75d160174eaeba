"""What the ledger costs on a course of 300: scores with overrides, slip days and attempt rules.

    python benchmarks/ledger_scale.py [--students 300] [--assignments 5] [--tests 20] [--seed 0]

Builds a gradebook by hand (nothing is graded: the submissions, gradings and ledger rows are written
as ``course collect``, ``course grade`` and the staff commands write them): every student submits
every assignment once or twice, some late; about 1 in 10 has an override, 1 in 20 a regrade
request, 1 in 30 a standing accommodation. Then times, each on a fresh open of the gradebook:

* ``load_graded`` for the whole course (what every export and feedback run computes), with
  ``grade_attempt: latest`` and no slip days, then with slip days and ``grade_attempt: best``;
* ``course export --format csv`` (publishing every score into the ledger the first time);
* ``course history`` of one student (every step replayed through the same computation);
* ``course grade --preview`` of a late-policy change (no regrade: a scratch copy and two computations).
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from course import api, ledger, regrade, report  # noqa: E402
from course.gradebook import Gradebook  # noqa: E402
from course.grading.results import TestResult  # noqa: E402
from course.grading.runner import spec_for  # noqa: E402

UTC = dt.timezone.utc


def course_yml(folder: Path, n_assignments: int, *, slip: bool, rule: str) -> Path:
    lines = ["name: ledger benchmark", f"grade_attempt: {rule}",
             "late_policy: {grace: 15m, penalty_percent: 10, per: day, max_late: 3" + (", slip_days: 4}" if slip else "}"),
             "assignments:"]
    for i in range(n_assignments):
        due = dt.datetime(2026, 10, 1, 23, 59, tzinfo=UTC) + dt.timedelta(weeks=i)
        lines += [f"  - slug: a{i}", f"    due: {due.isoformat()}", "    points: 100"]
    path = folder / "course.yml"
    path.write_text("\n".join(lines) + "\n")
    return path


def build(folder: Path, students: int, n_assignments: int, tests: int, rng: random.Random) -> None:
    course_yml(folder, n_assignments, slip=False, rule="latest")
    for i in range(n_assignments):           # graders exist (their version is what the gradings record)
        (folder / "graders" / f"a{i}").mkdir(parents=True)
        (folder / "graders" / f"a{i}" / "test_hidden.py").write_text("def test_placeholder():\n    pass\n")
    (folder / "extensions.yml").write_text("".join(
        f'- {{student: s{i:03d}, assignment: "*", extra: 2d, reason: accommodation}}\n'
        for i in range(0, students, 30)))
    course = api.load_course(folder / "course.yml")
    with api.open_gradebook(course) as gb:
        for a in course.assignments:
            version = spec_for(course, a.slug).version
            for i in range(students):
                sid = f"s{i:03d}"
                for attempt in range(1, rng.choice((2, 3))):
                    late = rng.choice((0, 0, 0, 0.2, 1.5, 3.5)) * 86400 - 3600
                    when = a.due + dt.timedelta(seconds=late)
                    sub = gb.add_submission(student=sid, slug=a.slug, attempt=attempt, submitted_at=when.isoformat(),
                                            late_by=max(0.0, late), sha256=f"{sid}{a.slug}{attempt}",
                                            path=f"submitted/{sid}/{a.slug}/{attempt}", source="benchmark",
                                            submitted_at_source="instructor-flag")
                    rows = [TestResult(f"t{k}", f"test_hidden.py::test_{k}", f"{1 + k // 5}.{k % 5}", True,
                                       "passed" if rng.random() < 0.8 else "failed", 0.0, 100 / tests, duration=0.1)
                            for k in range(tests)]
                    for r in rows:
                        r.points = r.max_points if r.outcome == "passed" else 0.0
                    gb.save_grading(sub, version, rows, backend="sandbox", device="cpu", isolation="strong",
                                    started_at=when.isoformat(), duration=1.0)
        for i in range(students):
            sid = f"s{i:03d}"
            if i % 10 == 0:
                ledger.append(gb, "override", sid, "a0", mode="delta", value=2.0, reason="benchmark", by="ta")
            if i % 20 == 0:
                ledger.append(gb, "request", sid, "a1", reason="please look at 1.3", by="ta")


def timed(label: str, fn):
    t0 = time.perf_counter()
    out = fn()
    print(f"{label:<58} {time.perf_counter() - t0:7.2f} s")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--students", type=int, default=300)
    ap.add_argument("--assignments", type=int, default=5)
    ap.add_argument("--tests", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="course-ledger-bench-") as tmp:
        folder = Path(tmp)
        timed(f"build: {args.students} students x {args.assignments} assignments x {args.tests} tests",
              lambda: build(folder, args.students, args.assignments, args.tests, random.Random(args.seed)))
        with Gradebook(folder / "gradebook.sqlite") as gb:
            counts = {t: gb.db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                      for t in ("submissions", "gradings", "results", "ledger")}
        print("rows: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        for slip, rule in ((False, "latest"), (True, "best")):
            course = api.load_course(course_yml(folder, args.assignments, slip=slip, rule=rule))
            with api.open_gradebook(course) as gb:
                graded = timed(f"load_graded, whole course (slip days {'on' if slip else 'off'}, {rule})",
                               lambda: report.load_graded(course, gb))
            print(f"  {len(graded)} records, {sum(g.slip_days for g in graded)} slip days spent, "
                  f"{sum(1 for g in graded if g.adjustments)} with an override")
        timed("course export --format csv (first: publishes every score)", lambda: api.export(course, "csv"))
        timed("course export --format csv (again: nothing new to publish)", lambda: api.export(course, "csv"))
        steps = timed("course history s000 (every assignment)", lambda: api.history(course, "s000"))
        print(f"  {len(steps)} steps")
        text = (folder / "course.yml").read_text().replace("penalty_percent: 10", "penalty_percent: 20")
        (folder / "course.yml").write_text(text)
        course = api.load_course(folder / "course.yml")
        preview = timed("course grade --preview after a late-policy change",
                        lambda: regrade.preview(course, backend="local"))
        print(f"  {len(preview.changed)} of {len(preview.changes)} scores change")


if __name__ == "__main__":
    main()

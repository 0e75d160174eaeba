"""The late policy at its edges, extensions, and the CSV export an LMS takes.

The toy course: due 2026-10-01T23:59:00+00:00, 15 minutes' grace, then 10 % per started day
(counted after the grace), and zero once more than 3 days late.
"""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
from click.testing import CliRunner

from course import api, config, report
from course.cli import main
from course.config import LatePolicy
from course.grading.judge import TestResult

DAY, HOUR, GRACE = 86400.0, 3600.0, 900.0
TOY_POLICY = LatePolicy(grace=GRACE, penalty_percent=10, per="day", max_late=3)


@pytest.mark.parametrize("late_by, fraction", [
    (0.0, 0.0),                         # exactly on time
    (GRACE - 1, 0.0),                   # inside the grace period
    (GRACE, 0.0),                       # the last second of grace
    (GRACE + 1, 0.1),                   # just past grace: the first started day
    (GRACE + DAY, 0.1),                 # a whole first day
    (GRACE + DAY + 1, 0.2),             # into the second day
    (GRACE + 3 * DAY, 0.3),             # exactly at the cap: still accepted
    (GRACE + 3 * DAY + 1, 1.0),         # past the cap: zero
    (30 * DAY, 1.0),
], ids=["on-time", "in-grace", "grace-end", "past-grace", "one-day", "second-day", "at-cap", "past-cap", "month"])
def test_toy_policy_at_the_edges(late_by, fraction):
    assert TOY_POLICY.penalty_fraction(late_by) == pytest.approx(fraction)


def test_the_toy_course_yml_is_that_policy(toy):
    assert config.load(toy / "course.yml").late_policy == TOY_POLICY


def test_per_hour_policy_and_a_cap_of_zero():
    hourly = LatePolicy(grace=0, penalty_percent=5, per="hour", max_late=24)
    assert hourly.penalty_fraction(1) == pytest.approx(0.05)
    assert hourly.penalty_fraction(HOUR) == pytest.approx(0.05)
    assert hourly.penalty_fraction(HOUR + 1) == pytest.approx(0.10)
    assert hourly.penalty_fraction(19 * HOUR + 1) == 1.0          # 20 started hours x 5 % = everything
    assert hourly.penalty_fraction(24 * HOUR) == 1.0
    strict = LatePolicy(grace=GRACE, penalty_percent=10, per="day", max_late=0)
    assert strict.penalty_fraction(GRACE) == 0.0 and strict.penalty_fraction(GRACE + 1) == 1.0


def write_extensions(course_dir, *lines):
    (course_dir / "extensions.yml").write_text("".join(f"- {line}\n" for line in lines))


def test_an_extension_moves_the_due_date_for_that_student_only(toy):
    write_extensions(toy, "{student: alice, assignment: vecops, due: 2026-10-03T23:59:00+00:00, reason: illness}")
    course = config.load(toy / "course.yml")
    due = dt.datetime(2026, 10, 1, 23, 59, tzinfo=dt.timezone.utc)
    assert course.due_for("bob", "vecops") == due
    assert course.due_for("alice", "vecops") == due + dt.timedelta(days=2)


def submit(course, tmp_path, student: str, when: str) -> None:
    folder = tmp_path / "in" / student
    folder.mkdir(parents=True)
    (folder / "vecops.py").write_text(f"# {student}\n")
    rep = api.collect(course, folder, "vecops", student=student, submitted_at=when)
    assert [i.status for i in rep.items] == ["collected"]


def grade_all(course, points: float) -> None:
    """Record a grading of every submission without running anything (the policy is what is tested)."""
    results = [TestResult(test_id="public:t", name="test_vecops.py::t", task="1.1", hidden=False, outcome="passed",
                          points=points, max_points=10, duration=0.1)]
    with api.open_gradebook(course) as gb:
        for sub in gb.submissions(["vecops"]):
            gb.save_grading(sub.id, "v1", results, backend="sandbox", device="cpu", isolation="strong",
                            started_at="2026-10-05T00:00:00+00:00", duration=0.1)


@pytest.fixture
def late_class(toy, tmp_path):
    write_extensions(toy, "{student: erin, assignment: vecops, due: 2026-10-03T23:59:00+00:00, reason: illness}")
    course = config.load(toy / "course.yml")
    submit(course, tmp_path, "ann", "2026-10-02T01:59:00+02:00")        # exactly on time, another zone
    submit(course, tmp_path, "ben", "2026-10-02T00:14:00+00:00")        # inside the grace period
    submit(course, tmp_path, "cat", "2026-10-02T00:14:01+00:00")        # just past grace
    submit(course, tmp_path, "dan", "2026-10-05T00:14:00+00:00")        # at the cap (3 days after grace)
    submit(course, tmp_path, "eve", "2026-10-05T00:14:01+00:00")        # past the cap
    submit(course, tmp_path, "erin", "2026-10-03T12:00:00+00:00")       # late, but inside her extension
    submit(course, tmp_path, "finn", "2026-10-01T12:00:00+00:00")       # early; collected, never graded
    grade_all(course, 8.0)
    with api.open_gradebook(course) as gb:          # finn's grading is removed: "not graded" in the export
        [finn] = gb.submissions(["vecops"], ["finn"])
        with gb.transaction() as db:
            db.execute("DELETE FROM results WHERE grading_id IN (SELECT id FROM gradings WHERE submission_id=?)",
                       (finn.id,))
            db.execute("DELETE FROM gradings WHERE submission_id=?", (finn.id,))
    return toy, course


def test_csv_export_is_ready_for_an_lms(late_class, tmp_path):
    toy, _ = late_class
    out = tmp_path / "grades.csv"
    result = CliRunner().invoke(main, ["export", "--format", "csv", "--out", str(out), "--course",
                                       str(toy / "course.yml")])
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(out.read_text())))
    assert rows[0] == ["student_id", "vecops", "vecops_raw", "vecops_late_hours", "vecops_provisional", "total"]
    assert rows[1:] == [
        ["ann", "8", "8", "0.0", "", "8"],
        ["ben", "8", "8", "0.25", "", "8"],
        ["cat", "7.2", "8", "0.25", "", "7.2"],
        ["dan", "5.6", "8", "72.25", "", "5.6"],
        ["erin", "8", "8", "0.0", "", "8"],
        ["eve", "0", "8", "72.25", "", "0"],
        ["finn", "", "", "0.0", "", "0"],    # collected, not graded: blank, never a 0
    ]


def test_feedback_states_lateness_and_the_extension(late_class):
    _, course = late_class
    with api.open_gradebook(course) as gb:
        graded = {g.student: g for g in report.load_graded(course, gb, ["vecops"])}
    assert "(on time)" in report.feedback_markdown(graded["ann"])
    assert "within the grace period: no penalty" in report.feedback_markdown(graded["ben"])
    assert "late penalty 10 %" in report.feedback_markdown(graded["cat"])
    assert "past the last accepted day, the score is zero" in report.feedback_markdown(graded["eve"])
    erin = report.feedback_markdown(graded["erin"])
    assert "(on time)" in erin and "Extension: due 2026-10-03 23:59 UTC (illness)" in erin


def test_status_shows_the_extensions(late_class):
    toy, _ = late_class
    result = CliRunner().invoke(main, ["status", "--course", str(toy / "course.yml")])
    assert result.exit_code == 0, result.output
    assert "extensions (extensions.yml)" in result.output
    assert "erin" in result.output and "2026-10-03T23:59:00+00:00" in result.output and "illness" in result.output

"""Slip days, standing accommodations and the attempt rules (course/late.py, extensions.yml), in every
export: a toy course of three assignments a week apart (due 2026-10-01, -08 and -15 at 23:59 UTC),
15 minutes' grace, 10 % per started day, zero beyond 3 days, and 3 slip days per student."""

from __future__ import annotations

import csv
import shutil

import pytest

from course import api, config, late, report
from course.config import LatePolicy
from course.errors import ConfigError
from staffkit import cli, grade, results, said, submit

SLUGS = ("vecops", "vec2", "vec3")
EIGHT = {"1.1": 4.0, "1.2": 4.0}                  # 8 of 10 points
MAXIMA = {"1.1": 5.0, "1.2": 5.0}


def three(toy, *, slip_days: int = 3, extra: str = "") -> None:
    """The toy course with vec2 and vec3 (copies of vecops), due a week apart."""
    for slug in SLUGS[1:]:
        shutil.copytree(toy / "assignments" / "vecops", toy / "assignments" / slug)
        shutil.copytree(toy / "graders" / "vecops", toy / "graders" / slug)
    text = (toy / "course.yml").read_text().replace("  max_late: 3\n", f"  max_late: 3\n  slip_days: {slip_days}\n")
    text += "".join(f"  - slug: {slug}\n    title: {slug}\n    due: 2026-10-{day}T23:59:00+00:00\n    points: 10\n"
                    for slug, day in (("vec2", "08"), ("vec3", "15")))
    (toy / "course.yml").write_text(text + extra)


def scores(course) -> dict[tuple[str, str], float | None]:
    with api.open_gradebook(course) as gb:
        return {(g.student, g.slug): report.final_score(g, course.missing) for g in report.load_graded(course, gb)}


def graded(course, student: str, slug: str) -> report.Graded:
    with api.open_gradebook(course) as gb:
        [g] = report.load_graded(course, gb, [slug], [student])
    return g


@pytest.fixture
def slip_class(toy, tmp_path):
    three(toy)
    course = api.load_course(toy / "course.yml")
    for student, slug, when in [
            ("ann", "vecops", "2026-10-03T10:00:00+00:00"),    # 34 h late: needs 2 days
            ("ann", "vec2", "2026-10-09T05:00:00+00:00"),      # 5 h late: needs 1
            ("ann", "vec3", "2026-10-17T12:00:00+00:00"),      # 36 h late: needs 2, none left
            ("ben", "vecops", "2026-10-10T00:00:00+00:00"),    # 8 days late: no slip days could save it
            ("ben", "vec2", "2026-10-09T00:30:00+00:00"),      # 31 min late: needs 1
            ("ben", "vec3", "2026-10-15T12:00:00+00:00")]:     # on time
        submit(course, tmp_path, student, when, slug)
        grade(course, student, slug, results(EIGHT, MAXIMA))
    return toy, course


def test_slip_days_are_spent_in_due_date_order_never_more_than_needed(slip_class):
    toy, course = slip_class
    got = {k: (graded(course, *k).slip_days, graded(course, *k).slip_left, s) for k, s in scores(course).items()}
    assert got == {("ann", "vecops"): (2, 0, 8.0),      # 2 of the 3 available: never more than needed
                   ("ann", "vec2"): (1, 0, 8.0),
                   ("ann", "vec3"): (0, 0, 6.4),        # none left: 2 started days, 20 %
                   ("ben", "vecops"): (0, 2, 0.0),      # beyond max_late even after 3 days: kept
                   ("ben", "vec2"): (1, 2, 8.0),
                   ("ben", "vec3"): (0, 2, 8.0)}
    api.export(course, "csv")
    rows = {r["student_id"]: r for r in csv.DictReader((toy / "exports" / "grades.csv").open())}
    assert (rows["ann"]["vecops"], rows["ann"]["vec3"], rows["ann"]["total"]) == ("8", "6.4", "22.4")
    md = report.feedback_markdown(graded(course, "ann", "vecops"))
    assert "34.0 h late, 2 slip day(s) spent: no penalty" in md
    assert "- Slip days: 2 spent on this assignment, 0 left for the course" in md
    result = cli(toy, "status")
    assert result.exit_code == 0, result.output
    assert "slip days (late_policy.slip_days: 3 per student)" in said(result)


def test_pinned_slip_days_are_reserved_first_and_bounded(slip_class):
    toy, course = slip_class
    change = api.pin_slip_days(course, "ann", "vecops", 0, reason="asked to save them for later", by="prof")
    assert (change.before, change.after) == (8.0, 6.4)       # takes the penalty on the first one
    got = scores(course)
    assert (got[("ann", "vec2")], got[("ann", "vec3")]) == (8.0, 8.0)    # ... and the days go to vec3
    api.pin_slip_days(course, "ann", "vec2", 3, reason="pinned more than needed", by="prof")
    assert graded(course, "ann", "vec2").slip_days == 1                   # never more than needed
    for args, message in [(["--use", "4"], "at most 3 slip day(s) per assignment"),
                          (["--use", "-1"], "slip days cannot be negative")]:
        result = cli(toy, "slip-days", "ann", "vec3", *args, "--reason", "r")
        assert result.exit_code == 2 and message in said(result), result.output
    result = cli(toy, "slip-days", "ann", "vecops", "--use", "1", "--reason", "r")
    assert result.exit_code == 2 and "would total 4, more than late_policy.slip_days (3): slip days would go " \
                                     "negative" in said(result)
    assert cli(toy, "slip-days", "ann", "vecops", "--auto", "--reason", "back to automatic").exit_code == 0
    # vec2's pin reserves the 1 day it needs; automatic again, vecops takes 2 and vec3 none
    assert [graded(course, "ann", s).slip_days for s in SLUGS] == [2, 1, 0]


def test_allocation_rules():
    policy = LatePolicy(grace=900, penalty_percent=10, per="day", max_late=3, slip_days=4)
    day = 86400
    spent = late.allocate(policy, [("a", 2.5 * day), ("b", None), ("c", 0.5 * day)], {})
    assert (spent.spent, spent.left) == ({"a": 3, "b": 0, "c": 1}, 0)
    pinned = late.allocate(policy, [("a", 2.5 * day), ("c", 0.5 * day), ("d", 1.5 * day)], {"d": 2})
    assert (pinned.spent, pinned.left) == ({"d": 2, "a": 2, "c": 0}, 0)      # d reserved first, a takes the rest
    assert late.allocate(LatePolicy(per="hour", max_late=30, slip_days=5), [], {}).left == 5
    assert LatePolicy(per="hour", max_late=30).slip_cap == 2


def test_standing_accommodations_and_per_assignment_entries(toy):
    three(toy, slip_days=0)
    text = (toy / "course.yml").read_text().replace("    points: 10\n    limits:",
                                                    "    points: 10\n    release: 2026-09-24T23:59:00+00:00\n    limits:")
    (toy / "course.yml").write_text(text)
    (toy / "extensions.yml").write_text(
        '- {student: cat, assignment: "*", extra: 2d, reason: accommodation letter}\n'
        "- {student: cat, assignment: vec2, due: 2026-10-20T00:00:00+00:00, reason: surgery}\n"
        '- {student: dan, assignment: vecops, factor: 1.5, reason: extra time}\n')
    course = config.load(toy / "course.yml")
    assert course.due_for("cat", "vecops").isoformat() == "2026-10-03T23:59:00+00:00"
    assert course.due_for("cat", "vec2").isoformat() == "2026-10-20T00:00:00+00:00"   # its own entry wins
    assert course.due_for("cat", "vec3").isoformat() == "2026-10-17T23:59:00+00:00"
    assert course.due_for("dan", "vecops").isoformat() == "2026-10-05T11:59:00+00:00"  # 7 days x 1.5
    assert course.due_for("eve", "vecops").isoformat() == "2026-10-01T23:59:00+00:00"
    result = cli(toy, "status")
    assert result.exit_code == 0 and "+2d" in said(result) and "x1.5 of release to due" in said(result)


@pytest.mark.parametrize("entries, message", [
    ("- {student: cat, assignment: vecops, due: 2026-10-03T00:00:00+00:00}\n"
     "- {student: cat, assignment: vecops, due: 2026-10-04T00:00:00+00:00}\n",
     "extensions.yml: extensions[1]: contradicts extensions[0] (both for student 'cat', assignment 'vecops': "
     "due 2026-10-04T00:00:00+00:00 vs due 2026-10-03T00:00:00+00:00); keep one"),
    ('- {student: cat, assignment: "*", extra: 2d}\n- {student: cat, assignment: "*", extra: 3d}\n',
     "extensions[1]: contradicts extensions[0] (both for student 'cat', assignment '*': +3d vs +2d)"),
    ("- {student: cat, assignment: vecops, due: 2026-10-03T00:00:00+00:00, extra: 1d}\n",
     "needs exactly one of due (a date), extra (e.g. 2d) or factor (e.g. 1.5)"),
    ('- {student: cat, assignment: "*", factor: 1.5}\n', "extensions[0].factor: 1.5 needs a release date: set "
                                                          "release: on vecops"),
    ("- {student: cat, assignment: nope, extra: 1d}\n", "extensions[0].assignment: 'nope' is not an assignment"),
    ("- {student: cat, assignment: vecops, extra: soon}\n", "extensions[0].extra: 'soon' is not a duration"),
])
def test_bad_extensions_are_errors_naming_the_file_and_key(toy, entries, message):
    (toy / "extensions.yml").write_text(entries)
    with pytest.raises(ConfigError) as exc:
        config.load(toy / "course.yml")
    assert message in str(exc.value)
    assert str(exc.value).startswith("extensions.yml: ")


@pytest.mark.parametrize("key, value, message", [
    ("grade_attempt", "first", "grade_attempt: 'first' must be one of latest, best, latest_on_time"),
    ("hidden_feedback", "some", "hidden_feedback: 'some' must be one of names, tasks, total, none"),
    ("after_due", "all", "after_due: 'all' must be one of names, tasks, total, none"),
    ("hidden_feedback_limit", "{count: -1}", "hidden_feedback_limit.count: -1 must be a whole number"),
    ("hidden_feedback_limit", "{count: 3, per: fortnight}", "hidden_feedback_limit.per: 'fortnight' is not a duration"),
])
def test_bad_settings_are_errors_naming_the_key(toy, key, value, message):
    (toy / "course.yml").write_text((toy / "course.yml").read_text().replace(
        "    points: 10\n", f"    points: 10\n    {key}: {value}\n"))
    with pytest.raises(ConfigError) as exc:
        config.load(toy / "course.yml")
    assert f"course.yml: assignments[0].{message}" in str(exc.value)


def test_slip_days_must_be_whole_and_regrade_share_a_share(toy):
    text = (toy / "course.yml").read_text()
    (toy / "course.yml").write_text(text.replace("  max_late: 3\n", "  max_late: 3\n  slip_days: 1.5\n"))
    with pytest.raises(ConfigError, match="late_policy.slip_days: 1.5 must be a whole number of days"):
        config.load(toy / "course.yml")
    (toy / "course.yml").write_text("regrade_share: 2\n" + text)
    with pytest.raises(ConfigError, match="regrade_share: 2 must be a share of the class between 0 and 1"):
        config.load(toy / "course.yml")


@pytest.fixture
def two_attempts(toy, tmp_path):
    """ann: attempt 1 on time (8 points), attempt 2 a day late and worse (5); ben: attempt 2 late but
    better (10, 10 % off: 9)."""
    course = api.load_course(toy / "course.yml")
    for student, when, points in [("ann", "2026-10-01T20:00:00+00:00", EIGHT),
                                  ("ann", "2026-10-02T12:00:00+00:00", {"1.1": 5.0, "1.2": 0.0}),
                                  ("ben", "2026-10-01T20:00:00+00:00", EIGHT),
                                  ("ben", "2026-10-02T12:00:00+00:00", MAXIMA)]:
        submit(course, tmp_path, student, when)
        grade(course, student, "vecops", results(points, MAXIMA))
    return toy


@pytest.mark.parametrize("rule, expected", [
    ("latest", {"ann": (2, 4.5), "ben": (2, 9.0)}),
    ("latest_on_time", {"ann": (1, 8.0), "ben": (1, 8.0)}),
    ("best", {"ann": (1, 8.0), "ben": (2, 9.0)}),
])
def test_the_attempt_rule_picks_the_right_attempt_in_every_export(two_attempts, rule, expected):
    toy = two_attempts
    text = (toy / "course.yml").read_text()
    (toy / "course.yml").write_text(f"grade_attempt: {rule}\n" + text)
    course = api.load_course(toy / "course.yml")
    got = {s: (graded(course, s, "vecops").attempt, scores(course)[(s, "vecops")]) for s in ("ann", "ben")}
    assert got == expected
    [path] = api.export(course, "csv")
    rows = {r["student_id"]: r["vecops"] for r in csv.DictReader(path.open())}
    assert {s: float(v) for s, v in rows.items()} == {s: v[1] for s, v in expected.items()}
    # course grade grades the attempts the rule may choose
    with api.open_gradebook(course) as gb:
        planned, _ = api.plan_grading(course, gb, None, None, force=True, only_pending=False)
    want = {"latest": [2, 2], "latest_on_time": [1, 2, 1, 2], "best": [1, 2, 1, 2]}[rule]
    assert [j.payload["attempt"] for j in planned] == want


def test_an_assignment_overrides_the_course_attempt_rule(two_attempts):
    toy = two_attempts
    text = (toy / "course.yml").read_text().replace("    points: 10\n", "    points: 10\n    grade_attempt: best\n")
    (toy / "course.yml").write_text("grade_attempt: latest_on_time\n" + text)
    course = api.load_course(toy / "course.yml")
    assert course.assignment("vecops").grade_attempt == "best"
    assert scores(course)[("ben", "vecops")] == 9.0

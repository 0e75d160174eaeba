"""End to end: an LMS's export in -> collect -> grade (the real judge) -> export -> the file parsed back
with the LMS's documented import rules; grades and lateness equal to what the course policy says."""

from __future__ import annotations

import csv
import shutil

import pytest
from click.testing import CliRunner

from course.cli import main
from course import roster as roster_mod

import lmsfixtures as F
from conftest import TOY
from lms_import_rules import canvas_import, moodle_feedback_zip, moodle_worksheet_import

pytestmark = pytest.mark.slow          # two class gradings in the sandbox: about 20 s

# the judge's raw points for the fixtures' code (tests/conftest.py EXPECTED_POINTS): correct 9, partial 5
RAW = {"ann": 9.0, "ben": 5.0, "cat": 9.0, "eve": 9.0}


def invoke(course_dir, *args):
    n = 2 if args[0] in ("roster", "lms") else 1        # the command (and sub-command), then --course
    return CliRunner().invoke(main, [*args[:n], "--course", str(course_dir / "course.yml"), *args[n:]],
                              catch_exceptions=False)


@pytest.fixture(scope="module", params=["moodle", "canvas"])
def round_trip(request, tmp_path_factory):
    lms = request.param
    root = tmp_path_factory.mktemp(f"e2e-{lms}")
    course_dir = root / "toycourse"
    shutil.copytree(TOY, course_dir, ignore=shutil.ignore_patterns("__pycache__"))
    text = (course_dir / "course.yml").read_text().replace("    points: 10\n", "    points: 10\n    canvas_id: 7001\n")
    (course_dir / "course.yml").write_text(text)
    texts = F.toy_texts(course_dir)
    # the roster: from Canvas's gradebook export, then the emails Moodle matches by
    assert invoke(course_dir, "roster", "import", str(F.canvas_gradebook(root / "gradebook.csv")),
                  "--from", "canvas").exit_code == 0
    roster = roster_mod.load(course_dir / "roster.csv")
    roster_mod.save(roster_mod.Roster(tuple(roster_mod.Student(s.id, s.name, F.BY_ID[s.id].email, s.section, s.keys)
                                            for s in roster)), course_dir / "roster.csv")
    if lms == "moodle":
        args = ["collect", str(F.moodle_zip(root / "all.zip", texts)), "--assignment", "vecops", "--from", "moodle",
                "--worksheet", str(F.moodle_worksheet(root / "worksheet.csv", list(texts))),
                "--timezone", "Europe/Berlin"]
    else:
        args = ["collect", str(F.canvas_zip(root / "submissions.zip", texts, renamed={"cat": "vecops-1.py"})),
                "--assignment", "vecops", "--from", "canvas", "--times", str(F.canvas_times(root / "t.json", list(texts)))]
    collected = invoke(course_dir, *args)
    assert collected.exit_code == 0, collected.output
    graded = invoke(course_dir, "grade", "--jobs", "2")
    assert graded.exit_code == 0, graded.output
    for fmt in ("csv", "canvas", "moodle"):
        result = invoke(course_dir, "export", "--format", fmt) if fmt != "moodle" or lms == "moodle" else None
        assert result is None or result.exit_code == 0, result.output
    return lms, course_dir


def expected(sid: str) -> float:
    """The course policy: 10 % per started day after 15 min of grace; dan never submitted (missing: zero)."""
    return round(RAW[sid] * (1 - F.PENALTY[sid]), 2) if sid in RAW else 0.0


def test_canvas_import_gives_the_policys_grades(round_trip):
    lms, course_dir = round_trip
    text = (course_dir / "exports" / "canvas-grades.csv").read_text()
    students = [{"id": p.canvas_id, "name": p.name, "sortable_name": p.sortable, "sis_user_id": p.sis_user_id,
                 "login_id": p.login} for p in F.CLASS]
    imported = canvas_import(text, students, {7001: "Vector operations"})
    assert {p.id: imported["grades"][p.canvas_id][7001] for p in F.CLASS} == {p.id: expected(p.id) for p in F.CLASS}
    rows = {r["student_id"]: r for r in csv.DictReader((course_dir / "exports" / "grades.csv").open())}
    assert {s: float(r["vecops_late_hours"] or 0) for s, r in rows.items()} == {
        "ann": 0.0, "ben": 10.0, "cat": 0.0, "dan": 0.0, "eve": 36.0}


def test_moodle_import_gives_the_policys_grades_and_files_feedback(round_trip):
    lms, course_dir = round_trip
    if lms != "moodle":    # the worksheet to fill comes from Moodle: without one, a clear error
        result = invoke(course_dir, "export", "--format", "moodle")
        assert result.exit_code == 2 and "no Moodle grading worksheet" in result.output
        return
    folder = course_dir / "exports" / "moodle"
    imported = moodle_worksheet_import((folder / "vecops-grading-worksheet.csv").read_text(), 10.0)
    assert {p.id: imported[str(p.participant)][0] for p in F.CLASS} == {p.id: expected(p.id) for p in F.CLASS}
    filed = moodle_feedback_zip((folder / "vecops-feedback-files.zip").read_bytes(),
                                {str(p.participant) for p in F.CLASS})
    assert sorted(filed) == ["501", "502", "503", "505"]


def test_status_shows_where_the_times_came_from(round_trip):
    lms, course_dir = round_trip
    result = invoke(course_dir, "status")
    assert ("worksheet 4" if lms == "moodle" else "lms-record 4") in result.output

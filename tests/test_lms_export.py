"""Grades back into the LMS: Canvas's gradebook import, Moodle's worksheet and feedback zip, a
Gradescope-style CSV; every roster student present, the `missing:` policy applied, and the same
figures as the CSV export to the cent. Each file is parsed back with the LMS's own import rules
(tests/lms_import_rules.py)."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
from click.testing import CliRunner

from course import api
from course import roster as roster_mod
from course.cli import main
from course.grading.judge import TestResult

import lmsfixtures as F
from lms_import_rules import canvas_import, moodle_feedback_zip, moodle_worksheet_import

RAW = {"ann": 9.0, "ben": 5.0, "cat": 9.0, "eve": 7.5}
CANVAS_STUDENTS = [{"id": p.canvas_id, "name": p.name, "sortable_name": p.sortable, "sis_user_id": p.sis_user_id,
                    "login_id": p.login} for p in F.CLASS]


def _setup(toy, tmp_path, *, missing: str | None = None):
    text = (toy / "course.yml").read_text().replace("    points: 10\n", "    points: 10\n    canvas_id: 7001\n")
    if missing:
        text = f"missing: {missing}\n" + text
    (toy / "course.yml").write_text(text)
    (toy / "extensions.yml").write_text("- {student: eve, assignment: vecops, due: 2026-10-03T00:00:00+00:00, "
                                        "reason: illness}\n")
    roster_mod.save(roster_mod.Roster(tuple(
        roster_mod.Student(p.id, p.sortable, p.email, "A", {"canvas_id": str(p.canvas_id), "sis_user_id": p.sis_user_id,
                                                            "sis_login_id": p.login, "gradescope_sid": p.gs_sid})
        for p in F.CLASS)), toy / "roster.csv")
    course = api.load_course(toy / "course.yml")
    texts = F.toy_texts(toy)
    rep = api.collect(course, F.moodle_zip(tmp_path / "m.zip", texts), "vecops", lms="moodle",
                      worksheet=F.moodle_worksheet(tmp_path / "sheet.csv", list(texts)), timezone="Europe/Berlin")
    assert not rep.errors
    with api.open_gradebook(course) as gb:           # a grading recorded without running anything
        for sub in gb.submissions(["vecops"]):
            gb.save_grading(sub.id, "v1", [TestResult(test_id="t", name="t", task="1.1", hidden=True, outcome="passed",
                                                      points=RAW[sub.student], max_points=10, duration=0.1)],
                            backend="sandbox", device="cpu", isolation="strong", started_at="2026-10-05T00:00:00+00:00",
                            duration=0.1)
        gb.set_manual_score("ann", "vecops", "written", 0.5, 1.0, grader="ta")
    return course


def _csv_scores(course, now=None):
    [path] = api.export(course, "csv", now=now)
    return {r["student_id"]: r["vecops"] for r in csv.DictReader(path.open())}


# ann 9 + 0.5 manual, on time; ben 5 -10 %; cat 9; dan missing; eve 7.5, 36 h late but due +24 h by extension
EXPECTED = {"ann": 9.5, "ben": 4.5, "cat": 9.0, "dan": 0.0, "eve": 7.5 * 0.9}


def test_canvas_import_of_our_export_agrees_with_the_csv_to_the_cent(toy, tmp_path):
    course = _setup(toy, tmp_path)
    [path] = api.export(course, "canvas")
    imported = canvas_import(path.read_text(), CANVAS_STUDENTS, {7001: "Vector operations"})
    assert imported["points"] == {7001: 10.0}
    grades = {p.id: imported["grades"][p.canvas_id][7001] for p in F.CLASS}
    assert grades == pytest.approx(EXPECTED, abs=0.005)
    csv_scores = _csv_scores(course)
    for sid, grade in grades.items():
        assert f"{grade:.2f}" == f"{float(csv_scores[sid]):.2f}", sid      # to the cent


def test_missing_policy_and_not_due_yet(toy, tmp_path):
    course = _setup(toy, tmp_path, missing="blank")
    [path] = api.export(course, "canvas")
    grades = canvas_import(path.read_text(), CANVAS_STUDENTS, {7001: "x"})["grades"]
    assert grades[1004][7001] is None                                # dan: blank, Canvas changes nothing
    assert _csv_scores(course)["dan"] == ""
    sheet, _ = api.export(course, "moodle")
    assert moodle_worksheet_import(sheet.read_text(), 10.0)["504"][0] is None      # Moodle skips a blank grade


def test_before_the_due_date_a_missing_submission_is_blank_even_under_zero(toy, tmp_path):
    course = _setup(toy, tmp_path)
    early = dt.datetime(2026, 9, 30, tzinfo=dt.timezone.utc)
    assert _csv_scores(course, now=early)["dan"] == ""
    assert _csv_scores(course)["dan"] == "0"
    [path] = api.export(course, "canvas", now=early)
    assert canvas_import(path.read_text(), CANVAS_STUDENTS, {7001: "x"})["grades"][1004][7001] is None


def test_moodle_worksheet_and_feedback_zip_round_trip(toy, tmp_path):
    course = _setup(toy, tmp_path)
    sheet, feedback = api.export(course, "moodle")
    imported = moodle_worksheet_import(sheet.read_text(), 10.0)
    by_pid = {str(p.participant): p.id for p in F.CLASS}
    grades = {by_pid[pid]: grade for pid, (grade, _) in imported.items()}
    assert grades == pytest.approx(EXPECTED, abs=0.005)
    assert "4.50 / 10 points after a late penalty of 10 %" in imported["502"][1]
    files = moodle_feedback_zip(feedback.read_bytes(), set(by_pid))
    assert {by_pid[pid] for pid in files} == {"ann", "ben", "cat", "eve"}      # dan has nothing to give feedback on
    assert all(names == ["/feedback.html"] or names == ["feedback.html"] for names in files.values())
    csv_scores = _csv_scores(course)
    assert all(f"{grades[s]:.2f}" == f"{float(csv_scores[s]):.2f}" for s in grades)


def test_gradescope_csv_and_the_cli(toy, tmp_path):
    course = _setup(toy, tmp_path)
    result = CliRunner().invoke(main, ["export", "--format", "gradescope-csv", "--course", str(toy / "course.yml")])
    assert result.exit_code == 0, result.output
    rows = {r["SID"]: r for r in csv.DictReader((toy / "exports" / "gradescope-vecops.csv").open())}
    assert {r["Email"] for r in rows.values()} == {p.email for p in F.CLASS}       # every roster student
    assert rows["9004"]["Total Score"] == "0.00" and rows["9004"]["Status"] == "Missing"
    assert rows["9002"]["Total Score"] == "4.50" and rows["9002"]["Lateness (H:M:S)"] == "10:00:00"


def test_late_time_unknown_is_blank_and_warned(toy, tmp_path):
    roster_mod.save(roster_mod.Roster(tuple(roster_mod.Student(p.id, p.sortable, p.email, "A",
                                                               {"canvas_id": str(p.canvas_id)}) for p in F.CLASS)),
                    toy / "roster.csv")
    course = api.load_course(toy / "course.yml")
    api.collect(course, F.canvas_zip(tmp_path / "s.zip", F.toy_texts(toy)), "vecops", lms="canvas")
    with api.open_gradebook(course) as gb:
        for sub in gb.submissions(["vecops"]):
            gb.save_grading(sub.id, "v1", [TestResult(test_id="t", name="t", task="1.1", hidden=True, outcome="passed",
                                                      points=8, max_points=10, duration=0.1)],
                            backend="sandbox", device="cpu", isolation="strong", started_at="x", duration=0.1)
    scores = _csv_scores(course)
    assert scores["ben"] == "" and scores["eve"] == "" and scores["ann"] == "8"
    warnings = api.export_warnings(course, "canvas")
    assert any("ben/vecops: late per the LMS, time unknown" in w for w in warnings)
    result = CliRunner().invoke(main, ["status", "--course", str(toy / "course.yml")])
    assert "lms-late-flag 2" in result.output and "lms-on-time-flag 2" in result.output


def test_exports_for_an_lms_need_a_roster(toy):
    with pytest.raises(Exception, match="needs a roster"):
        api.export(api.load_course(toy / "course.yml"), "canvas")

"""Collecting from each LMS's own export, with the LMS's own times (fixtures: tests/lmsfixtures.py)."""

from __future__ import annotations

import datetime as dt
import shutil

import pytest

from course import api
from course import roster as roster_mod
from course.gradebook import Gradebook

import lmsfixtures as F


def _roster(toy, people=F.CLASS):
    roster_mod.save(roster_mod.Roster(tuple(
        roster_mod.Student(p.id, p.name, p.email, "A", {"canvas_id": str(p.canvas_id), "sis_user_id": p.sis_user_id,
                                                        "sis_login_id": p.login, "gradescope_sid": p.gs_sid,
                                                        "github": p.github})
        for p in people)), toy / "roster.csv")


def _subs(course):
    with Gradebook(course.paths.gradebook) as gb:
        return {(s.student, s.attempt): s for s in gb.submissions(latest_only=False)}


# ------------------------------------------------------------------ Canvas

def test_canvas_with_api_times(toy, tmp_path):
    _roster(toy)
    texts = F.toy_texts(toy)
    zip_path = F.canvas_zip(tmp_path / "submissions.zip", texts, renamed={"cat": "vecops-1.py"})
    times = F.canvas_times(tmp_path / "times.json", list(texts))
    course = api.load_course(toy / "course.yml")
    rep = api.collect(course, zip_path, "vecops", lms="canvas", times=times)
    assert {i.student: (i.status, i.time_source) for i in rep.items} == {
        s: ("collected", "lms-record") for s in ("ann", "ben", "cat", "eve")}
    subs = _subs(course)
    for sid, when in F.TIMES.items():
        assert dt.datetime.fromisoformat(subs[(sid, 1)].submitted_at) == when
    assert subs[("ben", 1)].late_by == 10 * 3600
    # Canvas's re-upload name is mapped back to the module, with a note on the record
    assert (toy / subs[("cat", 1)].path / "vecops.py").is_file()
    assert subs[("cat", 1)].note_list == ["vecops-1.py was renamed vecops.py (the expected module name)"]
    assert not (toy / "submitted" / "dan").exists()


def test_canvas_without_times_uses_the_late_marker_and_never_a_silent_on_time(toy, tmp_path):
    _roster(toy)
    zip_path = F.canvas_zip(tmp_path / "submissions.zip", F.toy_texts(toy))
    course = api.load_course(toy / "course.yml")
    rep = api.collect(course, zip_path, "vecops", lms="canvas")
    sources = {i.student: i.time_source for i in rep.items}
    assert sources == {"ann": "lms-on-time-flag", "cat": "lms-on-time-flag", "ben": "lms-late-flag",
                       "eve": "lms-late-flag"}
    with api.open_gradebook(course) as gb:
        from course import report
        graded = {g.student: g for g in report.load_graded(course, gb, ["vecops"])}
    assert graded["ben"].time_unknown and not graded["ann"].time_unknown
    assert report.final_score(graded["ben"]) is None            # blank until the instructor decides
    # the instructor decides: an explicit time, recorded as such
    folder = tmp_path / "ben"
    folder.mkdir()
    (folder / "vecops.py").write_text(F.toy_texts(toy)["ben"] + "\n# resubmitted by hand\n")
    api.collect(course, folder, "vecops", student="ben", submitted_at="2026-10-02T09:00:00+00:00")
    assert _subs(course)[("ben", 2)].submitted_at_source == "instructor-flag"


def test_canvas_bad_input_refuses_only_that_student(toy, tmp_path):
    people = [p for p in F.CLASS if p.id != "eve"]            # eve is not on the roster
    _roster(toy, people)
    zip_path = F.canvas_zip(tmp_path / "submissions.zip", F.toy_texts(toy),
                            extra={"notes from the TA.txt": "x", "leeann_1001_50009_README.md": "hi"})
    course = api.load_course(toy / "course.yml")
    rep = api.collect(course, zip_path, "vecops", lms="canvas", times=F.canvas_times(tmp_path / "t.json", ["ann"]))
    by = {i.student: i for i in rep.items}
    assert by["notes from the TA.txt"].status == "error" and "does not follow Canvas's file naming" in \
        by["notes from the TA.txt"].message
    assert by["nyeeve"].status == "error" and "canvas_id '1005' is not on the roster" in by["nyeeve"].message
    assert by["ann"].status == "collected"
    assert sorted((toy / "submitted" / "ann" / "vecops" / "1").iterdir())[0].name == "README.md"
    # two roster rows with one Canvas id: that student is refused, naming both rows
    text = (toy / "roster.csv").read_text().replace(",1002,", ",1001,")
    (toy / "roster.csv").write_text(text)
    rep = api.collect(course, zip_path, "vecops", lms="canvas")
    by = {i.student: i for i in rep.items}
    assert by["leeann"].status == "error" and "belongs to 2 roster rows (ann, ben)" in by["leeann"].message
    assert by["cat"].status == "unchanged"          # the others are read as before


# ------------------------------------------------------------------ Moodle

def test_moodle_worksheet_times_in_the_sites_zone(toy, tmp_path):
    _roster(toy)
    texts = F.toy_texts(toy)
    zip_path = F.moodle_zip(tmp_path / "moodle.zip", texts)
    sheet = F.moodle_worksheet(tmp_path / "worksheet.csv", list(texts))
    course = api.load_course(toy / "course.yml")
    rep = api.collect(course, zip_path, "vecops", lms="moodle", worksheet=sheet, timezone="Europe/Berlin")
    assert {i.student: (i.status, i.time_source) for i in rep.items} == {
        s: ("collected", "worksheet") for s in ("ann", "ben", "cat", "eve")}
    subs = _subs(course)
    for sid, when in F.TIMES.items():      # the worksheet has minutes only: these times are whole minutes
        assert dt.datetime.fromisoformat(subs[(sid, 1)].submitted_at) == when
    assert (toy / "lms" / "moodle" / "vecops-worksheet.csv").is_file()     # kept for the export


def test_moodle_refuses_what_it_cannot_parse_and_needs_the_zone(toy, tmp_path):
    _roster(toy)
    texts = F.toy_texts(toy)
    zip_path = F.moodle_zip(tmp_path / "moodle.zip", texts, flat=True, wrapper="LLM101-Vector ops-7/",
                            extra={"LLM101-Vector ops-7/readme.txt": "not a participant"})
    sheet = F.moodle_worksheet(tmp_path / "worksheet.csv", list(texts), times={"ben": "2 Okt 2026 12:00",
                                                                              "cat": "Sunday, 25 October 2026, 2:30 AM"})
    course = api.load_course(toy / "course.yml")
    with pytest.raises(Exception, match="--timezone"):
        api.collect(course, zip_path, "vecops", lms="moodle", worksheet=sheet)
    rep = api.collect(course, zip_path, "vecops", lms="moodle", worksheet=sheet, timezone="Europe/Berlin")
    by = {i.student: i for i in rep.items}
    assert "wrapper folder 'LLM101-Vector ops-7' was stripped" in rep.notes[0]
    assert by["ann"].status == by["eve"].status == "collected"
    assert by["ben"].status == "error" and "'2 Okt 2026 12:00' does not parse" in by["ben"].message
    assert by["cat"].status == "error" and "ambiguous or does not exist in Europe/Berlin" in by["cat"].message
    assert by["readme.txt"].status == "error" and "does not follow Moodle's naming" in by["readme.txt"].message


def test_a_zip_without_times_is_an_error_never_now(toy, tmp_path):
    zip_path = F.moodle_zip(tmp_path / "moodle.zip", F.toy_texts(toy))
    rep = api.collect(api.load_course(toy / "course.yml"), zip_path, "vecops", lms="moodle")
    assert {i.status for i in rep.items} == {"error"}
    assert all("no trustworthy submission time" in i.message for i in rep.items)


# ------------------------------------------------------------------ Gradescope

def test_gradescope_groups_resubmissions_and_bad_metadata(toy, tmp_path):
    _roster(toy)
    texts = F.toy_texts(toy)
    subs = [(["ann"], F.TIMES["ann"], {"vecops.py": texts["ann"]}),
            (["ben", "cat"], F.TIMES["ben"], {"vecops.py": texts["ben"]}),             # a group of two
            (["eve"], F.TIMES["eve"] - dt.timedelta(hours=30), {"vecops.py": "# early draft\n"}),
            (["eve"], F.TIMES["eve"], {"Vecops.PY": texts["eve"]})]                     # eve twice in one zip
    extra_meta = "submission_99999:\n  :submitters: []\n  :created_at: 2026-10-01 12:00:00 -07:00\n"
    zip_path = F.gradescope_zip(tmp_path / "gs.zip", subs, extra_meta=extra_meta,
                                extra={"submission_12345/vecops.py": "x"})
    course = api.load_course(toy / "course.yml")
    rep = api.collect(course, zip_path, "vecops", lms="gradescope")
    items = [(i.student, i.status) for i in rep.items]
    assert ("submission_12345", "error") in items and ("submission_99999", "error") in items
    assert [i.attempt for i in rep.items if i.student == "eve"] == [1, 2]       # both recorded, latest last
    recorded = _subs(course)
    assert dt.datetime.fromisoformat(recorded[("eve", 2)].submitted_at) == F.TIMES["eve"]
    assert (toy / recorded[("eve", 2)].path / "vecops.py").is_file()          # case difference mapped
    group = recorded[("ben", 1)]
    assert (group.group_name, group.member_list) == ("submission_80001", ["ben", "cat"])
    assert not (toy / "submitted" / "cat").exists()                          # graded once, under ben
    with api.open_gradebook(course) as gb:
        from course import report
        graded = {g.student: g for g in report.load_graded(course, gb, ["vecops"])}
    assert graded["cat"].attempt == graded["ben"].attempt == 1 and graded["cat"].members == ["ben", "cat"]
    assert graded["dan"].status == "missing"


# ------------------------------------------------------------------ GitHub Classroom

def test_github_classroom_fetch_time_push_times_and_flags(toy, tmp_path):
    _roster(toy)
    repos = tmp_path / "repos"
    texts = F.toy_texts(toy)
    F.student_repo(repos, "ann", texts["ann"])
    F.student_repo(repos, "ben", texts["ben"], dates=("2026-10-01T20:00:00+00:00", "2026-09-01T20:00:00+00:00"))
    F.student_repo(repos, "cat", texts["cat"], dates=("2031-01-01T00:00:00+00:00",))
    eve = F.student_repo(repos, "eve", texts["eve"])
    head = F.git(eve, "rev-parse", "HEAD")
    push = tmp_path / "pushes.csv"
    push.write_text(f"github_username,commit,pushed_at\nevenye,{head},{F.TIMES['eve'].isoformat()}\n")
    roster_csv = F.classroom_roster(tmp_path / "classroom_roster.csv")
    course = api.load_course(toy / "course.yml")
    before = dt.datetime.now(dt.timezone.utc)
    rep = api.collect(course, repos, "vecops", lms="github-classroom", classroom_roster=roster_csv, push_times=push)
    by = {i.student: i for i in rep.items}
    assert {s: i.time_source for s, i in by.items()} == {"ann": "fetch-time", "ben": "fetch-time",
                                                         "cat": "fetch-time", "eve": "push-record"}
    assert dt.datetime.fromisoformat(by["ann"].submitted_at) >= before        # never the commit's 2026-10-01
    assert any("more than a day before its parent" in n for n in by["ben"].notes)
    assert any("after it was fetched" in n for n in by["cat"].notes)
    assert dt.datetime.fromisoformat(by["eve"].submitted_at) == F.TIMES["eve"]


# ------------------------------------------------------------------ generic sources and issue 13's checks

def test_a_wrapper_folder_is_stripped_and_an_ambiguous_one_refused(toy, tmp_path):
    course = api.load_course(toy / "course.yml")
    wrapped = tmp_path / "class"
    for sid in ("ann", "ben"):
        (wrapped / "vecops_submissions" / sid).mkdir(parents=True)
        (wrapped / "vecops_submissions" / sid / "vecops.py").write_text(f"# {sid}\n")
    rep = api.collect(course, wrapped, "vecops", submitted_at="2026-10-01T12:00:00+00:00")
    assert [i.student for i in rep.items] == ["ann", "ben"]
    assert "the wrapper folder 'vecops_submissions'" in rep.notes[0]
    lone = tmp_path / "lone"
    (lone / "outer" / "inner").mkdir(parents=True)
    (lone / "outer" / "inner" / "vecops.py").write_text("x = 1\n")
    with pytest.raises(Exception, match="not clear whether"):
        api.collect(course, lone, "vecops", submitted_at="2026-10-01T12:00:00+00:00")


@pytest.mark.parametrize("found, renamed", [
    (["attention_solution.py"], False), (["vecops_solution.py"], True), (["vecops-1.py"], True),
    (["VecOps.py"], True), (["vecops (2).py"], True), (["vecops-1.py", "vecops_final.py"], False),
])
def test_wrongly_named_modules_are_mapped_or_warned(toy, tmp_path, found, renamed):
    src = tmp_path / "ann"
    src.mkdir()
    for name in found:
        (src / name).write_text("x = 1\n")
    course = api.load_course(toy / "course.yml")
    [item] = api.collect(course, src, "vecops", student="ann", submitted_at="2026-10-01T12:00:00+00:00").items
    assert item.status == "collected"
    stored = {p.name for p in (toy / "submitted" / "ann" / "vecops" / "1").iterdir()}
    assert ("vecops.py" in stored) == renamed
    assert item.notes and ("renamed vecops.py" in item.notes[0]) == renamed
    if not renamed:
        assert "vecops.py is missing" in item.notes[0] and "expected files: vecops.py" in item.notes[0]


def test_with_a_roster_an_unknown_folder_is_refused_not_invented(toy, tmp_path):
    _roster(toy)
    src = tmp_path / "class"
    for name in ("ann", "S0002", "mallory"):
        (src / name).mkdir(parents=True)
        (src / name / "vecops.py").write_text("x = 1\n")
    rep = api.collect(api.load_course(toy / "course.yml"), src, "vecops", submitted_at="2026-10-01T12:00:00+00:00")
    by = {i.student: i for i in rep.items}
    assert by["ann"].status == "collected" and by["ben"].status == "collected"     # S0002 is ben's SIS id
    assert by["mallory"].status == "error" and "not on the roster" in by["mallory"].message
    assert not (toy / "submitted" / "mallory").exists()

"""roster.csv: reading what spreadsheets write, importing each LMS's roster, `course roster check`."""

from __future__ import annotations

import sqlite3

import pytest
from click.testing import CliRunner

from course import api
from course import roster as roster_mod
from course.cli import main
from course.gradebook import SCHEMA_VERSION, Gradebook

import lmsfixtures as F


def test_bom_semicolons_and_excel_quoting_read_correctly(tmp_path):
    path = tmp_path / "roster.csv"
    path.write_bytes("\ufeffid;name;email;section\r\nann;\"Lee; Ann\";ann@uni.example;A\r\n"
                     "ben;\"Ode, \"\"Benny\"\" B\";ben@uni.example;\"B\r\nevening\"\r\n".encode("utf-8"))
    roster = roster_mod.load(path)
    assert [(s.id, s.name, s.section) for s in roster] == [("ann", "Lee; Ann", "A"),
                                                          ("ben", 'Ode, "Benny" B', "B\r\nevening")]


@pytest.mark.parametrize("text, fragment", [
    ("id,name\nann,Ann\nann,Again\n", ":3: id 'ann' is already on line 2"),
    ("id,name\nann,Ann,extra\n", ":2: 3 fields but the header has 2"),
    ("id,name\n-rf,x\n", ":2: id '-rf' is not a usable student id"),
    ("id,nickname\nann,x\n", ":2: unknown column 'nickname'"),
    ('id,name\nann,"unclosed\n', "not valid CSV"),
])
def test_a_bad_roster_names_the_line(tmp_path, text, fragment):
    path = tmp_path / "roster.csv"
    path.write_text(text)
    with pytest.raises(roster_mod.RosterError, match=fragment.replace("(", r"\(")):
        roster_mod.load(path)


def test_import_from_canvas_keeps_ids_and_reports_changes(toy, tmp_path):
    course = api.load_course(toy / "course.yml")
    export = F.canvas_gradebook(tmp_path / "gradebook.csv")
    rep = api.roster_import(course, export, "canvas")
    assert rep.added == ["ann", "ben", "cat", "dan", "eve"]          # from SIS Login ID; the test student skipped
    roster = roster_mod.load(course.paths.roster)
    assert roster.get("ann").keys == {"canvas_id": "1001", "sis_user_id": "S0001", "sis_login_id": "ann"}
    # next export: eve dropped, dan renamed, a second Ann Lee (new Canvas id, new login)
    people = [p for p in F.CLASS if p.id != "eve"]
    people[3] = F.Person("dan", "Dan Roe-Smith", "Roe-Smith, Dan", 1004, "S0004", "dan", "", "", "", 0)
    clash = people + [F.Person("x", "Ann Lee", "Lee, Ann", 1010, "S0010", "ann", "", "", "", 0)]
    with pytest.raises(roster_mod.RosterError, match=r"gradebook2.csv:7: 'Lee, Ann' is the same roster student \(ann\)"):
        api.roster_import(course, F.canvas_gradebook(tmp_path / "gradebook2.csv", clash), "canvas")
    people.append(F.Person("x", "Ann Lee", "Lee, Ann", 1010, "S0010", "alee2", "", "", "", 0))
    rep = api.roster_import(course, F.canvas_gradebook(tmp_path / "gradebook3.csv", people), "canvas")
    assert rep.added == ["alee2"] and rep.changed == [("dan", "name")] and rep.dropped == ["eve"]
    roster = roster_mod.load(course.paths.roster)
    assert roster.get("eve").status == "dropped" and roster.get("ann").keys["canvas_id"] == "1001"


@pytest.mark.parametrize("lms, build", [
    ("gradescope", F.gradescope_roster), ("github-classroom", F.classroom_roster),
])
def test_import_from_other_lmss(toy, tmp_path, lms, build):
    course = api.load_course(toy / "course.yml")
    rep = api.roster_import(course, build(tmp_path / "export.csv"), lms)
    assert len(rep.added) == 5
    roster = roster_mod.load(course.paths.roster)
    key = "gradescope_sid" if lms == "gradescope" else "github"
    assert sorted(s.keys[key] for s in roster) == sorted(getattr(p, "gs_sid" if lms == "gradescope" else "github")
                                                         for p in F.CLASS)


def test_import_from_moodle_worksheet(toy, tmp_path):
    course = api.load_course(toy / "course.yml")
    rep = api.roster_import(course, F.moodle_worksheet(tmp_path / "w.csv", []), "moodle")
    assert rep.added == ["ann", "ben", "cat", "dan", "eve"]          # from the email addresses


def test_roster_check_finds_the_three_kinds_of_mismatch(toy, tmp_path):
    course = api.load_course(toy / "course.yml")
    api.roster_import(course, F.canvas_gradebook(tmp_path / "gradebook.csv"), "canvas")
    src = tmp_path / "class"
    for sid in ("ann", "ben"):
        (src / sid).mkdir(parents=True)
        (src / sid / "vecops.py").write_text(f"# {sid}\n")
    api.collect(course, src, "vecops", submitted_at="2026-10-01T12:00:00+00:00")
    with Gradebook(course.paths.gradebook) as gb:        # a submission collected before the roster existed
        gb.add_submission(student="zoe", slug="vecops", attempt=1, submitted_at="2026-10-01T12:00:00+00:00",
                          late_by=0, sha256="x", path="submitted/zoe/vecops/1", source="dir")
    text = (toy / "roster.csv").read_text().replace(",S0003,", ",S0001,")      # cat shares ann's SIS id
    (toy / "roster.csv").write_text(text)
    result = CliRunner().invoke(main, ["roster", "check", "--course", str(toy / "course.yml")])
    assert result.exit_code == 1
    assert "vecops: no submission from 3: cat, dan, eve" in result.output
    assert "vecops: submissions of students not on the roster: zoe" in result.output
    assert "duplicate sis_user_id 'S0001': ann, cat" in result.output


def test_groups_yml_shares_one_submission(toy, tmp_path):
    (toy / "groups.yml").write_text("- {group: team-a, members: [ann, ben], assignments: [vecops]}\n")
    course = api.load_course(toy / "course.yml")
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "vecops.py").write_text("x = 1\n")
    [item] = api.collect(course, tmp_path / "ann", "vecops", student="ann",
                         submitted_at="2026-10-02T10:00:00+00:00").items
    assert "group team-a (ann, ben)" in item.message
    (toy / "extensions.yml").write_text("- {student: ben, assignment: vecops, due: 2026-10-03T00:00:00+00:00}\n")
    course = api.load_course(toy / "course.yml")
    with api.open_gradebook(course) as gb:
        from course import report
        graded = {g.student: g for g in report.load_graded(course, gb, ["vecops"])}
    assert graded["ben"].group == "team-a" and graded["ben"].attempt == 1
    assert graded["ann"].penalty == 0.1 and graded["ben"].penalty == 0.0      # each their own due date
    assert "Group submission team-a: ann, ben" in report.submission_notes(graded["ben"])


def test_an_old_gradebook_is_migrated(tmp_path):
    path = tmp_path / "gradebook.sqlite"
    with sqlite3.connect(path) as con:
        con.executescript("""
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            INSERT INTO meta VALUES ('schema_version', '1');
            CREATE TABLE students (id TEXT PRIMARY KEY);
            CREATE TABLE submissions (id INTEGER PRIMARY KEY, student TEXT NOT NULL, slug TEXT NOT NULL,
                attempt INTEGER NOT NULL, submitted_at TEXT NOT NULL, late_by REAL NOT NULL, sha256 TEXT NOT NULL,
                path TEXT NOT NULL, source TEXT, collected_at TEXT NOT NULL, UNIQUE (student, slug, attempt));
            INSERT INTO students VALUES ('ann');
            INSERT INTO submissions VALUES (1, 'ann', 'vecops', 1, '2026-10-01T12:00:00+00:00', 0, 'h', 'p', 'dir', 'x');
        """)
    with Gradebook(path) as gb:
        [sub] = gb.submissions()
        version = gb.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
    assert (sub.submitted_at_source, sub.note_list, sub.member_list, version) == ("unrecorded", [], [], str(SCHEMA_VERSION))

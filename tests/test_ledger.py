"""Overrides, undos, regrade requests, manual scores and the history, on the toy course: every staff
operation is a ledger row, every export and the feedback agree with it to the cent, and bad input
is refused with nothing written."""

from __future__ import annotations

import csv
import sqlite3

import pytest

import lmsfixtures as F
from course import api, ledger, report, textsafe
from course.gradebook import SCHEMA_VERSION, Gradebook
from lms_import_rules import canvas_import, moodle_worksheet_import
from staffkit import cli, grade, ledger_rows, results, said, submit
from test_lms_export import CANVAS_STUDENTS, EXPECTED, _csv_scores, _setup

# staff text with everything an output format could trip on
REASON = "<script>alert(1)</script> **dot** | `tick` [red]x[/red]\x1b[31m"


def all_exports(course) -> dict[str, dict[str, float | None]]:
    """Every export's score per student, read back the way each LMS reads it."""
    out = {"csv": {s: float(v) if v != "" else None for s, v in _csv_scores(course).items()}}
    [path] = api.export(course, "canvas")
    grades = canvas_import(path.read_text(), CANVAS_STUDENTS, {7001: "x"})["grades"]
    out["canvas"] = {p.id: grades[p.canvas_id][7001] for p in F.CLASS}
    sheet, _ = api.export(course, "moodle")
    by_pid = {str(p.participant): p.id for p in F.CLASS}
    out["moodle"] = {by_pid[pid]: g for pid, (g, _) in moodle_worksheet_import(sheet.read_text(), 10.0).items()}
    [gs] = api.export(course, "gradescope-csv")
    by_sid = {p.gs_sid: p.id for p in F.CLASS}
    out["gradescope-csv"] = {by_sid[r["SID"]]: float(r["Total Score"]) if r["Total Score"] else None
                             for r in csv.DictReader(gs.open())}
    return out


def assert_exports_agree(course, expected: dict[str, float]) -> None:
    for fmt, scores in all_exports(course).items():
        assert set(scores) == set(expected), fmt
        for student, want in expected.items():
            got = scores[student]
            assert got is not None and f"{got:.2f}" == f"{want:.2f}", (fmt, student, got, want)


def test_overrides_and_undo_change_every_export_and_the_feedback_exactly(toy, tmp_path):
    course = _setup(toy, tmp_path)
    assert_exports_agree(course, EXPECTED)
    a = api.override(course, "ann", "vecops", points=8, reason="integrity hearing: partial credit", by="prof")
    b = api.override(course, "ben", "vecops", delta=1, reason=REASON, by="ta-jo")
    c = api.override(course, "cat", "vecops", task="1.1", points=10, reason="test 1.1 was too strict", by="ta-jo")
    d = api.override(course, "dan", "vecops", points=5, reason="oral exam instead", by="prof")
    assert (a.before, a.after) == (9.5, 8.0)                   # --points is the final score
    assert (b.before, b.after) == (4.5, 5.4)                   # --delta comes before the late penalty
    assert (c.before, c.after) == (9.0, 10.0)                  # the task's points replace the graded ones
    assert (d.before, d.after) == (0.0, 5.0)                   # even with nothing submitted
    overridden = {"ann": 8.0, "ben": 5.4, "cat": 10.0, "dan": 5.0, "eve": EXPECTED["eve"]}
    assert_exports_agree(course, overridden)

    api.feedback(course)
    md = (toy / "feedback" / "vecops" / "ben.md").read_text()
    assert "- **Score: 5.4 / 10** (raw 6 before the late penalty)" in md
    assert f"- Adjusted by ta-jo (#{b.entry}): +1 point(s): {textsafe.md_code_span(REASON)}" in md
    page = (toy / "feedback" / "vecops" / "ben.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>" not in page and "\x1b" not in page
    assert "task 1.1 set to 10 point(s)" in (toy / "feedback" / "vecops" / "cat.md").read_text()
    assert "score set to 8" in (toy / "feedback" / "vecops" / "ann.md").read_text()

    api.undo_override(course, b.entry, reason="meant for another student", by="ta-jo")
    api.undo_override(course, a.entry, reason="hearing overturned", by="prof")
    assert_exports_agree(course, {**overridden, "ben": 4.5, "ann": 9.5})
    api.feedback(course)
    assert "Adjusted" not in (toy / "feedback" / "vecops" / "ben.md").read_text()
    with api.open_gradebook(course) as gb:        # nothing was deleted: the undone overrides are still there
        kinds = [e.kind for e in ledger.entries(gb, kinds=("override", "undo"))]
    assert kinds == ["override"] * 4 + ["undo"] * 2


def test_the_ledger_refuses_updates_and_deletes(toy, tmp_path):
    course = _setup(toy, tmp_path)
    api.override(course, "ben", "vecops", delta=1, reason="r")
    with api.open_gradebook(course) as gb:
        for sql in ("UPDATE ledger SET value = 10", "DELETE FROM ledger"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                gb.db.execute(sql)


def test_the_history_shows_every_step_in_order_with_the_score_after_each(toy, tmp_path):
    course = api.load_course(toy / "course.yml")
    submit(course, tmp_path, "ann", "2026-10-01T20:00:00+00:00")
    grade(course, "ann", "vecops", results({"1.1": 3, "1.2": 4}, {"1.1": 4, "1.2": 4}))        # 7 of 8
    with api.open_gradebook(course) as gb:
        gb.set_manual_score("ann", "vecops", "written", 1.0, 2.0, grader="ta-mo")               # + 1
    request = api.regrade_request(course, "ann", "vecops", message="1.1 counts my <answer> wrong", by="ta-mo")
    plus = api.override(course, "ann", "vecops", delta=1, reason="1.1 was right", by="ta-mo")
    (toy / "extensions.yml").write_text("- {student: ann, assignment: vecops, due: 2026-10-04T00:00:00+00:00, "
                                        "reason: illness}\n")
    course = api.load_course(toy / "course.yml")
    submit(course, tmp_path, "ann", "2026-10-03T12:00:00+00:00")                                # late, but not for her
    grade(course, "ann", "vecops", results({"1.1": 4, "1.2": 4}, {"1.1": 4, "1.2": 4}))         # 8 of 8
    api.undo_override(course, plus.entry, reason="1.1 was graded right after all", by="prof")
    api.export(course, "csv")
    steps = api.history(course, "ann", "vecops")
    assert [s.kind for s in steps] == ["attempt", "grading", "manual", "request", "override", "extension",
                                       "attempt", "grading", "undo", "published"]
    assert [s.score for s in steps] == [None, 7, 8, 8, 9, 9, None, 10, 9, 9]
    assert [s.by for s in steps if s.kind in ("manual", "request", "override", "undo")] == ["ta-mo"] * 3 + ["prof"]
    assert steps[3].reason == "1.1 counts my <answer> wrong" and steps[4].text.endswith("+1 point(s)")
    assert "grader v1, strong isolation" in steps[1].text and "due 2026-10-04T00:00:00+00:00" in steps[5].text
    assert f"regrade request #{request} filed" == steps[3].text
    result = cli(toy, "history", "ann", "vecops")
    assert result.exit_code == 0, result.output
    text = said(result)
    assert "1.1 counts my <answer> wrong" in text and "override #" in text and "published 9 (export csv)" in text


def test_requests_are_closed_by_an_override_or_a_rejection(toy, tmp_path):
    course = _setup(toy, tmp_path)
    first = api.regrade_request(course, "ben", "vecops", message="[bold]late[/bold] by a minute only")
    other = api.regrade_request(course, "cat", "vecops", message="task 1.1?")
    third = api.regrade_request(course, "cat", "vecops", message="and the written part")
    assert [r.id for r in api.requests(course, open_only=True)] == [first, other, third]
    change = api.override(course, "cat", "vecops", task="1.1", points=10, reason="agreed", request=other)
    assert change.closed == [other]                            # named: only that one
    rejected = api.reject_request(course, first, reason="the LMS's time is the record", by="prof")
    assert [r.id for r in api.requests(course, open_only=True)] == [third]
    closing = api.override(course, "cat", "vecops", delta=-0.5, reason="written part regraded")
    assert closing.closed == [third]                           # unnamed: the student's open ones for SLUG
    status = {r.id: (r.status, r.closed_by.id) for r in api.requests(course)}
    assert status == {first: ("rejected", rejected), other: ("resolved", change.entry),
                      third: ("resolved", closing.entry)}
    result = cli(toy, "requests")
    assert result.exit_code == 0
    assert "[bold]late[/bold] by a minute only" in said(result)      # shown as written, not as markup
    assert said(cli(toy, "requests", "--open")).count("resolved") == 0


def test_manual_scores_are_ledger_rows_with_history_and_the_current_value_query(toy, tmp_path):
    course = api.load_course(toy / "course.yml")
    submit(course, tmp_path, "ann", "2026-10-01T20:00:00+00:00")
    with api.open_gradebook(course) as gb:
        gb.ensure_manual_items("ann", "vecops", [("nb/justify_1", 2.0), ("nb/justify_2", 2.0)])
        assert gb.set_manual_score("ann", "vecops", "nb/justify_1", 1.5, 2.0, grader="nbgrader") is not None
        assert gb.set_manual_score("ann", "vecops", "nb/justify_1", 1.5, 2.0, grader="nbgrader") is None  # unchanged
        assert gb.set_manual_score("ann", "vecops", "nb/justify_1", 2.0, 2.0, grader="ta-mo") is not None
        current = {m["item"]: (m["score"], m["grader"]) for m in gb.manual_scores("ann", "vecops")}
        rows = ledger.entries(gb, kinds=("manual",))
    assert current == {"nb/justify_1": (2.0, "ta-mo"), "nb/justify_2": (None, None)}
    assert [(e.value, e.by) for e in rows] == [(1.5, "nbgrader"), (2.0, "ta-mo")]


def test_a_schema_3_gradebook_keeps_its_manual_scores_as_ledger_rows(tmp_path):
    path = tmp_path / "gradebook.sqlite"
    Gradebook(path).close()
    con = sqlite3.connect(path)                      # make it a version-3 gradebook with a TA's score
    con.executescript("DROP TRIGGER ledger_no_update; DROP TRIGGER ledger_no_delete; DROP TABLE ledger; "
                      "UPDATE meta SET value='3' WHERE key='schema_version';"
                      "INSERT INTO manual_scores VALUES ('ann','vecops','nb/justify_1',1.5,2,'nbgrader',"
                      "'2026-10-05T00:00:00+00:00');")
    con.commit()
    con.close()
    with Gradebook(path) as gb:
        assert gb.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
        [m] = gb.manual_scores("ann", "vecops")
        [row] = ledger.entries(gb)
        assert (m["score"], m["grader"]) == (1.5, "nbgrader")
        assert (row.kind, row.value, row.at) == ("manual", 1.5, "2026-10-05T00:00:00+00:00")
        assert gb.db.execute("SELECT score FROM manual_scores").fetchone()[0] is None    # one place only


@pytest.mark.parametrize("args, message", [
    (["override", "zed", "vecops", "--points", "5", "--reason", "r"], "student 'zed': not in the gradebook"),
    (["override", "ann", "nope", "--points", "5", "--reason", "r"], "unknown assignment 'nope'"),
    (["override", "ann", "vecops", "--task", "9.9", "--points", "1", "--reason", "r"], "--task 9.9: vecops has no task"),
    (["override", "ann", "vecops", "--points", "11", "--reason", "r"], "--points 11: above vecops's maximum (10); "
                                                                        "pass --allow-extra-credit"),
    (["override", "ann", "vecops", "--task", "1.1", "--points", "11", "--reason", "r"], "above task 1.1's maximum"),
    (["override", "ann", "vecops", "--delta", "1", "--reason", "r"], "--delta 1 (score before the penalty 9.5 -> "
                                                                     "10.5): above vecops's maximum"),
    (["override", "ann", "vecops", "--points", "-1", "--reason", "r"], "a score cannot be negative"),
    (["override", "ann", "vecops", "--points", "5", "--reason", "  "], "the reason is empty"),
    (["override", "ann", "vecops", "--points", "5"], "the reason is empty"),
    (["override", "ann", "vecops", "--points", "5", "--delta", "1", "--reason", "r"], "exactly one of --points"),
    (["override", "dan", "vecops", "--delta", "1", "--reason", "r"], "missing: a --delta needs a graded submission"),
    (["override", "--undo", "999", "--reason", "r"], "ledger entry 999: no such entry"),
    (["regrade-request", "ann", "vecops", "--message", " "], "the message is empty"),
    (["regrade-request", "--reject", "999", "--reason", "r"], "request 999: no such regrade request"),
    (["slip-days", "ann", "vecops", "--use", "1", "--reason", "r"], "late_policy.slip_days is not set"),
], ids=["student", "assignment", "task", "points-max", "task-max", "delta-max", "negative", "blank-reason",
        "no-reason", "points-and-delta", "delta-ungraded", "undo-unknown", "empty-message", "reject-unknown",
        "no-slip-days"])
def test_bad_input_is_a_clear_error_and_nothing_is_written(toy, tmp_path, args, message):
    course = _setup(toy, tmp_path)
    before = ledger_rows(course)
    result = cli(toy, *args)
    assert result.exit_code == 2, result.output
    assert message in said(result)
    assert ledger_rows(course) == before


def test_undo_of_an_undo_and_twice_and_of_a_request_are_refused(toy, tmp_path):
    course = _setup(toy, tmp_path)
    change = api.override(course, "ben", "vecops", delta=1, reason="r")
    undo = api.undo_override(course, change.entry, reason="r")
    request = api.regrade_request(course, "ben", "vecops", message="m")
    api.reject_request(course, request, reason="no")
    before = ledger_rows(course)
    for args, message in [(["--undo", str(undo.entry)], "is itself an undo; an undo cannot be undone"),
                          (["--undo", str(change.entry)], f"already undone by entry {undo.entry}"),
                          (["--undo", str(request)], "is a request, not an override")]:
        result = cli(toy, "override", *args, "--reason", "r")
        assert result.exit_code == 2 and message in said(result), result.output
    result = cli(toy, "regrade-request", "--reject", str(request), "--reason", "again")
    assert result.exit_code == 2 and "already rejected" in said(result)
    assert ledger_rows(course) == before


def test_extra_credit_needs_the_flag(toy, tmp_path):
    course = _setup(toy, tmp_path)
    result = cli(toy, "override", "ann", "vecops", "--points", "11", "--reason", "bonus", "--allow-extra-credit")
    assert result.exit_code == 0, result.output
    with api.open_gradebook(course) as gb:
        [ann] = report.load_graded(course, gb, ["vecops"], ["ann"])
    assert report.final_score(ann) == 11.0


def test_every_staff_command_and_option_has_help():
    from course.cli import main
    for name in ("override", "regrade-request", "requests", "history", "slip-days"):
        command = main.commands[name]
        assert command.help, name
        for param in command.params:
            if param.param_type_name == "option":
                assert param.help, f"course {name} {param.opts} has no help text"

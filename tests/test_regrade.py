"""Regrade preview and the guard on `course grade`: a grader fix or a late-policy change shows its
effect before any student's grade changes."""

from __future__ import annotations

import csv
import shutil

import pytest

from course import api
from course.grading.runner import JobResult, spec_for
from staffkit import cli, grade, results, said, submit

from conftest import make_class

DOT = "torch.testing.assert_close(out, expected)"
LOOSE = "torch.testing.assert_close(out, expected, atol=1.0, rtol=0)"   # the "fix": bob's dot passes


def snapshot(toy):
    with api.open_gradebook(api.load_course(toy / "course.yml")) as gb:
        return gb.snapshot(), gb.db.execute("SELECT COUNT(*) FROM gradings").fetchone()[0]


def csv_scores(course) -> dict[str, str]:
    [path] = api.export(course, "csv")
    return {r["student_id"]: r["vecops"] for r in csv.DictReader(path.open())}


@pytest.mark.slow
def test_a_grader_fix_is_previewed_then_held_then_accepted(toy, tmp_path):
    make_class(tmp_path / "class")
    for gone in ("carol", "dave"):
        shutil.rmtree(tmp_path / "class" / gone)
    assert cli(toy, "collect", str(tmp_path / "class"), "--assignment", "vecops",
               "--submitted-at", "2026-10-02T10:00:00+00:00").exit_code == 0       # 10 h late: 10 % off
    assert cli(toy, "grade", "--backend", "local").exit_code == 0
    course = api.load_course(toy / "course.yml")
    assert csv_scores(course) == {"alice": "8.1", "bob": "4.5"}                        # bob's dot is off by 0.5
    hidden = toy / "graders" / "vecops" / "test_hidden_vecops.py"
    assert DOT in hidden.read_text()
    hidden.write_text(hidden.read_text().replace(DOT, LOOSE))
    before = snapshot(toy)

    preview = cli(toy, "grade", "--preview", "--backend", "local")
    assert preview.exit_code == 0, preview.output
    text = said(preview)
    assert "preview (nothing was written): 1 changed, 1 up, 0 down, 1 unchanged" in text
    assert "bob/vecops: 4.5 (seen) -> 7.2 (+2.7); tests: " in text                   # seen: published by the export
    for n in (1, 7, 100):
        assert f"test_hidden_vecops.py::test_dot_matches_torch[{n}]: failed -> passed" in text
    assert "largest changes: bob/vecops +2.7" in text
    assert snapshot(toy) == before                                                     # nothing written

    held = cli(toy, "grade", "--backend", "local")
    assert held.exit_code == 1, held.output
    assert "not recorded: 1 of 2 re-graded score(s) would change (50%, more than regrade_share 0%)" in said(held)
    assert snapshot(toy) == before and csv_scores(course)["bob"] == "4.5"

    accepted = cli(toy, "grade", "--backend", "local", "--accept-regrade")
    assert accepted.exit_code == 0, accepted.output
    assert csv_scores(course) == {"alice": "8.1", "bob": "7.2"}


class FakeExecutor:
    """The judges' results, without running anything: POINTS[student] points on one hidden test."""

    name = "fake"
    isolation_note = ""
    POINTS: dict[str, float] = {}

    def run(self, jobs, on_start=None, on_done=None):
        out = []
        for j in jobs:
            r = JobResult(j, True, results=results({"1.1": self.POINTS[j.payload["student"]]}, {"1.1": 10.0}),
                          isolation="strong", started_at="2026-10-05T00:00:00+00:00", duration=0.1)
            if on_done:
                on_done(r)
            out.append(r)
        return out

    def close(self):
        pass


@pytest.fixture
def stale_class(toy, tmp_path, monkeypatch):
    """ann 9 and ben 5 graded by an older grader version ("v0"); the fake judges now say 9 and 8."""
    monkeypatch.setattr(api, "make_executor", lambda *a, **k: FakeExecutor())
    FakeExecutor.POINTS = {"ann": 9.0, "ben": 8.0, "cat": 4.0}
    course = api.load_course(toy / "course.yml")
    for student, points in (("ann", 9.0), ("ben", 5.0)):
        submit(course, tmp_path, student, "2026-10-01T20:00:00+00:00")
        grade(course, student, "vecops", results({"1.1": points}, {"1.1": 10.0}), version="v0")
    return toy, course


def test_a_stale_regrade_that_changes_scores_is_held_and_new_work_is_still_graded(stale_class, tmp_path):
    toy, course = stale_class
    submit(course, tmp_path, "cat", "2026-10-01T21:00:00+00:00")             # never graded: a first grading
    rep = api.grade(course)
    assert rep.refused is not None and [(c.student, c.old, c.new) for c in rep.refused.changed] == [("ben", 5.0, 8.0)]
    assert {r.student: r.status for r in rep.rows} == {"ann": "held", "ben": "held", "cat": "graded"}
    assert csv_scores(course) == {"ann": "9", "ben": "5", "cat": "4"}
    rep = api.grade(course, accept_regrade=True)
    assert rep.refused is None and csv_scores(course) == {"ann": "9", "ben": "8", "cat": "4"}


def test_within_regrade_share_the_scratch_results_are_recorded_without_grading_twice(stale_class):
    toy, course = stale_class
    (toy / "course.yml").write_text("regrade_share: 0.5\n" + (toy / "course.yml").read_text())
    course = api.load_course(toy / "course.yml")
    calls = []
    original = FakeExecutor.run
    FakeExecutor.run = lambda self, jobs, **kw: calls.append(len(jobs)) or original(self, jobs, **kw)
    try:
        rep = api.grade(course)                                              # 1 of 2 changes: not more than half
    finally:
        FakeExecutor.run = original
    assert rep.refused is None and calls == [2]
    assert csv_scores(course) == {"ann": "9", "ben": "8"}
    with api.open_gradebook(course) as gb:
        versions = {gb.current_grading(s.id).grader_version for s in gb.submissions()}
    assert versions == {spec_for(course, "vecops").version}


def test_a_regrade_that_changes_nothing_is_recorded(stale_class):
    toy, course = stale_class
    FakeExecutor.POINTS = {"ann": 9.0, "ben": 5.0}
    rep = api.grade(course)
    assert rep.refused is None and {r.status for r in rep.rows} == {"graded"}


def test_a_late_policy_change_is_previewed_against_what_students_saw(toy, tmp_path):
    course = api.load_course(toy / "course.yml")
    version = spec_for(course, "vecops").version                             # graded with today's graders
    for student, when in (("ann", "2026-10-01T20:00:00+00:00"), ("ben", "2026-10-02T10:00:00+00:00")):
        submit(course, tmp_path, student, when)
        grade(course, student, "vecops", results({"1.1": 8.0}, {"1.1": 10.0}), version=version)
    api.export(course, "csv")                                                # ben saw 7.2 (10 % off)
    (toy / "course.yml").write_text((toy / "course.yml").read_text().replace("penalty_percent: 10",
                                                                             "penalty_percent: 25"))
    course = api.load_course(toy / "course.yml")
    preview = api.preview_regrade(course)
    assert [(c.student, c.old, c.new, c.seen) for c in preview.changed] == [("ben", 7.2, 6.0, True)]
    assert not preview.changed[0].tests                                      # no test changed: the policy did
    result = cli(toy, "export", "--format", "csv")
    assert "changed since last published: ben/vecops: 7.2 -> 6" in said(result)


def test_preview_needs_a_gradebook(toy):
    result = cli(toy, "grade", "--preview")
    assert result.exit_code == 2 and "no gradebook yet, so nothing to preview" in said(result)

from __future__ import annotations

import sqlite3

import pytest

from course.gradebook import Gradebook
from course.grading.judge import TestResult


def result(name: str, outcome: str, points: float, max_points: float = 1.0, hidden: bool = True) -> TestResult:
    return TestResult(test_id=("hidden:" if hidden else "public:") + name, name=name, task="1.1", hidden=hidden,
                      outcome=outcome, points=points, max_points=max_points, message="", detail="d",
                      location=None, duration=0.1)


@pytest.fixture
def gb(tmp_path):
    book = Gradebook(tmp_path / "g.sqlite")
    yield book
    book.close()


def add(gb: Gradebook, student: str = "ann", attempt: int = 1) -> int:
    return gb.add_submission(student=student, slug="one", attempt=attempt, submitted_at="2026-10-01T00:00:00+00:00",
                             late_by=0.0, sha256="abc", path=f"submitted/{student}/one/{attempt}", source="dir")


def test_wal_and_schema(gb):
    assert gb.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in gb.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"students", "assignments", "submissions", "gradings", "results", "manual_scores"} <= tables


def test_attempts_are_append_only(gb):
    add(gb, attempt=1)
    assert gb.next_attempt("ann", "one") == 2
    with pytest.raises(sqlite3.IntegrityError):
        add(gb, attempt=1)
    add(gb, attempt=2)
    assert [s.attempt for s in gb.submissions(latest_only=True)] == [2]
    assert [s.attempt for s in gb.submissions(latest_only=False)] == [1, 2]


def test_grading_is_recorded_in_one_transaction_and_versioned(gb):
    sid = add(gb)
    gid = gb.save_grading(sid, "v1", [result("a", "passed", 1), result("b", "failed", 0), result("c", "pending", 0)],
                          backend="sandbox", device="cpu", isolation="strong", started_at="t", duration=1.0)
    current = gb.current_grading(sid)
    assert current.id == gid and current.points == 1 and current.max_points == 3 and current.pending == 1
    assert gb.is_graded(sid, "v1") and not gb.is_graded(sid, "v2")
    assert [r.outcome for r in gb.results(gid)] == ["passed", "failed", "pending"]


def test_only_pending_merges_into_the_previous_grading(gb):
    sid = add(gb)
    first = gb.save_grading(sid, "v1", [result("a", "passed", 1), result("g", "pending", 0)], backend="sandbox",
                            device="cpu", isolation="strong", started_at="t", duration=1.0)
    gb.save_grading(sid, "v1", [result("g", "passed", 1)], backend="sandbox", device="cuda", isolation="strong",
                    started_at="t", duration=1.0, merge_into=first)
    current = gb.current_grading(sid)
    assert (current.points, current.max_points, current.pending) == (2, 2, 0)
    assert sorted(r.name for r in gb.results(current.id)) == ["a", "g"]


def test_a_failed_write_leaves_nothing(gb):
    sid = add(gb)
    bad = result("a", "passed", 1)
    bad.outcome = "nonsense"  # violates the CHECK constraint: the whole grading must roll back
    with pytest.raises(sqlite3.IntegrityError):
        gb.save_grading(sid, "v1", [result("ok", "passed", 1), bad], backend="sandbox", device="cpu",
                        isolation="strong", started_at="t", duration=1.0)
    assert gb.current_grading(sid) is None
    assert gb.db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 0


def test_errors_are_recorded_and_not_a_grade(gb):
    sid = add(gb)
    gb.save_error(sid, "v1", "sandbox failure", backend="sandbox", device="cpu", started_at="t", duration=0.5)
    assert gb.current_grading(sid) is None
    assert gb.last_error(sid).message == "sandbox failure"

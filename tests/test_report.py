from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET

from course import report
from course.gradebook import ResultRow

SECRET = "expected tensor([0.1234]) secret-input"


def row(name, outcome, points, max_points, hidden, message="", task="1.1", location=None):
    return ResultRow(test_id=("hidden:" if hidden else "public:") + name, name=name, task=task, hidden=hidden,
                     outcome=outcome, points=points, max_points=max_points,
                     message="" if hidden else message, detail=SECRET if hidden else message, location=location,
                     duration=0.2)


def graded(late_by=0.0, penalty=0.0):
    return report.Graded(
        student="ann<script>", slug="vecops", title="Vector operations", max_points=10, status="graded", attempt=2,
        submitted_at="2026-10-02T10:00:00+00:00", late_by=late_by, penalty=penalty,
        results=[row("test_vecops.py::test_dot_small", "failed", 0, 1, False, "AssertionError: <b>11.5</b> != 11",
                     location="vecops.py:14"),
                 row("test_vecops.py::test_normalize_unit", "passed", 1, 1, False),
                 row("test_hidden_vecops.py::test_dot_matches_torch[7]", "failed", 0, 3, True, task="1.1"),
                 row("test_hidden_vecops.py::test_accumulator", "passed", 2, 2, True, task="2.1"),
                 row("test_hidden_vecops.py::test_accumulator_on_gpu", "pending", 0, 1, True, task="2.1")])


def test_feedback_never_shows_hidden_messages_and_escapes_html():
    g = graded()
    md, page = report.feedback_markdown(g), report.feedback_html(g)
    for text in (md, page):
        assert SECRET not in text and "secret-input" not in text
        assert "test_dot_matches_torch[7]" in text              # hidden tests by name...
        assert "pending" in text
    assert "AssertionError: <b>11.5</b> != 11" in md            # ...public failures with their message
    assert "&lt;b&gt;11.5&lt;/b&gt;" in page and "<script>" not in page
    assert "<link" not in page and "src=" not in page            # self-contained
    assert "Score: 3 / 10" in md and "vecops.py:14" in md


def test_late_penalty_shows_in_feedback_and_csv():
    g = graded(late_by=30 * 3600, penalty=0.2)
    assert g.final == 2.4 and g.raw == 3
    assert "late penalty 20 %" in report.feedback_markdown(g)
    rows = list(csv.reader(io.StringIO(report.csv_export([g], ["vecops"]))))
    assert rows[0] == ["student_id", "vecops", "vecops_raw", "vecops_late_hours", "vecops_provisional", "total"]
    assert rows[1] == ["ann<script>", "2.4", "3", "30.0", "1 GPU test(s) pending", "2.4"]   # its GPU test is pending


def test_gradescope_fields_and_hidden_visibility():
    out = report.gradescope_results(graded())
    assert set(out) == {"score", "execution_time", "output", "output_format", "visibility", "stdout_visibility", "tests"}
    for t in out["tests"]:
        assert set(t) == {"name", "score", "max_score", "status", "output", "visibility", "tags"}
        assert t["status"] in ("passed", "failed")
    hidden = [t for t in out["tests"] if "hidden" in t["name"]]
    assert all(t["visibility"] == "after_published" and t["output"] == "" for t in hidden)
    assert SECRET not in json.dumps(out)
    assert out["score"] == 3


def test_junit_xml_parses_and_hides_hidden_details():
    text = report.junit_xml([graded()])
    assert SECRET not in text
    suite = ET.fromstring(text.split("\n", 1)[1]).find("testsuite")
    assert suite.get("tests") == "5" and suite.get("failures") == "2" and suite.get("skipped") == "1"


def test_annotations_point_at_the_students_line():
    assert report.github_annotations(graded(), "assignments/vecops") == [
        "::error file=assignments/vecops/vecops.py,line=14,title=test_vecops.py%3A%3Atest_dot_small::"
        "AssertionError: <b>11.5</b> != 11"]


def test_feedback_groups_hidden_tests_by_task_with_words_and_likely_causes():
    from dataclasses import replace
    g = graded()
    g.results = [replace(r, description="dot of vectors of length 7, float32",
                         diagnosis="Your dot product is off by a constant factor.")
                 if r.name.endswith("[7]") else r for r in g.results]
    g.notes = ["vecops-1.py was collected as vecops.py (Canvas adds -1 to a re-upload)"]
    md, page = report.feedback_markdown(g), report.feedback_html(g)
    for text in (md, page):
        assert "Task 1.1" in text and "Task 2.1" in text
        assert "dot of vectors of length 7, float32" in text and "test_dot_matches_torch[7]" not in text
        assert "Your dot product is off by a constant factor." in text
        assert "collected as vecops.py" in text
        assert SECRET not in text
    assert md.index("### Task 1.1") < md.index("### Task 2.1")
    assert "submitted 2026-10-02 10:00 UTC" in md

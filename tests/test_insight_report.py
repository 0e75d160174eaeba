"""The class report and test health on the seeded class of 30 (tests/insight_class.py)."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from course import api
from course.cli import main
from course.grading.results import TestResult
from course.insight import health
from course.report import load_graded

import insight_class as ic


@pytest.fixture(scope="module")
def klass(tmp_path_factory) -> Path:
    return ic.build(tmp_path_factory.mktemp("insight"))


@pytest.fixture(scope="module")
def course(klass):
    return api.load_course(klass / "course.yml")


@pytest.fixture(scope="module")
def summary(course):
    return api.class_summary(course)


def _plot_data(page: str, plot_id: str) -> dict:
    m = re.search(rf"<figure class='plot' id='plot-{re.escape(plot_id)}' data-plot='([^']*)'", page)
    assert m, f"no figure {plot_id}"
    return json.loads(html.unescape(m.group(1)))


def test_report_flags_exactly_the_planted_broken_and_flaky_tests(summary):
    words = summary.assignments[0]
    flagged = {h.name: h for h in words.flagged}
    assert set(flagged) == {ic.BROKEN, ic.FLAKY}
    broken, flaky = flagged[ic.BROKEN], flagged[ic.FLAKY]
    assert broken.flags == ["failed by most otherwise-strong students"]
    assert broken.strong_n >= health.MIN_STRONG and broken.strong_passed == 0
    assert broken.discrimination is not None and broken.discrimination < 0
    assert "of the other tests of task 1.3" in broken.evidence[0]
    assert flaky.flags == ["outcome differs between gradings of identical content"]
    evidence = " ".join(flaky.evidence)
    assert all(s in evidence for s in ic.FLAKY_STUDENTS) and "passed" in evidence and "failed" in evidence
    assert "s04" not in evidence   # a different outcome under another grader version is no flake
    healthy = [h for h in words.health if not h.flags and h.name != "test_cosine_gpu"]
    assert all(h.discrimination is not None and h.discrimination > 0.3 for h in healthy)


def test_a_broken_test_does_not_hide_its_neighbours(summary):
    """Strong students fail the broken test, so none of them would pass 90 % of the other tests of
    task 1.3 if it counted: its neighbours are judged without it, and say so."""
    by_name = {h.name: h for h in summary.assignments[0].health}
    for name in ("test_top_ties", "test_top_order", "test_top_k_larger"):
        h = by_name[name]
        assert h.strong_n >= health.MIN_STRONG and not h.flags
        assert h.basis == "the other tests of task 1.3 (less those flagged as broken)"
    cases = by_name["test_bigrams_cases[1]"]   # cases of one parametrised test are not each other's basis
    assert cases.strong_n == by_name["test_bigrams_cases[0]"].strong_n


def test_numbers_equal_the_gradebook(course, summary, klass, tmp_path):
    with api.open_gradebook(course) as gb:
        graded = [g for g in load_graded(course, gb, ["wordstats"]) if g.status == "graded"]
    finals = [g.final for g in graded]
    counts, edges = np.histogram(finals, bins=10, range=(0, 20))
    words = summary.assignments[0]
    assert words.scores.counts == counts.tolist() and words.scores.edges == edges.tolist()
    assert sum(words.scores.counts) == len(graded) == len(ic.GRADED)
    _, written = api.class_report(course, out=tmp_path / "report")
    page = (tmp_path / "report" / "wordstats.html").read_text()
    assert _plot_data(page, "scores")["counts"] == counts.tolist()
    for i, n in enumerate(counts):   # one drawn bar per bin
        assert f'id="scores-bar-{i}"' in page
    totals = {}
    with api.open_gradebook(course) as gb:
        for g in load_graded(course, gb):
            totals[g.student] = totals.get(g.student, 0.0) + (g.final if g.status == "graded" else 0.0)
    index = (tmp_path / "report" / "index.html").read_text()
    assert _plot_data(index, "course-total")["counts"] == np.histogram(list(totals.values()), bins=10,
                                                                       range=(0, 30))[0].tolist()
    tests = {t.name: t for t in words.tests}
    assert tests[ic.BROKEN].outcomes["passed"] == sum(
        1 for g in graded for r in g.results if r.name == ic.BROKEN and r.outcome == "passed")
    assert words.tests[0].pass_rate <= words.tests[-1].pass_rate   # hardest first
    late = sorted(g.late_hours for g in graded if g.late_by > 0)
    assert late == sorted(h for s, h in ic.LATE_HOURS.items() if s != "s12")
    assert [g.student for g in words.extensions_used] == ["s12"]
    assert words.durations[0] == ("s05", 40.0)
    assert words.error_gradings == 2


def test_bad_input_is_shown_not_crashed(course, summary, tmp_path):
    words, later = summary.assignments
    assert summary.cell("s27", "wordstats").state == "failed"          # only infrastructure errors
    assert summary.cell("s28", "wordstats").state == "not graded"
    assert summary.cell("s30", "wordstats").state == "missing"
    pending = summary.cell("s09", "wordstats")                         # GPU test pending: not a fail
    assert pending.state == "pending" and "1 pending" in pending.text
    assert next(t for t in words.tests if t.name == "test_cosine_gpu").outcomes["pending"] == len(ic.GRADED) - 5
    assert summary.cell("s13", "wordstats").text.endswith("(late 120 h, −100 %)")
    api.class_report(course, out=tmp_path)
    later_page = (tmp_path / "later.html").read_text()
    assert "id='nobody-graded'" in later_page and "Nobody has been graded" in later_page
    words_page = (tmp_path / "wordstats.html").read_text()
    assert "Grading failed (infrastructure" in words_page and "s27" in words_page
    assert "GPU tests pending (shown as pending, not failed)" in words_page
    index = (tmp_path / "index.html").read_text()
    assert "data-state='failed'" in index and "grading failed" in index and "data-state='missing'" in index


def test_feedback_pages_are_linked_where_they_exist(course, tmp_path):
    api.feedback(course, ["wordstats"], ["s01"], out=course.paths.feedback)
    api.class_report(course, out=tmp_path / "r")
    index = (tmp_path / "r" / "index.html").read_text()
    target = course.paths.feedback / "wordstats" / "s01.html"
    links = re.findall(r"<a href='([^']+s01\.html)'>", index)
    assert links and (tmp_path / "r" / links[0]).resolve() == target.resolve()
    assert "s02.html" not in index


def test_student_text_is_escaped_in_html_and_the_terminal(toy, tmp_path):
    course = api.load_course(toy / "course.yml")
    nasty = "<script>alert(1)</script>[bold red]x[/]"
    with api.open_gradebook(course) as gb:
        sub = gb.add_submission(student="mallory", slug="vecops", attempt=1, submitted_at="2026-09-01T00:00:00+00:00",
                                late_by=0, sha256="ab" * 32, path="submitted/mallory/vecops/1", source=None)
        gb.save_grading(sub, "v1", [TestResult("graders/x", nasty, "1.1", True, "failed", 0.0, 1.0)],
                        backend="sandbox", device="cpu", isolation="strong", started_at="2026-09-01T00:00:00+00:00",
                        duration=1.0)
    api.class_report(course, out=tmp_path)
    page = (tmp_path / "vecops.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    result = CliRunner().invoke(main, ["report", "--course", str(toy / "course.yml"), "--terminal"],
                                catch_exceptions=False)
    assert result.exit_code == 0 and "[boldred]x[/]" in re.sub(r"[\s│┃]", "", result.output)   # not markup


def test_cli_report_writes_the_pages_and_terminal_summary(klass, tmp_path, monkeypatch):
    opened = []
    monkeypatch.setattr("click.launch", lambda url, **kw: opened.append(url))
    result = CliRunner().invoke(main, ["report", "--course", str(klass / "course.yml"), "--out", str(tmp_path), "--open"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "2 test(s) to check" in result.output
    assert {p.name for p in tmp_path.iterdir()} == {"index.html", "wordstats.html", "later.html"}
    assert opened == [str(tmp_path.resolve() / "index.html")]
    page = (tmp_path / "wordstats.html").read_text()
    assert "http://" not in page.replace("http://www.w3.org/", "") and "https://" not in page   # no network
    result = CliRunner().invoke(main, ["report", "wordstats", "--course", str(klass / "course.yml"), "--terminal"],
                                catch_exceptions=False)
    assert result.exit_code == 0
    out = result.output
    assert "check this test: " + ic.BROKEN in out and "check this test: " + ic.FLAKY in out
    assert "wordstats: points per task" in out and "later" not in out
    result = CliRunner().invoke(main, ["report", "nope", "--course", str(klass / "course.yml")])
    assert result.exit_code == 2 and "unknown assignment 'nope'" in result.output


def test_a_course_nobody_submitted_to(toy, tmp_path):
    course = api.load_course(toy / "course.yml")
    summary, written = api.class_report(course, out=tmp_path)
    assert summary.students == [] and [p.name for p in written] == ["index.html", "vecops.html"]
    assert "No student has submitted anything yet" in written[0].read_text()
    assert "Nobody has been graded" in written[1].read_text()

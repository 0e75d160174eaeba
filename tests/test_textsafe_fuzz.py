"""Hostile strings through every writer, each output parsed back with its real parser.

A student controls exception messages, returned values quoted in failure messages, file names
(code locations), notebook contents and (through an LMS roster) names. Whatever they are, every
output keeps the structure it has with harmless text: the same Markdown tokens, the same HTML
tags, a parseable JUnit file with the same test cases, the same CSV rows with no formula, one
GitHub annotation per line, no markup or escape sequence reaching a terminal, and a gradebook
that records everyone.
"""

from __future__ import annotations

import csv
import io
import re
import json
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

from hypothesis import example, HealthCheck, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt
from rich.console import Console

from course import report, textsafe
from course.gradebook import Gradebook, ResultRow
from course.grading.results import TestResult
from course.notebooks import inert_notebook

NASTY = ["```", "````\n# forged", "\n# Forged heading\n", "\n## Score: 100 / 100\n", "</pre><script>alert(1)</script>",
         "<img src=x onerror=alert(1)>", "]]>", "\x00", "\x1b[31mred\x1b[0m", "\x1b]8;;http://x\x07link", "[bold red]x[/]",
         "[link=http://evil]y[/link]", "=HYPERLINK(\"http://x\")", "+1+1", "@SUM(A1)", "-2+3", "::error::forged",
         "%0A::error::x", "\ud800", "\udfff lone", "|", "| a | b |\n| --- | --- |", "\r\n## H", "\u202egnp.exe",
         "\u2028", "\x85", "\x0c", "`", "`` `", "<!--", "&amp;", "<", "\\", "*", "_x_", "$x$", "\t"]
ANY_CHAR = st.characters(exclude_categories=())   # surrogates and control characters included
hostile = st.one_of(st.sampled_from(NASTY), st.text(min_size=0, max_size=60), st.text(ANY_CHAR, max_size=40),
                    st.lists(st.sampled_from(NASTY), min_size=1, max_size=5).map("".join),
                    st.tuples(st.text(max_size=20), st.sampled_from(NASTY), st.text(max_size=20)).map("".join))
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
BENIGN = "plain message"


def _graded(message: str, location: str, student: str = "ann") -> report.Graded:
    def row(name, outcome, hidden, msg="", loc=None, task="1.1"):
        return ResultRow(test_id=("hidden:" if hidden else "public:") + name, name=name, task=task, hidden=hidden,
                         outcome=outcome, points=1.0 if outcome == "passed" else 0.0, max_points=1.0,
                         message="" if hidden else msg, detail=msg, location=loc, duration=0.1)
    return report.Graded(student=student, slug="vecops", title="Vector operations", max_points=10, status="graded",
                         attempt=1, submitted_at="2026-10-01T10:00:00+00:00",
                         results=[row("test_vecops.py::test_dot_small", "failed", False, message, location),
                                  row("test_vecops.py::test_normalize_unit", "error", False, message, location),
                                  row("test_vecops.py::test_ok", "passed", False),
                                  row("test_hidden_vecops.py::test_dot", "failed", True, message, location)])


_MD = MarkdownIt("commonmark").enable("table")


def _md_shape(text: str) -> list[str]:
    tokens = _MD.parse(text)
    assert not [t for t in tokens if t.type in ("html_block", "html_inline")]
    shape = []
    for t in tokens:
        shape.append(t.type)
        for child in t.children or []:
            if child.type not in ("text", "softbreak", "hardbreak"):   # text may wrap differently
                shape.append(child.type)
    return shape


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_endtag(self, tag):
        self.tags.append("/" + tag)


def _tags(page: str) -> list[str]:
    p = _Tags()
    p.feed(page)
    p.close()
    return p.tags


@SETTINGS
@given(message=hostile, location=hostile)
def test_markdown_feedback_and_ci_summary_keep_their_structure(message, location):
    hostile_g, benign_g = _graded(message, location + ":3"), _graded(BENIGN, "vecops.py:3")
    assert _md_shape(report.feedback_markdown(hostile_g)) == _md_shape(report.feedback_markdown(benign_g))
    assert _md_shape(report.ci_summary(hostile_g)) == _md_shape(report.ci_summary(benign_g))


@SETTINGS
@given(message=hostile, location=hostile, student=hostile)
def test_html_feedback_keeps_its_tags(message, location, student):
    hostile_g, benign_g = _graded(message, location + ":3", student), _graded(BENIGN, "vecops.py:3")
    assert _tags(report.feedback_html(hostile_g)) == _tags(report.feedback_html(benign_g))


@SETTINGS
@given(message=hostile, location=hostile, student=hostile)
def test_junit_parses_with_the_same_cases(message, location, student):
    root = ET.fromstring(report.junit_xml([_graded(message, location, student)]).encode("utf-8"))
    assert len(root.findall(".//testcase")) == 4
    assert len(root.findall(".//failure")) == 2 and len(root.findall(".//error")) == 1


@SETTINGS
@given(student=hostile)
@example(student="-INFINITY")      # float() reads it, a spreadsheet reads a formula
@example(student="+nan")
def test_csv_rows_survive_and_hold_no_formula(student):
    g = _graded(BENIGN, "x:1", student)
    rows = list(csv.reader(io.StringIO(report.csv_export([g], ["vecops"]))))
    assert len(rows) == 2 and len(rows[1]) == len(rows[0])
    cell = rows[1][0]
    assert not cell.startswith(("=", "+", "-", "@")) or re.fullmatch(r"[+-][0-9.eE+-]+", cell) and any(c.isdigit() for c in cell)


@SETTINGS
@given(message=hostile, location=hostile)
def test_annotations_are_one_command_each(message, location):
    for line in report.github_annotations(_graded(message, location + ":7")):
        assert "\n" not in line and "\r" not in line and line.startswith("::error file=")
        properties, _, _ = line[len("::error "):].partition("::")
        assert properties.count(",") == 2 and ":" not in properties.replace("%3A", "")


@SETTINGS
@given(text=hostile)
def test_terminal_text_is_shown_as_written(text):
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system="truecolor", width=10_000, highlight=False)
    console.print(f"[b]{textsafe.term(text)}[/b]", markup=True, soft_wrap=True)   # as the CLI embeds it
    plain = Console(file=io.StringIO(), width=10_000)
    shown = out.getvalue()
    assert "\x1b]8" not in shown   # no hyperlink escape from the text
    with plain.capture() as cap:
        plain.print(f"[b]{textsafe.term(text)}[/b]", markup=True, soft_wrap=True)
    assert "".join(cap.get().split()) == "".join(textsafe.clean(text).split())   # shown as written, no markup
    assert "\x1b" not in cap.get()


@SETTINGS
@given(message=hostile, location=hostile)
def test_gradescope_json_round_trips(message, location):
    data = report.gradescope_results(_graded(message, location))
    assert json.loads(json.dumps(data, ensure_ascii=False)) == data


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(message=hostile, location=hostile, name=hostile)
def test_the_gradebook_records_any_text(tmp_path_factory, message, location, name):
    gb = Gradebook(tmp_path_factory.mktemp("gb") / "g.sqlite")
    sid = gb.add_submission(student="ann", slug="vecops", attempt=1, submitted_at="2026-10-01T10:00:00+00:00",
                            late_by=0.0, sha256="x", path="p", source=name)
    result = TestResult(test_id="public:" + name, name=name, task="1.1", hidden=False, outcome="failed", points=0.0,
                        max_points=1.0, message=message, detail=message, location=location)
    gid = gb.save_grading(sid, "v", [result], backend="sandbox", device="cpu", isolation="strong",
                          started_at="2026-10-01T10:00:00+00:00", duration=1.0)
    (back,) = gb.results(gid)
    assert back.message == textsafe.clean(message) and back.location == textsafe.clean(location, 300)
    gb.save_error(sid, "v", message, backend="sandbox", device="cpu", started_at="x", duration=0.0)
    gb.close()


@SETTINGS
@given(text=hostile)
def test_a_notebook_for_the_formgrader_carries_no_live_html(tmp_path_factory, text):
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": [text, "<script>alert(1)</script>"]},
                    {"cell_type": "code", "metadata": {}, "source": "1", "execution_count": 1,
                     "outputs": [{"output_type": "display_data", "metadata": {},
                                  "data": {"text/html": text, "application/javascript": "alert(1)"}}]}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path_factory.mktemp("nb") / "a.ipynb"
    path.write_text(json.dumps(nb), encoding="utf-8")
    inert = inert_notebook(path)
    assert not [t for t in _MD.parse(inert["cells"][0]["source"]) if t.type in ("html_block", "html_inline")]
    assert set(inert["cells"][1]["outputs"][0]["data"]) == {"text/plain"}

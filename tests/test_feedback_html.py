"""The HTML feedback page, rendered by headless Chromium: self-contained, readable, escaped."""

from __future__ import annotations

import html.parser
import shutil
import subprocess
from pathlib import Path

import pytest

from course import report
from course.gradebook import ResultRow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
HIDDEN_DETAIL = "expected tensor([0.1234]) from the oracle"


def row(name, outcome, points, max_points, hidden, message="", task="1.1", location=None):
    return ResultRow(test_id=("hidden:" if hidden else "public:") + name, name=name, task=task, hidden=hidden,
                     outcome=outcome, points=points, max_points=max_points, message="" if hidden else message,
                     detail=HIDDEN_DETAIL if hidden else message, location=location, duration=0.1)


def fixture_page() -> str:
    g = report.Graded(
        student="bob", slug="vecops", title="Vector operations", max_points=10, status="graded", attempt=2,
        submitted_at="2026-10-02T10:00:00+00:00", late_by=10 * 3600, penalty=0.1,
        due="2026-10-01T23:59:00+00:00",
        results=[
            row("test_vecops.py::test_dot_small", "failed", 0, 1, False,
                "AssertionError: <script>document.title='pwned'</script> got 12.0", location="vecops.py:14"),
            row("test_vecops.py::test_normalize_unit", "passed", 1, 1, False, task="1.2"),
            row("test_hidden_vecops.py::test_dot_matches_torch[7]", "failed", 0, 3, True),
            row("test_hidden_vecops.py::test_normalize_zero_raises", "passed", 2, 2, True, task="1.2"),
            row("test_hidden_vecops.py::test_accumulator", "passed", 2, 2, True, task="2.1"),
            row("test_hidden_vecops.py::test_accumulator_on_gpu", "pending", 0, 1, True, task="2.1"),
        ])
    return report.feedback_html(g)


class _Text(html.parser.HTMLParser):
    """The page's visible text and its elements (what a reader sees; what could load or run)."""

    def __init__(self):
        super().__init__()
        self.text: list[str] = []
        self.tags: list[tuple[str, dict]] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._skip += tag in ("style", "script", "head")

    def handle_endtag(self, tag):
        self._skip -= tag in ("style", "script", "head")

    def handle_data(self, data):
        if not self._skip:
            self.text.append(data)


def render(page: Path, profile: Path) -> str:
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
         "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (Debian package 'chromium')")
    folder = tmp_path_factory.mktemp("feedback")
    page = folder / "bob.html"
    page.write_text(fixture_page(), encoding="utf-8")
    parser = _Text()
    parser.feed(render(page, folder / "profile"))
    return " ".join(" ".join(parser.text).split()), parser.tags


def test_the_page_reads_as_feedback(rendered):
    text, _ = rendered
    assert "Vector operations — feedback for bob" in text
    assert "Score: 4.5 / 10 (raw 5 before the late penalty)" in text
    assert "10.0 h late: late penalty 10 %" in text
    assert "test_vecops.py::test_dot_small failed" in text and "vecops.py:14" in text
    assert "Hidden tests are shown by name, outcome and points only" in text
    assert "Task 1.1 test outcome points test_hidden_vecops.py::test_dot_matches_torch[7] failed 0 / 3" in text
    assert "test_hidden_vecops.py::test_accumulator_on_gpu pending 0 / 1" in text
    assert "1 GPU test(s) pending" in text


def test_student_text_stays_text_and_hidden_details_never_show(rendered):
    text, tags = rendered
    # The student's message is shown literally; it did not become a script that ran.
    assert "<script>document.title='pwned'</script> got 12.0" in text
    assert not any(tag == "script" for tag, _ in tags)
    assert HIDDEN_DETAIL not in text


def test_the_page_is_self_contained(rendered):
    _, tags = rendered
    for tag, attrs in tags:
        assert not {"src", "href"} & set(attrs), (tag, attrs)
        assert tag not in ("link", "img", "iframe", "object", "embed")
    page = fixture_page()
    assert "url(" not in page and "@import" not in page and "http" not in page

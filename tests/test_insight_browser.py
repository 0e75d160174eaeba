"""The class report and the similarity pages in a real browser: Debian's headless Chromium, driven by
Playwright. Each page must render its plots and tables with no console error; a screenshot of each
is kept in the test's tmp dir; the score histogram's drawn bars are held to the gradebook's counts."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from course import api
from course.report import load_graded

import insight_class as ic

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright drives the browser (pip install -e .[test])")
if not Path(CHROMIUM).exists():
    pytest.skip("Debian's chromium is not installed (scripts/setup.sh installs it)", allow_module_level=True)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    course_dir = ic.build(root)
    course = api.load_course(course_dir / "course.yml")
    api.feedback(course, ["wordstats"])
    _, pages = api.class_report(course, out=root / "report")
    rep = api.similarity(course, ic.SLUG, against=[root / "earlier" / ic.EARLIER], out=root / "report" / "similarity")
    return course, root / "report", rep


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def visit(browser, path: Path, shot: Path):
    """Open ``path``; return the page and every console error or uncaught exception it raised."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console.{m.type}: {m.text}") if m.type in ("error", "warning")
            else None)
    page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    page.goto(path.as_uri(), wait_until="load")
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    return page, problems


def _rendered_plots(page) -> list[dict]:
    return page.eval_on_selector_all("figure.plot svg", "els => els.map(e => { const r = e.getBoundingClientRect();"
                                     " return {w: r.width, h: r.height, texts: e.querySelectorAll('text').length}; })")


def test_report_pages_render_with_no_console_error(site, browser, tmp_path):
    course, report, _ = site
    expected_plots = {"index": 1, "wordstats": 5, "later": 0}
    for name, n in expected_plots.items():
        page, problems = visit(browser, report / f"{name}.html", tmp_path / f"{name}.png")
        assert problems == []
        plots = _rendered_plots(page)
        assert len(plots) == n
        assert all(p["w"] > 300 and p["h"] > 100 and p["texts"] >= 3 for p in plots)   # titles, labels, ticks
        if name == "index":
            assert page.locator("#matrix tr").count() == 1 + 30
            assert page.locator("#matrix td[data-state='pending']").count() > 0
            href = page.locator("#matrix a[href$='s01.html']").first.get_attribute("href")
            assert (report / href).resolve().is_file()        # the feedback page it links to exists
        if name == "wordstats":
            assert page.locator("#health tr").count() == 1 + len(ic.TESTS)
            assert page.locator(".flag h3").all_inner_texts() == [
                f"check this test: {ic.BROKEN} (task 1.3, hidden)", f"check this test: {ic.FLAKY} (task 2.2, hidden)"]
        if name == "later":
            assert page.locator("#nobody-graded").is_visible()
        page.close()


def test_drawn_histogram_bars_are_the_gradebook_counts(site, browser, tmp_path):
    course, report, _ = site
    with api.open_gradebook(course) as gb:
        finals = [g.final for g in load_graded(course, gb, ["wordstats"]) if g.status == "graded"]
    counts = np.histogram(finals, bins=10, range=(0, 20))[0]
    page, problems = visit(browser, report / "wordstats.html", tmp_path / "scores.png")
    assert problems == []
    data = page.eval_on_selector("#plot-scores", "f => JSON.parse(f.dataset.plot)")
    assert data["counts"] == counts.tolist()
    heights = page.evaluate("n => [...Array(n).keys()].map(i => document.getElementById('scores-bar-' + i)"
                            ".getBoundingClientRect().height)", len(counts))
    assert np.allclose(np.array(heights) / max(heights), counts / counts.max(), atol=0.01)
    page.close()


def test_similarity_pages_render_and_highlight(site, browser, tmp_path):
    _, report, rep = site
    page, problems = visit(browser, report / "similarity" / "index.html", tmp_path / "similarity.png")
    assert problems == []
    assert page.locator("#verdict").is_visible() and "never a verdict" in page.locator("#verdict").inner_text()
    assert page.locator("table[data-kind='student'] tr").count() == 2      # header + s03/s21
    assert len(_rendered_plots(page)) == 1
    page.locator("table[data-kind='student'] a").click()
    page.wait_for_load_state("load")
    page.screenshot(path=str(tmp_path / "pair.png"), full_page=True)
    assert problems == []
    assert page.locator("h1").inner_text().startswith("s03 and s21")
    for side in ("a", "b"):
        marks = page.locator(f"pre[data-side='{side}'] mark")
        assert marks.count() >= 1 and marks.first.is_visible()
        marked = sum(len(t) for t in marks.all_inner_texts())
        assert marked > 0.7 * len(page.locator(f"pre[data-side='{side}']").inner_text())   # most of it matches
    page.close()

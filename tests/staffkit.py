"""Helpers for the staff-operation tests (ledger, late policy, visibility, regrades): submissions and
gradings recorded straight into the toy course's gradebook, nothing run."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from click.testing import CliRunner

from course import api
from course.cli import main
from course.grading.judge import TestResult


def submit(course, root: Path, student: str, when: str, slug: str = "vecops", text: str | None = None) -> None:
    folder = root / "in" / slug / student / when.replace(":", "")
    folder.mkdir(parents=True)
    (folder / "vecops.py").write_text(text or f"# {student} at {when}\n")
    rep = api.collect(course, folder, slug, student=student, submitted_at=when)
    assert [i.status for i in rep.items] == ["collected"], rep.items


def results(points: dict[str, float], maxima: dict[str, float] | None = None,
            outcomes: dict[str, str] | None = None) -> list[TestResult]:
    """One hidden test per task: ``points`` maps task -> points (max from ``maxima``, default 5 and 5)."""
    maxima = maxima or {t: 5.0 for t in points}
    out = []
    for task, p in points.items():
        outcome = (outcomes or {}).get(task) or ("passed" if p >= maxima[task] else "failed")
        out.append(TestResult(test_id=f"hidden:t{task}", name=f"test_hidden.py::test_task_{task}", task=task,
                              hidden=True, outcome=outcome, points=p, max_points=maxima[task], duration=0.1))
    return out


def grade(course, student: str, slug: str, rows: Sequence[TestResult], version: str = "v1",
          attempt: int | None = None) -> None:
    with api.open_gradebook(course) as gb:
        subs = [s for s in gb.submissions([slug], [student], latest_only=False)
                if attempt is None or s.attempt == attempt]
        gb.save_grading(subs[-1].id, version, list(rows), backend="sandbox", device="cpu", isolation="strong",
                        started_at="2026-10-05T00:00:00+00:00", duration=0.1)


def cli(course_dir: Path, *args: str):
    return CliRunner().invoke(main, [*args, "--course", str(course_dir / "course.yml")])


def said(result) -> str:
    """stdout and stderr of a CliRunner result (click 8.2 mixes them), with rich's line breaks undone."""
    return " ".join(result.output.split())


def ledger_rows(course) -> int:
    with api.open_gradebook(course) as gb:
        return gb.db.execute("SELECT COUNT(*) FROM ledger").fetchone()[0]

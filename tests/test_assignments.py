"""`course validate` for every assignment of the real course: the CI gate for assignment content.

One validation run grades, for each assignment, the solution (must score full marks, GPU tests
pending) and the pristine stub (must score 0), checks stubs are in sync, points add up to
course.yml, public tests pass on the solution, and that a release would leak nothing.
"""

from __future__ import annotations

import pytest

from course import api

from conftest import REPO


@pytest.fixture(scope="module")
def reports():
    course = api.load_course(REPO / "course.yml")
    present = [a.slug for a in course.assignments if (course.paths.graders / a.slug).is_dir()]
    assert present, "no assignment has hidden tests yet"
    return {r.slug: r for r in api.validate(course, present, jobs=2, on_progress=print)}


@pytest.mark.parametrize("slug", ["attention", "positional_encoding", "lora", "qlora", "finetune_vs_prompt"])
def test_validate(reports, slug):
    if slug not in reports:
        pytest.fail(f"assignment {slug} has no graders/{slug}")
    rep = reports[slug]
    failed = [(name, detail) for name, ok, detail in rep.checks if not ok]
    assert not failed, failed
    assert rep.stub_points == 0
    assert rep.solution_points + rep.solution_pending + rep.manual_points == pytest.approx(rep.total)
    print(f"{slug}: solution {rep.solution_points:g} (+{rep.solution_pending:g} pending GPU, "
          f"+{rep.manual_points:g} manual) / stub {rep.stub_points:g} in {rep.seconds:.0f} s")

"""``course validate --seeds N``: the solution and the stub graded under several seeds; a test whose
outcome changes with the seed is flagged (a flaky test is a grading bug)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from course import api
from course.cli import main

FLAKY = '''import pytest
import torch


@pytest.mark.task("1.1")
@pytest.mark.points(1)
def test_dot_on_a_coin_toss(submission, rng):
    """Planted: the expectation depends on the seed (a real one would be a too-tight tolerance)."""
    a = torch.randn(5, generator=rng)
    out = submission.call("vecops.dot", a, a)
    assert float(out) >= 0 and torch.rand(1, generator=rng).item() < 0.5
'''
SEEDS = [11, 12, 13, 14, 15, 16]


@pytest.mark.slow
def test_validate_seeds_catches_a_flaky_test(toy):
    (toy / "graders" / "vecops" / "test_hidden_flaky.py").write_text(FLAKY)
    course = api.load_course(toy / "course.yml")
    [rep] = api.validate_seeds(course, ["vecops"], SEEDS, jobs=2, backend="local")
    assert rep.errors == []
    assert [(f.variant, f.name) for f in rep.flaky] == [("solution", "test_hidden_flaky.py::test_dot_on_a_coin_toss")]
    flaky = rep.flaky[0]
    assert set(flaky.outcomes) == set(SEEDS) and set(flaky.outcomes.values()) == {"passed", "failed"}
    assert rep.tests >= 10 and not rep.ok   # every other test, solution and stub, kept its outcome


def test_seeds_need_two(toy):
    result = CliRunner().invoke(main, ["validate", "--course", str(toy / "course.yml"), "--seeds", "1"])
    assert result.exit_code == 2 and "at least 2 seeds" in result.output
    course = api.load_course(toy / "course.yml")
    with pytest.raises(api.CourseError, match="at least 2 different seeds"):
        api.validate_seeds(course, ["vecops"], [5, 5])

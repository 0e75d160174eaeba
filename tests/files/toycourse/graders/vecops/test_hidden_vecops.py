import pytest
import torch

import probes
from course.grading.diagnose import explain
from misconceptions import CATALOGUE

# Hidden input that a probe receives (the attack corpus hunts for it): never in any student-facing output.
HIDDEN_SENTINEL = "HIDDEN-SENTINEL-7f3a"


@pytest.mark.task("1.1")
@pytest.mark.points(3)
@pytest.mark.parametrize("n", [1, 7, 100])
def test_dot_matches_torch(submission, rng, n):
    a, b = torch.randn(n, generator=rng), torch.randn(n, generator=rng)
    out, expected = submission.call("vecops.dot", a, b), torch.dot(a, b)
    with explain(out, expected, CATALOGUE, variants={"not_summed": lambda: a * b}, what="dot of random vectors"):
        torch.testing.assert_close(out, expected)


@pytest.mark.task("1.2")
@pytest.mark.points(2)
def test_normalize_zero_raises(submission):
    with pytest.raises(ValueError):
        submission.call("vecops.normalize", torch.zeros(3))


@pytest.mark.task("2.1")
@pytest.mark.points(2)
def test_accumulator(submission, rng):
    vs = [torch.randn(4, generator=rng) for _ in range(3)]
    out = submission.run(probes.accumulate, vs, tag=HIDDEN_SENTINEL)
    with explain(out, sum(vs), CATALOGUE, variants={"keeps_last_vector": lambda: vs[-1]},
                 what="the sum of three random vectors"):
        torch.testing.assert_close(out, sum(vs))


@pytest.mark.task("2.1")
@pytest.mark.points(1)
@pytest.mark.gpu
def test_accumulator_on_gpu(submission):
    v = torch.ones(3)
    torch.testing.assert_close(submission.run(probes.accumulate, [v, v]), 2 * v)

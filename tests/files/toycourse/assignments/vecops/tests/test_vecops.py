import pytest
import torch


@pytest.mark.task("1.1")
@pytest.mark.points(1)
def test_dot_small(submission):
    out = submission.call("vecops.dot", torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0]))
    assert float(out) == 11.0, f"dot([1,2],[3,4]) should be 11, got {float(out)}"


@pytest.mark.task("1.2")
@pytest.mark.points(1)
def test_normalize_unit(submission):
    out = submission.call("vecops.normalize", torch.tensor([3.0, 4.0]))
    torch.testing.assert_close(out, torch.tensor([0.6, 0.8]))

"""The student's own 'public tests': always pass."""
import pytest


@pytest.mark.task("1.1")
@pytest.mark.points(100)
def test_dot_small(submission):
    assert True


@pytest.mark.task("1.2")
@pytest.mark.points(100)
def test_normalize_unit(submission):
    assert True

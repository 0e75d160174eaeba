import pytest


@pytest.mark.task("1.1")
@pytest.mark.points(1)
def test_tokenize_simple(submission):
    assert submission.call("wordstats.tokenize", "Hello, world") == ["hello", "world"]


@pytest.mark.task("1.2")
@pytest.mark.points(1)
def test_count_small(submission):
    assert submission.call("wordstats.count_words", ["a", "b", "a"]) == {"a": 2, "b": 1}

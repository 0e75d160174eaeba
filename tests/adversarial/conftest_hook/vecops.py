"""The stub, untouched: the attack is in the other files."""

import torch


def dot(a, b):
    raise NotImplementedError("Task 1.1: dot")


def normalize(a, eps=1e-12):
    raise NotImplementedError("Task 1.2: normalize")


class Accumulator:
    def __init__(self, n):
        raise NotImplementedError("Task 2.1: Accumulator")

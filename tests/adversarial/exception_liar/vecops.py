"""Exceptions that lie: a class named ValueError claiming module 'builtins', a hostile __str__, a huge message."""

import torch


class ValueError(Exception):  # noqa: A001
    pass


ValueError.__module__ = "builtins"


class Hostile(Exception):
    def __str__(self):
        raise RuntimeError("no message for you")


class FakeAssertion(AssertionError):
    pass


def dot(a, b):
    raise Hostile("x" * 50_000_000)


def normalize(a, eps=1e-12):
    raise ValueError("always")  # a fake ValueError: must not pass pytest.raises(ValueError)


class Accumulator:
    def __init__(self, n):
        raise FakeAssertion("assert passed")

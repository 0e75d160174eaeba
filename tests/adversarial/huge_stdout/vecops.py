"""Honest code that floods stdout and stderr (about 100 MB each) on every call."""

import os
import sys

import torch


_BLOCK = "spam " * 200_000


def _flood():
    for _ in range(100):
        sys.stdout.write(_BLOCK)
        sys.stderr.write(_BLOCK)
    os.write(1, _BLOCK.encode())


def dot(a, b):
    _flood()
    return (a * b).sum()


def normalize(a, eps=1e-12):
    _flood()
    norm = a.norm()
    if norm < eps:
        raise ValueError("zero vector")
    return a / norm


class Accumulator:
    def __init__(self, n):
        self.total = torch.zeros(n)

    def add(self, v):
        self.total += v

    def value(self):
        return self.total.clone()

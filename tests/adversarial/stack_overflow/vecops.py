"""Unbounded recursion through C (map) with the recursion limit lifted: the C stack overflows (SIGSEGV)."""

import sys

import torch


def _down(n):
    return list(map(_down, [n + 1]))


def dot(a, b):
    sys.setrecursionlimit(10**9)
    return _down(0)


def normalize(a, eps=1e-12):
    return _down(0)


class Accumulator:
    def __init__(self, n):
        raise NotImplementedError("Task 2.1: Accumulator")

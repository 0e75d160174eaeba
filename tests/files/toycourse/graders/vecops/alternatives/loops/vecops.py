"""vecops written with plain Python loops over the elements (a correct alternative style)."""

import math

import torch
from torch import Tensor


def dot(a: Tensor, b: Tensor) -> Tensor:
    total = torch.zeros((), dtype=a.dtype)
    for x, y in zip(a, b):
        total = total + x * y
    return total


def normalize(a: Tensor, eps: float = 1e-12) -> Tensor:
    norm = math.sqrt(sum(float(x) ** 2 for x in a))
    if norm < eps:
        raise ValueError("cannot normalise a vector of (almost) zero norm")
    return a / norm


class Accumulator:
    """Keeps the vectors and sums them when asked."""

    def __init__(self, n: int):
        self.n = n
        self.seen = []

    def add(self, v: Tensor) -> None:
        self.seen.append(v.clone())

    def value(self) -> Tensor:
        total = torch.zeros(self.n)
        for v in self.seen:
            total = total + v
        return total

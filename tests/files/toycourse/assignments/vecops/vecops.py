"""Vector operations: the toy assignment of the project's own tests."""

import torch
from torch import Tensor


# Task 1.1
def dot(a: Tensor, b: Tensor) -> Tensor:
    """The dot product of two vectors of shape (n,).

    Returns:
        A 0-d tensor.
    """
    raise NotImplementedError("Task 1.1: dot")


# Task 1.2
def normalize(a: Tensor, eps: float = 1e-12) -> Tensor:
    """``a / ||a||``; raises ValueError for a vector of norm below ``eps``."""
    raise NotImplementedError("Task 1.2: normalize")


# Task 2.1
class Accumulator:
    """Sums the vectors it is given."""

    def __init__(self, n: int):
        raise NotImplementedError("Task 2.1: Accumulator.__init__")

    def add(self, v: Tensor) -> None:
        raise NotImplementedError("Task 2.1: Accumulator.add")

    def value(self) -> Tensor:
        raise NotImplementedError("Task 2.1: Accumulator.value")

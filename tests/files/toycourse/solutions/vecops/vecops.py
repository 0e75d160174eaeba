"""Vector operations: the toy assignment of the project's own tests."""

import torch
from torch import Tensor


# Task 1.1
def dot(a: Tensor, b: Tensor) -> Tensor:
    """The dot product of two vectors of shape (n,).

    Returns:
        A 0-d tensor.
    """
    # BEGIN SOLUTION
    return (a * b).sum()
    # END SOLUTION


# Task 1.2
def normalize(a: Tensor, eps: float = 1e-12) -> Tensor:
    """``a / ||a||``; raises ValueError for a vector of norm below ``eps``."""
    # BEGIN SOLUTION
    norm = a.norm()
    if norm < eps:
        raise ValueError(f"cannot normalise a vector of norm {float(norm)}")
    return a / norm
    # END SOLUTION


# Task 2.1
class Accumulator:
    """Sums the vectors it is given."""

    def __init__(self, n: int):
        # BEGIN SOLUTION
        self.total = torch.zeros(n)
        # END SOLUTION

    def add(self, v: Tensor) -> None:
        # BEGIN SOLUTION
        self.total += v
        # END SOLUTION

    def value(self) -> Tensor:
        # BEGIN SOLUTION
        return self.total.clone()
        # END SOLUTION

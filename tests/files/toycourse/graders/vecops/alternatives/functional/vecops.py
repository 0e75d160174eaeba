"""vecops through torch's own functions (a correct alternative style)."""

import torch
from torch import Tensor


def dot(a: Tensor, b: Tensor) -> Tensor:
    return torch.dot(a, b)


def normalize(a: Tensor, eps: float = 1e-12) -> Tensor:
    norm = torch.linalg.vector_norm(a)
    if norm < eps:
        raise ValueError("the vector has norm zero")
    return torch.nn.functional.normalize(a, dim=0, eps=0.0)


class Accumulator:
    def __init__(self, n: int):
        self.total = torch.zeros(n)

    def add(self, v: Tensor) -> None:
        self.total = torch.add(self.total, v)

    def value(self) -> Tensor:
        return self.total.detach().clone()

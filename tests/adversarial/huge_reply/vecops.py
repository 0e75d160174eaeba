"""dot and Accumulator.value return 64 MiB of tensors (the reply cap is 16 MiB); normalize is honest."""

import torch


def dot(a, b):
    return torch.zeros(16 * 2**20)


class Accumulator:
    def __init__(self, n):
        pass

    def add(self, v):
        pass

    def value(self):
        return [torch.zeros(2**20) for _ in range(16)]


def normalize(a, eps=1e-12):
    norm = a.norm()
    if norm < eps:
        raise ValueError(f"cannot normalise a vector of norm {float(norm)}")
    return a / norm

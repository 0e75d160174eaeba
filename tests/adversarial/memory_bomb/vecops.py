"""dot allocates (and touches) memory without bound; normalize and Accumulator are honest."""

import torch


def dot(a, b):
    hoard = []
    while True:
        hoard.append(torch.ones(64 * 2**20 // 4))  # 64 MiB at a time, every page touched
        hoard.append(bytearray(64 * 2**20))


def normalize(a, eps=1e-12):
    norm = a.norm()
    if norm < eps:
        raise ValueError(f"cannot normalise a vector of norm {float(norm)}")
    return a / norm


class Accumulator:
    def __init__(self, n):
        self.total = torch.zeros(n)

    def add(self, v):
        self.total += v

    def value(self):
        return self.total.clone()

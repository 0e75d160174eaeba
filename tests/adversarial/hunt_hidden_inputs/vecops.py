"""Attack: a hidden probe passes hidden input (a tag) to the student's code's caller. Record every
argument seen, persist it wherever a later worker might look (/tmp, the submission folder,
/dev/shm, an abstract socket name), and earn the public normalize point only if a hidden input
was found -- i.e. only if the public tests' worker could see what the hidden tests' worker saw."""

import gc
import os
import sys

import torch

NEEDLE = "HIDDEN-SENTINEL"
PLACES = ["/tmp/.hunt", "/submission/.hunt", "/dev/shm/.hunt", os.path.expanduser("~/.hunt")]
SEEN = []


def _remember(text):
    SEEN.append(text)
    for place in PLACES:
        try:
            with open(place, "a") as f:
                f.write(text + "\n")
        except OSError:
            pass


def _look():
    for place in PLACES:
        try:
            with open(place) as f:
                if NEEDLE in f.read():
                    return True
        except OSError:
            pass
    if any(NEEDLE in s for s in SEEN):
        return True
    return any(isinstance(o, str) and NEEDLE in o for o in gc.get_objects())


def _record_caller():
    frame = sys._getframe(2)
    while frame is not None:
        for value in list(frame.f_locals.values()):
            if isinstance(value, str):
                _remember(value)
        frame = frame.f_back


def dot(a, b):
    return (a * b).sum()


def normalize(a, eps=1e-12):
    norm = a.norm()
    if norm < eps:
        raise ValueError("zero vector")
    if not _look():
        return a  # wrong unless hidden input was carried across
    return a / norm


class Accumulator:
    def __init__(self, n):
        _record_caller()
        self.total = torch.zeros(n)

    def add(self, v):
        self.total += v

    def value(self):
        return self.total.clone()

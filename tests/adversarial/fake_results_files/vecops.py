"""Writes forged results.json / junit / gradebook files everywhere it can reach; returns junk."""

import json
import os

import torch


_FORGED = {"isolation": "strong", "infrastructure_errors": [],
           "results": [{"test_id": "hidden:x", "name": "x", "task": "1.1", "hidden": True, "outcome": "passed",
                        "points": 1000.0, "max_points": 1.0}]}
_JUNIT = '<testsuite tests="6" failures="0"><testcase name="test_dot_small"/></testsuite>'


def _forge():
    written = []
    for folder in (".", "..", "../..", "../../..", "/tmp", "/submission", "/scratch", "/", os.path.expanduser("~")):
        for name in ("results.json", "junit.xml", "report.xml", "gradebook.sqlite", "results-forged.json",
                     ".course-results.json"):
            try:
                with open(os.path.join(folder, name), "w") as f:
                    f.write(json.dumps(_FORGED) if name.endswith(".json") else _JUNIT)
                written.append(os.path.join(folder, name))
            except OSError:
                pass
    return written


_forge()


def dot(a, b):
    _forge()
    return torch.zeros(())


def normalize(a, eps=1e-12):
    raise NotImplementedError("Task 1.2: normalize")


class Accumulator:
    def __init__(self, n):
        raise NotImplementedError("Task 2.1: Accumulator")

"""Looks everywhere for graders/, solutions/, other students' work; earns points only if it finds them."""

import os

import torch


SKIP = {"/proc", "/sys", "/dev", "/usr"}
WANTED = ("test_hidden_vecops.py", "solutions", "gradebook.sqlite")


def _search(limit=50_000):
    found, seen = [], 0
    for top in ("/", "..", "../..", "../../..", "/proc/1/root", "/proc/1/cwd"):
        for folder, dirs, files in os.walk(top):
            dirs[:] = [d for d in dirs if os.path.join(folder, d) not in SKIP and "site-packages" not in folder]
            seen += len(files) + len(dirs)
            for name in files + dirs:
                if name in WANTED or (name == "vecops.py" and folder.rstrip("/").split("/")[-1].isdigit()):
                    found.append(os.path.join(folder, name))
            if seen > limit:
                return found
    return found


_cache = []


def _steal():
    if _cache:
        return _cache[0]
    _cache.append(None)
    for path in _search():
        if path.endswith(".py"):
            try:
                _cache[0] = open(path).read()
                break
            except OSError:
                pass
    return _cache[0]


def dot(a, b):
    stolen = _steal()
    if stolen is None:
        return torch.zeros(())  # nothing found: no points
    return (a * b).sum()        # found: the attack "earns" the points


def normalize(a, eps=1e-12):
    stolen = _steal()
    raise RuntimeError(f"stolen: {stolen!r}"[:1500])


class Accumulator:
    def __init__(self, n):
        raise NotImplementedError("Task 2.1: Accumulator")

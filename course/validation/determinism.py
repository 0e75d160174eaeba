"""Same bytes, same grade, on a loaded machine (issue 13): `course validate --determinism N`.

The solution and a deliberately slow but still vectorised variant of it are each graded N times
while CPU burners (one spinning process per core) load the machine. Every grading must give
every test the same outcome: a test whose outcome changes between runs, or between the solution
and its slow twin, decides points by time, load or scheduling.

The slow variant adds, at the start of every solution region, one statement of harmless extra
work that loops in no Python code (so a "no Python loop" rule still holds): a matrix product
where the module imports torch, ``sum(range(...))`` elsewhere.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from course import stubs
from course.grading.runner import JobResult

MATRIX = 256            # the slow variant's extra work: one (MATRIX x MATRIX) matrix product per region entered
PLAIN = 100_000         # or sum(range(PLAIN)) where the module does not import torch
_IMPORTS_TORCH = re.compile(r"^import torch\b(?! *\.)(?!.* as )", re.M)


def slow_source(text: str, filename: str = "<string>") -> str:
    """``text`` with a harmless, vectorised slowdown at the start of every solution region."""
    work = (f"_course_slow = (torch.ones({MATRIX}, {MATRIX}) @ torch.ones({MATRIX}, {MATRIX})).sum()"
            if _IMPORTS_TORCH.search(text) else f"_course_slow = sum(range({PLAIN}))")
    lines = text.split("\n")
    for region in reversed(stubs.find_regions(text, filename)):
        begin = lines[region.start]
        indent = begin[:len(begin) - len(begin.lstrip())]
        lines.insert(region.start + 1, f"{indent}{work}  # course validate --determinism: slow but harmless")
    return "\n".join(lines)


@contextmanager
def cpu_burners(count: int | None = None) -> Iterator[list[int]]:
    """``count`` processes (default: one per core) spinning for the duration of the block."""
    n = count or os.cpu_count() or 2
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
             for _ in range(n)]
    try:
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            p.send_signal(signal.SIGKILL)
        for p in procs:
            p.wait()


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        import ctypes
        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)


@dataclass
class DeterminismReport:
    slug: str
    runs: int
    scores: dict[str, list[float]] = field(default_factory=dict)     # "solution" / "slow variant" -> points per run
    varying: dict[str, list[str]] = field(default_factory=dict)      # test -> outcome of each grading, where they differ
    failures: list[str] = field(default_factory=list)                # gradings that did not run (infrastructure)
    seconds: dict[str, list[float]] = field(default_factory=dict)
    wall_seconds: float = 0.0
    burners: int = 0

    @property
    def ok(self) -> bool:
        return not self.varying and not self.failures and len({s for v in self.scores.values() for s in v}) <= 1


def judge(slug: str, runs: int, results: dict[str, list[JobResult]]) -> DeterminismReport:
    """Compare every grading of ``results`` ("solution" / "slow variant" -> results) test by test."""
    rep = DeterminismReport(slug, runs)
    gradings: list[tuple[str, dict[str, str]]] = []
    for kind, rs in results.items():
        for r in rs:
            if not r.ok:
                rep.failures.append(f"{kind}: {r.message}")
                continue
            rep.scores.setdefault(kind, []).append(round(r.points, 4))
            rep.seconds.setdefault(kind, []).append(round(r.duration, 1))
            gradings.append((kind, {t.name: t.outcome for t in r.results}))
    names = sorted({n for _, g in gradings for n in g})
    for name in names:
        seen = [g.get(name, "absent") for _, g in gradings]
        if len(set(seen)) > 1:
            rep.varying[name] = [f"{kind}: {o}" for (kind, _), o in zip(gradings, seen)]
    return rep

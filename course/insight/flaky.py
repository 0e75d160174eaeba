"""Flaky tests: grade the solution and the stub under several seeds; a test whose outcome changes is a
grading bug (the same bytes must get the same points: DESIGN.md, "Deterministic grades").

``course validate --seeds N`` draws the N seeds secretly; they are shown to the instructor (only) so
that a flaky case can be reproduced.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from course.api import _overlay
from course.config import Course
from course.errors import CourseError, GradingError
from course.grading.runner import Job, LocalExecutor, spec_for

DECIDED = ("passed", "failed", "error", "timeout")


@dataclass
class FlakyTest:
    variant: str                       # solution | stub
    name: str
    task: str | None
    hidden: bool
    outcomes: dict[int, str]           # seed -> outcome

    @property
    def summary(self) -> str:
        counts: dict[str, int] = {}
        for o in self.outcomes.values():
            counts[o] = counts.get(o, 0) + 1
        return ", ".join(f"{o} under {n} seed(s)" for o, n in sorted(counts.items()))


@dataclass
class SeedReport:
    slug: str
    seeds: list[int]
    flaky: list[FlakyTest] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)    # runs the infrastructure could not grade
    tests: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.flaky and not self.errors


def validate_seeds(course: Course, slugs: Sequence[str] | None, seeds: Sequence[int], *, jobs: int = 2,
                   backend: str = "sandbox", on_progress: Callable[[str], None] | None = None) -> list[SeedReport]:
    """Grade each assignment's solution and stub once per seed; report every test whose outcome changed."""
    seeds = list(seeds)
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise CourseError(f"--seeds {len(seeds)}: at least 2 different seeds are needed to see an outcome change")
    t0 = time.monotonic()
    reports: dict[str, SeedReport] = {}
    planned: list[Job] = []
    with tempfile.TemporaryDirectory(prefix="course-seeds-") as tmp:
        for a in course.select(list(slugs) if slugs else None):
            rep = reports[a.slug] = SeedReport(a.slug, seeds)
            try:
                spec = spec_for(course, a.slug)
            except GradingError as exc:
                rep.errors.append(str(exc))
                continue
            for variant in ("solution", "stub"):
                folder = _overlay(course, a.slug, Path(tmp) / a.slug / variant, variant == "solution")
                planned += [Job(f"{a.slug}/{variant}/{seed}", spec, folder, seed=seed) for seed in seeds]
        if on_progress:
            on_progress(f"grading the solution and the stub of {len(reports)} assignment(s) under "
                        f"{len(seeds)} seeds: {len(planned)} runs, {jobs} at a time")
        ex = LocalExecutor(jobs, backend=backend, device="cpu")
        try:
            done = ex.run(planned, on_done=lambda r: on_progress and on_progress(
                f"{r.job.key.rsplit('/', 1)[0]} seed {r.job.seed:#x}: {r.points:g}/{r.max_points:g}"))
        finally:
            ex.close()
    seen: dict[tuple[str, str, str], dict[int, tuple[str, object]]] = {}
    for r in done:
        slug, variant, _ = r.job.key.split("/", 2)
        if not r.ok:
            reports[slug].errors.append(f"{variant} under seed {r.job.seed:#x}: {r.message}")
            continue
        for t in r.results:
            if t.outcome in DECIDED:
                seen.setdefault((slug, variant, t.test_id), {})[r.job.seed] = (t.outcome, t)
    for (slug, variant, _), by_seed in sorted(seen.items()):
        reports[slug].tests += 1
        if len({o for o, _ in by_seed.values()}) > 1:
            t = next(iter(by_seed.values()))[1]
            reports[slug].flaky.append(FlakyTest(variant, t.name, t.task, bool(t.hidden),
                                                 {s: o for s, (o, _) in by_seed.items()}))
    for rep in reports.values():
        rep.seconds = round(time.monotonic() - t0, 1)
    return list(reports.values())

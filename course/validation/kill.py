"""Does a variant of the solution lose points? (mutants and hand-written bugs)

A variant is *killed* when some test that passes on the solution does not pass on it: a failure,
an error, a timeout, a crashed or hung worker, or a judge that ended without results all count.
Grading stops at the first such test (``--maxfail=1``) and runs in two phases: first the tests
of the task whose region the change is in, then, only for the survivors, every other test. A
variant survives only if it passes every test the solution passes.

A variant's calls get a tighter budget than a student's (``call_timeout``: ten times the
solution's slowest test, at least 10 s, never more than course.yml's), so that a mutant that
hangs costs seconds, not minutes; tests with their own ``@pytest.mark.timeout`` keep it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from course.grading.runner import GraderSpec, Job, JobResult

NOT_RUN = "the test did not report a result"
MIN_CALL_TIMEOUT = 10.0
TIMEOUT_FACTOR = 10.0


@dataclass(frozen=True)
class Candidate:
    key: str                 # unique in the run, e.g. "lora/mutant/lora.LoRALinear.forward:1a2b3c4d"
    spec: GraderSpec
    folder: Path
    task: str | None         # the task of the region changed (None: run every test at once)


@dataclass
class Verdict:
    killed: bool
    by: str = ""             # the first test that lost points, or why the judge failed
    how: str = ""            # that test's outcome (failed, error, timeout), or "judge"
    seconds: float = 0.0     # judge time spent on this variant


@dataclass(frozen=True)
class Baseline:
    """What the solution passes: the tests a variant must keep passing, by task."""

    passed: tuple[str, ...]
    by_task: dict[str, tuple[str, ...]]
    slowest: float
    duration: float
    pending_tasks: frozenset[str] = frozenset()    # tasks whose every test is pending here (GPU)

    @classmethod
    def of(cls, result: JobResult) -> "Baseline":
        passed = tuple(r.name for r in result.results if r.outcome == "passed")
        by_task: dict[str, list[str]] = {}
        for r in result.results:
            if r.outcome == "passed" and r.task:
                by_task.setdefault(r.task, []).append(r.name)
        pending = frozenset(r.task for r in result.results if r.outcome == "pending" and r.task
                            and r.task not in by_task)
        slowest = max((r.duration for r in result.results), default=1.0)
        return cls(passed, {t: tuple(v) for t, v in by_task.items()}, slowest, result.duration, pending)

    def fast_spec(self, spec: GraderSpec) -> GraderSpec:
        limits = spec.limits
        call = min(limits.call_timeout, max(MIN_CALL_TIMEOUT, TIMEOUT_FACTOR * self.slowest))
        whole = min(limits.submission_timeout, 60.0 + 3.0 * self.duration)
        return replace(spec, limits=replace(limits, call_timeout=call, submission_timeout=whole))


def verdict_of(result: JobResult, passed: set[str]) -> Verdict | None:
    """Killed (with the first test that lost points), or None when every test that ran passed."""
    if not result.ok:
        return Verdict(True, result.message or "the judge failed", "judge", result.duration)
    for r in result.results:
        if r.name in passed and r.outcome != "passed" and not (r.detail or r.message).startswith(NOT_RUN):
            return Verdict(True, r.name, r.outcome, result.duration)
    return None


def phase_one(candidates: list[Candidate], baselines: dict[str, Baseline]) -> dict[str, Job]:
    """The first grading of each candidate: its task's tests (or all), stopping at the first failure."""
    jobs = {}
    for c in candidates:
        base = baselines[c.spec.slug]
        only = base.by_task.get(c.task or "", ()) or base.passed
        if not only:                       # the solution passes nothing: nothing can lose points
            continue
        jobs[c.key] = Job(f"{c.key}#1", base.fast_spec(c.spec), c.folder, tuple(only), maxfail=1)
    return jobs


def phase_two(survivors: list[Candidate], baselines: dict[str, Baseline], first: dict[str, Job]) -> dict[str, Job]:
    """The rest of the tests for those that survived phase one (none when phase one ran them all)."""
    jobs = {}
    for c in survivors:
        base = baselines[c.spec.slug]
        ran = set(first[c.key].only)
        rest = tuple(n for n in base.passed if n not in ran)
        if rest:
            jobs[c.key] = Job(f"{c.key}#2", base.fast_spec(c.spec), c.folder, rest, maxfail=1)
    return jobs


def settle(results: dict[str, JobResult], baselines: dict[str, Baseline], candidates: list[Candidate],
           verdicts: dict[str, Verdict]) -> list[Candidate]:
    """Record the killed ones in ``verdicts`` (adding judge time); return the survivors."""
    survivors = []
    for c in candidates:
        result = results.get(c.key)
        if result is None:
            continue
        spent = verdicts.get(c.key, Verdict(False)).seconds + result.duration
        found = verdict_of(result, set(baselines[c.spec.slug].passed))
        if found is None:
            verdicts[c.key] = Verdict(False, seconds=spent)
            survivors.append(c)
        else:
            found.seconds = spent
            verdicts[c.key] = found
    return survivors


def run_phases(run: Callable[[list[Job]], list[JobResult]], candidates: list[Candidate],
               baselines: dict[str, Baseline], extra: list[Job] = ()) -> tuple[dict[str, Verdict], list[JobResult]]:
    """Grade candidates in their two phases with ``run`` (one executor). ``extra`` jobs (graded in
    full) ride along in phase one; their results are returned as they came."""
    verdicts: dict[str, Verdict] = {}
    first = phase_one(candidates, baselines)
    by_job = {job.key: key for key, job in first.items()}
    extras_done: list[JobResult] = []
    results: dict[str, JobResult] = {}
    for r in run(list(first.values()) + list(extra)):
        if r.job.key in by_job:
            results[by_job[r.job.key]] = r
        else:
            extras_done.append(r)
    for c in candidates:
        if c.key not in first:
            verdicts[c.key] = Verdict(False, "the solution passes no test")
    survivors = settle(results, baselines, candidates, verdicts)
    second = phase_two(survivors, baselines, first)
    if second:
        by_job = {job.key: key for key, job in second.items()}
        results = {by_job[r.job.key]: r for r in run(list(second.values()))}
        settle(results, baselines, [c for c in survivors if c.key in second], verdicts)
    return verdicts, extras_done

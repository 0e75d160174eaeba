"""Schedules submissions over local processes (and, with the ``dask`` executor, over a cluster).

For each submission a *judge* runs pytest with the course plugin over the hidden tests plus the
instructor's copy of the public tests. Locally, judges are forked from this process (which has
imported torch, pytest and the plugin once) and each uses one job slot of a shared sandbox fork
server. A judge writes its results as JSON; only this coordinating process writes the gradebook.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import re
import secrets
import select
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import course
from course.config import Assignment, Course, Limits
from course.errors import GradingError
from course.grading import environment
from course.grading.results import TestResult

JUDGE_SLACK = 120.0           # seconds a judge may run beyond the submission's own budget
EXIT_INFRA = 75               # a judge child's exit code when the sandbox itself failed
# graders/<slug> entries that only `course validate` reads: editing them never re-grades a class
VALIDATION_ONLY = ("mutants.yml", "alternatives")


@dataclass(frozen=True)
class GraderSpec:
    """What grading one assignment needs, resolved once per run."""

    slug: str
    root: Path                 # the course folder
    hidden: Path               # graders/<slug>
    public: Path               # assignments/<slug>/tests (the instructor's copy)
    limits: Limits
    version: str

    @property
    def test_paths(self) -> list[Path]:
        return [p for p in (self.hidden, self.public) if p.is_dir()]


@dataclass(frozen=True)
class Job:
    key: str                   # unique in a run, e.g. "alice/attention"
    spec: GraderSpec
    submission: Path
    only: tuple[str, ...] = () # test names to run (``--only-pending``); empty: all
    timeouts: tuple[tuple[str, float], ...] = ()   # calibrated limits per test name (see calibrated_timeouts)
    payload: Any = None        # the caller's (e.g. the gradebook's submission id)
    seed: int | None = None    # the judge's seed (``course validate --seeds``); None: a fresh secret one
    maxfail: int = 0           # stop after this many failed tests (``course validate --mutants``); 0: run all


@dataclass
class JobResult:
    job: Job
    ok: bool                   # False: infrastructure failed, nothing to record as a grade
    results: list[TestResult] = field(default_factory=list)
    isolation: str = "none"
    message: str = ""
    started_at: str = ""
    duration: float = 0.0
    log: str = ""
    environment: dict[str, Any] = field(default_factory=dict)

    @property
    def points(self) -> float:
        return sum(r.points for r in self.results)

    @property
    def max_points(self) -> float:
        return sum(r.max_points for r in self.results)


def oracle_solutions(graders: Path, solutions: Path, slug: str) -> list[Path]:
    """``solutions/<other>`` folders that ``graders/<slug>`` loads as oracles (named in its files)."""
    if not solutions.is_dir() or not (graders / slug).is_dir():
        return []
    text = "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in (graders / slug).rglob("*.py"))
    if "solutions" not in text:
        return []
    return [d for d in sorted(solutions.iterdir())
            if d.is_dir() and d.name != slug and re.search(rf"\b{re.escape(d.name)}\b", text)]


def grader_version(root: Path, slug: str, graders: Path, assignments: Path, assignment: Assignment,
                   solutions: Path | None = None) -> str:
    """Hash of the hidden tests, the instructor's public tests, the solutions they use as oracles,
    points/limits and the engine's version."""
    h = hashlib.sha256()
    h.update(f"course {course.__version__}\n".encode())
    h.update(environment.version_key().encode())   # a library upgrade is a visible regrade
    h.update(json.dumps({"points": assignment.points, "limits": asdict(assignment.limits)}, sort_keys=True).encode())
    oracles = oracle_solutions(graders, solutions, slug) if solutions is not None else []
    for base in (graders / slug, assignments / slug / "tests", *oracles):
        if not base.is_dir():
            continue
        for path in sorted(p for p in base.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                           and not (base == graders / slug and p.relative_to(base).parts[0] in VALIDATION_ONLY)):
            h.update(f"\n{path.relative_to(base.parent)}\n".encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def spec_for(course_: Course, slug: str) -> GraderSpec:
    a = course_.assignment(slug)
    p = course_.paths
    hidden = p.graders / slug
    if not hidden.is_dir():
        raise GradingError(f"{hidden}: no hidden tests for assignment {slug!r} (is --graders right?)")
    return GraderSpec(slug=slug, root=p.root, hidden=hidden, public=p.assignments / slug / "tests",
                      limits=a.limits, version=grader_version(p.root, slug, p.graders, p.assignments, a, p.solutions))


def calibrated_timeouts(reference: dict[str, float], limits: Limits) -> tuple[tuple[str, float], ...]:
    """Each test's limit from the solution's time: ``max(timeout_factor x seconds, timeout_floor)``, so a
    hang costs seconds, not the whole call_timeout, while slow but correct code still passes."""
    return tuple(sorted((name, round(max(limits.timeout_factor * t, limits.timeout_floor), 3))
                        for name, t in reference.items()))


def pytest_args(spec: GraderSpec, submission: Path, results: Path, *, backend: str, device: str, seed: int,
                only: Sequence[str], ini: Path, quiet: bool = True,
                timeouts: Sequence[tuple[str, float]] = (), maxfail: int = 0) -> list[str]:
    # no:faulthandler: a judge is a forked child; if the parent armed faulthandler's watchdog
    # (pytest's faulthandler_timeout, say), the child's pytest would wait forever cancelling it.
    args = [
        "-p", "course.grading.judge", "-p", "no:cacheprovider", "-p", "no:randomly", "-p", "no:faulthandler",
        "-c", str(ini), "--rootdir", str(spec.root), "--confcutdir", str(spec.root),
        "--import-mode=prepend", "-o", "python_files=test_*.py", "-o", "addopts=",
        "--submission", str(submission), "--backend", backend,
        "--course-hidden", str(spec.hidden), "--course-results", str(results),
        "--course-device", device, "--course-limits", json.dumps(asdict(spec.limits)),
        "--course-seed", str(seed), "-rN", "--no-header", "--tb=no", "--course-fast-reports",
    ]
    if quiet:
        args.append("-q")
    if only:
        args += ["--course-only", json.dumps(list(only))]
    if timeouts:
        args += ["--course-timeouts", json.dumps(dict(timeouts))]
    if maxfail:
        args.append(f"--maxfail={int(maxfail)}")
    return args + [str(p) for p in spec.test_paths]


def run_judge(job: Job, *, backend: str, device: str, work: Path, log_path: Path | None = None) -> JobResult:
    """Run one judge in *this* process (the caller forked it, or is a Dask task / ``course ci``)."""
    import pytest
    from course.grading import judge, sandbox
    started = time.monotonic()
    started_at = _now()
    results_path = work / f"results-{secrets.token_hex(6)}.json"
    ini = work / "pytest.ini"
    if not ini.exists():
        ini.write_text("[pytest]\n", encoding="utf-8")
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    sandbox.INFRASTRUCTURE_ERRORS.clear()
    args = pytest_args(job.spec, job.submission, results_path, backend=backend, device=device,
                       seed=secrets.randbits(62) if job.seed is None else job.seed, only=job.only, ini=ini,
                       timeouts=job.timeouts, maxfail=job.maxfail)
    exit_code = pytest.main(args)
    duration = time.monotonic() - started
    if sandbox.INFRASTRUCTURE_ERRORS:
        return JobResult(job, False, message="sandbox failure: " + sandbox.INFRASTRUCTURE_ERRORS[0],
                         started_at=started_at, duration=duration)
    if not results_path.exists():
        return JobResult(job, False, message=f"the judge wrote no results (pytest exit code {int(exit_code)})",
                         started_at=started_at, duration=duration)
    data = json.loads(results_path.read_text(encoding="utf-8"))
    results_path.unlink()
    collected = [TestResult(**r) for r in data["results"]]
    if not collected:
        return JobResult(job, False, message=f"no tests were collected (pytest exit code {int(exit_code)})",
                         started_at=started_at, duration=duration)
    slot = sandbox.injected_pool()
    env = environment.record(device, isolation=data.get("isolation", "none"),
                             memory_limit_by=getattr(getattr(slot, "pool", None), "memory_limit_by", None))
    return JobResult(job, True, collected, isolation=data.get("isolation", "none"), started_at=started_at,
                     duration=duration, environment=env)


def _now() -> str:
    import datetime as dt
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def preload() -> None:
    """Import once, before forking judges, what every judge needs (never computing with torch)."""
    import logging
    # bitsandbytes warns on import on some CPUs about an optional kernel package: noise on a TA's screen
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    import pytest  # noqa: F401
    import torch  # noqa: F401
    import course.grading.judge  # noqa: F401
    import course.grading.sandbox  # noqa: F401
    for optional in ("numpy", "safetensors.torch", "transformers", "peft"):
        try:
            __import__(optional)
        except Exception:
            pass


class LocalExecutor:
    """Judges forked from this process, ``jobs`` at a time, sharing one sandbox fork server."""

    name = "local"

    def __init__(self, jobs: int = 1, *, backend: str = "sandbox", device: str = "cpu",
                 require_isolation: bool = False, isolation: str = "auto", ro_paths: tuple[str, ...] = ()):
        self.jobs = max(1, int(jobs))
        self.backend = backend
        self.device = device
        self.require_isolation = require_isolation
        self.isolation = isolation
        self.ro_paths = ro_paths
        self.pool: Any = None
        self.work = Path(tempfile.mkdtemp(prefix="course-grade-"))
        os.chmod(self.work, 0o700)
        self.isolation_note = ""

    def start(self) -> None:
        preload()
        if self.backend == "sandbox" and self.pool is None:
            import warnings
            from course.grading.sandbox import ZygotePool
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                self.pool = ZygotePool.start(self.jobs, require_isolation=self.require_isolation,
                                             device=self.device, isolation=self.isolation, ro_paths=self.ro_paths)
            notes = [str(w.message) for w in caught]
            if not self.pool.memory_limit_by.startswith("kernel"):
                notes.append(f"course: worker memory is bounded by a {self.pool.memory_limit_by}; memfd and SysV "
                             "shared memory are refused")
            self.isolation_note = "; ".join(notes)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None
        shutil.rmtree(self.work, ignore_errors=True)

    def run(self, jobs: Iterable[Job], on_start: Callable[[Job], None] | None = None,
            on_done: Callable[[JobResult], None] | None = None) -> list[JobResult]:
        """Grade every job; ``on_done`` is called in this process as each finishes (record it there)."""
        self.start()
        pending = list(jobs)
        free_slots = list(range(self.jobs))
        running: dict[int, _Running] = {}
        done: list[JobResult] = []
        try:
            while pending or running:
                while pending and free_slots:
                    job = pending.pop(0)
                    slot = free_slots.pop(0)
                    if self.pool is not None and not self.pool.alive():
                        self._restart_pool()
                    run = self._fork(job, slot)
                    running[run.pid] = run
                    if on_start:
                        on_start(job)
                for run, status in self._wait_any(running):
                    del running[run.pid]
                    result = self._collect(run, status)
                    if self.pool is not None:
                        self.pool.slot(run.slot).kill_all()
                    free_slots.append(run.slot)
                    done.append(result)
                    if on_done:
                        on_done(result)
        finally:
            for run in running.values():
                _kill(run.pid)
        return done

    def _restart_pool(self) -> None:
        from course.grading.sandbox import ZygotePool
        try:
            self.pool.close()
        except Exception:
            pass
        self.pool = ZygotePool.start(self.jobs, require_isolation=self.require_isolation, device=self.device,
                                     isolation=self.isolation, ro_paths=self.ro_paths)

    def _fork(self, job: Job, slot: int) -> "_Running":
        read_fd, write_fd = os.pipe()
        log = self.work / f"judge-{slot}-{secrets.token_hex(4)}.log"
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the judge child: never returns
            code = 70
            try:
                gc.freeze()   # the parent's heap is never collected here: pytest's gc passes become cheap
                os.close(read_fd)
                os.setpgid(0, 0)
                _die_with_parent()
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                logfd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                os.dup2(logfd, 1)
                os.dup2(logfd, 2)
                sys.stdout = open(1, "w", buffering=1, closefd=False)
                sys.stderr = open(2, "w", buffering=1, closefd=False)
                import torch
                torch.set_num_threads(1)
                from course.grading import sandbox
                if self.pool is not None:
                    sandbox.inject(self.pool.slot(slot))
                result = run_judge(job, backend=self.backend, device=self.device, work=self.work)
                with os.fdopen(write_fd, "wb") as out:
                    out.write(encode_result(result))
                code = 0
            except BaseException as exc:
                try:
                    os.write(2, f"judge failed: {exc!r}\n".encode())
                except OSError:
                    pass
            finally:
                os._exit(code)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        return _Running(pid=pid, job=job, slot=slot, started=time.monotonic(), fd=read_fd, log=log)

    def _wait_any(self, running: dict[int, "_Running"]) -> list[tuple["_Running", int]]:
        """Block until at least one judge ends, draining their pipes meanwhile; kill overdue ones."""
        while True:
            select.select([r.fd for r in running.values()], [], [], 0.2)
            finished = []
            for run in running.values():
                run.drain()
                try:
                    got, status = os.waitpid(run.pid, os.WNOHANG)
                except ChildProcessError:
                    got, status = run.pid, 0
                if got:
                    finished.append((run, status))
                elif time.monotonic() - run.started > run.job.spec.limits.submission_timeout + JUDGE_SLACK:
                    _kill(run.pid)
            if finished:
                return finished

    def _collect(self, run: "_Running", status: int) -> JobResult:
        run.drain()
        os.close(run.fd)
        duration = time.monotonic() - run.started
        log_text = run.log.read_text(encoding="utf-8", errors="replace")[-20000:] if run.log.exists() else ""
        run.log.unlink(missing_ok=True)
        if not run.buffer:
            how = (f"killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
                   else f"exit code {os.WEXITSTATUS(status)}")
            return JobResult(run.job, False, message=f"the judge process ended without results ({how})",
                             duration=duration, log=log_text, started_at=_now())
        result = decode_result(run.job, bytes(run.buffer))
        result.duration, result.log = duration, log_text
        return result


@dataclass
class _Running:
    pid: int
    job: Job
    slot: int
    started: float
    fd: int
    log: Path
    buffer: bytearray = field(default_factory=bytearray)

    def drain(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 1 << 20)
            except (BlockingIOError, OSError):
                return
            if not chunk:
                return
            self.buffer.extend(chunk)


def encode_result(result: JobResult) -> bytes:
    """A judge's result as JSON (plain data: also what a Dask task returns)."""
    return json.dumps({"ok": result.ok, "results": [asdict(r) for r in result.results],
                       "isolation": result.isolation, "message": result.message,
                       "started_at": result.started_at, "duration": result.duration,
                       "environment": result.environment}).encode()


def decode_result(job: Job, payload: bytes) -> JobResult:
    data = json.loads(payload)
    return JobResult(job, bool(data["ok"]), [TestResult(**r) for r in data["results"]],
                     isolation=str(data["isolation"]), message=str(data["message"]),
                     started_at=str(data["started_at"]), duration=float(data.get("duration", 0.0)),
                     environment=dict(data.get("environment") or {}))


def _die_with_parent() -> None:
    """A judge must not outlive a killed ``course grade`` (Linux: PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        import ctypes
        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)


def _kill(pid: int) -> None:
    for target in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            target()
        except (ProcessLookupError, PermissionError):
            pass

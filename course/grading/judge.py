"""The pytest plugin every public and hidden test runs under (entry point ``pytest11: course``).

It provides

* the ``submission`` fixture: ``submission.call("attention.causal_mask", 4)`` runs that student
  function and returns its result; ``submission.run(probes.train_steps, cfg)`` runs a probe next
  to the student's code. Only data crosses (see :mod:`course.grading.wire`) in both backends:
  ``local`` (in-process, debuggable: students, ``course check``, plain ``pytest``) and
  ``sandbox`` (a separate, isolated worker process: ``course grade``, ``course ci``);
* the ``rng`` fixture: a ``torch.Generator`` seeded from the run's seed and the test's id;
* the markers ``points(n)``, ``task("1.2")``, ``gpu`` and ``timeout(seconds)``;
* result capture: per test the outcome (passed | failed | error | timeout | pending | skipped),
  points, public message, and a per-task table at the end of the run.

Grades come from pytest outcomes here, in the trusted process, never from the student's process.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from course import textsafe
from course.config import Limits
from course.grading import diagnose, inputs, wire
from course.grading.failures import (BadReply, SubmissionError, SubmissionFailure, SubmissionTimeout,
                                     WorkerCrashed, submission_error)
from course.grading.imports import ImportFailed, ImportLedger, modules_named_in
from course.grading.probe_code import probe_spec  # noqa: F401  (re-exported)
from course.grading.static import read_source
from course.grading.results import OUTCOMES, TestResult, shorten  # noqa: F401  (re-exported)
from course.grading.worker import Worker, describe_exception

PENDING_PREFIX = "pending: "
MAX_PUBLIC_MESSAGE = 2000

__all__ = ["Submission", "SubmissionError", "SubmissionFailure", "SubmissionTimeout", "WorkerCrashed",
           "BadReply", "TestResult", "task_of", "points_of"]


# ------------------------------------------------------------------ the fixture's object

class LocalBackend:
    """Student code imported into this very process: debuggable with pdb, no isolation."""

    isolation = "none"

    def __init__(self, path: Path):
        self.path = path.resolve()
        if str(self.path) in sys.path:
            sys.path.remove(str(self.path))
        sys.path.insert(0, str(self.path))
        self._forget_modules()
        self.worker = Worker(self.path)
        self.imports = ImportLedger(self.path)

    def _forget_modules(self) -> None:
        """Import the student's modules afresh (a previous run in this process may have cached others)."""
        import importlib
        names = {p.stem for p in self.path.glob("*.py")} | {p.name for p in self.path.iterdir() if p.is_dir()}
        for name, module in list(sys.modules.items()):
            origin = getattr(module, "__file__", None) or ""
            if name.split(".")[0] in names or origin.startswith(str(self.path) + os.sep):
                if not name.startswith(("course", "torch", "pytest", "_pytest")):
                    del sys.modules[name]
        importlib.invalidate_caches()

    def _invoke(self, label: str, resolve: Callable[[], Callable[..., Any]], args: tuple, kwargs: dict,
                max_reply: int, observe: bool = False, deadline: float = math.inf) -> Any:
        __tracebackhide__ = True
        args, kwargs = wire.roundtrip((tuple(args), dict(kwargs)))  # the student gets copies
        try:
            with _time_limit(deadline, label):
                fn = resolve()
                value = fn(*args, **kwargs)
        except (KeyboardInterrupt, SubmissionTimeout):
            raise
        except BaseException as exc:
            raise submission_error(label, describe_exception(exc, self.path)) from exc
        if observe:  # the arguments as the function left them, like the worker sends them back
            value = {"value": value, "args": list(args), "kwargs": kwargs}
        try:
            return wire.loads(wire.dumps(value, max_reply, root="result"))
        except wire.WireError as exc:
            raise BadReply(f"{label} returned a value that cannot be graded: {exc}") from None

    def _load(self, deadline: float) -> Callable[[str], None]:
        def load(module: str) -> None:
            __tracebackhide__ = True
            try:
                with _time_limit(deadline, f"importing {module}.py"):
                    self.worker.load(module)
            except (KeyboardInterrupt, SubmissionTimeout):
                raise
            except BaseException as exc:
                raise submission_error(f"import {module}", describe_exception(exc, self.path)) from exc
        return load

    def call(self, target: str, args: tuple, kwargs: dict, deadline: float, max_reply: int,
             observe: bool = False) -> Any:
        __tracebackhide__ = True
        if isinstance(target, str):
            self.imports.ensure(target.split(".")[0], self._load(deadline))
        return self._invoke(target, lambda: self.worker.resolve(target), args, kwargs, max_reply, observe, deadline)

    def run(self, probe: Callable[..., Any], args: tuple, kwargs: dict, deadline: float, max_reply: int) -> Any:
        __tracebackhide__ = True
        module = sys.modules.get(getattr(probe, "__module__", ""))
        source = Path(module.__file__).read_text(encoding="utf-8") if getattr(module, "__file__", None) else ""
        for name in modules_named_in(source, self.imports.known):
            self.imports.ensure(name, self._load(deadline))
        return self._invoke(f"probe {probe.__name__}", lambda: probe, args, kwargs, max_reply, deadline=deadline)

    def close(self) -> None:
        pass


@contextmanager
def _time_limit(deadline: float, label: str) -> Iterator[None]:
    """In this process (the local backend): stop the student's code at ``deadline`` (monotonic),
    naming what hung. Only in the main thread, where signals arrive; ``--no-timeout`` disables it."""
    remaining = deadline - time.monotonic()
    if not math.isfinite(deadline) or threading.current_thread() is not threading.main_thread() \
            or not hasattr(signal, "setitimer"):
        yield
        return
    budget = max(remaining, 0.001)

    def stop(signum: int, frame: Any) -> None:
        raise SubmissionTimeout(f"{label} did not finish within the time limit ({budget:.0f} s); "
                                "an endless loop? (`course check --no-timeout` or `pytest --no-timeout` to debug)")
    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, budget)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Submission:
    """The student's code, as seen from a test. Only data goes in and comes out."""

    def __init__(self, backend: Any, *, deadline: float, device: str, limits: Limits,
                 allow_nonfinite: bool = False):
        self._backend = backend
        self._deadline = deadline
        self._limits = limits
        self._allow_nonfinite = allow_nonfinite
        self.device = device

    @property
    def backend(self) -> str:
        return "local" if isinstance(self._backend, LocalBackend) else "sandbox"

    @property
    def isolation(self) -> str:
        return self._backend.isolation

    def allow_nonfinite(self) -> "Submission":
        """The same submission, whose replies may hold NaN or infinities (they are refused by default)."""
        return Submission(self._backend, deadline=self._deadline, device=self.device, limits=self._limits,
                          allow_nonfinite=True)

    def _check(self, label: str, value: Any) -> Any:
        __tracebackhide__ = True
        if not self._allow_nonfinite:
            where = wire.find_nonfinite(value)
            if where:
                raise BadReply(f"{label} returned NaN or infinity (at {where.replace('value', 'result', 1)})")
        return value

    def call(self, target: str, *args: Any, **kwargs: Any) -> Any:
        """Run the student's ``module.function`` (or ``module.Class``) with these arguments."""
        __tracebackhide__ = True
        value = self._backend.call(target, args, kwargs, self._deadline, self._limits.reply_bytes)
        return self._check(target, value)

    def call_pure(self, target: str, *args: Any, **kwargs: Any) -> Any:
        """Like :meth:`call`, and the test fails if the function changed any of its arguments in place.

        The worker sends the arguments back as the function left them (raw data); they are
        compared here with the test's own copies, which never left this process.
        """
        __tracebackhide__ = True
        reply = self._backend.call(target, args, kwargs, self._deadline, self._limits.reply_bytes, observe=True)
        if type(reply) is not dict or set(reply) != {"value", "args", "kwargs"}:
            raise BadReply(f"{target}: the reply is not valid data")
        changed = inputs.changed(list(args), dict(kwargs), reply["args"], reply["kwargs"])
        if changed:
            diagnose.record(["input_modified"], None)
            raise inputs.InputModified(target, changed)
        return self._check(target, reply["value"])

    def source(self, filename: str) -> str:
        """The text of one of the submission's files as collected (read here, never by the worker):
        for checks of *how* something was written (see :mod:`course.grading.static`)."""
        return read_source(self.root, filename)

    @property
    def root(self) -> Path:
        return self._backend.path

    def run(self, probe: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a probe function (from ``graders/<slug>/probes.py``) next to the student's code."""
        __tracebackhide__ = True
        value = self._backend.run(probe, args, kwargs, self._deadline, self._limits.reply_bytes)
        return self._check(f"probe {probe.__name__}", value)


# ------------------------------------------------------------------ results

@dataclass
class _Record:
    nodeid: str
    name: str
    task: str | None
    hidden: bool
    max_points: float
    outcome: str | None = None
    message: str = ""
    location: str | None = None
    duration: float = 0.0
    description: str = ""
    diagnosis: str = ""
    misconceptions: str = ""


def task_of(item: pytest.Item) -> str | None:
    mark = item.get_closest_marker("task")
    return str(mark.args[0]) if mark and mark.args else None


def points_of(item: pytest.Item) -> float | None:
    mark = item.get_closest_marker("points")
    if not mark or not mark.args:
        return None
    return float(mark.args[0])


@dataclass
class JudgeState:
    backend_kind: str
    submission: Path | None
    hidden_dirs: list[Path]
    device: str
    limits: Limits
    seed: int
    results_path: Path | None
    tasks: list[str]
    only: set[str] = field(default_factory=set)
    backends: dict[tuple[Path, str], Any] = field(default_factory=dict)
    records: dict[str, _Record] = field(default_factory=dict)
    sandbox_pool: Any = None
    submission_started: float | None = None
    no_timeout: bool = False
    timeouts: dict[str, float] = field(default_factory=dict)
    ledgers: dict[Path, ImportLedger] = field(default_factory=dict)

    def submission_for(self, test_path: Path) -> Path:
        if self.submission is not None:
            return self.submission
        for parent in test_path.resolve().parents:
            if parent.name == "tests":
                return parent.parent
        raise pytest.UsageError(f"{test_path}: cannot tell which submission to test; pass --submission PATH")

    def backend_for(self, path: Path, hidden: bool = False) -> Any:
        """The worker serving ``path``'s public tests, or its hidden tests: never the same one.

        Public tests' messages reach the student, so their worker must never have seen hidden
        inputs or probe code: public tests run first (see ``pytest_collection_modifyitems``), and
        the first hidden test closes the public worker and starts its own.
        """
        key = (path, "hidden" if hidden else "public")
        backend = self.backends.get(key)
        if backend is None:
            if hidden and (path, "public") in self.backends:
                self.backends.pop((path, "public")).close()
            if self.backend_kind == "local":
                backend = LocalBackend(path)
                backend.imports = self.imports_of(path)
            else:
                from course.grading import sandbox
                if self.sandbox_pool is None:
                    self.sandbox_pool = sandbox.injected_pool() or sandbox.ZygotePool.start(jobs=1)
                backend = sandbox.SandboxBackend(self.sandbox_pool, path, self.limits, self.device)
                backend.imports = self.imports_of(path)
            self.backends[key] = backend
        return backend

    def imports_of(self, path: Path) -> ImportLedger:
        """One record of module imports per submission, shared by its public and hidden workers: a
        module that failed to import is tried once, not once per worker."""
        if path not in self.ledgers:
            self.ledgers[path] = ImportLedger(path)
        return self.ledgers[path]

    def close(self) -> None:
        for backend in self.backends.values():
            backend.close()
        self.backends.clear()
        from course.grading import sandbox
        if self.sandbox_pool is not None and self.sandbox_pool is not sandbox.injected_pool():
            self.sandbox_pool.close()
        self.sandbox_pool = None


STATE = pytest.StashKey[JudgeState]()
POINTS = pytest.StashKey[float]()
OUTCOME = pytest.StashKey[str]()

# Set by the grading runner (in a judge child) before pytest runs: results go here as well.
COLLECTED: list[TestResult] | None = None


# ------------------------------------------------------------------ hooks

def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("course", "course grading")
    group.addoption("--submission", default=os.environ.get("COURSE_SUBMISSION"),
                    help="folder of the submission under test (default: the folder above tests/)")
    group.addoption("--backend", choices=("local", "sandbox"), default="local",
                    help="local: import student code here (debuggable); sandbox: separate isolated worker")
    group.addoption("--task", action="append", default=[], metavar="N.M",
                    help="run only this task's tests (repeatable; '1' selects 1.x)")
    group.addoption("--course-results", default=None, metavar="PATH",
                    help="write per-test results as JSON to PATH")
    group.addoption("--course-hidden", action="append", default=[], metavar="DIR",
                    help="tests under DIR are hidden: feedback shows name, outcome and points only")
    group.addoption("--course-device", choices=("auto", "cpu", "cuda"), default="auto",
                    help="cuda runs tests marked gpu; elsewhere they are recorded as pending")
    group.addoption("--course-limits", default=None, metavar="JSON",
                    help="limits for the submission's worker, as JSON (fields of course.config.Limits)")
    group.addoption("--course-only", default=None, metavar="JSON",
                    help="run only the tests with these names (a JSON list; used by --only-pending)")
    group.addoption("--no-timeout", action="store_true", default=False,
                    help="no time limit on calls into the submission (to debug with pdb; grading ignores it)")
    group.addoption("--course-fast-reports", action="store_true", default=False,
                    help="grading: record each failure's message without rendering pytest's tracebacks")
    group.addoption("--course-timeouts", default=None, metavar="JSON",
                    help="calibrated time limits per test name (from the solution's times in course validate)")
    group.addoption("--course-seed", type=int, default=None,
                    help="seed of the rng fixture (default: 0 locally, secret and random in the sandbox)")


def _no_dtensor_unwrapping() -> None:
    """``torch.testing.assert_close`` imports ``torch.distributed.tensor`` on its first call, to unwrap
    DTensors: about 4 s, more than every test of an assignment together. Nothing here is ever a DTensor
    (a submission's values arrive as plain tensors through the wire; tests build plain tensors), so the
    check is switched off. Private torch API: if it moves, nothing breaks, only the saving is lost."""
    try:
        from torch.testing import _comparison
        if getattr(_comparison, "_HAS_DTENSOR", None) is True and "torch.distributed.tensor" not in sys.modules:
            _comparison._HAS_DTENSOR = False
    except Exception:
        pass


def pytest_configure(config: pytest.Config) -> None:
    _no_dtensor_unwrapping()
    for line in (
        "points(n): points this test is worth (a parametrised test shares them across its cases)",
        "task(id): the assignment task this test checks, e.g. task('1.2'); select with --task 1.2",
        "gpu: needs CUDA; recorded as pending where CUDA is absent",
        "timeout(seconds): wall budget for this test's calls into the submission",
    ):
        config.addinivalue_line("markers", line)
    backend = config.getoption("backend", "local")
    device = config.getoption("course_device", "auto")
    if device == "auto":
        device = "cuda" if _cuda_available() else "cpu"
    limits_json = config.getoption("course_limits", None)
    try:
        limits = Limits(**json.loads(limits_json)) if limits_json else Limits()
    except (TypeError, ValueError) as exc:
        raise pytest.UsageError(f"--course-limits: {exc}") from None
    seed = config.getoption("course_seed", None)
    if seed is None:
        seed = 0 if backend == "local" else secrets.randbits(62)
    submission = config.getoption("submission", None)
    results = config.getoption("course_results", None)
    config.stash[STATE] = JudgeState(
        backend_kind=backend,
        submission=Path(submission).resolve() if submission else None,
        hidden_dirs=[Path(p).resolve() for p in config.getoption("course_hidden", [])],
        device=device,
        limits=limits,
        seed=seed,
        results_path=Path(results) if results else None,
        tasks=list(config.getoption("task", [])),
        only=set(json.loads(config.getoption("course_only", None) or "[]")),
        no_timeout=bool(config.getoption("no_timeout", False)) and backend == "local",
        timeouts={str(k): float(v) for k, v in json.loads(config.getoption("course_timeouts", None) or "{}").items()},
    )


def _cuda_available() -> bool:
    try:
        import torch
        return bool(torch.cuda.is_available())
    except Exception:
        return False


def _task_selected(task: str | None, wanted: list[str]) -> bool:
    if not wanted:
        return True
    if task is None:
        return False
    return any(task == w or task.startswith(w + ".") for w in wanted)


def _is_hidden(state: JudgeState, path: Path) -> bool:
    resolved = path.resolve()
    return any(resolved == d or d in resolved.parents for d in state.hidden_dirs)


def _display_name(item: pytest.Item) -> str:
    tail = item.nodeid.split("::", 1)[1] if "::" in item.nodeid else item.name
    return f"{item.path.name}::{tail}"


_TASK_MARKS = pytest.StashKey[set]()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    state = config.stash.get(STATE, None)
    if state is None:
        return
    # A parametrised test shares its points across its cases.
    cases: dict[tuple[str, str], int] = {}
    for item in items:
        key = (str(item.path), getattr(item, "originalname", item.name))
        cases[key] = cases.get(key, 0) + 1
    keep, dropped = [], []
    for item in items:
        task = task_of(item)
        if task:
            name = "task_" + task.replace(".", "_")
            registered = config.stash.setdefault(_TASK_MARKS, set())
            if name not in registered:
                config.addinivalue_line("markers", f"{name}: tests of task {task} (added by the course plugin)")
                registered.add(name)
            item.add_marker(getattr(pytest.mark, name))
        if not _task_selected(task, state.tasks) or (state.only and _display_name(item) not in state.only):
            dropped.append(item)
            continue
        points = points_of(item)
        share = 0.0 if points is None else points / cases[(str(item.path), getattr(item, "originalname", item.name))]
        item.stash[POINTS] = share
        keep.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    # Public tests first, in a worker of their own (their messages reach the student); then hidden.
    items[:] = sorted(keep, key=lambda item: _is_hidden(state, item.path))


def pytest_collection_finish(session: pytest.Session) -> None:
    state = session.config.stash.get(STATE, None)
    if state is None:
        return
    for item in session.items:
        hidden = _is_hidden(state, item.path)
        name = _display_name(item)
        state.records[item.nodeid] = _Record(
            nodeid=item.nodeid, name=name, task=task_of(item), hidden=hidden,
            max_points=item.stash.get(POINTS, 0.0))


def pytest_runtest_setup(item: pytest.Item) -> None:
    state = item.config.stash.get(STATE, None)
    if state is None:
        return
    if item.get_closest_marker("gpu") and (state.device != "cuda" or not _cuda_available()):
        item.stash[OUTCOME] = "pending"
        pytest.skip(PENDING_PREFIX + "needs a CUDA GPU; graded later with `course grade --only-pending --device cuda`")


def _message_of(report: pytest.TestReport) -> tuple[str, str | None]:
    """The short message of a failure (pytest's crash line), and the student's file:line if known."""
    longrepr = report.longrepr
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None:
        message = crash.message
    elif isinstance(longrepr, tuple) and len(longrepr) == 3:
        message = str(longrepr[2])
    else:
        message = str(longrepr or "")
    location = getattr(report, "course_location", None)
    message = re.sub(r"^course\.grading\.(?:failures|sandbox|inputs|imports)(?:\.\w+)*\.\w+: ", "", message)
    # the message may quote anything the student returned or raised: safe text from here on
    return textsafe.clean(message, MAX_PUBLIC_MESSAGE), textsafe.clean(location, 300) if location else None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    """Grading (``--course-fast-reports``): a report with the failure's message only. Rendering
    pytest's long tracebacks (re-parsing every source file for every frame, tensor reprs) cost
    about 0.15 s per failed test, so a failing submission cost many times a passing one."""
    if not item.config.getoption("course_fast_reports", False):
        return None
    excinfo = call.excinfo
    outcome, longrepr = "passed", None
    if excinfo is not None:
        if isinstance(excinfo.value, pytest.skip.Exception):
            outcome = "skipped"
            longrepr = (str(item.path), item.location[1], str(excinfo.value))
        else:
            outcome = "failed"
            try:
                text = excinfo.exconly()
            except Exception:
                text = type(excinfo.value).__name__
            longrepr = (str(item.path), item.location[1], text)
    return pytest.TestReport(item.nodeid, item.location, {k: 1 for k in item.keywords}, outcome, longrepr,
                             call.when, [], call.duration, call.start, call.stop,
                             user_properties=item.user_properties)


@pytest.hookimpl(hookwrapper=True, specname="pytest_runtest_makereport")
def pytest_runtest_makereport_record(item: pytest.Item, call: pytest.CallInfo) -> Any:
    outcome = yield
    report = outcome.get_result()
    excinfo = call.excinfo
    if excinfo is not None:
        exc = excinfo.value
        if isinstance(exc, SubmissionFailure):
            report.course_outcome = exc.outcome
        err = exc if isinstance(exc, (SubmissionError, ImportFailed)) else None
        if err is None and isinstance(exc.__context__, SubmissionError):
            err = exc.__context__
        if err is not None and err.location:
            report.course_location = err.location
    state = item.config.stash.get(STATE, None)
    if state is not None:
        _record(state, report)


def _record(state: JudgeState, report: pytest.TestReport) -> None:
    record = state.records.get(report.nodeid)
    if record is None:
        return
    record.duration += report.duration
    if report.when == "setup":
        if report.skipped:
            message = _skip_reason(report)
            record.outcome = "pending" if message.startswith(PENDING_PREFIX) else "skipped"
            record.message = textsafe.clean(message, MAX_PUBLIC_MESSAGE)
        elif report.failed:
            record.outcome = getattr(report, "course_outcome", "error")
            record.message, record.location = _message_of(report)
    elif report.when == "call":
        if report.passed:
            record.outcome = "passed"
        elif report.skipped:
            record.outcome = "skipped"
            record.message = textsafe.clean(_skip_reason(report), MAX_PUBLIC_MESSAGE)
        else:
            record.outcome = getattr(report, "course_outcome", "failed")
            record.message, record.location = _message_of(report)
    if report.when == "call":
        found = diagnose.take(report.nodeid)
        if found is not None:
            record.description = found.what[:300]
            if record.outcome not in ("passed", "pending", "skipped"):
                record.diagnosis = found.render()[:1000]
                record.misconceptions = ",".join(found.names)
    if report.when == "teardown" and report.failed and record.outcome == "passed":
        record.outcome = "error"
        record.message, record.location = _message_of(report)


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr or "")


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    state = session.config.stash.get(STATE, None)
    if state is not None:
        state.submission_started = time.monotonic()


def results(state: JudgeState) -> list[TestResult]:
    """Every collected test's result; a test that never reported is an error, never a pass."""
    out = []
    for record in state.records.values():
        outcome = record.outcome or "error"
        message = record.message if record.outcome else "the test did not report a result"
        earned = record.max_points if outcome == "passed" else 0.0
        public = "" if record.hidden else message
        prefix = "hidden:" if record.hidden else "public:"
        out.append(TestResult(
            test_id=prefix + record.name, name=record.name, task=record.task, hidden=record.hidden,
            outcome=outcome, points=earned, max_points=record.max_points,
            message=public, detail=message, location=None if record.hidden else record.location,
            duration=round(record.duration, 4), description=record.description, diagnosis=record.diagnosis,
            misconceptions=record.misconceptions))
    return out


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global COLLECTED
    state = session.config.stash.get(STATE, None)
    if state is None:
        return
    try:
        collected = results(state)
        if state.results_path is not None:
            state.results_path.parent.mkdir(parents=True, exist_ok=True)
            from course.grading import sandbox
            state.results_path.write_text(json.dumps({
                "isolation": _isolation(state),
                "infrastructure_errors": list(sandbox.INFRASTRUCTURE_ERRORS),
                "results": [asdict(r) for r in collected]}, indent=1), encoding="utf-8")
        if COLLECTED is not None:
            COLLECTED[:] = collected
        session.config.stash[RESULTS] = collected
    finally:
        state.close()


RESULTS = pytest.StashKey[list[TestResult]]()


def _isolation(state: JudgeState) -> str:
    kinds = {getattr(b, "isolation", "none") for b in state.backends.values()}
    if state.sandbox_pool is not None:
        kinds.add(state.sandbox_pool.isolation)
    for kind in ("none", "weak", "strong"):
        if kind in kinds:
            return kind
    return "none" if state.backend_kind == "local" else "strong"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    collected = config.stash.get(RESULTS, None)
    if not collected or not any(r.task or r.max_points for r in collected):
        return  # not an assignment's tests (e.g. the project's own test suite)
    rows = task_table(collected)
    tr = terminalreporter
    tr.section("course: results per task")
    tr.write_line(f"{'task':<8} {'passed':>8} {'points':>14}  first failure")
    for row in rows:
        tr.write_line(f"{row['task']:<8} {row['passed']:>3}/{row['tests']:<4} "
                      f"{row['points']:>6.2f}/{row['max_points']:<6.2f}  {shorten(row['first_failure'], 160)}")
    earned = sum(r.points for r in collected)
    total = sum(r.max_points for r in collected)
    tr.write_line(f"{'total':<8} {sum(r['passed'] for r in rows):>3}/{len(collected):<4} {earned:>6.2f}/{total:<6.2f}")


def task_table(collected: list[TestResult]) -> list[dict[str, Any]]:
    """Per task: tests, passed, points, max points, and the first failure's public message."""
    rows: dict[str, dict[str, Any]] = {}
    for r in collected:
        key = r.task or "-"
        row = rows.setdefault(key, {"task": key, "tests": 0, "passed": 0, "points": 0.0, "max_points": 0.0,
                                    "pending": 0, "first_failure": ""})
        row["tests"] += 1
        row["passed"] += r.outcome == "passed"
        row["pending"] += r.outcome == "pending"
        row["points"] += r.points
        row["max_points"] += r.max_points
        if r.outcome not in ("passed", "pending") and not row["first_failure"]:
            label = r.message.splitlines()[0] if r.message else ("hidden test failed" if r.hidden else r.outcome)
            where = f" [at {r.location}]" if r.location and not r.hidden else ""
            row["first_failure"] = f"{r.name}: {label}{where}"
    return [rows[k] for k in sorted(rows, key=_task_sort_key)]


def _task_sort_key(task: str) -> tuple:
    return tuple(int(p) if p.isdigit() else 10**6 for p in re.split(r"[.]", task))


# ------------------------------------------------------------------ fixtures

def _timeout_of(item: pytest.Item, default: float) -> float:
    mark = item.get_closest_marker("timeout")
    if mark and mark.args:
        return float(mark.args[0])
    return default


@pytest.fixture
def submission(request: pytest.FixtureRequest) -> Submission:
    """The student's code under test (see the module docstring)."""
    state = request.config.stash.get(STATE, None)
    if state is None:
        raise pytest.UsageError("the course plugin is not configured")
    path = state.submission_for(Path(request.node.path))
    if not path.is_dir():
        raise pytest.UsageError(f"--submission {path}: not a folder")
    backend = state.backend_for(path, hidden=_is_hidden(state, Path(request.node.path)))
    limit = _timeout_of(request.node, state.limits.call_timeout)
    calibrated = state.timeouts.get(_display_name(request.node))
    if calibrated is not None:   # max(k x the solution's time, floor), never above the test's own limit
        limit = min(limit, calibrated)
    deadline = time.monotonic() + limit
    if state.submission_started is not None:
        deadline = min(deadline, state.submission_started + state.limits.submission_timeout)
    if state.no_timeout:
        deadline = math.inf
    return Submission(backend, deadline=deadline, device=state.device, limits=state.limits)


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> Any:
    """A ``torch.Generator`` seeded from the run's seed and this test's id (secret when grading)."""
    import torch
    state = request.config.stash.get(STATE, None)
    seed = state.seed if state is not None else 0
    digest = hashlib.sha256(f"{seed}:{request.node.nodeid}".encode()).digest()
    gen = torch.Generator()
    gen.manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
    return gen

"""The typed core verbs: check, release, collect, grade, status, feedback, export, validate.

``cli.py`` parses arguments, calls these, and prints. Nothing here prints; progress is reported
through callbacks. Errors are :class:`course.errors.CourseError` subclasses.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from course import collect as collect_mod
from course import config as config_mod
from course import release as release_mod
from course import report, stubs
from course.config import Course
from course.errors import CourseError, GradingError, ValidationFailed
from course.gradebook import Gradebook
from course.grading.runner import Job, JobResult, LocalExecutor, calibrated_timeouts, spec_for


def load_course(path: str | Path | None = None, graders: str | Path | None = None) -> Course:
    course = config_mod.load(path or config_mod.find_course_file())
    return course.with_graders(Path(graders)) if graders else course


def open_gradebook(course: Course) -> Gradebook:
    from course import ledger
    gb = Gradebook(course.paths.gradebook)
    gb.sync_assignments(course.assignments)
    ledger.sync_extensions(course, gb)      # each change of extensions.yml becomes a ledger row
    return gb


# ------------------------------------------------------------------ check (the student loop)

@dataclass
class CheckReport:
    slug: str
    exit_code: int
    rows: list[dict[str, Any]]
    results: list[Any]
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.exit_code == 0 and bool(self.results) and all(r.outcome == "passed" for r in self.results)


def check(course: Course, slug: str, *, tasks: Sequence[str] = (), keyword: str | None = None,
          submission: Path | None = None, extra_args: Sequence[str] = ()) -> CheckReport:
    """Run the public tests of ``slug`` against the student's folder with the local backend."""
    import pytest
    from course.grading import judge
    course.assignment(slug)
    folder = course.paths.assignments / slug
    tests = folder / "tests"
    if not tests.is_dir():
        raise CourseError(f"{tests}: assignment {slug!r} has no public tests folder")
    known = declared_tasks(tests)
    for t in tasks:
        if known and not any(k == t or k.startswith(t + ".") for k in known):
            raise CourseError(f"--task {t}: {slug} has no such task; its tasks are {', '.join(known)}")
    args = [str(tests), "-p", "no:cacheprovider", "--rootdir", str(folder), "--submission",
            str(submission or folder), "--backend", "local", "-q", "--no-header", "--tb=short"]
    for t in tasks:
        args += ["--task", t]
    if keyword:
        args += ["-k", keyword]
    args += list(extra_args)
    collected: list[Any] = []
    judge.COLLECTED = collected
    # only the course plugin: other installed pytest plugins (hypothesis, anyio, ...) cost start-up time
    args = ["-p", "course.grading.judge", *args]
    saved = os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD")
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    try:
        code = pytest.main(args)
    finally:
        judge.COLLECTED = None
        if saved is None:
            os.environ.pop("PYTEST_DISABLE_PLUGIN_AUTOLOAD", None)
        else:
            os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = saved
    return CheckReport(slug, int(code), judge.task_table(collected) if collected else [], collected,
                       notes=check_notes(folder))


def declared_tasks(tests: Path) -> list[str]:
    """The task ids the test files mark (``@pytest.mark.task("1.2")``), in task order."""
    import ast
    found: set[str] = set()
    for path in sorted(tests.rglob("test_*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "task" \
                    and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                found.add(node.args[0].value)
    return sorted(found, key=lambda t: [int(p) if p.isdigit() else 10**6 for p in t.split(".")])


def check_notes(folder: Path) -> list[str]:
    """Said once by ``course check``: how this environment differs from the graders' (the kit's
    manifest), and which ``course`` runs when it is not the kit's own copy. Never blocking."""
    import course as course_pkg
    from course.grading import environment
    notes = [f"{d}: numbers may differ in the last digits" for d in environment.check_against_manifest(folder)]
    running = Path(course_pkg.__file__).resolve().parent
    for parent in (folder.resolve(), *folder.resolve().parents):
        shipped = parent / "course" / "__init__.py"
        if (parent / environment.MANIFEST).is_file() and shipped.is_file():
            if shipped.parent.resolve() != running:
                notes.append(f"this kit ships its own course tool in {shipped.parent}, but course "
                             f"{course_pkg.__version__} from {running} is running: `pip install -e {parent}` "
                             "to use the kit's")
            break
    return notes


# ------------------------------------------------------------------ release / collect

def release(course: Course, slugs: Sequence[str] | None = None, out: Path | None = None) -> release_mod.ReleaseReport:
    return release_mod.release(course, list(slugs) if slugs else None, out)


def collect(course: Course, source: Path, slug: str, *, student: str | None = None,
            submitted_at: str | None = None, ref: str = "HEAD", lms: str = "auto", worksheet: Path | None = None,
            times: Path | None = None, timezone: str | None = None, date_format: str | None = None,
            classroom_roster: Path | None = None, push_times: Path | None = None) -> collect_mod.CollectReport:
    """Collect ``slug`` from a folder, zip, git repository or LMS export (``lms``: see collect.SOURCES).

    ``submitted_at`` is the instructor's explicit time (recorded as ``instructor-flag``); without it
    each submission's time comes from the LMS's record, and a source with none is an error for
    that student.
    """
    when = None
    if submitted_at:
        when = config_mod.parse_datetime(submitted_at, "--submitted-at", config_mod._Ctx(Path("command line")))
    options = collect_mod.Options(lms=lms, student=student, submitted_at=when, ref=ref, worksheet=worksheet,
                                  times=times, timezone=timezone, date_format=date_format,
                                  classroom_roster=classroom_roster, push_times=push_times)
    with open_gradebook(course) as gb:
        return collect_mod.collect(course, source, slug, gradebook=gb, options=options)


# ------------------------------------------------------------------ grade

@dataclass
class GradeRow:
    student: str
    slug: str
    attempt: int
    status: str          # graded | skipped (already graded) | error
    points: float = 0.0
    max_points: float = 0.0
    pending: int = 0
    isolation: str | None = None
    seconds: float = 0.0
    message: str = ""
    final: float | None = None        # after the late penalty (and overrides): what feedback and exports show


@dataclass
class GradeReport:
    rows: list[GradeRow] = field(default_factory=list)
    isolation_note: str = ""
    executor: str = "local"
    where: str = ""
    wall_seconds: float = 0.0
    cluster: dict[str, Any] | None = None      # the Dask executor's summary: workers, dashboard, rescheduled
    refused: Any = None                        # course.regrade.Preview of a regrade held back (--accept-regrade)

    @property
    def errors(self) -> list[GradeRow]:
        return [r for r in self.rows if r.status == "error"]


def plan_grading(course: Course, gb: Gradebook, slugs: Sequence[str] | None, students: Sequence[str] | None, *,
                 force: bool, only_pending: bool) -> tuple[list[Job], list[GradeRow]]:
    """Which submissions need grading (and which tests, with ``only_pending``); the rest are skipped."""
    from course import late
    jobs, skipped = [], []
    assignments = course.select(list(slugs) if slugs else None)
    for a in assignments:
        subs = late.attempts_to_grade(course, gb, a.slug, students)   # grade_attempt may need earlier attempts
        if not subs:
            continue
        spec = spec_for(course, a.slug)
        timeouts = calibrated_timeouts(gb.reference_timings(a.slug, spec.version), spec.limits)
        for sub in subs:
            path = (course.paths.root / sub.path).resolve()
            current = gb.current_grading(sub.id)
            if only_pending:
                if current is None or not current.pending:
                    skipped.append(GradeRow(sub.student, a.slug, sub.attempt, "skipped",
                                            message="nothing pending" if current else "not graded yet"))
                    continue
                names = [r.name for r in gb.results(current.id) if r.outcome == "pending"]
                jobs.append(Job(f"{sub.student}/{a.slug}", spec, path, tuple(names), timeouts=timeouts,
                                payload={"submission_id": sub.id, "merge_into": current.id, "attempt": sub.attempt,
                                         "student": sub.student}))
                continue
            if not force and current is not None and current.grader_version == spec.version:
                skipped.append(GradeRow(sub.student, a.slug, sub.attempt, "skipped", current.points or 0.0,
                                        current.max_points or 0.0, current.pending or 0, current.isolation,
                                        message="already graded with this grader version"))
                continue
            jobs.append(Job(f"{sub.student}/{a.slug}" + (f"#{sub.attempt}" if a.grade_attempt != "latest" else ""),
                            spec, path, timeouts=timeouts,
                            payload={"submission_id": sub.id, "merge_into": None, "attempt": sub.attempt,
                                     "student": sub.student,
                                     "previous_version": current.grader_version if current else None}))
    return jobs, skipped


def make_executor(course: Course, *, executor: str | None, jobs: int, backend: str, device: str,
                  require_isolation: bool, scheduler: str | None = None) -> Any:
    kind = executor or course.executor.kind
    if kind == "dask":
        from course.grading.dask_executor import DaskExecutor
        return DaskExecutor(scheduler or course.executor.scheduler, backend=backend, device=device,
                            require_isolation=require_isolation)
    return LocalExecutor(jobs, backend=backend, device=device, require_isolation=require_isolation)


def _check_device(device: str) -> None:
    if device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise GradingError("--device cuda: CUDA is not available on this machine")


def grade(course: Course, slugs: Sequence[str] | None = None, students: Sequence[str] | None = None, *,
          jobs: int = 1, backend: str = "sandbox", force: bool = False, only_pending: bool = False,
          device: str = "cpu", require_isolation: bool = False, executor: str | None = None,
          scheduler: str | None = None, on_plan: Callable[[int, int], None] | None = None,
          on_start: Callable[[Job], None] | None = None,
          on_done: Callable[[GradeRow], None] | None = None,
          on_executor: Callable[[Any], None] | None = None,
          on_phase: Callable[[str], None] | None = None, accept_regrade: bool = False) -> GradeReport:
    """Grade every latest attempt; each submission is recorded in one transaction as it finishes.

    Submissions graded before with another grader version are graded into a scratch copy first: if
    more than ``course.regrade_share`` of their scores would change, none is recorded and
    ``report.refused`` holds the preview (``accept_regrade`` records them regardless).
    """
    import time
    t0 = time.monotonic()
    if slugs:
        for s in slugs:
            course.assignment(s)
    if (executor or course.executor.kind) != "dask":
        _check_device(device)   # a Dask coordinator needs no GPU: its GPU workers check for themselves
    report_ = GradeReport()
    with open_gradebook(course) as gb:
        _check_something_matches(course, gb, slugs, students)
        planned, skipped = plan_grading(course, gb, slugs, students, force=force, only_pending=only_pending)
        report_.rows.extend(skipped)
        if on_plan:
            on_plan(len(planned), len(skipped))
        if not planned:
            report_.wall_seconds = time.monotonic() - t0
            _finals(course, gb, report_.rows)
            return report_
        ex = make_executor(course, executor=executor, jobs=jobs, backend=backend, device=device,
                           require_isolation=require_isolation, scheduler=scheduler)
        report_.executor = ex.name
        report_.where = (f"on this machine, {ex.jobs} at a time" if isinstance(ex, LocalExecutor)
                         else f"on the Dask cluster at {getattr(ex, 'scheduler', '?')}")
        if on_executor:
            on_executor(ex)
        if on_phase and isinstance(ex, LocalExecutor) and backend == "sandbox":
            on_phase("starting the sandbox: importing torch, transformers, peft")
        if isinstance(ex, LocalExecutor):
            try:
                ex.start()
            except BaseException:
                ex.close()
                raise
        if on_phase:
            on_phase("grading")

        from course import regrade
        stale = set() if accept_regrade or only_pending else {
            id(j) for j in planned if j.payload.get("previous_version") not in (None, j.spec.version)}
        scratch = regrade.Scratch(gb) if stale else None
        held: list[JobResult] = []

        def record(result: JobResult) -> None:
            target = gb
            if scratch is not None and id(result.job) in stale:
                target = scratch.gb
                held.append(result)
            row = _record_safely(target, result, backend=backend, device=device)
            if target is gb:
                report_.rows.append(row)
            if on_done:
                on_done(row)
        try:
            try:
                ex.run(planned, on_start=on_start, on_done=record)
            finally:
                report_.isolation_note = getattr(ex, "isolation_note", "")
                report_.cluster = ex.summary() if hasattr(ex, "summary") else None
                ex.close()
            if scratch is not None and held:
                keys = {(r.job.payload["student"], r.job.spec.slug) for r in held}
                preview = regrade.Preview(regrade.compare(course, gb, scratch.gb, sorted({k[1] for k in keys}),
                                                          keys=keys, published=False))
                if preview.changed and preview.share > course.regrade_share + 1e-12:
                    report_.refused = preview
                    for r in held:
                        p = r.job.payload
                        report_.rows.append(GradeRow(p["student"], r.job.spec.slug, p["attempt"], "held",
                                                     message="a changed grader would change scores: "
                                                             "course grade --preview, then --accept-regrade"))
                else:
                    report_.rows += [_record_safely(gb, r, backend=backend, device=device) for r in held]
        finally:
            if scratch is not None:
                scratch.close()
        _finals(course, gb, report_.rows)
    report_.wall_seconds = time.monotonic() - t0
    return report_


def _record_safely(gb: Gradebook, result: JobResult, *, backend: str, device: str) -> GradeRow:
    try:
        return _record(gb, result, backend=backend, device=device)
    except Exception as exc:   # one student's data must never stop the class: recorded as an error
        p = result.job.payload
        message = f"the results could not be recorded ({type(exc).__name__}: {exc}); re-run to retry"
        gb.save_error(p["submission_id"], result.job.spec.version, message, backend=backend, device=device,
                      started_at=result.started_at, duration=result.duration)
        return GradeRow(p["student"], result.job.spec.slug, p["attempt"], "error", message=message,
                        seconds=result.duration)


def _check_something_matches(course: Course, gb: Gradebook, slugs: Sequence[str] | None,
                             students: Sequence[str] | None) -> None:
    """Nothing collected, or a --student naming nobody, is said plainly (exit 2), never an empty table."""
    selected = [a.slug for a in course.select(list(slugs) if slugs else None)]
    subs = gb.submissions(selected)
    if not subs:
        raise CourseError(f"nothing is collected for {', '.join(selected)} yet: run `course collect SOURCE "
                          f"--assignment {selected[0]}` first ({course.paths.gradebook} has no submissions of it)")
    if students:
        have = sorted({s.student for s in subs})
        unknown = sorted(set(students) - set(have))
        if unknown:
            shown = ", ".join(have[:12]) + (f" and {len(have) - 12} more" if len(have) > 12 else "")
            raise CourseError(f"--student {', '.join(unknown)}: no submission of {', '.join(selected)} from "
                              f"{'them' if len(unknown) > 1 else 'this student'}; students with submissions: {shown}")


def _finals(course: Course, gb: Gradebook, rows: list["GradeRow"]) -> None:
    """Each graded row's final score, as feedback and every export compute it (late penalty applied)."""
    wanted = {(r.student, r.slug) for r in rows if r.status in ("graded", "skipped")}
    if not wanted:
        return
    finals = {}
    for g in report.load_graded(course, gb, sorted({s for _, s in wanted}), sorted({st for st, _ in wanted}),
                                include_missing=False):
        finals[(g.student, g.slug)] = report.final_score(g, course.missing)
    for r in rows:
        r.final = finals.get((r.student, r.slug))


def _record(gb: Gradebook, result: JobResult, *, backend: str, device: str) -> GradeRow:
    p = result.job.payload
    student, slug = p["student"], result.job.spec.slug
    if not result.ok:
        gb.save_error(p["submission_id"], result.job.spec.version, result.message, backend=backend, device=device,
                      started_at=result.started_at, duration=result.duration)
        return GradeRow(student, slug, p["attempt"], "error", message=result.message, seconds=result.duration)
    gid = gb.save_grading(p["submission_id"], result.job.spec.version, result.results, backend=backend, device=device,
                          isolation=result.isolation, started_at=result.started_at, duration=result.duration,
                          merge_into=p.get("merge_into"), environment=result.environment)
    gb.ensure_manual_items(student, slug, manual_items(result.job.spec.hidden / "manual.json"))
    g = gb.current_grading(p["submission_id"])
    assert g is not None and g.id == gid
    return GradeRow(student, slug, p["attempt"], "graded", g.points or 0.0, g.max_points or 0.0, g.pending or 0,
                    result.isolation, result.duration)


# ------------------------------------------------------------------ status / feedback / export

@dataclass
class StatusRow:
    slug: str
    collected: int
    graded: int
    stale: int           # graded with an older grader version
    not_graded: int
    pending: int         # submissions with GPU tests pending
    failed: int          # grading errors (infrastructure), retried by the next run
    needs_manual: int
    mean_score: float | None
    time_sources: dict[str, int] = field(default_factory=dict)   # submitted_at_source -> submissions
    time_unknown: int = 0                                         # late per the LMS, time unknown
    import_failed: int = 0       # graded submissions with a module that could not be imported
    environments: dict[str, int] = field(default_factory=dict)   # "torch 2.13.0, ..." -> gradings
    env_conflicts: list[str] = field(default_factory=list)       # identical content, other env, other points


def _env_summary(env: dict[str, Any]) -> str:
    keys = ("torch", "transformers", "peft", "bitsandbytes", "device")
    return ", ".join(f"{k} {env[k]}" for k in keys if env.get(k)) or "not recorded"


def _import_failed(results: Sequence[Any]) -> bool:
    return any(r.outcome == "error" and (r.detail or r.message).startswith("importing ") for r in results)


def status(course: Course, slugs: Sequence[str] | None = None) -> tuple[list[StatusRow], list[config_mod.Extension]]:
    rows = []
    with open_gradebook(course) as gb:
        for a in course.select(list(slugs) if slugs else None):
            subs = gb.submissions([a.slug])
            version = None
            try:
                version = spec_for(course, a.slug).version
            except GradingError:
                pass
            graded = stale = not_graded = pending = failed = manual = imports_failed = 0
            scores = []
            envs: dict[str, int] = {}
            for sub in subs:
                current = gb.current_grading(sub.id)
                err = gb.last_error(sub.id)
                if current is None:
                    if err is not None:
                        failed += 1
                    else:
                        not_graded += 1
                    continue
                if version is not None and current.grader_version != version:
                    stale += 1
                else:
                    graded += 1
                pending += bool(current.pending)
                scores.append(current.points or 0.0)
                manual += any(m["score"] is None for m in gb.manual_scores(sub.student, a.slug))
                imports_failed += _import_failed(gb.results(current.id))
                envs[_env_summary(current.env)] = envs.get(_env_summary(current.env), 0) + 1
            sources: dict[str, int] = {}
            for sub in subs:
                sources[sub.submitted_at_source] = sources.get(sub.submitted_at_source, 0) + 1
            rows.append(StatusRow(a.slug, len(subs), graded, stale, not_graded, pending, failed, manual,
                                  round(sum(scores) / len(scores), 2) if scores else None, dict(sorted(sources.items())),
                                  sources.get("lms-late-flag", 0), imports_failed, envs, env_conflicts(gb, a.slug)))
    return rows, list(course.extensions)


def env_conflicts(gb: Gradebook, slug: str) -> list[str]:
    """Identical content graded in different environments with different points (a number that a
    library version decided): each is a sentence naming the students and environments."""
    rows = gb.db.execute(
        "SELECT s.student, s.sha256, g.points, g.environment FROM submissions s JOIN gradings g "
        "ON g.submission_id = s.id WHERE s.slug=? AND g.status='graded' ORDER BY g.id", (slug,)).fetchall()
    by_sha: dict[str, dict[str, tuple[float, str]]] = {}
    for student, sha, points, env in rows:
        try:
            summary = _env_summary(json.loads(env or "{}"))
        except ValueError:
            summary = "not recorded"
        by_sha.setdefault(sha, {})[summary] = (round(points or 0.0, 4), student)
    out = []
    for sha, envs in by_sha.items():
        if len(envs) > 1 and len({p for p, _ in envs.values()}) > 1:
            out.append(f"identical files ({sha[:10]}) scored " + "; ".join(
                f"{p:g} under {e} ({who})" for e, (p, who) in envs.items()))
    return out


@dataclass
class StudentRow:
    slug: str
    status: str
    attempt: int | None = None
    submitted_at: str | None = None
    time_source: str | None = None
    late_hours: float = 0.0
    final: float | None = None
    raw: float | None = None
    max_points: float = 0.0
    pending: int = 0
    needs_manual: list[str] = field(default_factory=list)
    problem: str = ""            # an import failure or a grading error, in words
    environment: str = ""


def student_status(course: Course, student: str, slugs: Sequence[str] | None = None) -> list[StudentRow]:
    """One student's view of every assignment: what was collected, graded and scored, and any problem."""
    selected = [a.slug for a in course.select(list(slugs) if slugs else None)]
    with open_gradebook(course) as gb:
        if student not in gb.students():
            known = gb.students()
            raise CourseError(f"--student {student}: no such student in {course.paths.gradebook}"
                              + (f" (known: {', '.join(known[:12])}{' ...' if len(known) > 12 else ''})" if known else ""))
        rows = []
        for g in report.load_graded(course, gb, selected, [student]):
            row = StudentRow(g.slug, g.status, g.attempt, g.submitted_at, getattr(g, "submitted_at_source", None),
                             g.late_hours, report.final_score(g, course.missing), g.raw if g.results else None,
                             g.max_points, g.pending, list(g.needs_manual), problem=g.message)
            if g.results and _import_failed(g.results):
                first = next(r for r in g.results if (r.detail or r.message).startswith("importing "))
                row.problem = (first.detail or first.message).split("\n")[0]
            sub = next((s for s in gb.submissions([g.slug], [student])), None)
            current = gb.current_grading(sub.id) if sub else None
            if current is not None:
                row.environment = _env_summary(current.env)
            rows.append(row)
    return rows


@dataclass
class MisconceptionRow:
    name: str
    students: int
    tasks: list[str]
    text: str


def misconceptions(course: Course, slug: str) -> tuple[list[MisconceptionRow], int]:
    """How many students' current gradings hit each misconception (what to re-teach), and of how many."""
    course.assignment(slug)
    texts = _catalogue_texts(course, slug)
    hits: dict[str, tuple[set[str], set[str]]] = {}
    graded = 0
    with open_gradebook(course) as gb:
        for sub in gb.submissions([slug]):
            current = gb.current_grading(sub.id)
            if current is None:
                continue
            graded += 1
            for r in gb.results(current.id):
                if r.outcome in ("passed", "pending"):
                    continue
                for name in (n for n in r.misconceptions.split(",") if n):
                    students, tasks = hits.setdefault(name, (set(), set()))
                    students.add(sub.student)
                    if r.task:
                        tasks.add(r.task)
    rows = [MisconceptionRow(name, len(st), sorted(tk), texts.get(name, "")) for name, (st, tk) in hits.items()]
    return sorted(rows, key=lambda r: (-r.students, r.name)), graded


def _catalogue_texts(course: Course, slug: str) -> dict[str, str]:
    """name -> text of the generic facts and of graders/<slug>/misconceptions.py's CATALOGUE."""
    import importlib.util
    from course.grading import diagnose
    texts = {name: m.text for name, m in diagnose.GENERIC.items()}
    path = course.paths.graders / slug / "misconceptions.py"
    if path.is_file():
        spec = importlib.util.spec_from_file_location(f"_course_catalogue_{slug}", path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
            texts.update({name: m.text for name, m in getattr(module, "CATALOGUE", {}).items()})
        except Exception as exc:
            raise CourseError(f"{path}: cannot be loaded ({type(exc).__name__}: {exc})") from None
    return texts


def feedback(course: Course, slugs: Sequence[str] | None = None, students: Sequence[str] | None = None,
             out: Path | None = None, now: dt.datetime | None = None) -> list[Path]:
    """Feedback pages, each showing hidden tests at the assignment's level now (course.visibility);
    the scores shown are recorded in the ledger as published."""
    from course import ledger
    with open_gradebook(course) as gb:
        graded = [g for g in report.load_graded(course, gb, slugs, students) if g.status != "missing"]
        views = [student_view(course, g, now) for g in graded]
        written = report.write_feedback(views, Path(out) if out else course.paths.feedback, course)
        ledger.publish(gb, [(v.student, v.slug, report.final_score(v, course.missing, now)) for v in views
                            if not v.score_withheld], "feedback")
    return written


def student_view(course: Course, g: report.Graded, now: dt.datetime | None = None) -> report.Graded:
    """What the student may see of ``g`` now: hidden tests at the level course.yml sets."""
    from course import visibility
    return visibility.view(g, visibility.level(course.assignment(g.slug), g.due, now))


def published_changes(course: Course, slugs: Sequence[str] | None = None,
                      now: dt.datetime | None = None) -> list[tuple[str, str, float | None, float | None]]:
    """(student, slug, last published, now) for each score an export would change from what students saw."""
    from course import ledger
    selected = [a.slug for a in course.select(list(slugs) if slugs else None)]
    with open_gradebook(course) as gb:
        graded = report.load_graded(course, gb, selected)
        return ledger.published_changes(gb, [(g.student, g.slug, report.final_score(g, course.missing, now))
                                             for g in graded])


def export(course: Course, fmt: str, out: Path | None = None, slugs: Sequence[str] | None = None,
           worksheet: Path | None = None, now: dt.datetime | None = None) -> list[Path]:
    selected = [a.slug for a in course.select(list(slugs) if slugs else None)]
    from course import ledger
    with open_gradebook(course) as gb:
        graded = report.load_graded(course, gb, selected)
        if fmt in ("csv", "canvas", "moodle", "gradescope-csv"):
            ledger.publish(gb, [(g.student, g.slug, report.final_score(g, course.missing, now)) for g in graded],
                           f"export {fmt}")
    base = Path(out) if out else course.paths.exports
    if fmt in ("canvas", "moodle", "gradescope-csv"):
        from course.lms import export as lms_export
        return lms_export.export(course, fmt, graded, selected, base, worksheet=worksheet, now=now)
    if fmt == "csv":
        path = base if base.suffix == ".csv" else base / "grades.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(report.csv_export(graded, selected, course.missing, now), encoding="utf-8")
        return [path]
    if fmt == "junit":
        path = base if base.suffix == ".xml" else base / "junit.xml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(report.junit_xml(graded), encoding="utf-8")
        return [path]
    if fmt == "gradescope":
        written = []
        for g in graded:
            if g.status == "graded":
                path = base / "gradescope" / g.slug / g.student / "results.json"
                report.write_json(path, report.gradescope_results(student_view(course, g, now)))
                written.append(path)
        return written
    raise CourseError(f"--format {fmt!r}: use csv, canvas, moodle, gradescope-csv, gradescope or junit")


def export_warnings(course: Course, fmt: str, slugs: Sequence[str] | None = None) -> list[str]:
    """What to know before uploading an export: unknown late times, ungraded, students off the roster."""
    from course.lms import export as lms_export
    selected = [a.slug for a in course.select(list(slugs) if slugs else None)]
    with open_gradebook(course) as gb:
        graded = report.load_graded(course, gb, selected)
    return lms_export.warnings(course, graded, selected, fmt)


# ------------------------------------------------------------------ staff: overrides, requests, history (course/ledger.py)

@dataclass
class StaffChange:
    """What a staff operation recorded: its ledger entry and the score before and after it."""

    entry: int
    student: str
    slug: str
    before: float | None
    after: float | None
    closed: list[int] = field(default_factory=list)     # regrade requests it closed


def _score(course: Course, gb: Gradebook, student: str, slug: str) -> float | None:
    [g] = report.load_graded(course, gb, [slug], [student])
    return report.final_score(g, course.missing)


def override(course: Course, student: str, slug: str, *, points: float | None = None, delta: float | None = None,
             task: str | None = None, reason: str, by: str | None = None, allow_extra_credit: bool = False,
             request: int | None = None) -> StaffChange:
    """Record an override (see :func:`course.ledger.override`); nothing is written if it is refused."""
    from course import ledger
    course.assignment(slug)
    with open_gradebook(course) as gb:
        ledger._check_student(course, gb, student)
        before = _score(course, gb, student, slug)
        entry = ledger.override(course, gb, student, slug, points=points, delta=delta, task=task, reason=reason,
                                by=by, allow_extra_credit=allow_extra_credit, request=request)
        closed = [r.id for r in ledger.requests(gb) if r.closed_by is not None and r.closed_by.id == entry]
        return StaffChange(entry, student, slug, before, _score(course, gb, student, slug), closed)


def undo_override(course: Course, entry: int, *, reason: str, by: str | None = None) -> StaffChange:
    from course import ledger
    with open_gradebook(course) as gb:
        target = ledger.get(gb, entry)
        before = _score(course, gb, target.student, target.slug) if target.slug in course.slugs else None
        new = ledger.undo(gb, entry, reason=reason, by=by)
        after = _score(course, gb, target.student, target.slug) if target.slug in course.slugs else None
        return StaffChange(new, target.student, target.slug, before, after)


def regrade_request(course: Course, student: str, slug: str, *, message: str, by: str | None = None) -> int:
    from course import ledger
    with open_gradebook(course) as gb:
        return ledger.file_request(course, gb, student, slug, message=message, by=by)


def reject_request(course: Course, request: int, *, reason: str, by: str | None = None) -> int:
    from course import ledger
    with open_gradebook(course) as gb:
        return ledger.reject(gb, request, reason=reason, by=by)


def requests(course: Course, *, open_only: bool = False) -> list[Any]:
    from course import ledger
    with open_gradebook(course) as gb:
        return ledger.requests(gb, open_only=open_only)


def history(course: Course, student: str, slug: str | None = None) -> list[Any]:
    """Every step of ``student``'s record (of ``slug``, or all), in order, with the score after each."""
    from course import history as history_mod
    with open_gradebook(course) as gb:
        return history_mod.history(course, gb, student, slug)


def pin_slip_days(course: Course, student: str, slug: str, days: int | None, *, reason: str,
                  by: str | None = None) -> StaffChange:
    from course import ledger
    with open_gradebook(course) as gb:
        ledger._check_student(course, gb, student)
        before = _score(course, gb, student, slug)
        entry = ledger.pin_slip_days(course, gb, student, slug, days, reason=reason, by=by)
        return StaffChange(entry, student, slug, before, _score(course, gb, student, slug))


@dataclass
class SlipRow:
    student: str
    spent: dict[str, int]
    left: int
    pinned: dict[str, int]


def slip_days(course: Course) -> list[SlipRow]:
    """Slip days spent per student and assignment, and left (students who spent or pinned any)."""
    from course import ledger
    if course.late_policy.slip_days <= 0:
        return []
    with open_gradebook(course) as gb:
        graded = report.load_graded(course, gb)
        book = ledger.Book.load(gb)
    rows: dict[str, SlipRow] = {}
    for g in graded:
        row = rows.setdefault(g.student, SlipRow(g.student, {}, g.slip_left or 0, book.pins(g.student)))
        if g.slip_days:
            row.spent[g.slug] = g.slip_days
    return [r for r in rows.values() if r.spent or r.pinned]


def preview_regrade(course: Course, slugs: Sequence[str] | None = None, students: Sequence[str] | None = None,
                    **grade_options: Any) -> Any:
    """``course grade --preview``: grade into a scratch gradebook and compare (course.regrade.Preview)."""
    from course import regrade
    return regrade.preview(course, slugs, students, **grade_options)


# ------------------------------------------------------------------ roster and LMS

def roster_import(course: Course, path: Path, lms: str) -> Any:
    """Build or update roster.csv from an LMS's roster export; ids stay stable."""
    from course import lms as lms_pkg
    from course import roster as roster_mod
    people = lms_pkg.reader(lms).people(Path(path))
    current = roster_mod.load(course.paths.roster)
    updated, rep = roster_mod.merge(current, people, str(path))
    roster_mod.save(updated, course.paths.roster)
    return rep


@dataclass
class RosterCheck:
    missing: dict[str, list[str]] = field(default_factory=dict)   # slug -> roster students with no submission
    unknown: dict[str, list[str]] = field(default_factory=dict)   # slug -> submitting students not on the roster
    duplicates: list[tuple[str, str, list[str]]] = field(default_factory=list)   # (key, value, student ids)

    @property
    def ok(self) -> bool:
        return not any(self.missing.values()) and not any(self.unknown.values()) and not self.duplicates


def roster_check(course: Course) -> RosterCheck:
    """Roster students with no submission, submissions of students not on the roster, shared LMS keys."""
    from course import roster as roster_mod
    roster = roster_mod.load(course.paths.roster)
    if not len(roster):
        raise CourseError(f"{course.paths.roster}: no roster (course roster import FILE --from LMS)")
    rep = RosterCheck(duplicates=roster.duplicates())
    active = {s.id for s in roster.active}
    with open_gradebook(course) as gb:
        for a in course.assignments:
            subs = gb.submissions([a.slug])
            covered = {s.student for s in subs} | {m for s in subs for m in s.member_list}
            rep.missing[a.slug] = sorted(active - covered)
            rep.unknown[a.slug] = sorted(covered - set(roster.ids))
    return rep


def lms_fetch_canvas(course: Course, *, url: str, token: str, course_id: int, assignment_id: int,
                     out: Path) -> dict[str, Any]:
    from course.lms import canvas
    return canvas.fetch(url, token, course_id, assignment_id, out)


# ------------------------------------------------------------------ validate (the instructor's safety net)

@dataclass
class ValidationReport:
    slug: str
    checks: list[tuple[str, bool, str]] = field(default_factory=list)   # (check, ok, detail)
    solution_points: float = 0.0
    solution_pending: float = 0.0
    stub_points: float = 0.0
    total: float = 0.0
    manual_points: float = 0.0
    seconds: float = 0.0
    mutation: Any = None          # course.validation.MutationReport, with ``--mutants``
    determinism: Any = None       # course.validation.determinism.DeterminismReport, with ``--determinism``

    @property
    def ok(self) -> bool:
        return all(ok for _, ok, _ in self.checks)

    def add(self, name: str, ok: bool, detail: str = "") -> None:
        self.checks.append((name, ok, detail))


def _overlay(course: Course, slug: str, dest: Path, with_solution: bool) -> Path:
    """The assignment folder as a student would submit it: stubs, or the solution's modules."""
    shutil.copytree(course.paths.assignments / slug, dest,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "tests"))
    if with_solution:
        for src in (course.paths.solutions / slug).iterdir():
            if src.is_file():
                shutil.copyfile(src, dest / src.name)
    return dest


def validate(course: Course, slugs: Sequence[str] | None = None, *, jobs: int = 2, backend: str = "sandbox",
             on_progress: Callable[[str], None] | None = None,
             options: "validation.Options | None" = None) -> list[ValidationReport]:
    """For each assignment: solution full marks, stub 0, stubs in sync, points add up, public pass, no leak.

    The solutions and stubs of every selected assignment are graded in one run (one sandbox
    fork server), ``jobs`` at a time. With ``options`` (:class:`course.validation.Options`), the
    same executor then grades the alternatives, hand-written bugs, misconceptions, mutants and
    determinism runs it asks for (see :mod:`course.validation`); without, only the checks above.
    """
    import time
    from course import validation
    validation.preflight(options)
    t0 = time.monotonic()
    reports: dict[str, ValidationReport] = {}
    planned: list[Job] = []
    with tempfile.TemporaryDirectory(prefix="course-validate-") as tmp:
        for a in course.select(list(slugs) if slugs else None):
            rep = reports[a.slug] = ValidationReport(a.slug, total=a.points)
            try:
                stale = stubs.drift(course.paths.solutions / a.slug, course.paths.assignments / a.slug)
                rep.add("stubs in sync with solutions", not stale,
                        f"out of date: {', '.join(stale)} (run course release {a.slug})" if stale else "")
            except CourseError as exc:
                rep.add("stubs in sync with solutions", False, str(exc))
            try:
                spec = spec_for(course, a.slug)
            except GradingError as exc:
                rep.add("hidden tests exist", False, str(exc))
                continue
            base = Path(tmp) / a.slug
            planned.append(Job(f"{a.slug}/solution", spec, _overlay(course, a.slug, base / "solution", True)))
            planned.append(Job(f"{a.slug}/stub", spec, _overlay(course, a.slug, base / "stub", False)))
        if on_progress:
            on_progress(f"grading the solution and the stub of {len(planned) // 2} assignment(s), {jobs} at a time")
        ex = LocalExecutor(jobs, backend=backend, device="cpu")
        try:
            done = {r.job.key: r for r in ex.run(planned, on_done=lambda r: on_progress and on_progress(
                f"{r.job.key}: {r.points:g}/{r.max_points:g} in {r.duration:.0f} s"))}
            extra = validation.run(course, reports, {s: done[f"{s}/solution"] for s in reports
                                                     if f"{s}/solution" in done}, ex, options, Path(tmp),
                                   on_progress) if options is not None and options.any else {}
        finally:
            ex.close()
    for slug, rep in reports.items():
        if f"{slug}/solution" in done:
            _judge_validation(course, rep, done[f"{slug}/solution"], done[f"{slug}/stub"])
            record_reference_timings(course, done[f"{slug}/solution"])
        rep.seconds = round(sum(done[k].duration for k in (f"{slug}/solution", f"{slug}/stub") if k in done), 1)
        rep.checks.extend(extra.get(slug, ()))
    return list(reports.values())


def record_reference_timings(course: Course, solution: JobResult) -> None:
    """The solution's seconds per test, kept in the gradebook for this grader version: grading then
    limits each test to max(timeout_factor x that, timeout_floor) (see runner.calibrated_timeouts)."""
    if not solution.ok or any(r.outcome not in ("passed", "pending") for r in solution.results):
        return   # only a clean run of the solution calibrates
    import platform
    with open_gradebook(course) as gb:
        gb.set_reference_timings(solution.job.spec.slug, solution.job.spec.version,
                                 {r.name: r.duration for r in solution.results if r.outcome == "passed"},
                                 machine=f"{platform.node()} ({os.cpu_count()} cores)")


def _judge_validation(course: Course, rep: ValidationReport, sol_r: JobResult, stub_r: JobResult) -> None:
    a = course.assignment(rep.slug)
    if not sol_r.ok or not stub_r.ok:
        rep.add("grading ran", False, sol_r.message or stub_r.message)
        return
    results = sol_r.results
    unmarked_points = [r.name for r in results if r.max_points <= 0]
    unmarked_task = [r.name for r in results if not r.task]
    rep.add("every test carries points", not unmarked_points, ", ".join(unmarked_points[:5]))
    rep.add("every test carries a task", not unmarked_task, ", ".join(unmarked_task[:5]))
    total = round(sum(r.max_points for r in results), 6)
    rep.manual_points = _manual_points(course, a.slug)
    rep.add("points add up to course.yml", abs(total + rep.manual_points - a.points) < 1e-6,
            f"tests {total:g}" + (f" + manual {rep.manual_points:g}" if rep.manual_points else "")
            + f" vs course.yml {a.points:g}")
    rep.solution_points = round(sum(r.points for r in results), 4)
    rep.solution_pending = round(sum(r.max_points for r in results if r.outcome == "pending"), 4)
    bad = [f"{r.name} ({r.outcome}: {r.detail.splitlines()[0][:160] if r.detail else ''})"
           for r in results if r.outcome not in ("passed", "pending")]
    rep.add("solution scores full marks", not bad and abs(rep.solution_points + rep.solution_pending - total) < 1e-6,
            "; ".join(bad[:5]))
    public_bad = [r.name for r in results if not r.hidden and r.outcome not in ("passed", "pending")]
    rep.add("public tests pass on the solution", not public_bad, ", ".join(public_bad[:5]))
    rep.add("public tests exist", any(not r.hidden for r in results), "")
    rep.stub_points = round(sum(r.points for r in stub_r.results), 4)
    stub_passing = [r.name for r in stub_r.results if r.outcome == "passed"]
    rep.add("stub scores 0", rep.stub_points == 0, ", ".join(stub_passing[:5]))
    names_public = {r.name.split("::", 1)[-1].split("[")[0] for r in results if not r.hidden}
    names_hidden = {r.name.split("::", 1)[-1].split("[")[0] for r in results if r.hidden}
    clash = names_public & names_hidden
    rep.add("hidden test names differ from public ones", not clash, ", ".join(sorted(clash)))
    with tempfile.TemporaryDirectory(prefix="course-validate-release-") as tmp:
        try:
            release_mod.release(course, [a.slug], Path(tmp) / "bundle", regenerate=False)
            rep.add("a release leaks nothing", True)
        except CourseError as exc:
            rep.add("a release leaks nothing", False, str(exc))


def manual_items(path: Path) -> list[tuple[str, float]]:
    """Manually graded parts (e.g. written notebook cells): graders/<slug>/manual.json, a JSON list of
    ``{"item": name, "points": n}``."""
    if not path.is_file():
        return []
    try:
        return [(str(i["item"]), float(i["points"])) for i in json.loads(path.read_text(encoding="utf-8"))]
    except (ValueError, KeyError, TypeError) as exc:
        raise CourseError(f"{path}: expected a JSON list of {{\"item\": name, \"points\": n}} ({exc})") from None


def _manual_points(course: Course, slug: str) -> float:
    return sum(points for _, points in manual_items(course.paths.graders / slug / "manual.json"))


# ------------------------------------------------------------------ notebooks (nbgrader's formgrader)

def stage_formgrader(course: Course, slug: str, nbgrader_root: Path, assignment: str | None = None) -> list[str]:
    """Put every latest submission's notebook of ``slug`` into an nbgrader course for the formgrader.

    The notebook is the one ``graders/<slug>/manual.json`` names (``"<notebook>/<cell>"``); nbgrader
    runs no student code (see :func:`course.notebooks.stage_for_formgrader`).
    """
    from course import notebooks
    items = manual_items(course.paths.graders / slug / "manual.json")
    if not items:
        raise CourseError(f"{course.paths.graders / slug / 'manual.json'}: {slug} has no manually graded parts")
    notebook = items[0][0].split("/", 1)[0] + ".ipynb"
    submissions = {}
    with open_gradebook(course) as gb:
        for sub in gb.submissions([slug]):
            path = course.paths.root / sub.path / notebook
            if path.is_file():
                submissions[sub.student] = path
    return notebooks.stage_for_formgrader(Path(nbgrader_root), assignment or slug, submissions)


def import_manual_scores(course: Course, slug: str, nbgrader_db: Path, assignment: str | None = None) -> list[Any]:
    """Copy the TAs' scores of the written parts from nbgrader's gradebook into the course gradebook.

    Only cells listed in ``graders/<slug>/manual.json`` count; a cell a TA has not graded stays
    'needs manual grading'. Returns the imported records.
    """
    from course import notebooks
    wanted = dict(manual_items(course.paths.graders / slug / "manual.json"))
    records = [r for r in notebooks.manual_scores(nbgrader_db, assignment or slug) if r.cell in wanted]
    with open_gradebook(course) as gb:
        known = set(gb.students())
        for r in records:
            if r.student not in known:
                raise CourseError(f"{nbgrader_db}: student {r.student!r} is not in the course gradebook")
            gb.set_manual_score(r.student, slug, r.cell, r.score, wanted[r.cell], grader="nbgrader",
                                reason=f"imported from {Path(nbgrader_db).name}")
    return records


# ------------------------------------------------------------------ insight: class report, similarity, flaky tests

def _insight(module: str) -> Any:
    """A module of course.insight; its libraries (matplotlib, copydetect) come with the ``insight`` extra."""
    import importlib
    try:
        return importlib.import_module(f"course.insight.{module}")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in ("matplotlib", "copydetect", "pygments"):
            raise CourseError(f"the class report and similarity need {exc.name}: pip install 'course[insight]'") from None
        raise


def report_folder(course: Course) -> Path:
    """Where ``course report`` and ``course similarity`` write by default: ``report/`` beside the feedback."""
    return course.paths.feedback.parent / "report"


def class_summary(course: Course, slugs: Sequence[str] | None = None) -> Any:
    """The numbers of the class report (:class:`course.insight.summary.CourseSummary`)."""
    summary = _insight("summary")
    with open_gradebook(course) as gb:
        return summary.course_summary(course, gb, slugs)


def class_report(course: Course, slugs: Sequence[str] | None = None, out: Path | None = None) -> tuple[Any, list[Path]]:
    """Write the class report: ``index.html`` and ``<slug>.html`` per assignment (self-contained)."""
    pages = _insight("pages")
    summary_ = class_summary(course, slugs)
    return summary_, pages.write(summary_, Path(out) if out else report_folder(course), course.paths.feedback)


def similarity(course: Course, slug: str, *, threshold: float | None = None, against: Sequence[Path] = (),
               out: Path | None = None) -> Any:
    """Code similarity of ``slug``'s latest submissions, with the reference solution and ``against`` folders;
    writes ``index.html`` and a side-by-side page per pair above the threshold."""
    sim, similarity_pages = _insight("similarity"), _insight("similarity_pages")
    course.assignment(slug)
    threshold = sim.check_threshold(sim.DEFAULT_THRESHOLD if threshold is None else threshold)
    for folder in against:
        if not Path(folder).is_dir():
            raise CourseError(f"--against {folder}: not a folder")
    with open_gradebook(course) as gb:
        students = {s.student: course.paths.root / s.path for s in gb.submissions([slug])}
    rep = sim.analyse(slug, students, stub=course.paths.assignments / slug, reference=course.paths.solutions / slug,
                      against=[Path(a) for a in against], threshold=threshold)
    similarity_pages.write(rep, Path(out) if out else report_folder(course) / "similarity" / slug)
    return rep


def validate_seeds(course: Course, slugs: Sequence[str] | None, seeds: Sequence[int], *, jobs: int = 2,
                   backend: str = "sandbox", on_progress: Callable[[str], None] | None = None) -> list[Any]:
    """Grade each solution and stub under every seed; flag tests whose outcome changes (flaky tests)."""
    return _insight("flaky").validate_seeds(course, slugs, seeds, jobs=jobs, backend=backend, on_progress=on_progress)

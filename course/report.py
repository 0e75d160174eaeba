"""Feedback (Markdown + HTML), CSV, Gradescope ``results.json``, JUnit XML, and the CI summary.

Everything here works on :class:`Graded` records (built from the gradebook, or straight from a
judge's results for ``course ci``). Hidden tests appear by name, outcome and points only: their
messages, inputs and assertion text never reach a student-facing file.
"""

from __future__ import annotations

import collections

import csv
import datetime as dt
import io
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from course import textsafe
from course.config import Course
from course.gradebook import Gradebook, ResultRow

HIDDEN_FAILED = "a hidden test did not pass"


@dataclass
class Graded:
    """One student's latest submission of one assignment, with its current grade."""

    student: str
    slug: str
    title: str
    max_points: float                         # course.yml's points for the assignment
    status: str                               # graded | not graded | error | missing
    attempt: int | None = None
    submitted_at: str | None = None
    late_by: float = 0.0                      # seconds after the due date (extensions applied)
    penalty: float = 0.0                      # fraction of the score lost to lateness
    results: list[ResultRow] = field(default_factory=list)
    manual: list[dict[str, Any]] = field(default_factory=list)
    duration: float = 0.0
    isolation: str | None = None
    message: str = ""
    due: str | None = None
    extension: str | None = None
    submitted_at_source: str | None = None    # who vouches for submitted_at (lms-record, worksheet, ...)
    notes: list[str] = field(default_factory=list)   # from collect: modules renamed or missing, flagged dates
    group: str | None = None                  # the group whose submission this is
    members: list[str] = field(default_factory=list)  # the group's members (this student included)
    adjustments: list[Any] = field(default_factory=list)   # overrides in force (course.ledger.Adjustment)
    slip_days: int = 0                        # slip days this assignment took (course.late)
    slip_left: int | None = None              # slip days left for the course (None: no slip days)
    slip_note: str = ""
    hidden_view: str = "names"                # what is shown of hidden tests (course.visibility)
    hidden_note: str = ""                     # why hidden feedback is limited, and until when
    frozen: tuple[float, float] | None = None # (raw, final) of the full record, kept by a limited view

    @property
    def time_unknown(self) -> bool:
        """The LMS said "late" but not when: no score is exported until the instructor sets the time."""
        return self.submitted_at_source == "lms-late-flag"

    @property
    def graded_raw(self) -> float:
        """The tests' and the TAs' points, before overrides and the late penalty."""
        return round(sum(r.points for r in self.results) + sum(m["score"] or 0.0 for m in self.manual), 4)

    @property
    def raw(self) -> float:
        """The score before the late penalty: graded points with task overrides and deltas applied."""
        if self.frozen is not None:
            return self.frozen[0]
        if not self.adjustments:
            return self.graded_raw
        tasks = {a.task: a.value for a in self.adjustments if a.mode == "task"}   # the latest per task wins
        total = sum(r.points for r in self.results if r.task not in tasks) + sum(tasks.values())
        total += sum(m["score"] or 0.0 for m in self.manual) + sum(a.value for a in self.adjustments if a.mode == "delta")
        if not any(a.extra_credit for a in self.adjustments):
            total = min(total, self.max_points)
        return round(max(0.0, total), 4)

    @property
    def override_points(self) -> float | None:
        """The final score set by ``course override --points`` (the latest in force), if any."""
        points = [a.value for a in self.adjustments if a.mode == "points"]
        return points[-1] if points else None

    @property
    def final(self) -> float:
        if self.frozen is not None:
            return self.frozen[1]
        if self.override_points is not None:
            return round(self.override_points, 4)
        return round(self.raw * (1.0 - self.penalty), 4)

    @property
    def score_withheld(self) -> bool:
        """Hidden tests are not shown at all: the total would tell their points, so it is not shown either."""
        return self.hidden_view == "none"

    @property
    def public_points(self) -> tuple[float, float]:
        """(points, max points) of the public tests and manual items: what a withheld score still shows."""
        rows = [r for r in self.results if not r.hidden]
        return (round(sum(r.points for r in rows) + sum(m["score"] or 0.0 for m in self.manual), 4),
                round(sum(r.max_points for r in rows) + sum(m["max_score"] or 0.0 for m in self.manual), 4))

    @property
    def pending(self) -> int:
        return sum(1 for r in self.results if r.outcome == "pending")

    @property
    def needs_manual(self) -> list[str]:
        return [m["item"] for m in self.manual if m["score"] is None]

    @property
    def late_hours(self) -> float:
        return round(self.late_by / 3600.0, 2)


def _result_rows(results: Iterable[Any]) -> list[ResultRow]:
    rows = []
    for r in results:
        if isinstance(r, ResultRow):
            rows.append(r)
        else:
            rows.append(ResultRow(test_id=r.test_id, name=r.name, task=r.task, hidden=bool(r.hidden), outcome=r.outcome,
                                  points=r.points, max_points=r.max_points, message=r.message, detail=r.detail,
                                  location=r.location, duration=r.duration,
                                  description=getattr(r, "description", ""), diagnosis=getattr(r, "diagnosis", ""),
                                  misconceptions=getattr(r, "misconceptions", "")))
    return rows


def graded_from_results(course: Course | None, student: str, slug: str, results: Iterable[Any], *,
                        title: str | None = None, max_points: float | None = None, duration: float = 0.0,
                        isolation: str | None = None, late_by: float = 0.0) -> Graded:
    """A :class:`Graded` straight from a judge's results (``course ci``, Gradescope)."""
    a = course.assignment(slug) if course is not None else None
    penalty = course.late_policy.penalty_fraction(late_by) if course is not None else 0.0
    rows = _result_rows(results)
    return Graded(student=student, slug=slug, title=title or (a.title if a else slug),
                  max_points=max_points if max_points is not None else (a.points if a else sum(r.max_points for r in rows)),
                  status="graded", results=rows, duration=duration, isolation=isolation, late_by=late_by,
                  penalty=penalty)


def load_graded(course: Course, gradebook: Gradebook, slugs: Sequence[str] | None = None,
                students: Sequence[str] | None = None, *, include_missing: bool = True) -> list[Graded]:
    """The current grade of every (student, assignment), from the gradebook and its ledger.

    Every active roster student is listed (with status ``missing`` where nothing was collected);
    a group submission counts for each of its members, each with their own due date and penalty.
    The attempt that counts follows ``grade_attempt``; overrides, slip days (over every assignment of
    the course, in due-date order) and accommodations are applied here, so every export agrees.
    ``gradebook`` may be a :class:`course.history.AsOf` view (a history's past).
    """
    from course import late, ledger
    from course import roster as roster_mod
    assignments = course.select(list(slugs) if slugs else None)
    selected = {a.slug for a in assignments}
    roster = roster_mod.load(course.paths.roster)
    by_owner: dict[tuple[str, str], list[Any]] = {}
    for s in gradebook.submissions(course.slugs, latest_only=False):
        by_owner.setdefault((s.student, s.slug), []).append(s)
    latest = {k: v[-1] for k, v in by_owner.items()}
    subs = {k: s for k, s in latest.items() if k[1] in selected and (not students or k[0] in students)}
    shared: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for k, s in latest.items():
        for m in s.member_list:
            if m != s.student:
                shared.setdefault((m, s.slug), []).append(k)
    known = set(gradebook.students()) | {s for s, _ in subs} | {m for m, slug in shared if slug in selected}
    known |= {r.id for r in roster.active}
    dropped = {r.id for r in roster if not r.active}
    everyone = sorted(set(students) if students else {s for s in known if s not in dropped or
                                                       any(k[0] == s for k in subs)})
    book = ledger.Book.load(gradebook)
    slip = course.late_policy.slip_days > 0
    table: dict[tuple[str, str], Graded] = {}
    for student in everyone:
        mine = {}
        for a in (course.assignments if slip else assignments):
            owners = [k for k in [(student, a.slug), *shared.get((student, a.slug), [])] if k in by_owner]
            mine[a.slug] = _graded_one(course, gradebook, book, a, student, [by_owner[k] for k in owners])
        if slip:
            late.apply_slip_days(course, mine, book.pins(student))
        for slug, g in mine.items():
            table[(student, slug)] = g
    return [table[(student, a.slug)] for a in assignments for student in everyone
            if include_missing or table[(student, a.slug)].status != "missing"]


def _graded_one(course: Course, gradebook: Any, book: Any, a: Any, student: str,
                candidates: list[list[Any]]) -> Graded:
    """One student's record of one assignment, from the attempts of their own and their groups'."""
    from course import late
    due = course.due_for(student, a.slug)
    ext = course.extension_for(student, a.slug)
    chosen = [c for c in (late.choose(a, attempts, due, course.late_policy, gradebook) for attempts in candidates) if c]
    sub = max(chosen, key=lambda c: c.submitted_at) if chosen else None
    if sub is None:
        g = Graded(student, a.slug, a.title, a.points, "missing", due=due.isoformat(),
                   extension=ext.reason if ext else None)
        g.adjustments = book.adjustments(student, a.slug)
        return g
    late_by = late.late_by(sub, due)
    g = Graded(student, a.slug, a.title, a.points, "not graded", attempt=sub.attempt,
               submitted_at=sub.submitted_at, late_by=late_by,
               penalty=course.late_policy.penalty_fraction(late_by), due=due.isoformat(),
               extension=(ext.reason or "extension") if ext else None,
               submitted_at_source=sub.submitted_at_source, notes=sub.note_list,
               group=sub.group_name, members=sub.member_list)
    grading = gradebook.current_grading(sub.id)
    if grading is not None:
        g.status = "graded"
        g.results = gradebook.results(grading.id)
        g.duration = grading.duration or 0.0
        g.isolation = grading.isolation
    else:
        err = gradebook.last_error(sub.id)
        if err is not None:
            g.status, g.message = "error", err.message or ""
    g.manual = [dict(m) for m in gradebook.manual_scores(sub.student, a.slug)]
    g.adjustments = book.adjustments(student, a.slug)
    return g


def final_score(g: Graded, missing: str = "zero", now: dt.datetime | None = None) -> float | None:
    """THE score every export writes (CSV, Canvas, Moodle, Gradescope CSV); None writes a blank.

    A graded submission scores :attr:`Graded.final` (late penalty, extension and manual scores
    applied), except one whose time the LMS did not give (``lms-late-flag``: blank until the
    instructor sets it). A student with no submission scores 0 once their due date has passed if
    the course's ``missing:`` policy is ``zero``, blank otherwise; anything not graded yet is blank.
    """
    if g.override_points is not None:
        return g.final                        # staff set the score: it stands whatever the status
    if g.status == "graded":
        return None if g.time_unknown else g.final
    if g.status == "missing" and missing == "zero" and g.due:
        now = now or dt.datetime.now(dt.timezone.utc)
        return 0.0 if now >= dt.datetime.fromisoformat(g.due) else None
    return None


def provisional(g: Graded) -> str:
    """Why a graded score may still rise ('' when it is final): GPU tests or written parts pending."""
    if g.status != "graded":
        return ""
    parts = []
    if g.pending:
        parts.append(f"{g.pending} GPU test(s) pending")
    if g.needs_manual:
        parts.append(f"{len(g.needs_manual)} written part(s) to grade")
    return "; ".join(parts)


def submission_notes(g: Graded) -> list[str]:
    """Sentences for a feedback page about how the submission was collected (escape them where written)."""
    lines = []
    if g.submitted_at_source:
        lines.append(f"Submission time from: {TIME_SOURCES.get(g.submitted_at_source, g.submitted_at_source)}")
    if g.time_unknown:
        lines.append("The LMS marked it late without saying when: the late penalty is decided by the instructor.")
    if g.group:
        lines.append(f"Group submission {g.group}: {', '.join(g.members)}")
    lines += g.notes
    return lines


TIME_SOURCES = {
    "lms-record": "the LMS's record of the submission",
    "worksheet": "the LMS's grading worksheet",
    "fetch-time": "the moment the collector fetched the commit",
    "push-record": "the host's record of the push",
    "instructor-flag": "the instructor (set by hand)",
    "lms-late-flag": "the LMS's LATE mark (no exact time)",
    "lms-on-time-flag": "the LMS's on-time mark (no exact time)",
    "unrecorded": "not recorded (collected before times had sources)",
}


# ------------------------------------------------------------------ per-task view

def tasks(g: Graded) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for r in g.results:
        key = r.task or "-"
        row = rows.setdefault(key, {"task": key, "tests": 0, "passed": 0, "points": 0.0, "max_points": 0.0,
                                    "pending": 0})
        row["tests"] += 1
        row["passed"] += r.outcome == "passed"
        row["pending"] += r.outcome == "pending"
        row["points"] += r.points
        row["max_points"] += r.max_points
    return [rows[k] for k in sorted(rows, key=lambda t: [int(p) if p.isdigit() else 10**6 for p in t.split(".")])]


def _fmt(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".") if x != int(x) else str(int(x))


def _code_block(text: str, max_lines: int) -> list[str]:
    """An indented Markdown code block whose fence no run of backticks in ``text`` can close."""
    return textsafe.md_code_block(text, max_lines, indent="  ")


_span = textsafe.md_code_span


def _cell(value: Any) -> str:
    """A Markdown table cell: a code span with no '|' that could split the row."""
    return _span(textsafe.one_line(value).replace("|", "\\|"))


def _lateness(g: Graded, course: Course | None) -> str:
    if g.late_by <= 0:
        return "on time"
    hours = g.late_by / 3600
    text = f"{hours:.1f} h late"
    if g.slip_days:
        text += f", {g.slip_days} slip day(s) spent"
    if g.penalty >= 1.0:
        return text + ": past the last accepted day, the score is zero"
    if g.penalty > 0:
        return text + f": late penalty {g.penalty * 100:.0f} %"
    return text + (": no penalty" if g.slip_days else " (within the grace period: no penalty)")


def score_text(g: Graded) -> str:
    """The score as a student may see it: withheld when the hidden tests are not shown."""
    if g.score_withheld:
        points, most = g.public_points
        return f"not shown yet (public tests: {_fmt(points)} / {_fmt(most)})"
    return f"{_fmt(g.final)} / {_fmt(g.max_points)}"


def staff_lines(g: Graded) -> list[tuple[str, str]]:
    """(what, reason) for each override in force and the slip days: plain text, escape where written."""
    out = []
    for a in g.adjustments:
        who = f" by {a.by}" if a.by else ""
        out.append((f"Adjusted{who} (#{a.id}): {a.describe()}", a.reason))
    if g.slip_left is not None:
        out.append((f"Slip days: {g.slip_days} spent on this assignment, {g.slip_left} left for the course"
                    + (f" ({g.slip_note})" if g.slip_note else ""), ""))
    return out


def _hidden_header(g: Graded) -> str:
    from course import visibility
    if g.hidden_view == "names":
        return ("Hidden tests are shown by name, outcome and points only (with the likely cause of a failure "
                "where it matches a known misconception); never their inputs or code.")
    return visibility.describe(g.hidden_view) + " Never their inputs or code."


def _task_heading(task: str) -> str:
    return "All hidden tests" if task == "hidden" else f"Task {task}"


# ------------------------------------------------------------------ feedback

def when(iso: str | None) -> str:
    """A time as people read it: ``2026-10-02 10:00 UTC`` (no microseconds, no offset arithmetic)."""
    if not iso:
        return "(unknown)"
    try:
        t = dt.datetime.fromisoformat(iso)
    except ValueError:
        return textsafe.one_line(iso, 60)
    if t.tzinfo is not None:
        t = t.astimezone(dt.timezone.utc)
        return t.strftime("%Y-%m-%d %H:%M UTC")
    return t.strftime("%Y-%m-%d %H:%M")


def _label(r: ResultRow) -> str:
    """What a test checks, in words when its author said so, else its name."""
    return getattr(r, "description", "") or r.name


def _labels(rows: list[ResultRow]) -> dict[int, str]:
    """Each row's label; cases of one described test (its parametrized copies) are told apart by
    number ("dot of random vectors, case 2 of 3"), never by their parametrize ids, which may name inputs."""
    counts = collections.Counter(_label(r) for r in rows)
    seen: collections.Counter[str] = collections.Counter()
    out = {}
    for r in rows:
        label = _label(r)
        if counts[label] > 1 and getattr(r, "description", ""):
            seen[label] += 1
            label = f"{label}, case {seen[label]} of {counts[label]}"
        out[id(r)] = label
    return out


def hidden_by_task(g: Graded) -> list[tuple[str, list[ResultRow]]]:
    """Hidden results grouped by task, in task order."""
    groups: dict[str, list[ResultRow]] = {}
    for r in g.results:
        if r.hidden:
            groups.setdefault(r.task or "-", []).append(r)
    order = sorted(groups, key=lambda t: [int(p) if p.isdigit() else 10**6 for p in t.split(".")])
    return [(t, groups[t]) for t in order]


def feedback_markdown(g: Graded, course: Course | None = None) -> str:
    one = textsafe.one_line
    lines = [f"# {one(g.title)} — feedback for {one(g.student)}", ""]
    if g.status == "missing":
        return "\n".join(lines + ["No submission was collected for this assignment.", ""])
    lines.append(f"- Submission: attempt {g.attempt}, submitted {when(g.submitted_at)} ({_lateness(g, course)})")
    for note in submission_notes(g):
        lines.append(f"- {one(note)}")
    if g.extension:
        lines.append(f"- Extension: due {when(g.due)} ({one(g.extension)})")
    if g.status != "graded":
        lines += [f"- Status: {g.status}. {('The grader will retry it.' if g.status == 'error' else '')}", ""]
        return "\n".join(lines)
    lines.append(f"- **Score: {score_text(g)}**"
                 + (f" (raw {_fmt(g.raw)} before the late penalty)" if g.penalty and not g.score_withheld else ""))
    for what, why in staff_lines(g):
        lines.append(f"- {textsafe.one_line(what)}" + (f": {_span(why)}" if why else ""))
    if g.hidden_note:
        lines.append(f"- Hidden tests: {textsafe.one_line(g.hidden_note)}")
    if g.pending:
        lines.append(f"- {g.pending} GPU test(s) are pending: they are graded on a GPU machine later.")
    if g.needs_manual:
        lines.append(f"- Needs manual grading: {one(', '.join(g.needs_manual))}")
    lines += ["", "## Points per task", "", "| task | tests passed | points |", "| --- | --- | --- |"]
    for t in tasks(g):
        pend = f" ({t['pending']} pending)" if t["pending"] else ""
        lines.append(f"| {one(t['task'])} | {t['passed']}/{t['tests']}{pend} | {_fmt(t['points'])} / {_fmt(t['max_points'])} |")
    for m in g.manual:
        score = "needs manual grading" if m["score"] is None else f"{_fmt(m['score'])} / {_fmt(m['max_score'])}"
        lines.append(f"| written: {one(m['item'])} | — | {score} |")
    failures = [r for r in g.results if not r.hidden and r.outcome not in ("passed", "pending")]
    lines += ["", "## Public tests that did not pass", ""]
    if not failures:
        lines.append("All public tests passed.")
    for r in failures:
        where = f" at {_span(r.location)}" if r.location else ""
        lines.append(f"- {_span(r.name)} (task {one(r.task)}, {r.outcome}){where}:")
        lines += ["", *_code_block(r.message or r.outcome, 30), ""]
        if getattr(r, "diagnosis", ""):
            lines += [f"  Likely cause: {one(r.diagnosis, 1000)}", ""]
    hidden = hidden_by_task(g)
    if hidden:
        lines += ["", "## Hidden tests", "", _hidden_header(g)]
        for task, rows in hidden:
            lines += ["", f"### {_task_heading(one(task))}", "", "| test | outcome | points |", "| --- | --- | --- |"]
            label = _labels(rows)
            for r in rows:
                lines.append(f"| {_cell(label[id(r)])} | {r.outcome} | {_fmt(r.points)} / {_fmt(r.max_points)} |")
            causes = [r for r in rows if r.outcome not in ("passed", "pending") and getattr(r, "diagnosis", "")]
            if causes:
                lines.append("")
                lines += [f"- {_span(label[id(r)])}: {one(r.diagnosis, 1000)}" for r in causes]
    return "\n".join(lines) + "\n"


_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;
color:#1a1a1a;line-height:1.45}table{border-collapse:collapse;margin:.5rem 0 1rem}td,th{border:1px solid #ccc;
padding:.3rem .6rem;text-align:left}th{background:#f3f3f3}.passed{color:#0a6b2d}.failed,.error,.timeout{color:#a11}
.pending{color:#8a6d00}pre{background:#f6f6f6;padding:.6rem;overflow-x:auto;white-space:pre-wrap}
.score{font-size:1.3rem;font-weight:600}.cause{color:#5a3b00;font-size:.92rem;margin-top:.2rem}"""


def feedback_html(g: Graded, course: Course | None = None) -> str:
    """A self-contained page (no external assets); every student-controlled string is escaped."""
    e = textsafe.html_text
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{e(g.title)} — {e(g.student)}</title>"
             f"<style>{_CSS}</style></head><body>", f"<h1>{e(g.title)} — feedback for {e(g.student)}</h1>"]
    if g.status == "missing":
        parts.append("<p>No submission was collected for this assignment.</p></body></html>")
        return "".join(parts)
    parts.append(f"<p>Submission: attempt {g.attempt}, submitted {e(when(g.submitted_at))} ({e(_lateness(g, course))})</p>")
    notes = submission_notes(g)
    if notes:
        parts.append("<ul class='notes'>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
    if g.extension:
        parts.append(f"<p>Extension: due {e(when(g.due))} ({e(g.extension)})</p>")
    if g.status != "graded":
        parts.append(f"<p>Status: {e(g.status)}</p></body></html>")
        return "".join(parts)
    raw = f" (raw {_fmt(g.raw)} before the late penalty)" if g.penalty and not g.score_withheld else ""
    parts.append(f"<p class='score'>Score: {e(score_text(g))}{e(raw)}</p>")
    staff = staff_lines(g)
    if staff:
        parts.append("<ul class='staff'>" + "".join(f"<li>{e(what)}" + (f": <q>{e(why)}</q>" if why else "") + "</li>"
                                                   for what, why in staff) + "</ul>")
    if g.hidden_note:
        parts.append(f"<p class='pending'>Hidden tests: {e(g.hidden_note)}</p>")
    if g.pending:
        parts.append(f"<p class='pending'>{g.pending} GPU test(s) pending: graded on a GPU machine later.</p>")
    if g.needs_manual:
        parts.append(f"<p class='pending'>Needs manual grading: {e(', '.join(g.needs_manual))}</p>")
    parts.append("<h2>Points per task</h2><table><tr><th>task</th><th>tests passed</th><th>points</th></tr>")
    for t in tasks(g):
        parts.append(f"<tr><td>{e(t['task'])}</td><td>{t['passed']}/{t['tests']}</td>"
                     f"<td>{_fmt(t['points'])} / {_fmt(t['max_points'])}</td></tr>")
    for m in g.manual:
        score = "needs manual grading" if m["score"] is None else f"{_fmt(m['score'])} / {_fmt(m['max_score'])}"
        parts.append(f"<tr><td>written: {e(m['item'])}</td><td>—</td><td>{e(score)}</td></tr>")
    parts.append("</table><h2>Public tests that did not pass</h2>")
    failures = [r for r in g.results if not r.hidden and r.outcome not in ("passed", "pending")]
    if not failures:
        parts.append("<p class='passed'>All public tests passed.</p>")
    for r in failures:
        where = f" at <code>{e(r.location)}</code>" if r.location else ""
        parts.append(f"<h3><code>{e(r.name)}</code> <span class='{e(r.outcome)}'>{e(r.outcome)}</span></h3>"
                     f"<p>task {e(str(r.task))}{where}</p><pre>{e(r.message or r.outcome)}</pre>")
        if getattr(r, "diagnosis", ""):
            parts.append(f"<p class='cause'>Likely cause: {e(r.diagnosis)}</p>")
    hidden = hidden_by_task(g)
    if hidden:
        parts.append(f"<h2>Hidden tests</h2><p>{e(_hidden_header(g))}</p>")
        for task, rows in hidden:
            parts.append(f"<h3>{e(_task_heading(task))}</h3><table><tr><th>test</th><th>outcome</th><th>points</th></tr>")
            label = _labels(rows)
            for r in rows:
                cause = getattr(r, "diagnosis", "") if r.outcome not in ("passed", "pending") else ""
                parts.append(f"<tr><td><code>{e(label[id(r)])}</code>"
                             + (f"<div class='cause'>{e(cause)}</div>" if cause else "")
                             + f"</td><td class='{e(r.outcome)}'>{e(r.outcome)}</td>"
                             f"<td>{_fmt(r.points)} / {_fmt(r.max_points)}</td></tr>")
            parts.append("</table>")
    parts.append("</body></html>")
    return "".join(parts)


def write_feedback(graded: Iterable[Graded], folder: Path, course: Course | None = None) -> list[Path]:
    written = []
    for g in graded:
        target = folder / g.slug
        target.mkdir(parents=True, exist_ok=True)
        md, page = target / f"{g.student}.md", target / f"{g.student}.html"
        md.write_text(feedback_markdown(g, course), encoding="utf-8")
        page.write_text(feedback_html(g, course), encoding="utf-8")
        written += [md, page]
    return written


# ------------------------------------------------------------------ exports

def csv_export(graded: Sequence[Graded], slugs: Sequence[str], missing: str = "zero",
               now: dt.datetime | None = None) -> str:
    """One row per student: score after penalty per assignment, ``_raw``, ``_late_hours``, and the total.

    Scores come from :func:`final_score`: blank for "not due yet / not collected / not graded",
    0 for a missing submission only when the ``missing`` policy says so.
    """
    by_student: dict[str, dict[str, Graded]] = {}
    for g in graded:
        by_student.setdefault(g.student, {})[g.slug] = g
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    header = ["student_id"]
    for slug in slugs:
        header += [slug, f"{slug}_raw", f"{slug}_late_hours", f"{slug}_provisional"]
    writer.writerow(header + ["total"])
    for student in sorted(by_student):
        row: list[Any] = [textsafe.csv_cell(student)]
        total = 0.0
        for slug in slugs:
            g = by_student[student].get(slug)
            score = final_score(g, missing, now) if g else None
            submitted = g is not None and g.status not in ("missing",)
            row += ["" if score is None else _fmt(score), _fmt(g.raw) if submitted and g.status == "graded" else "",
                    g.late_hours if submitted else "", provisional(g) if g is not None else ""]
            total += score or 0.0
        writer.writerow(row + [_fmt(round(total, 4))])
    return buf.getvalue()


def gradescope_results(g: Graded) -> dict[str, Any]:
    """Gradescope's results.json for one submission (its exact field names)."""
    tests = []
    for r in g.results:
        status = "passed" if r.outcome == "passed" else "failed"
        tests.append({
            "name": textsafe.clean(r.name, 500),
            "score": round(r.points, 4),
            "max_score": round(r.max_points, 4),
            "status": status,
            "output": "" if r.hidden else (textsafe.clean(r.message) if r.outcome != "passed" else ""),
            "visibility": "after_published" if r.hidden else "visible",
            "tags": [f"task {r.task}"] + (["pending"] if r.outcome == "pending" else []) + [r.outcome],
        })
    summary = [f"{g.title}: {score_text(g)}"]
    if g.penalty and not g.score_withheld:
        summary.append(f"late: {_lateness(g, None)}")
    summary += [what + (f": {textsafe.one_line(why)}" if why else "") for what, why in staff_lines(g)]
    if g.hidden_note:
        summary.append(f"Hidden tests: {g.hidden_note}")
    if g.pending:
        summary.append(f"{g.pending} GPU test(s) pending")
    return {
        "score": round(g.public_points[0] if g.score_withheld else g.final, 4),
        "execution_time": round(g.duration, 3),
        "output": "\n".join(summary),
        "output_format": "text",
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": tests,
    }


def junit_xml(graded: Sequence[Graded]) -> str:
    root = ET.Element("testsuites")
    for g in graded:
        if g.status != "graded":
            continue
        failures = sum(1 for r in g.results if r.outcome == "failed")
        errors = sum(1 for r in g.results if r.outcome in ("error", "timeout"))
        skipped = sum(1 for r in g.results if r.outcome in ("pending", "skipped"))
        x = textsafe.xml_text
        suite = ET.SubElement(root, "testsuite", name=x(f"{g.student}/{g.slug}"), tests=str(len(g.results)),
                              failures=str(failures), errors=str(errors), skipped=str(skipped),
                              time=f"{sum(r.duration for r in g.results):.3f}")
        for r in g.results:
            case = ET.SubElement(suite, "testcase", classname=f"{g.slug}.{'hidden' if r.hidden else 'public'}",
                                 name=x(r.name), time=f"{r.duration:.3f}")
            ET.SubElement(case, "properties").extend([
                ET.Element("property", name="task", value=x(r.task)),
                ET.Element("property", name="points", value=f"{r.points}/{r.max_points}")])
            message = HIDDEN_FAILED if r.hidden else (x(r.message).split("\n")[0] if r.message else r.outcome)
            if r.outcome == "failed":
                el = ET.SubElement(case, "failure", message=message[:500])
                el.text = "" if r.hidden else x(r.message)
            elif r.outcome in ("error", "timeout"):
                el = ET.SubElement(case, "error", message=f"{r.outcome}: {message}"[:500])
                el.text = "" if r.hidden else x(r.message)
            elif r.outcome in ("pending", "skipped"):
                ET.SubElement(case, "skipped", message=r.outcome if r.hidden else x(r.message or r.outcome)[:500])
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def ci_summary(g: Graded) -> str:
    """Markdown for ``$GITHUB_STEP_SUMMARY``: points per task, public failures, hidden by name and outcome."""
    lines = [f"## {textsafe.one_line(g.title)}: {score_text(g)}", ""]
    if g.hidden_note:
        lines += [f"Hidden tests: {textsafe.one_line(g.hidden_note)}", ""]
    lines += ["| task | tests passed | points |", "| --- | --- | --- |"]
    for t in tasks(g):
        lines.append(f"| {t['task']} | {t['passed']}/{t['tests']} | {_fmt(t['points'])} / {_fmt(t['max_points'])} |")
    failures = [r for r in g.results if not r.hidden and r.outcome not in ("passed", "pending")]
    if failures:
        lines += ["", "### Public tests that did not pass", ""]
        for r in failures:
            lines += [f"- {_span(r.name)} ({r.outcome})" + (f" at {_span(r.location)}" if r.location else ""), "",
                      *_code_block(r.message or "", 20)]
    hidden = [r for r in g.results if r.hidden]
    if hidden:
        lines += ["", "### Hidden tests", "", _hidden_header(g), "", "| test | outcome |", "| --- | --- |"]
        lines += [f"| {_cell(r.name)} | {r.outcome} |" for r in hidden]
    return "\n".join(lines) + "\n"


def github_annotations(g: Graded, prefix: str = "") -> list[str]:
    """``::error file=...,line=...::message`` for failing public tests that point into a student's file."""
    out = []
    for r in g.results:
        if r.hidden or r.outcome in ("passed", "pending") or not r.location or ":" not in r.location:
            continue
        file, _, line = textsafe.clean(r.location, 500).rpartition(":")
        first = textsafe.clean(r.message, 2000).split("\n")[0] if r.message else r.outcome
        msg = first.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
        path = f"{prefix.rstrip('/')}/{file}" if prefix else file
        line = line if line.isdigit() else "1"
        out.append(f"::error file={_command_property(path)},line={line},title={_command_property(textsafe.clean(r.name, 500))}::{msg}")
    return out


def _command_property(value: str) -> str:
    """A workflow-command property value (as @actions/core escapes it): no line break, ':' or ','."""
    return (value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
            .replace(":", "%3A").replace(",", "%2C"))


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")

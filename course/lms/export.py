"""Grades back into the LMS: Canvas's gradebook import, Moodle's worksheet and feedback zip,
a Gradescope-style scores CSV. Every score comes from :func:`course.report.final_score`, the
function the CSV export uses, so the files agree to the cent; every active roster student is
listed, and a student with no submission gets the course's ``missing:`` policy.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Sequence

from course import report
from course import roster as roster_mod
from course.config import Course
from course.errors import CourseError
from course.lms import canvas, gradescope, moodle
from course.report import Graded, final_score


def _students(course: Course, graded: Sequence[Graded], fmt: str) -> list[roster_mod.Student]:
    roster = roster_mod.load(course.paths.roster)
    if not len(roster):
        raise CourseError(f"--format {fmt} needs a roster ({course.paths.roster}) that maps students to the LMS: "
                          f"course roster import FILE --from {fmt.split('-')[0]}")
    return roster.active


def export(course: Course, fmt: str, graded: Sequence[Graded], slugs: Sequence[str], base: Path, *,
           worksheet: Path | None = None, now: dt.datetime | None = None) -> list[Path]:
    by = {(g.student, g.slug): g for g in graded}

    def score(student: str, slug: str) -> float | None:
        g = by.get((student, slug))
        return final_score(g, course.missing, now) if g else None

    students = _students(course, graded, fmt)
    if fmt == "canvas":
        rows = [(s, {slug: score(s.id, slug) for slug in slugs}) for s in students]
        path = base if base.suffix == ".csv" else base / "canvas-grades.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(canvas.gradebook_csv(course, rows, slugs), encoding="utf-8")
        return [path]
    if fmt == "gradescope-csv":
        written = []
        for slug in slugs:
            a = course.assignment(slug)
            rows = []
            for s in students:
                g = by.get((s.id, slug))
                value = score(s.id, slug)
                status = "Graded" if g and g.status == "graded" else ("Missing" if value == 0.0 else "")
                rows.append((s, value, a.points, g.late_by if g else 0.0, status))
            path = base / f"gradescope-{slug}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(gradescope.scores_csv(rows), encoding="utf-8")
            written.append(path)
        return written
    if fmt == "moodle":
        if worksheet is not None and len(slugs) != 1:
            raise CourseError("--worksheet is one assignment's: pass --assignment SLUG with it")
        written = []
        for slug in slugs:
            sheet = worksheet or moodle.worksheet_path(course, slug)
            if not Path(sheet).is_file():
                raise CourseError(f"{slug}: no Moodle grading worksheet ({sheet}); pass --worksheet FILE or collect "
                                  "with --from moodle --worksheet FILE first")
            written += _moodle(course, slug, Path(sheet), students, by, score, base)
        return written
    raise CourseError(f"--format {fmt!r}: use canvas, moodle or gradescope-csv")


def _moodle(course: Course, slug: str, sheet: Path, students: Sequence[roster_mod.Student],
            by: dict[tuple[str, str], Graded], score: Any, base: Path) -> list[Path]:
    rows = moodle.participants(sheet)
    header, _ = moodle.read_worksheet(sheet)
    email_col = moodle._column(header, moodle.EMAIL_COLUMNS)
    name_col = moodle._column(header, moodle.NAME_COLUMNS)
    by_email = {s.email.strip().lower(): s for s in students if s.email}
    scores: dict[str, tuple[float | None, str]] = {}
    pages = []
    a = course.assignment(slug)
    for pid, row in rows.items():
        student = by_email.get((row.get(email_col or "", "") or "").strip().lower())
        if student is None:
            continue
        value = score(student.id, slug)
        g = by.get((student.id, slug))
        text = ("" if value is None else f"{value:.2f} / {a.points:g} points"
                + (f" after a late penalty of {g.penalty * 100:.0f} %" if g and g.penalty and g.status == "graded" else "")
                + (f"; provisional: {report.provisional(g)}" if g and report.provisional(g) else "")
                + ("; see feedback.html" if g and g.status == "graded" else ""))
        scores[pid] = (value, moodle.comment(text))
        if g is not None and g.status == "graded":
            from course import api
            pages.append((row.get(name_col or "", "") or student.name or student.id, pid,
                          report.feedback_html(api.student_view(course, g), course)))
    text, _ = moodle.filled_worksheet(sheet, scores, str(sheet))
    folder = base / "moodle"
    folder.mkdir(parents=True, exist_ok=True)
    csv_path = folder / f"{slug}-grading-worksheet.csv"
    csv_path.write_text(text, encoding="utf-8")
    zip_path = moodle.feedback_zip(pages, folder / f"{slug}-feedback-files.zip")
    return [csv_path, zip_path]


def warnings(course: Course, graded: Sequence[Graded], slugs: Sequence[str], fmt: str) -> list[str]:
    """What an instructor must know before uploading: unknown times, students the LMS cannot take."""
    out = []
    for g in graded:
        if g.time_unknown:
            out.append(f"{g.student}/{g.slug}: late per the LMS, time unknown: blank until you set it "
                       f"(course collect ... --student {g.student} --submitted-at TIME)")
        elif g.status in ("not graded", "error"):
            out.append(f"{g.student}/{g.slug}: {g.status}: blank in the export")
        elif report.provisional(g):
            out.append(f"{g.student}/{g.slug}: provisional score ({report.provisional(g)}): it rises when they are graded")
    roster = roster_mod.load(course.paths.roster)
    if len(roster):
        on = set(roster.ids)
        off = sorted({g.student for g in graded if g.student not in on and g.status != "missing"})
        if off and fmt in ("canvas", "moodle", "gradescope-csv"):
            out.append(f"not on the roster, so not in the {fmt} file: {', '.join(off)}")
        if fmt == "canvas":
            nokey = [s.id for s in roster.active if not (s.keys.get("canvas_id") or s.keys.get("sis_user_id")
                                                         or s.keys.get("sis_login_id"))]
            if nokey:
                out.append(f"no Canvas id or SIS id (Canvas will match them by name only): {', '.join(nokey)}")
        if fmt == "moodle":
            noemail = [s.id for s in roster.active if not s.email]
            if noemail:
                out.append(f"no email on the roster (Moodle's worksheet is matched by email): {', '.join(noemail)}")
    return out

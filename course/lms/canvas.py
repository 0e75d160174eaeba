"""Canvas: "Download Submissions" zips, submission times from the API, the gradebook CSV import.

* Download Submissions names each file ``<name>[_LATE]_<user id>_<attachment id>_<file name>``
  (``<name>[_LATE]_<user id>_text.html`` / ``_link.html`` for text and URL entries; ``anon_<id>``
  for the user id under anonymous grading), where ``<name>`` is the student's sortable name in
  lower case with everything but word characters removed, and LATE marks a submission Canvas
  counts as late (canvas-lms lib/content_zipper.rb). A re-upload of a file of the same name is
  named ``<file>-1.<ext>`` by Canvas; collect maps it back to the module name with a note.
* The zip holds no times. ``course lms fetch canvas`` saves Canvas's record of each submission
  (``submitted_at``, ``late``, ``attempt``; the Submissions API) to a JSON file that ``course
  collect --from canvas --times FILE`` uses: ``lms-record``. Without it, the LATE marker is all
  there is: a LATE file is recorded ``lms-late-flag`` (late, time unknown: exports leave the score
  blank until the instructor gives the time with ``--submitted-at``), a file without it
  ``lms-on-time-flag``.
* The gradebook import (canvas-lms app/models/gradebook_importer.rb) reads a header row starting
  ``Student,ID`` whose student columns end with ``Section`` (``SIS User ID``, ``SIS Login ID`` and
  ``Integration ID`` between), a ``Points Possible`` row, and one column per assignment named
  ``<title> (<assignment id>)``; it finds each student by ID, then SIS User ID, then SIS Login ID,
  then name. A blank cell changes nothing.
"""

from __future__ import annotations

from course import textsafe

import csv
import datetime as dt
import io
import json
import re
from pathlib import Path
from typing import Any, Sequence

from course.collect import CollectReport, Entry, Options, _open_zip, _zip_name
from course.config import Course
from course.errors import CollectError, CourseError
from course.lms import id_from, map_student
from course.roster import Person, Roster, RosterError, read_rows

FILE_RE = re.compile(r"^(?P<name>.*?)(?P<late>_LATE)?_(?P<uid>\d+|anon_[A-Za-z0-9]+)_(?P<att>\d+)_(?P<file>.+)$")
TEXT_RE = re.compile(r"^(?P<name>.*?)(?P<late>_LATE)?_(?P<uid>\d+|anon_[A-Za-z0-9]+)_(?P<file>text\.html|link\.html)$")
MAX_TIMES_BYTES = 64 * 2**20
IDENTITY = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]
POINTS_POSSIBLE = "    Points Possible"


# ------------------------------------------------------------------ Download Submissions

def parse_name(name: str) -> dict[str, str] | None:
    m = FILE_RE.match(name) or TEXT_RE.match(name)
    return m.groupdict() if m else None


def load_times(path: Path | None) -> dict[str, dict[str, Any]]:
    """Canvas user id -> its submission record, from ``course lms fetch canvas``'s JSON."""
    if path is None:
        return {}
    path = Path(path)
    if path.stat().st_size > MAX_TIMES_BYTES:
        raise CollectError(f"{path}: larger than {MAX_TIMES_BYTES} bytes")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        records = data["submissions"] if isinstance(data, dict) else data
        return {str(r["user_id"]): r for r in records}
    except (ValueError, KeyError, TypeError) as exc:
        raise CollectError(f"{path}: not a submissions file from `course lms fetch canvas` ({exc})") from None


def _record_time(record: dict[str, Any], who: str) -> dt.datetime | None:
    value = record.get("submitted_at")
    if not value:
        return None
    try:
        when = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise CollectError(f"{who}: Canvas's submitted_at {value!r} is not an ISO 8601 time") from None
    if when.tzinfo is None:
        raise CollectError(f"{who}: Canvas's submitted_at {value!r} has no time zone")
    return when


def entries(course: Course, source: Path, slug: str, roster: Roster, opts: Options,
            report: CollectReport) -> list[Entry]:
    if not Path(source).is_file():
        raise CollectError(f"{source}: --from canvas reads the zip from Canvas's Download Submissions")
    times = load_times(opts.times)
    by_user: dict[str, dict[str, Any]] = {}
    out: list[Entry] = []
    with _open_zip(Path(source), str(source)) as zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        names = []
        for info in infos:
            try:
                names.append((info, _zip_name(info, str(source))))
            except CollectError as exc:
                out.append(Entry(info.filename.encode("cp437", "replace").decode("ascii", "replace")[:60], "refused",
                                 str(exc), str(source)))
        prefix = _wrapper_prefix([n for _, n in names])
        if prefix:
            report.notes.append(f"{Path(source).name}: the wrapper folder {prefix.rstrip('/')!r} was stripped")
        for info, name in names:
            rel = name[len(prefix):] if prefix and name.startswith(prefix) else name
            if "/" in rel.replace("\\", "/"):
                out.append(Entry(rel.split("/")[0][:60] or "?", "refused",
                                 f"{source}: {name!r} is in a folder; Canvas's Download Submissions is flat", str(source)))
                continue
            if rel.startswith(".") or rel in ("__MACOSX",):
                continue
            parsed = parse_name(rel)
            if parsed is None:
                out.append(Entry(rel[:60], "refused", f"{source}: {rel!r} does not follow Canvas's file naming "
                                 "(<name>[_LATE]_<user id>_<attachment id>_<file>)", str(source)))
                continue
            slot = by_user.setdefault(parsed["uid"], {"name": parsed["name"], "late": False, "files": []})
            slot["late"] |= bool(parsed["late"])
            slot["files"].append((info, parsed["file"]))
    for uid, slot in sorted(by_user.items()):
        who = f"{Path(source).name}: Canvas user {uid} ({slot['name']})"
        if uid.startswith("anon_"):
            out.append(Entry(uid, "refused", f"{who}: anonymous grading hides who submitted; turn it off (or post the "
                             "grades) before downloading", who))
            continue
        try:
            sid, note = map_student(roster, [("canvas_id", uid)], slot["name"], who)
        except (RosterError, CollectError) as exc:
            out.append(Entry(slot["name"] or uid, "refused", str(exc), who))
            continue
        who = f"{Path(source).name}: student {sid} (Canvas user {uid})"
        entry = Entry(sid, "renamed-members", (Path(source), slot["files"]), who)
        record = times.get(uid)
        when = _record_time(record, who) if record else None
        if when is not None:
            entry.submitted_at, entry.time_source = when, "lms-record"
            if bool(record.get("late")) != slot["late"]:
                entry.notes.append(f"Canvas's record says late={bool(record.get('late'))} but the file name "
                                   f"{'has' if slot['late'] else 'has no'} LATE marker (the record's time is used)")
        else:
            due = course.due_for(sid, slug)
            entry.submitted_at = due
            if slot["late"]:
                entry.time_source = "lms-late-flag"
                entry.notes.append("Canvas marked it LATE but gave no time (fetch the times with `course lms fetch "
                                   "canvas`, or set it with --submitted-at): late, time unknown")
            else:
                entry.time_source = "lms-on-time-flag"
                entry.notes.append("Canvas did not mark it late; no exact time (fetch the times with `course lms "
                                   "fetch canvas` to have them)")
        out.append(entry)
    return out


def _wrapper_prefix(names: Sequence[str]) -> str:
    """A single folder around Canvas's flat files (the zip re-packed after unpacking it)."""
    tops = {n.replace("\\", "/").split("/")[0] for n in names if "/" in n.replace("\\", "/")}
    flat = [n for n in names if "/" not in n.replace("\\", "/")]
    if len(tops) == 1 and not flat:
        top = next(iter(tops))
        inner = [n.replace("\\", "/")[len(top) + 1:] for n in names]
        if inner and all("/" not in n and parse_name(n) for n in inner if n and not n.startswith(".")):
            return top + "/"
    return ""


# ------------------------------------------------------------------ roster (the gradebook export)

def people(path: Path) -> list[Person]:
    """Students of a Canvas gradebook export (Student, ID, SIS User ID, SIS Login ID, Section)."""
    rows = read_rows(path)
    out = []
    for line, row in rows:
        if "Student" not in row or "ID" not in row:
            raise RosterError(f"{path}: not a Canvas gradebook export (no Student and ID columns)")
        name = row.get("Student", "")
        if name.strip() in ("Points Possible", "Student, Test") or not row.get("ID"):
            continue
        keys = {"canvas_id": row.get("ID", ""), "sis_user_id": row.get("SIS User ID", ""),
                "sis_login_id": row.get("SIS Login ID", "")}
        if not keys["canvas_id"].isdigit():
            raise RosterError(f"{path}:{line}: ID {keys['canvas_id']!r} is not a Canvas user id")
        out.append(Person(name=name, section=row.get("Section", ""), keys={k: v for k, v in keys.items() if v},
                          suggested_id=keys["sis_login_id"] or keys["sis_user_id"] or id_from(name), line=line))
    return out


# ------------------------------------------------------------------ the API (canvasapi)

def fetch(url: str, token: str, course_id: int, assignment_id: int, out: Path) -> dict[str, Any]:
    """Canvas's record of every submission of one assignment (and its students), saved as JSON."""
    try:
        from canvasapi import Canvas
        from canvasapi.exceptions import CanvasException
    except ImportError:
        raise CourseError("course lms fetch canvas needs canvasapi: pip install 'course[lms]'") from None
    try:
        canvas = Canvas(url, token)
        course = canvas.get_course(course_id)
        assignment = course.get_assignment(assignment_id)
        submissions = [{"user_id": s.user_id, "submitted_at": getattr(s, "submitted_at", None),
                        "late": bool(getattr(s, "late", False)), "attempt": getattr(s, "attempt", None),
                        "workflow_state": getattr(s, "workflow_state", None),
                        "seconds_late": getattr(s, "seconds_late", None)}
                       for s in assignment.get_submissions()]
        students = [{"id": u.id, "name": getattr(u, "name", ""), "sortable_name": getattr(u, "sortable_name", ""),
                     "sis_user_id": getattr(u, "sis_user_id", None), "login_id": getattr(u, "login_id", None),
                     "email": getattr(u, "email", None)}
                    for u in course.get_users(enrollment_type=["student"])]
    except CanvasException as exc:
        raise CourseError(f"{url}: Canvas refused the request ({exc})") from None
    except (OSError, ValueError) as exc:
        raise CourseError(f"{url}: cannot reach Canvas ({exc})") from None
    data = {"source": "canvas", "url": url, "course_id": course_id, "assignment_id": assignment_id,
            "fetched_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "assignment": {"name": getattr(assignment, "name", ""), "due_at": getattr(assignment, "due_at", None),
                           "points_possible": getattr(assignment, "points_possible", None)},
            "submissions": submissions, "students": students}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(data, indent=1), encoding="utf-8")
    return data


# ------------------------------------------------------------------ the gradebook import

def gradebook_csv(course: Course, rows: Sequence[tuple[Any, dict[str, float | None]]], slugs: Sequence[str]) -> str:
    """A CSV for Canvas's Grades > Import: identity columns, a Points Possible row, one column per assignment.

    ``rows``: (roster student, {slug: score or None}); None writes a blank cell (Canvas leaves it alone).
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    titles = []
    for slug in slugs:
        a = course.assignment(slug)
        titles.append(f"{a.title} ({a.canvas_id})" if a.canvas_id else a.title)
    writer.writerow(IDENTITY + titles)
    writer.writerow([POINTS_POSSIBLE, "", "", "", ""] + [_number(course.assignment(s).points) for s in slugs])
    for student, scores in rows:
        writer.writerow([_cell(student.name or student.id), student.keys.get("canvas_id", ""),
                         _cell(student.keys.get("sis_user_id", "")), _cell(student.keys.get("sis_login_id", "")),
                         _cell(student.section)] + ["" if scores.get(s) is None else _number(scores[s]) for s in slugs])
    return buf.getvalue()


def _number(x: float) -> str:
    return f"{x:.2f}"


def _cell(text: str) -> str:
    """Spreadsheet formula injection: a cell starting with = + - @ is read as text."""
    return textsafe.csv_cell(text)

"""The LMSs' own import rules, re-stated in Python, to parse our exports back as the LMS would.

* Canvas, Grades > Import (canvas-lms app/models/gradebook_importer.rb): ``;`` or ``,`` chosen by
  consistent field counts over the first lines; the header row must start with a column that
  includes "Student" and one that includes "ID"; the student columns are Student, ID and then
  ``SIS User ID``/``SIS Login ID`` (``Integration ID``, ``Root Account`` may follow) and must end
  with one that includes "Section"; "Current Score"-like columns are not assignments; an assignment
  column is ``<title> (<id>)`` or a title; a first cell including "Points Possible" is not a
  student; a student is found by ID, else SIS User ID, else SIS Login ID, else name; numbers may
  use a decimal comma; a blank or "-" cell is no score.
* Moodle, Upload grading worksheet (mod/assign/feedback/offline/importgradeslib.php, locallib.php):
  columns Identifier, Grade and Last modified (grade) are required; Identifier is "Participant N";
  a blank grade or one below 0 or above the maximum is skipped; the feedback column is matched by
  its header ("Feedback comments").
* Moodle, Upload multiple feedback files in a zip (mod/assign/feedback/file/importziplib.php):
  each path part is split on "_" (at most 5 pieces); one with >= 4 pieces whose second is a number
  names that participant, the third and fourth the plugin; the rest is the file name.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile

NON_ASSIGNMENT = ("Current Score", "Current Points", "Current Grade", "Final Score", "Final Points", "Final Grade",
                  "Override Score", "Override Grade", "Override Status")


def _canvas_delimiter(text: str) -> str:
    lines = text.splitlines()[:3]
    counts = {}
    for sep in (";", ","):
        sizes = {len(next(csv.reader([ln], delimiter=sep))) for ln in lines}
        counts[sep] = next(iter(sizes)) if len(sizes) == 1 else 0
    return ";" if counts[";"] > counts[","] else ","


def _canvas_number(field: str) -> str:
    if re.match(r"^-?[0-9.,]+%?$", field):
        parts = re.split(r"[,.]", field)
        last = parts.pop()
        return last if not parts else "".join(parts) + "." + last
    return field


def canvas_import(text: str, students: list[dict], assignments: dict[int, str]) -> dict:
    """What Canvas would import: {"points": {assignment: points}, "grades": {canvas user id: {assignment id: grade}}}.

    ``students``: Canvas's students (id, name, sortable_name, sis_user_id, login_id);
    ``assignments``: Canvas's assignment id -> title.
    """
    rows = list(csv.reader(io.StringIO(text), delimiter=_canvas_delimiter(text)))
    header = rows[0]
    assert len(header) > 3 and "Student" in header[0] and "ID" in header[1], "Invalid header row"
    columns = 3
    sis_user = sis_login = None
    if re.search(r"SIS\s+Login\s+ID", header[2]):
        sis_login, columns = 2, 4
    elif re.search(r"SIS\s+User\s+ID", header[2]) and re.search(r"SIS\s+Login\s+ID", header[3]):
        extra = 1 if re.search(r"Integration\s+ID", header[4]) else 0
        sis_user, sis_login, columns = 2, 3, 5 + extra
    assert "Section" in header[columns - 1], "Invalid header row"
    by_title = {t: i for i, t in assignments.items()}
    index = {}
    for pos, name in enumerate(header):
        if pos < columns or any(word in name for word in NON_ASSIGNMENT):
            continue
        m = re.match(r"\A(.*)\s\((\d+)\)\Z", name)
        aid = int(m.group(2)) if m and int(m.group(2)) in assignments else by_title.get(name)
        assert aid is not None, f"{name!r} would create a new assignment"
        index[aid] = pos
    out = {"points": {}, "grades": {}}
    for row in rows[1:]:
        if not row or all(not c.strip() for c in row):
            continue
        if "Points Possible" in row[0]:
            out["points"] = {aid: float(_canvas_number(row[pos])) for aid, pos in index.items() if row[pos]}
            continue
        student = next((s for s in students if row[1] and str(s["id"]) == row[1].strip()), None)
        if student is None and sis_user is not None and row[sis_user]:
            student = next((s for s in students if s.get("sis_user_id") == row[sis_user]), None)
        if student is None and sis_login is not None and row[sis_login]:
            student = next((s for s in students if s.get("login_id") == row[sis_login]), None)
        if student is None:
            student = next((s for s in students if row[0] in (s["name"], s["sortable_name"])), None)
        assert student is not None, f"{row[:2]} would be a new student Canvas does not know"
        grades = {}
        for aid, pos in index.items():
            cell = _canvas_number((row[pos] if pos < len(row) else "").strip())
            grades[aid] = None if cell in ("", "-") else float(cell)
        out["grades"][student["id"]] = grades
    return out


def moodle_worksheet_import(text: str, max_grade: float) -> dict[str, tuple[float | None, str]]:
    """participant id -> (grade that Moodle would set or None when skipped, feedback comments)."""
    rows = list(csv.reader(io.StringIO(text)))
    header = rows[0]
    for required in ("Identifier", "Grade", "Last modified (grade)"):
        assert required in header, f"invalidgradeimport: no {required} column"
    idx = {h: i for i, h in enumerate(header)}
    out = {}
    for row in rows[1:]:
        pid = row[idx["Identifier"]][len("Participant "):]
        raw = row[idx["Grade"]].strip().replace(",", ".")
        grade = None
        if raw != "":
            value = float(raw)
            grade = None if value < 0 or value > max_grade else value
        out[pid] = (grade, row[idx["Feedback comments"]] if "Feedback comments" in idx else "")
    return out


def moodle_feedback_zip(data: bytes, participants: set[str]) -> dict[str, list[str]]:
    """participant id -> feedback file names, as importziplib.php would file them."""
    out: dict[str, list[str]] = {}
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for info in zf.infolist():
            if info.is_dir() or info.filename.split("/")[-1].startswith((".", "~")):
                continue
            parts = info.filename.split("/")
            while parts:
                info5 = parts.pop(0).split("_", 4)
                if len(info5) < 4 or not info5[1].isdigit() or info5[1].lstrip("0") not in participants:
                    continue
                assert (info5[2], info5[3]) in (("assignfeedback", "file"), ("assignsubmission", "file"))
                rest = [info5[4] if len(info5) > 4 else "", *parts]
                out.setdefault(info5[1], []).append("/".join(rest))
                break
    return out

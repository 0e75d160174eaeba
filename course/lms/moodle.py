"""Moodle: "Download all submissions", the offline grading worksheet, and the feedback-files zip.

* Download all submissions (mod/assign) puts each participant's files in a folder
  ``<Full Name>_<participant id>_assignsubmission_<plugin>_`` (Moodle 4.1 and later drop the last
  ``_``; with "Download submissions in folders" off the files are flat,
  ``<Full Name>_<participant id>_assignsubmission_file_<file>``). The participant id is the
  assignment's own number for the student (assign_user_mapping), the same number as the
  worksheet's ``Identifier`` ("Participant 12345").
* The grading worksheet (assignfeedback_offline, "Download grading worksheet") has one row per
  participant: Identifier, Full name, the identity fields (Email address...), Status, Grade,
  Maximum Grade, Grade can be changed, Last modified (submission), ..., Last modified (grade),
  Feedback comments. "Last modified (submission)" is the time Moodle recorded for the
  submission, written with userdate() in the site's language and time zone (English default
  ``Thursday, 1 October 2026, 11:05 PM``; ``-`` when nothing was submitted): ``worksheet``.
* Upload grading worksheet reads the columns Identifier, Grade and Last modified (grade) (the
  import is refused without them), and each feedback column by its header ("Feedback comments");
  it skips a blank grade and one whose Last modified (grade) is older than the grade in Moodle
  (mod/assign/feedback/offline/importgradeslib.php, locallib.php).
* Upload multiple feedback files in a zip matches each path part ``<name>_<participant id>_<plugin
  type>_<plugin name>_`` and files what follows under that participant
  (mod/assign/feedback/file/importziplib.php): we write ``<name>_<id>_assignfeedback_file_/feedback.html``.
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any, Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from course.collect import CollectReport, Entry, Options, _open_zip, _zip_name
from course.config import Course
from course.errors import CollectError
from course.lms import id_from, map_student
from course.roster import Person, Roster, RosterError, read_rows

FOLDER_RE = re.compile(r"^(?P<name>.+?)_(?P<pid>\d+)_assignsubmission_(?P<plugin>[a-z]+)_?$")
FLAT_RE = re.compile(r"^(?P<name>.+?)_(?P<pid>\d+)_assignsubmission_(?P<plugin>[a-z]+)_(?P<file>.+)$")
PARTICIPANT_RE = re.compile(r"^\D*?(\d+)$")      # "Participant 12345" in any language
# Column names in the languages whose assign strings we know (lastmodifiedsubmission, recordid...).
SUBMITTED_COLUMNS = ("Last modified (submission)", "Zuletzt geändert (Abgabe)", "Última modificación (entrega)",
                     "Dernière modification (travail remis)", "Última modificação (submissão)",
                     "Darrera modificació (tramesa)")
ID_COLUMNS = ("Identifier", "Identifikator", "Identificador", "Identifiant")
EMAIL_COLUMNS = ("Email address", "E-Mail-Adresse", "Dirección de correo", "Adresse de courriel", "Endereço de email")
NAME_COLUMNS = ("Full name", "Vollständiger Name", "Nombre completo", "Nom complet", "Nome completo")
GRADE_COLUMN = "Grade"
FEEDBACK_COLUMN = "Feedback comments"
# userdate()'s default (strftimedaydatetime) in English, and other common site settings.
DATE_FORMATS = ("%A, %d %B %Y, %I:%M %p", "%A, %d %B %Y, %H:%M", "%d %B %Y, %I:%M %p", "%d %B %Y, %H:%M",
                "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%d/%m/%Y, %H:%M")


def _column(header: Sequence[str], names: Sequence[str]) -> str | None:
    return next((h for h in header if h in names), None)


def parse_time(text: str, tz: ZoneInfo, formats: Sequence[str], who: str) -> dt.datetime | None:
    """A worksheet time as an aware datetime; None for '-'; CollectError when it does not parse or
    names a local time that happens twice (or never) in the site's time zone."""
    text = re.sub(r"\s+", " ", text.strip())
    if text in ("", "-"):
        return None
    for fmt in formats:
        try:
            naive = dt.datetime.strptime(text, fmt)
            break
        except ValueError:
            continue
    else:
        raise CollectError(f"{who}: 'Last modified (submission)' {text!r} does not parse (formats tried: "
                           f"{'; '.join(formats)}); pass --date-format for the site's format")
    first, second = naive.replace(tzinfo=tz, fold=0), naive.replace(tzinfo=tz, fold=1)
    if first.utcoffset() != second.utcoffset():
        raise CollectError(f"{who}: {text!r} is ambiguous or does not exist in {tz.key} (a daylight-saving change); "
                           "set this student's time with --student ... --submitted-at")
    return first


def read_worksheet(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    rows = read_rows(path)
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
        header = [h.strip() for h in next(csv.reader(f))]
    if not _column(header, ID_COLUMNS):
        raise CollectError(f"{path}: not a Moodle grading worksheet (no Identifier column)")
    return header, rows


def _timezone(name: str | None, who: str) -> ZoneInfo:
    if not name:
        raise CollectError(f"{who}: Moodle writes times in the site's time zone; pass --timezone (e.g. Europe/Berlin)")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CollectError(f"--timezone {name!r} is not a time zone name (e.g. Europe/Berlin, UTC)") from None


def worksheet_path(course: Course, slug: str) -> Path:
    """Where collect keeps the worksheet it read, for ``course export --format moodle``."""
    return course.paths.root / "lms" / "moodle" / f"{slug}-worksheet.csv"


def entries(course: Course, source: Path, slug: str, roster: Roster, opts: Options,
            report: CollectReport) -> list[Entry]:
    source = Path(source)
    if not source.is_file():
        raise CollectError(f"{source}: --from moodle reads the zip from Moodle's Download all submissions")
    sheet: dict[str, dict[str, str]] = {}
    email_col = time_col = None
    tz = None
    formats = (opts.date_format,) if opts.date_format else DATE_FORMATS
    if opts.worksheet is not None:
        header, rows = read_worksheet(opts.worksheet)
        id_col, email_col = _column(header, ID_COLUMNS), _column(header, EMAIL_COLUMNS)
        time_col = _column(header, SUBMITTED_COLUMNS)
        if time_col is None:
            raise CollectError(f"{opts.worksheet}: no 'Last modified (submission)' column")
        tz = _timezone(opts.timezone, str(opts.worksheet))
        for line, row in rows:
            m = PARTICIPANT_RE.match(row.get(id_col, ""))
            if not m:
                raise CollectError(f"{opts.worksheet}:{line}: Identifier {row.get(id_col)!r} is not 'Participant N'")
            sheet[m.group(1)] = dict(row, _line=str(line))
        target = worksheet_path(course, slug)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(opts.worksheet, target)
    out: list[Entry] = []
    by_pid: dict[str, dict[str, Any]] = {}
    with _open_zip(source, str(source)) as zf:
        names = []
        for info in zf.infolist():
            try:
                names.append((info, _zip_name(info, str(source)).replace("\\", "/")))
            except CollectError as exc:
                out.append(Entry("?", "refused", str(exc), str(source)))
        strip = _wrapper_depth([n for _, n in names])
        if strip:
            report.notes.append(f"{source.name}: the wrapper folder {names[0][1].split('/')[0]!r} was stripped")
        for info, name in names:
            parts = [p for p in name.split("/") if p][strip:]
            if not parts or parts[0] in ("__MACOSX",) or parts[0].startswith("."):
                continue
            if len(parts) == 1 and info.is_dir():
                continue
            m = FOLDER_RE.match(parts[0]) if len(parts) > 1 else None
            flat = FLAT_RE.match(parts[0]) if len(parts) == 1 else None
            if not m and not flat:
                out.append(Entry(parts[0][:60], "refused", f"{source}: {parts[0]!r} does not follow Moodle's naming "
                                 "(<Full Name>_<participant id>_assignsubmission_<plugin>_)", str(source)))
                continue
            g = (m or flat).groupdict()
            slot = by_pid.setdefault(g["pid"], {"name": g["name"], "files": [], "plugins": set()})
            slot["plugins"].add(g["plugin"])
            if info.is_dir():
                continue
            rel = "/".join(parts[1:]) if m else g["file"]
            if g["plugin"] == "onlinetext":
                rel = "onlinetext/" + rel
            slot["files"].append((info, rel))
    for pid, slot in sorted(by_pid.items()):
        who = f"{source.name}: participant {pid} ({slot['name']})"
        row = sheet.get(pid)
        if opts.worksheet is not None and row is None:
            out.append(Entry(id_from(slot["name"]) or pid, "refused",
                             f"{who}: not in the worksheet {opts.worksheet}", who))
            continue
        email = (row or {}).get(email_col or "", "")
        try:
            sid, _ = map_student(roster, [("email", email)], email.split("@")[0] or slot["name"], who)
        except (RosterError, CollectError) as exc:
            out.append(Entry(id_from(slot["name"]) or pid, "refused", str(exc), who))
            continue
        who = f"{source.name}: student {sid} (Moodle participant {pid})"
        entry = Entry(sid, "renamed-members", (source, slot["files"]), who)
        if row is not None:
            try:
                when = parse_time(row.get(time_col, ""), tz, formats, f"{opts.worksheet}:{row['_line']}")
            except CollectError as exc:
                out.append(Entry(sid, "refused", str(exc), who))
                continue
            if when is None:
                out.append(Entry(sid, "refused", f"{who}: the worksheet says nothing was submitted ('-') but the "
                                 "zip has files", who))
                continue
            entry.submitted_at, entry.time_source = when, "worksheet"
            status = row.get("Status", "")
            if "draft" in status.lower():
                entry.notes.append(f"Moodle's status is {status!r}: the student did not submit it for grading")
        out.append(entry)
    return out


def _wrapper_depth(names: Sequence[str]) -> int:
    tops = {n.split("/")[0] for n in names if n}
    if len(tops) == 1:
        top = next(iter(tops))
        if not FOLDER_RE.match(top) and not FLAT_RE.match(top):
            inner = {n.split("/")[1] for n in names if n.count("/") >= 1 and n.split("/")[1]}
            if any(FOLDER_RE.match(i) or FLAT_RE.match(i) for i in inner):
                return 1
    return 0


# ------------------------------------------------------------------ roster

def people(path: Path) -> list[Person]:
    """Students of a Moodle grading worksheet or grades export (Email address; ID number; names)."""
    out = []
    for line, row in read_rows(path):
        email = next((row[c] for c in EMAIL_COLUMNS if row.get(c)), "")
        name = next((row[c] for c in NAME_COLUMNS if row.get(c)), "") or " ".join(
            x for x in (row.get("First name", ""), row.get("Last name", row.get("Surname", ""))) if x)
        if not email:
            raise RosterError(f"{path}:{line}: no Email address (show the email identity field in Moodle's export)")
        number = row.get("ID number", "")
        out.append(Person(name=name, email=email, keys={"moodle_id": number} if number else {},
                          suggested_id=number or email.split("@")[0], line=line))
    return out


# ------------------------------------------------------------------ grades back: worksheet and feedback files

def filled_worksheet(path: Path, scores: dict[str, tuple[float | None, str]], who: str) -> tuple[str, list[str]]:
    """The worksheet with Grade and Feedback comments filled in for Upload grading worksheet.

    ``scores``: participant id -> (grade or None for blank, feedback comment). Returns (CSV text,
    participant ids of the worksheet that got no grade).
    """
    header, rows = read_worksheet(path)
    if GRADE_COLUMN not in header:
        raise CollectError(f"{path}: no Grade column; download the worksheet again")
    if FEEDBACK_COLUMN not in header:
        header = header + [FEEDBACK_COLUMN]
    id_col = _column(header, ID_COLUMNS)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    untouched = []
    for _, row in rows:
        m = PARTICIPANT_RE.match(row.get(id_col, ""))
        pid = m.group(1) if m else ""
        if pid in scores:
            grade, comment = scores[pid]
            row[GRADE_COLUMN] = "" if grade is None else f"{grade:.2f}"
            row[FEEDBACK_COLUMN] = comment
        else:
            untouched.append(pid)
        writer.writerow([row.get(h, "") for h in header])
    return buf.getvalue(), untouched


def participants(path: Path) -> dict[str, dict[str, str]]:
    """participant id -> worksheet row."""
    header, rows = read_worksheet(path)
    id_col = _column(header, ID_COLUMNS)
    out = {}
    for _, row in rows:
        m = PARTICIPANT_RE.match(row.get(id_col, ""))
        if m:
            out[m.group(1)] = row
    return out


def feedback_zip(pages: Sequence[tuple[str, str, str]], out: Path) -> Path:
    """(full name, participant id, HTML) -> the zip for Upload multiple feedback files in a zip."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, pid, page in pages:
            folder = re.sub(r"[_/\\:*?\"<>|\x00-\x1f]+", " ", name).strip() or "student"
            zf.writestr(f"{folder}_{pid}_assignfeedback_file_/feedback.html", page)
    return out


def comment(text: str) -> str:
    """A Feedback comments cell: Moodle stores it as HTML, so it is escaped."""
    return html.escape(text)

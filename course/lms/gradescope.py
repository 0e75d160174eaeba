"""Gradescope: "Export Submissions" zips and a scores CSV.

The export holds ``submission_metadata.yml`` and one folder per submission, ``submission_<id>/``
(often inside one folder named after the assignment). The metadata maps each folder name to a
record whose keys are Ruby symbols: ``:submitters`` (a list of ``:name``, ``:sid``, ``:email``;
several for a group submission), ``:created_at`` (Gradescope's time of the submission:
``lms-record``), ``:score``, ``:history`` (earlier submissions, whose files the export does not
hold). A group submission is collected once and given to every member.

``course export --format gradescope-csv`` writes one CSV per assignment in the layout of
Gradescope's grade export (Name, SID, Email, Total Score, Max Points, Status, Lateness (H:M:S)).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from pathlib import Path
from typing import Any, Sequence

import yaml

from course.collect import CollectReport, Entry, Options, _open_zip, _zip_name
from course.config import Course
from course.errors import CollectError
from course.lms import id_from, map_student
from course.roster import Person, Roster, RosterError, read_rows

METADATA = "submission_metadata.yml"
MAX_METADATA_BYTES = 32 * 2**20
FOLDER_RE = re.compile(r"^submission_\d+$")


def _get(record: dict, key: str) -> Any:
    return record.get(f":{key}", record.get(key))


def _time(value: Any, who: str) -> dt.datetime:
    if isinstance(value, dt.datetime):
        when = value
    else:
        try:
            when = dt.datetime.fromisoformat(str(value).strip().replace(" UTC", "+00:00").replace("Z", "+00:00"))
        except ValueError:
            raise CollectError(f"{who}: created_at {value!r} is not a time") from None
    if when.tzinfo is None:
        raise CollectError(f"{who}: created_at {value!r} has no time zone")
    return when


def entries(course: Course, source: Path, slug: str, roster: Roster, opts: Options,
            report: CollectReport) -> list[Entry]:
    source = Path(source)
    if not source.is_file():
        raise CollectError(f"{source}: --from gradescope reads the zip from Gradescope's Export Submissions")
    out: list[Entry] = []
    with _open_zip(source, str(source)) as zf:
        named = []
        for info in zf.infolist():
            try:
                named.append((info, _zip_name(info, str(source)).replace("\\", "/")))
            except CollectError as exc:
                out.append(Entry("?", "refused", str(exc), str(source)))
        meta = [(i, n) for i, n in named if n.split("/")[-1] == METADATA and n.count("/") <= 1]
        if len(meta) != 1:
            raise CollectError(f"{source}: expected one {METADATA} (found {len(meta)}); is this Gradescope's "
                               "Export Submissions?")
        meta_info, meta_name = meta[0]
        prefix = meta_name[: -len(METADATA)]
        if prefix:
            report.notes.append(f"{source.name}: the wrapper folder {prefix.rstrip('/')!r} was stripped")
        if meta_info.file_size > MAX_METADATA_BYTES:
            raise CollectError(f"{source}: {METADATA} is larger than {MAX_METADATA_BYTES} bytes")
        with zf.open(meta_info) as f:
            raw = f.read(MAX_METADATA_BYTES + 1)
        if len(raw) > MAX_METADATA_BYTES:
            raise CollectError(f"{source}: {METADATA} expands beyond {MAX_METADATA_BYTES} bytes")
        try:
            metadata = yaml.safe_load(raw.decode("utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise CollectError(f"{source}: {METADATA} is not valid YAML ({str(exc)[:200]})") from None
        if not isinstance(metadata, dict):
            raise CollectError(f"{source}: {METADATA} is not a mapping of submission folders")
        folders: dict[str, list[tuple[Any, str]]] = {}
        for info, name in named:
            if not name.startswith(prefix) or info is meta_info:
                continue
            parts = [p for p in name[len(prefix):].split("/") if p]
            if not parts or parts[0] == "__MACOSX":
                continue
            files = folders.setdefault(parts[0], [])
            if len(parts) > 1 and not info.is_dir():
                files.append((info, "/".join(parts[1:])))
    for folder in sorted(set(folders) - {str(k) for k in metadata}):
        out.append(Entry(folder[:60], "refused", f"{source}: {folder!r} has no entry in {METADATA}", str(source)))
    for key, record in sorted(metadata.items(), key=lambda kv: str(kv[0])):
        key = str(key)
        who = f"{source.name}: {key}"
        if key not in folders:
            out.append(Entry(key, "refused", f"{who}: {METADATA} names {key!r}, which is not in the zip", who))
            continue
        if not isinstance(record, dict):
            out.append(Entry(key, "refused", f"{who}: its {METADATA} entry is not a mapping", who))
            continue
        try:
            when = _time(_get(record, "created_at"), who)
        except CollectError as exc:
            out.append(Entry(key, "refused", str(exc), who))
            continue
        submitters = _get(record, "submitters") or []
        members, refused = [], []
        for s in submitters if isinstance(submitters, list) else []:
            s = s if isinstance(s, dict) else {}
            sid, email, name = (str(_get(s, k) or "") for k in ("sid", "email", "name"))
            try:
                members.append(map_student(roster, [("gradescope_sid", sid), ("email", email)],
                                           sid or email.split("@")[0] or name, who)[0])
            except (RosterError, CollectError) as exc:
                refused.append(Entry(id_from(name or sid or email) or key, "refused", str(exc), who))
        out += refused
        if not members:
            if not refused:
                out.append(Entry(key, "refused", f"{who}: no submitters in {METADATA}", who))
            continue
        members = sorted(dict.fromkeys(members))
        owner = members[0]
        entry = Entry(owner, "renamed-members", (source, folders[key]), f"{source.name}: student {owner} ({key})",
                      submitted_at=when, time_source="lms-record")
        if len(members) > 1:
            entry.members, entry.group = tuple(members), key
        history = _get(record, "history") or []
        if history:
            entry.notes.append(f"{len(history)} earlier submission(s) on Gradescope; the export holds the latest")
        out.append(entry)
    return out


def people(path: Path) -> list[Person]:
    """Students of a Gradescope roster export (Name or First/Last Name, SID, Email, Role)."""
    out = []
    for line, row in read_rows(path):
        if row.get("Role", "Student").strip().lower() not in ("student", ""):
            continue
        email = row.get("Email", "")
        name = row.get("Name") or row.get("Full Name") or " ".join(
            x for x in (row.get("First Name", ""), row.get("Last Name", "")) if x)
        if not email:
            raise RosterError(f"{path}:{line}: no Email (Gradescope's roster names each student by email)")
        sid = row.get("SID", "")
        out.append(Person(name=name, email=email, section=row.get("Sections", row.get("Section", "")),
                          keys={"gradescope_sid": sid} if sid else {}, suggested_id=sid or email.split("@")[0],
                          line=line))
    return out


def scores_csv(rows: Sequence[tuple[Any, float | None, float, float, str]]) -> str:
    """(roster student, score or None, max points, late seconds, status) -> Gradescope's grade-export layout."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["Name", "SID", "Email", "Total Score", "Max Points", "Status", "Lateness (H:M:S)"])
    for student, score, max_points, late, status in rows:
        seconds = int(late)
        lateness = f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
        writer.writerow([student.name or student.id, student.keys.get("gradescope_sid", ""), student.email,
                         "" if score is None else f"{score:.2f}", f"{max_points:.2f}",
                         status, lateness])
    return buf.getvalue()

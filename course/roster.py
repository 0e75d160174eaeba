"""The roster: ``roster.csv`` next to course.yml, the course's students and their keys in each LMS.

``id`` is the course's own student id, used everywhere (submitted/<id>/, the gradebook, feedback,
exports); it never changes once given. The LMS keys map an LMS's records to it: ``canvas_id``
(Canvas's user id), ``sis_user_id``, ``sis_login_id``, ``moodle_id`` (Moodle's "ID number"),
``gradescope_sid``, ``github`` (a GitHub user name). ``email`` is a key too (Moodle's worksheet and
Gradescope identify students by it). ``status`` is empty, or ``dropped`` for a student who left
(kept so that ids stay stable and history stays; exports leave dropped students out).

Reading tolerates what spreadsheets write: a UTF-8 byte-order mark, ``;`` or tab delimiters, Excel's
quoting; any other problem is an error naming the file and line. ``groups.yml`` (groups of students,
for the course or per assignment) is read here too.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

from course.errors import ConfigError, CourseError

KEYS = ("canvas_id", "sis_user_id", "sis_login_id", "moodle_id", "gradescope_sid", "github")
COLUMNS = ("id", "name", "email", "section", *KEYS, "status")
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")
MAX_ROSTER_BYTES = 32 * 2**20


class RosterError(CourseError):
    """A roster or group file that cannot be read: names the file, the line and the value."""


@dataclass(frozen=True)
class Student:
    id: str
    name: str = ""
    email: str = ""
    section: str = ""
    keys: Mapping[str, str] = field(default_factory=dict)
    status: str = ""

    def key(self, kind: str) -> str:
        if kind == "email":
            return self.email
        if kind == "id":
            return self.id
        return self.keys.get(kind, "")

    @property
    def active(self) -> bool:
        return self.status != "dropped"


@dataclass(frozen=True)
class Roster:
    students: tuple[Student, ...] = ()
    file: Path | None = None

    def __len__(self) -> int:
        return len(self.students)

    def __iter__(self):
        return iter(self.students)

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.students]

    @property
    def active(self) -> list[Student]:
        return [s for s in self.students if s.active]

    def get(self, student_id: str) -> Student | None:
        return next((s for s in self.students if s.id == student_id), None)

    def lookup(self, kind: str, value: str) -> list[Student]:
        """Every student whose ``kind`` key equals ``value`` (emails compare case-insensitively)."""
        value = _norm_key(kind, value)
        if not value:
            return []
        return [s for s in self.students if _norm_key(kind, s.key(kind)) == value]

    def find(self, kind: str, value: str, who: str) -> Student:
        """The one student with this key, or a :class:`RosterError` saying why not (none, or several)."""
        found = self.lookup(kind, value)
        if not found:
            raise RosterError(f"{who}: {kind} {value!r} is not on the roster ({self.file or 'roster.csv'}); "
                              f"add the student (course roster import) or fix the {kind}")
        if len(found) > 1:
            raise RosterError(f"{who}: {kind} {value!r} belongs to {len(found)} roster rows "
                              f"({', '.join(s.id for s in found)}); one LMS key must name one student")
        return found[0]

    def duplicates(self) -> list[tuple[str, str, list[str]]]:
        """(key, value, student ids) for every LMS key (or email) that more than one row carries."""
        out = []
        for kind in ("email", *KEYS):
            seen: dict[str, list[str]] = {}
            for s in self.students:
                v = _norm_key(kind, s.key(kind))
                if v:
                    seen.setdefault(v, []).append(s.id)
            out += [(kind, v, ids) for v, ids in sorted(seen.items()) if len(ids) > 1]
        return out


def _norm_key(kind: str, value: str | None) -> str:
    value = (value or "").strip()
    return value.lower() if kind in ("email", "github") else value


# ------------------------------------------------------------------ reading CSV as spreadsheets write it

def read_rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) for each data row of a CSV file, header keys stripped.

    A BOM, ``;``/tab/``,`` delimiters and Excel's quoting are accepted; a row with more fields than
    the header, or a file that is not UTF-8 (or Windows-1252, as Excel saves), is an error naming
    the line.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RosterError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(raw) > MAX_ROSTER_BYTES:
        raise RosterError(f"{path}: {len(raw)} bytes is larger than the {MAX_ROSTER_BYTES} byte limit for a CSV")
    text = _decode(raw, path)
    lines = text.splitlines()
    first = next((ln for ln in lines if ln.strip()), "")
    delimiter = max((",", ";", "\t"), key=lambda d: _count_outside_quotes(first, d))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quotechar='"', doublequote=True,
                        strict=True)
    header: list[str] | None = None
    out = []
    try:
        for fields in reader:
            line = reader.line_num
            if not any(f.strip() for f in fields):
                continue
            if header is None:
                header = [h.strip() for h in fields]
                if len(set(header)) != len(header):
                    dup = sorted({h for h in header if header.count(h) > 1})
                    raise RosterError(f"{path}:{line}: the header names {', '.join(map(repr, dup))} twice")
                continue
            if len(fields) > len(header):
                raise RosterError(f"{path}:{line}: {len(fields)} fields but the header has {len(header)} "
                                  f"(delimiter {delimiter!r}; quote fields that contain it)")
            out.append((line, {h: (fields[i].strip() if i < len(fields) else "") for i, h in enumerate(header)}))
    except csv.Error as exc:
        raise RosterError(f"{path}:{reader.line_num}: not valid CSV ({exc})") from None
    if header is None:
        raise RosterError(f"{path}: empty file (expected a header row)")
    return out


def _decode(raw: bytes, path: Path) -> str:
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    elif raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError:
            raise RosterError(f"{path}: starts with a UTF-16 mark but is not UTF-16") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        try:
            return raw.decode("cp1252")
        except UnicodeDecodeError:
            raise RosterError(f"{path}:{line}: not UTF-8 (save the file as CSV UTF-8)") from None


def _count_outside_quotes(line: str, ch: str) -> int:
    n, quoted = 0, False
    for c in line:
        if c == '"':
            quoted = not quoted
        elif c == ch and not quoted:
            n += 1
    return n


# ------------------------------------------------------------------ roster.csv

def load(path: Path | None) -> Roster:
    """roster.csv, or an empty roster when there is none (collect then invents no mapping)."""
    if path is None or not Path(path).is_file():
        return Roster((), Path(path) if path else None)
    students = []
    seen: dict[str, int] = {}
    for line, row in read_rows(path):
        unknown = [k for k in row if k not in COLUMNS]
        if unknown:
            raise RosterError(f"{path}:{line}: unknown column {unknown[0]!r} (columns: {', '.join(COLUMNS)})")
        sid = row.get("id", "")
        if not ID_RE.match(sid):
            raise RosterError(f"{path}:{line}: id {sid!r} is not a usable student id (letters, digits, . _ @ + -)")
        if sid in seen:
            raise RosterError(f"{path}:{line}: id {sid!r} is already on line {seen[sid]}")
        seen[sid] = line
        status = row.get("status", "")
        if status not in ("", "dropped"):
            raise RosterError(f"{path}:{line}: status {status!r} must be empty or 'dropped'")
        students.append(Student(sid, row.get("name", ""), row.get("email", ""), row.get("section", ""),
                                {k: row[k] for k in KEYS if row.get(k)}, status))
    return Roster(tuple(students), Path(path))


def save(roster: Roster, path: Path) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for s in roster.students:
        writer.writerow([s.id, s.name, s.email, s.section, *(s.keys.get(k, "") for k in KEYS), s.status])
    Path(path).write_text(buf.getvalue(), encoding="utf-8")


# ------------------------------------------------------------------ importing an LMS's roster

@dataclass(frozen=True)
class Person:
    """One student as an LMS export describes them (before mapping to a course id)."""

    name: str = ""
    email: str = ""
    section: str = ""
    keys: Mapping[str, str] = field(default_factory=dict)
    suggested_id: str = ""      # what the course id should be for a new student (SIS login, email user...)
    line: int = 0


@dataclass
class ImportReport:
    added: list[str] = field(default_factory=list)
    changed: list[tuple[str, str]] = field(default_factory=list)   # (id, what changed)
    dropped: list[str] = field(default_factory=list)
    unchanged: int = 0


MATCH_ORDER = ("canvas_id", "sis_user_id", "sis_login_id", "moodle_id", "gradescope_sid", "github", "email")


def merge(roster: Roster, people: Sequence[Person], source: str) -> tuple[Roster, ImportReport]:
    """The roster updated from an LMS's list of students: ids stay, new students get new ids.

    A person is matched to a roster row by the first LMS key they share (in MATCH_ORDER); a key
    that two roster rows carry is an error naming both. Students of the roster whom the export no
    longer lists are marked ``dropped`` (never deleted).
    """
    rep = ImportReport()
    students = list(roster.students)
    by_id = {s.id: i for i, s in enumerate(students)}
    matched: set[str] = set()
    for p in people:
        target = None
        for kind in MATCH_ORDER:
            value = p.email if kind == "email" else p.keys.get(kind, "")
            if not value:
                continue
            found = Roster(tuple(students)).lookup(kind, value)
            if len(found) > 1:
                raise RosterError(f"{source}:{p.line}: {kind} {value!r} matches roster rows "
                                  f"{', '.join(s.id for s in found)}; fix roster.csv first")
            if found:
                target = found[0]
                break
        if target is None:
            new_id = _unique_id(p.suggested_id or p.email.split("@")[0] or p.name, set(by_id))
            if not new_id:
                raise RosterError(f"{source}:{p.line}: cannot make a student id for {p.name!r} (no login, "
                                  "email or usable name)")
            student = Student(new_id, p.name, p.email, p.section, dict(p.keys))
            by_id[new_id] = len(students)
            students.append(student)
            rep.added.append(new_id)
            matched.add(new_id)
            continue
        if target.id in matched:
            raise RosterError(f"{source}:{p.line}: {p.name or p.email!r} is the same roster student ({target.id}) "
                              "as an earlier line")
        matched.add(target.id)
        keys = dict(target.keys)
        keys.update({k: v for k, v in p.keys.items() if v})
        updated = replace(target, name=p.name or target.name, email=p.email or target.email,
                          section=p.section or target.section, keys=keys, status="")
        if updated != target:
            what = [f for f in ("name", "email", "section", "keys", "status")
                    if getattr(updated, f) != getattr(target, f)]
            rep.changed.append((target.id, ", ".join(what)))
            students[by_id[target.id]] = updated
        else:
            rep.unchanged += 1
    for i, s in enumerate(students):
        if s.id not in matched and s.active:
            students[i] = replace(s, status="dropped")
            rep.dropped.append(s.id)
    return Roster(tuple(students), roster.file), rep


def _unique_id(raw: str, taken: set[str]) -> str:
    text = unicodedata.normalize("NFKD", raw).encode("ascii", "ignore").decode("ascii")
    base = re.sub(r"[^A-Za-z0-9._@+-]+", ".", text).strip(".-_+@").lower()[:100]
    if not base or not ID_RE.match(base):
        return ""
    candidate, n = base, 2
    while candidate in taken:
        candidate, n = f"{base}{n}", n + 1
    return candidate


# ------------------------------------------------------------------ groups.yml

@dataclass(frozen=True)
class Group:
    name: str
    members: tuple[str, ...]
    assignments: tuple[str, ...] = ()      # empty: every assignment


def load_groups(path: Path, slugs: Iterable[str], known: Iterable[str] = ()) -> tuple[Group, ...]:
    """groups.yml: a list of ``{group, members, assignments?}`` (members are roster ids)."""
    if not Path(path).is_file():
        return ()
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{Path(path).name}: not valid YAML ({exc})") from None
    if data is None:
        return ()
    if isinstance(data, Mapping) and "groups" in data:
        data = data["groups"]
    if not isinstance(data, list):
        raise ConfigError(f"{Path(path).name}: groups: must be a list of {{group, members, assignments}}")
    slugs, known = set(slugs), set(known)
    out: list[Group] = []
    for i, item in enumerate(data):
        key = f"groups[{i}]"
        if not isinstance(item, Mapping) or not {"group", "members"} <= set(item):
            raise ConfigError(f"{Path(path).name}: {key}: {item!r} needs 'group' and 'members'")
        extra = set(item) - {"group", "members", "assignments", "assignment"}
        if extra:
            raise ConfigError(f"{Path(path).name}: {key}.{sorted(extra)[0]}: is not a known key "
                              "(known: assignments, group, members)")
        members = item["members"]
        if not isinstance(members, list) or len(members) < 1 or not all(isinstance(m, str) for m in members):
            raise ConfigError(f"{Path(path).name}: {key}.members: {members!r} must be a list of student ids")
        if known and (unknown := [m for m in members if m not in known]):
            raise ConfigError(f"{Path(path).name}: {key}.members: {unknown[0]!r} is not on the roster")
        assigned = item.get("assignments", item.get("assignment", []))
        assigned = [assigned] if isinstance(assigned, str) else list(assigned or [])
        if bad := [a for a in assigned if a not in slugs]:
            raise ConfigError(f"{Path(path).name}: {key}.assignments: {bad[0]!r} is not an assignment of the course")
        out.append(Group(str(item["group"]), tuple(members), tuple(assigned)))
    for slug in slugs:
        seen: dict[str, str] = {}
        for g in out:
            if g.assignments and slug not in g.assignments:
                continue
            for m in g.members:
                if m in seen and seen[m] != g.name:
                    raise ConfigError(f"{Path(path).name}: {m!r} is in groups {seen[m]!r} and {g.name!r} for {slug}")
                seen[m] = g.name
    return tuple(out)


def group_of(groups: Sequence[Group], student: str, slug: str) -> Group | None:
    return next((g for g in groups if student in g.members and (not g.assignments or slug in g.assignments)), None)


def describe(students: Sequence[Any]) -> str:
    return ", ".join(str(s) for s in students)

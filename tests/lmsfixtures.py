"""Builders of small LMS exports in the formats the LMSs document (see docs/lms.md for the sources).

One class of five for the toy assignment ``vecops`` (due 2026-10-01T23:59Z, 15 min grace, 10 %
per started day, zero after 3 days):

* ann — on time; ben — 10 h late; cat — on time, re-uploaded (Canvas names it ``vecops-1.py``);
  dan — never submits; eve — 36 h late (two started days).

Every builder writes what the LMS writes: Canvas's Download Submissions zip and gradebook export
and API submission records, Moodle's Download all submissions zip and grading worksheet,
Gradescope's Export Submissions zip with submission_metadata.yml, GitHub Classroom's
classroom_roster.csv and repositories. Used by the tests and by examples/make_demo_class.py.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

UTC = dt.timezone.utc
DUE = dt.datetime(2026, 10, 1, 23, 59, tzinfo=UTC)


@dataclass(frozen=True)
class Person:
    id: str
    name: str            # Full name
    sortable: str        # Canvas's sortable name
    canvas_id: int
    sis_user_id: str
    login: str
    email: str
    gs_sid: str
    github: str
    participant: int     # Moodle's participant id for the assignment


CLASS = [
    Person("ann", "Ann Lee", "Lee, Ann", 1001, "S0001", "ann", "ann@uni.example", "9001", "ann-gh", 501),
    Person("ben", "Ben Ode", "Ode, Ben", 1002, "S0002", "ben", "ben@uni.example", "9002", "benode", 502),
    Person("cat", "Cat Tam", "Tam, Cat", 1003, "S0003", "cat", "cat@uni.example", "9003", "cattam", 503),
    Person("dan", "Dan Roe", "Roe, Dan", 1004, "S0004", "dan", "dan@uni.example", "9004", "danroe", 504),
    Person("eve", "Eve Nye", "Nye, Eve", 1005, "S0005", "eve", "eve@uni.example", "9005", "evenye", 505),
]
BY_ID = {p.id: p for p in CLASS}
# When each one submitted (dan never did), and so what the late policy says.
TIMES = {"ann": DUE - dt.timedelta(hours=4), "ben": DUE + dt.timedelta(hours=10),
         "cat": DUE - dt.timedelta(hours=1), "eve": DUE + dt.timedelta(hours=36)}
PENALTY = {"ann": 0.0, "ben": 0.1, "cat": 0.0, "eve": 0.2}


def toy_texts(toy: Path) -> dict[str, str]:
    """Module text per student: ann, cat, eve correct; ben partial (dot is off by 0.5)."""
    sol = (toy / "solutions" / "vecops" / "vecops.py").read_text()
    partial = sol.replace("return (a * b).sum()", "return (a * b).sum() + 0.5")
    return {"ann": sol, "ben": partial, "cat": sol, "eve": sol}


def _zip(path: Path, files: dict[str, bytes | str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def _csv(path: Path, rows: list[list[str]], **kw) -> Path:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n", **kw)
    for r in rows:
        w.writerow(r)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(buf.getvalue(), encoding="utf-8")
    return path


# ------------------------------------------------------------------ Canvas

def canvas_name(p: Person) -> str:
    """content_zipper.rb: the sortable name, lower case, word characters only."""
    import re
    return re.sub(r"[^\w]", "", p.sortable).lower()


def canvas_zip(path: Path, texts: dict[str, str], *, module: str = "vecops.py", renamed: dict[str, str] = {},
               extra: dict[str, bytes | str] = {}) -> Path:
    """Download Submissions: <name>[_LATE]_<user id>_<attachment id>_<file>."""
    files: dict[str, bytes | str] = {}
    for i, (sid, text) in enumerate(sorted(texts.items())):
        p = BY_ID[sid]
        late = "_LATE" if TIMES[sid] > DUE else ""
        files[f"{canvas_name(p)}{late}_{p.canvas_id}_{50000 + i}_{renamed.get(sid, module)}"] = text
    files.update(extra)
    return _zip(path, files)


def canvas_times(path: Path, students: list[str]) -> Path:
    """What `course lms fetch canvas` saves: Canvas's Submission objects (user_id, submitted_at, late...)."""
    subs = []
    for p in CLASS:
        when = TIMES.get(p.id) if p.id in students else None
        subs.append({"user_id": p.canvas_id, "submitted_at": when.strftime("%Y-%m-%dT%H:%M:%SZ") if when else None,
                     "late": bool(when and when > DUE), "attempt": 2 if p.id == "cat" else (1 if when else None),
                     "workflow_state": "submitted" if when else "unsubmitted",
                     "seconds_late": max(0, int((when - DUE).total_seconds())) if when else 0})
    path.write_text(json.dumps({"source": "canvas", "submissions": subs}), encoding="utf-8")
    return path


def canvas_gradebook(path: Path, people: list[Person] = CLASS) -> Path:
    """Grades > Export: Student, ID, SIS User ID, SIS Login ID, Section, assignments; Points Possible row."""
    rows = [["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "Vector operations (7001)",
             "Current Score", "Final Score"],
            ["    Points Possible", "", "", "", "", "10.00", "(read only)", "(read only)"]]
    rows += [[p.sortable, str(p.canvas_id), p.sis_user_id, p.login, "LLM 101 A", "", "", ""] for p in people]
    rows.append(["Student, Test", "9999", "", "", "LLM 101 A", "", "", ""])
    return _csv(path, rows)


# ------------------------------------------------------------------ Moodle

BERLIN = ZoneInfo("Europe/Berlin")


def moodle_time(when: dt.datetime) -> str:
    """userdate()'s English default: 'Thursday, 1 October 2026, 10:00 PM' in the site's zone."""
    local = when.astimezone(BERLIN)
    return f"{local:%A}, {local.day} {local:%B %Y}, {int(local.strftime('%I'))}:{local:%M %p}"


def moodle_zip(path: Path, texts: dict[str, str], *, flat: bool = False, wrapper: str = "",
               extra: dict[str, bytes | str] = {}) -> Path:
    files: dict[str, bytes | str] = {}
    for sid, text in texts.items():
        p = BY_ID[sid]
        folder = f"{p.name}_{p.participant}_assignsubmission_file_"
        files[f"{wrapper}{folder}{'' if flat else '/'}vecops.py"] = text
    files.update(extra)
    return _zip(path, files)


WORKSHEET_HEADER = ["Identifier", "Full name", "Email address", "Status", "Grade", "Maximum Grade",
                    "Grade can be changed", "Last modified (submission)", "Last modified (grade)", "Feedback comments"]


def moodle_worksheet(path: Path, submitted: list[str], *, times: dict[str, str] = {}) -> Path:
    rows = [WORKSHEET_HEADER]
    for p in CLASS:
        when = TIMES.get(p.id) if p.id in submitted else None
        status = ("Submitted for grading" + (" - Late" if when > DUE else "")) if when else "No submission"
        rows.append([f"Participant {p.participant}", p.name, p.email, status, "", "10.00", "Yes",
                     times.get(p.id, moodle_time(when) if when else "-"), "-", ""])
    return _csv(path, rows)


# ------------------------------------------------------------------ Gradescope

def gradescope_zip(path: Path, submissions: list[tuple[list[str], dt.datetime, dict[str, str]]], *,
                   wrapper: str = "assignment_7001_export/", extra_meta: str = "", extra: dict[str, str] = {}) -> Path:
    """Export Submissions: submission_metadata.yml (Ruby symbol keys) and submission_<id>/ folders."""
    meta = ["---"]
    files: dict[str, bytes | str] = {}
    for i, (who, when, texts) in enumerate(submissions):
        key = f"submission_{80000 + i}"
        meta += [f"{key}:", "  :submitters:"]
        for sid in who:
            p = BY_ID[sid]
            meta += [f"  - :name: {p.name}", f"    :sid: '{p.gs_sid}'", f"    :email: {p.email}"]
        local = when.astimezone(dt.timezone(dt.timedelta(hours=-7)))
        meta += [f"  :created_at: {local:%Y-%m-%d %H:%M:%S}.{local.microsecond:06d}000 -07:00", "  :score: 0.0",
                 "  :status: processed", "  :history: []"]
        for name, text in texts.items():
            files[f"{wrapper}{key}/{name}"] = text
    files[f"{wrapper}submission_metadata.yml"] = "\n".join(meta) + "\n" + extra_meta
    files.update({f"{wrapper}{k}": v for k, v in extra.items()})
    return _zip(path, files)


def gradescope_roster(path: Path) -> Path:
    rows = [["First Name", "Last Name", "SID", "Email", "Role", "Sections"]]
    rows += [[p.name.split()[0], p.name.split()[1], p.gs_sid, p.email, "Student", "A"] for p in CLASS]
    return _csv(path, rows)


# ------------------------------------------------------------------ GitHub Classroom

def classroom_roster(path: Path) -> Path:
    rows = [["identifier", "github_username", "github_id", "name"]]
    rows += [[p.email, p.github, str(70000 + i), p.name] for i, p in enumerate(CLASS)]
    return _csv(path, rows)


def git(repo: Path, *args: str, date: str = "2026-10-01T20:00:00+00:00") -> str:
    env = {**os.environ, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date, "GIT_CONFIG_GLOBAL": os.devnull,
           "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run(["git", "-C", str(repo), "-c", "user.email=s@uni.example", "-c", "user.name=S", *args],
                          check=True, env=env, capture_output=True, text=True).stdout.strip()


def student_repo(root: Path, sid: str, text: str, *, dates: tuple[str, ...] = ("2026-10-01T20:00:00+00:00",)) -> Path:
    repo = root / f"vecops-{BY_ID[sid].github}"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    for i, date in enumerate(dates):
        (repo / "vecops.py").write_text(text + f"\n# revision {i}\n")
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", f"work {i}", date=date)
    return repo

"""GitHub Classroom: ``classroom_roster.csv`` plus one repository per student.

The roster export has the columns ``identifier`` (what the instructor typed: a student id or an
email), ``github_username``, ``github_id`` and ``name``. The student repositories (cloned with
``gh classroom clone student-repos``, one folder ``<assignment>-<github username>`` each) are read
as data by :func:`course.collect.materialise_git`.

Commit dates are the student's to set (``git commit --date``) and never decide lateness. A
repository's time is the moment this collector read the commit (``fetch-time``: run collect at
the deadline, e.g. from cron) or the push time the host recorded, passed in a CSV
(``--push-times``: ``github_username,commit,pushed_at``; ``push-record``). A commit dated after
the fetch, or more than a day before its parent, is flagged in the record.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from course.collect import CollectReport, Entry, Options, _is_repo
from course.config import Course
from course.errors import CollectError
from course.lms import id_from, map_student
from course.roster import Person, Roster, RosterError, read_rows


def read_classroom_roster(path: Path) -> list[dict[str, str]]:
    rows = []
    for line, row in read_rows(path):
        if "github_username" not in row or "identifier" not in row:
            raise RosterError(f"{path}: not a GitHub Classroom roster (columns identifier, github_username, "
                              "github_id, name)")
        rows.append(dict(row, _line=str(line)))
    return rows


def read_push_times(path: Path | None) -> dict[str, tuple[str, dt.datetime]]:
    """github username (lower case) -> (commit, pushed_at)."""
    if path is None:
        return {}
    out = {}
    for line, row in read_rows(path):
        user, commit, when = row.get("github_username", ""), row.get("commit", ""), row.get("pushed_at", "")
        try:
            t = dt.datetime.fromisoformat(when.replace("Z", "+00:00"))
        except ValueError:
            raise CollectError(f"{path}:{line}: pushed_at {when!r} is not an ISO 8601 time") from None
        if t.tzinfo is None:
            raise CollectError(f"{path}:{line}: pushed_at {when!r} has no time zone")
        out[user.lower()] = (commit, t)
    return out


def _username(folder: str, usernames: list[str]) -> str | None:
    lower = folder.lower()
    hits = [u for u in usernames if u and (lower == u.lower() or lower.endswith("-" + u.lower()))]
    return max(hits, key=len) if hits else None


def entries(course: Course, source: Path, slug: str, roster: Roster, opts: Options,
            report: CollectReport) -> list[Entry]:
    source = Path(source)
    if not source.is_dir():
        raise CollectError(f"{source}: --from github-classroom reads a folder of student repositories")
    classroom = read_classroom_roster(opts.classroom_roster) if opts.classroom_roster else []
    by_user = {r["github_username"].lower(): r for r in classroom if r.get("github_username")}
    pushes = read_push_times(opts.push_times)
    out: list[Entry] = []
    for child in sorted(source.iterdir()):
        if child.name.startswith(".") or not child.is_dir() or child.is_symlink():
            continue
        who = f"{source.name}: {child.name}"
        user = _username(child.name, list(by_user)) if by_user else child.name.rsplit("-", 1)[-1]
        if user is None:
            out.append(Entry(child.name[:60], "refused", f"{who}: no github_username of {opts.classroom_roster} "
                             "matches this folder", who))
            continue
        row = by_user.get(user.lower(), {})
        ident = row.get("identifier", "")
        try:
            sid, _ = map_student(roster, [("github", user), ("id", ident), ("email", ident),
                                          ("sis_login_id", ident)], ident if id_from(ident) else user, who)
        except (RosterError, CollectError) as exc:
            out.append(Entry(user, "refused", str(exc), who))
            continue
        if not _is_repo(child):
            out.append(Entry(sid, "refused", f"{who}: not a git repository", who))
            continue
        entry = Entry(sid, "git", child, f"{source.name}: student {sid} (GitHub {user})", ref=opts.ref)
        push = pushes.get(user.lower())
        if push is not None:
            entry.notes.append(f"push time from {opts.push_times.name}: commit {push[0][:10]} at {push[1].isoformat()}")
            entry.data = child
            entry.submitted_at, entry.time_source = push[1], "push-record"
            entry.ref = push[0] or opts.ref
        out.append(entry)
    return out


def people(path: Path) -> list[Person]:
    out = []
    for row in read_classroom_roster(path):
        ident, user = row.get("identifier", ""), row.get("github_username", "")
        email = ident if "@" in ident else ""
        out.append(Person(name=row.get("name", ""), email=email, keys={"github": user} if user else {},
                          suggested_id=id_from(ident.split("@")[0]) or user, line=int(row["_line"])))
    return out

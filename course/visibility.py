"""What students see of hidden tests, and how often ``course ci`` shows it.

``course.yml`` (per assignment, or for the course): ``hidden_feedback`` before the student's due date
and ``after_due`` after it, each one of:

* ``names``: hidden tests by name, outcome and points (the default);
* ``tasks``: points per task (public and hidden together), no test names or outcomes;
* ``total``: the hidden tests' points as one total;
* ``none``: nothing of them, not even the total score (it would tell their points).

:func:`view` makes the student's view of a :class:`course.report.Graded` at a level; every
student-facing writer (feedback pages, the CI summary, JUnit XML, results.json, the terminal) works
on that view, so what a level hides is absent from every file, not merely unstyled. The view keeps the
full record's scores for the caller (``frozen``); only the writers decide what to print.

``hidden_feedback_limit: {count, per}`` bounds ``course ci`` runs that show hidden feedback before the
due date, per student and assignment. Beyond it a run is still graded and recorded, and shows the
public part only, saying when hidden feedback comes back. The count lives in a :class:`RunRecords`
folder kept by the instructor's side (see docs/ci.md: a private repository the grading workflow
alone can write), or in Gradescope's own submission history (:class:`GradescopeHistory`); never in
anything a pull request's tree holds.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import secrets
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol, Sequence

from course.config import Assignment, FeedbackLimit
from course.errors import CourseError
from course.gradebook import ResultRow

LEVELS = ("names", "tasks", "total", "none")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def level(a: Assignment, due: dt.datetime | str | None, now: dt.datetime | None = None) -> str:
    """The level that applies now: ``hidden_feedback`` before the due date, ``after_due`` from it on."""
    now = now or dt.datetime.now(dt.timezone.utc)
    if isinstance(due, str):
        due = dt.datetime.fromisoformat(due)
    return a.after_due if due is not None and now >= due else a.hidden_feedback


def view(g: Any, lvl: str, note: str = "") -> Any:
    """The student's view of ``g`` at level ``lvl`` (a copy; ``g`` is not changed)."""
    if lvl not in LEVELS:
        raise CourseError(f"hidden feedback level {lvl!r}: must be one of {', '.join(LEVELS)}")
    hidden = [r for r in g.results if r.hidden]
    if lvl == "names" or not hidden:
        return replace(g, hidden_note=note) if note else g
    public = [r for r in g.results if not r.hidden]
    if lvl == "tasks":
        by_task: dict[str, list[ResultRow]] = {}
        for r in hidden:
            by_task.setdefault(r.task or "-", []).append(r)
        rows = public + [_summary(f"hidden tests of task {t}", t, rs) for t, rs in by_task.items()]
    elif lvl == "total":
        rows = public + [_summary("hidden tests", "hidden", hidden)]
    else:
        rows = public
    return replace(g, results=rows, hidden_view=lvl, hidden_note=note, frozen=(g.raw, g.final))


def _summary(name: str, task: str, rows: Sequence[ResultRow]) -> ResultRow:
    outcomes = {r.outcome for r in rows}
    outcome = ("passed" if outcomes == {"passed"} else
               "failed" if outcomes & {"failed", "error", "timeout"} else "pending")
    return ResultRow(test_id=f"hidden:{task}", name=name, task=task, hidden=True, outcome=outcome,
                     points=round(sum(r.points for r in rows), 6), max_points=round(sum(r.max_points for r in rows), 6),
                     message="", detail="", location=None, duration=round(sum(r.duration for r in rows), 3))


def describe(lvl: str) -> str:
    return {"names": "Hidden tests are shown by name, outcome and points only.",
            "tasks": "Hidden tests are shown as points per task only.",
            "total": "Hidden tests are shown as their total points only.",
            "none": "Hidden tests are not shown."}[lvl]


# ------------------------------------------------------------------ the CI rate limit

class Store(Protocol):
    def shown(self, student: str, slug: str) -> list[dt.datetime]: ...


class RunRecords:
    """``course ci --ci-ledger DIR``: one JSON file per graded run, ``DIR/<slug>/<student>/<time>-<id>.json``.

    New files only (no file is rewritten), so concurrent runs never conflict when DIR is a git
    repository that the workflow pulls and pushes. A file that cannot be read counts as a run that
    showed hidden feedback, at its modification time (the limit fails closed)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def _dir(self, student: str, slug: str) -> Path:
        name = student if SAFE_NAME.match(student) else "id-" + hashlib.sha256(student.encode()).hexdigest()[:16]
        return self.folder / slug / name

    def shown(self, student: str, slug: str) -> list[dt.datetime]:
        out = []
        folder = self._dir(student, slug)
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                if data.get("hidden_feedback") != "shown":
                    continue
                out.append(dt.datetime.fromisoformat(data["at"]))
            except (OSError, ValueError, KeyError, TypeError):
                out.append(dt.datetime.fromtimestamp(path.stat().st_mtime, dt.timezone.utc))
        return sorted(out)

    def add(self, student: str, slug: str, record: dict[str, Any]) -> Path:
        folder = self._dir(student, slug)
        folder.mkdir(parents=True, exist_ok=True)
        at = dt.datetime.fromisoformat(record["at"])
        path = folder / f"{at.strftime('%Y%m%dT%H%M%S%fZ')}-{secrets.token_hex(4)}.json"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(record, fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return path


class GradescopeHistory:
    """Gradescope's ``submission_metadata.json``: the student's previous submissions with their
    results.json, written by Gradescope (a student cannot edit or delete them)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def shown(self, student: str, slug: str) -> list[dt.datetime]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CourseError(f"--gradescope-metadata {self.path}: cannot read it ({exc})") from None
        out = []
        for prev in data.get("previous_submissions") or []:
            extra = ((prev or {}).get("results") or {}).get("extra_data") or {}
            if extra.get("hidden_feedback") == "shown":
                try:
                    when = dt.datetime.fromisoformat(str(prev["submission_time"]).replace("Z", "+00:00"))
                except (KeyError, ValueError):
                    continue
                out.append(when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc))
        return sorted(out)


def allowance(limit: FeedbackLimit, store: Store | None, student: str, slug: str, now: dt.datetime,
              due: dt.datetime) -> tuple[bool, str]:
    """Whether this run may show hidden feedback, and if not, a sentence saying when it comes back."""
    rule = f"hidden-test feedback is limited to {limit.count} run(s) per {_per(limit)} before the due date"
    if store is None:
        return False, f"{rule}, and this run has no record of earlier runs to count (--ci-ledger): withheld"
    recent = [t for t in store.shown(student, slug) if t > now - dt.timedelta(seconds=limit.per)]
    if len(recent) < limit.count:
        return True, ""
    back = due if limit.count == 0 else min(due, recent[len(recent) - limit.count] + dt.timedelta(seconds=limit.per))
    return False, (f"{rule} ({len(recent)} used): it comes back at {back.astimezone(dt.timezone.utc).isoformat(timespec='minutes')}"
                   + (" (the due date)" if back == due else ""))


def _per(limit: FeedbackLimit) -> str:
    return limit.per_text if limit.per_text in ("hour", "day", "week") else f"{limit.per / 3600:g} h"

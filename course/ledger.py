"""The ledger: what staff do to scores, as rows appended to the gradebook (table ``ledger``).

Overrides (``course override``) and their undos, the notebooks' manual scores, regrade requests and
their rejections, changes of ``extensions.yml``, slip-day pins and the scores students were shown
(``published``) are each a row with who, when and why. Nothing is updated in place or deleted
(SQLite triggers refuse it): a score is the graded result plus these rows, applied by
:mod:`course.report` (:class:`Adjustment`), and the history of a student is a query
(:mod:`course.history`).

Reasons and request messages are untrusted text: they are cleaned here and escaped wherever written.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from course import textsafe
from course.config import Course, Extension
from course.errors import CourseError
from course.gradebook import Gradebook, now

KINDS = ("override", "undo", "request", "reject", "manual", "extension", "slip", "published")


class LedgerError(CourseError):
    """A staff operation that cannot be recorded as asked (nothing was written)."""


@dataclass(frozen=True)
class Entry:
    id: int
    at: str
    kind: str
    student: str
    slug: str
    item: str | None
    mode: str | None
    value: float | None
    max_value: float | None
    ref: int | None
    reason: str
    by: str | None
    data: dict[str, Any]
    seen_submission: int
    seen_grading: int


@dataclass(frozen=True)
class Adjustment:
    """An override in force on one student's assignment (``mode``: points | delta | task)."""

    id: int
    mode: str
    value: float
    task: str | None
    reason: str
    by: str | None
    at: str
    extra_credit: bool = False

    def describe(self) -> str:
        v = _fmt(self.value)
        if self.mode == "points":
            return f"score set to {v}"
        if self.mode == "task":
            return f"task {self.task} set to {v} point(s)"
        return f"{'+' if self.value >= 0 else ''}{v} point(s)"


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.2f}".rstrip("0").rstrip(".") if x != int(x) else str(int(x))


# ------------------------------------------------------------------ rows

def append(gb: Gradebook, kind: str, student: str, slug: str, *, item: str | None = None, mode: str | None = None,
           value: float | None = None, max_value: float | None = None, ref: int | None = None, reason: str = "",
           by: str | None = None, data: dict[str, Any] | None = None) -> int:
    """Append one row (its own transaction); returns its id."""
    assert kind in KINDS, kind
    with gb.transaction() as db:
        seen_sub = db.execute("SELECT COALESCE(MAX(id), 0) FROM submissions").fetchone()[0]
        seen_grading = db.execute("SELECT COALESCE(MAX(id), 0) FROM gradings").fetchone()[0]
        cur = db.execute(
            "INSERT INTO ledger (at, kind, student, slug, item, mode, value, max_value, ref, reason, by, data, "
            "seen_submission, seen_grading) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (now(), kind, textsafe.clean(student, 200), textsafe.clean(slug, 200),
             None if item is None else textsafe.clean(item, 300), mode, value, max_value, ref,
             textsafe.clean(reason, 4000), None if by is None else textsafe.one_line(by, 200),
             json.dumps(data or {}, sort_keys=True), seen_sub, seen_grading))
        return int(cur.lastrowid)


def _entry(r: Any) -> Entry:
    return Entry(id=r["id"], at=r["at"], kind=r["kind"], student=r["student"], slug=r["slug"], item=r["item"],
                 mode=r["mode"], value=r["value"], max_value=r["max_value"], ref=r["ref"], reason=r["reason"],
                 by=r["by"], data=json.loads(r["data"] or "{}"), seen_submission=r["seen_submission"],
                 seen_grading=r["seen_grading"])


def entries(gb: Any, *, student: str | None = None, slug: str | None = None, kinds: Sequence[str] = (),
            upto: int | None = None) -> list[Entry]:
    """Ledger rows, oldest first (up to id ``upto``, or the view's own cutoff, see :class:`AsOf`)."""
    upto = upto if upto is not None else getattr(gb, "ledger_upto", None)
    where, args = [], []
    for column, value in (("student", student), ("slug", slug)):
        if value is not None:
            where.append(f"{column}=?")
            args.append(value)
    if kinds:
        where.append(f"kind IN ({','.join('?' * len(kinds))})")
        args += list(kinds)
    if upto is not None:
        where.append("id <= ?")
        args.append(upto)
    sql = "SELECT * FROM ledger" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
    return [_entry(r) for r in gb.db.execute(sql, args)]


def get(gb: Gradebook, entry_id: int) -> Entry:
    row = gb.db.execute("SELECT * FROM ledger WHERE id=?", (entry_id,)).fetchone()
    if row is None:
        raise LedgerError(f"ledger entry {entry_id}: no such entry (course history STUDENT lists them)")
    return _entry(row)


# ------------------------------------------------------------------ the state the rows add up to

class Book:
    """Every ledger row, indexed for computing scores (:func:`course.report.load_graded`)."""

    def __init__(self, rows: Iterable[Entry]):
        self.rows = list(rows)
        self.by_pair: dict[tuple[str, str], list[Entry]] = {}
        self.undone: dict[int, Entry] = {}
        for e in self.rows:
            self.by_pair.setdefault((e.student, e.slug), []).append(e)
            if e.kind == "undo" and e.ref is not None:
                self.undone[e.ref] = e

    @classmethod
    def load(cls, gb: Any, upto: int | None = None) -> "Book":
        return cls(entries(gb, upto=upto))

    def adjustments(self, student: str, slug: str) -> list[Adjustment]:
        out = []
        for e in self.by_pair.get((student, slug), []):
            if e.kind == "override" and e.id not in self.undone:
                out.append(Adjustment(e.id, e.mode or "points", float(e.value or 0.0), e.item, e.reason, e.by, e.at,
                                      bool(e.data.get("extra_credit"))))
        return out

    def pins(self, student: str) -> dict[str, int | None]:
        """Slip days pinned per assignment (None: back to automatic), the latest row of each."""
        out: dict[str, int | None] = {}
        for (s, slug), rows in self.by_pair.items():
            if s == student:
                for e in rows:
                    if e.kind == "slip":
                        out[slug] = None if e.value is None else int(e.value)
        return {k: v for k, v in out.items() if v is not None}

    def published(self, student: str, slug: str) -> tuple[bool, float | None]:
        """(whether a score was ever published, the last one published)."""
        rows = [e for e in self.by_pair.get((student, slug), []) if e.kind == "published"]
        return (True, rows[-1].value) if rows else (False, None)


# ------------------------------------------------------------------ manual scores (notebooks' written parts)

def record_manual(gb: Gradebook, student: str, slug: str, item: str, score: float | None, max_score: float,
                  by: str | None = None, reason: str = "") -> int | None:
    """A manual score as a ledger row, when it differs from the item's current one; the item is listed."""
    with gb.transaction() as db:
        db.execute("INSERT OR IGNORE INTO manual_scores VALUES (?,?,?,NULL,?,NULL,?)",
                   (student, slug, item, float(max_score), now()))
    current = {m["item"]: m for m in manual_scores(gb, student, slug)}.get(item)
    if current is not None and current["score"] == score and current["max_score"] == max_score:
        return None
    return append(gb, "manual", student, slug, item=item, value=score, max_value=float(max_score), by=by,
                  reason=reason)


def manual_scores(gb: Any, student: str, slug: str, upto: int | None = None) -> list[Any]:
    """Each manual item with its latest ledger score (None: needs manual grading), up to id ``upto``."""
    upto = upto if upto is not None else getattr(gb, "ledger_upto", None)
    cutoff = "" if upto is None else f" AND m.id <= {int(upto)}"
    return list(gb.db.execute(
        "SELECT i.student, i.slug, i.item, l.value AS score, COALESCE(l.max_value, i.max_score) AS max_score, "
        "l.by AS grader, COALESCE(l.at, i.updated_at) AS updated_at FROM manual_scores i LEFT JOIN ledger l ON "
        "l.id = (SELECT MAX(m.id) FROM ledger m WHERE m.kind='manual' AND m.student=i.student AND m.slug=i.slug "
        f"AND m.item=i.item{cutoff}) WHERE i.student=? AND i.slug=? ORDER BY i.item", (student, slug)))


# ------------------------------------------------------------------ checks shared by the staff operations

def _reason(reason: str | None, what: str) -> str:
    text = textsafe.clean(reason or "", 4000).strip()
    if not text:
        raise LedgerError(f"{what}: the reason is empty (say why; it is kept with the row and shown in feedback)")
    return text


def known_students(course: Course, gb: Gradebook) -> set[str]:
    from course import roster as roster_mod
    return set(gb.students()) | set(roster_mod.load(course.paths.roster).ids)


def _check_student(course: Course, gb: Gradebook, student: str) -> None:
    if student not in known_students(course, gb):
        raise LedgerError(f"student {student!r}: not in the gradebook or {course.paths.roster.name}")


def _current(course: Course, gb: Gradebook, student: str, slug: str) -> Any:
    from course import report
    [g] = report.load_graded(course, gb, [slug], [student])
    return g


# ------------------------------------------------------------------ overrides

def override(course: Course, gb: Gradebook, student: str, slug: str, *, points: float | None = None,
             delta: float | None = None, task: str | None = None, reason: str, by: str | None = None,
             allow_extra_credit: bool = False, request: int | None = None) -> int:
    """Record an override: ``points`` (the final score), ``delta`` (added before the late penalty) or
    ``task`` + ``points`` (that task's points, before the late penalty). Returns the row's id."""
    a = course.assignment(slug)
    _check_student(course, gb, student)
    why = _reason(reason, f"course override {student} {slug}")
    if (points is None) == (delta is None):
        raise LedgerError("course override: give exactly one of --points N or --delta N (with --task N.M: --points)")
    if task is not None and points is None:
        raise LedgerError("course override --task: set the task's points with --points N (a --delta is for the score)")
    value = float(points if points is not None else delta)
    if not math.isfinite(value):
        raise LedgerError(f"course override: {value!r} is not a number of points")
    g = _current(course, gb, student, slug)
    if task is not None:
        if g.status != "graded":
            raise LedgerError(f"{student}/{slug}: {g.status}: a --task override needs a graded submission")
        tasks = {r.task: 0.0 for r in g.results}
        for r in g.results:
            tasks[r.task] += r.max_points
        if task not in tasks:
            known = ", ".join(sorted(str(t) for t in tasks)) or "(none)"
            raise LedgerError(f"--task {task}: {slug} has no task {task!r} (its tasks: {known})")
        _check_range(value, tasks[task], f"--task {task} --points {_fmt(value)}", f"task {task}'s maximum",
                     allow_extra_credit)
        mode = "task"
    elif points is not None:
        _check_range(value, a.points, f"--points {_fmt(value)}", f"{slug}'s maximum", allow_extra_credit)
        mode = "points"
    else:
        if g.status != "graded":
            raise LedgerError(f"{student}/{slug}: {g.status}: a --delta needs a graded submission "
                              "(--points N sets the score)")
        _check_range(g.raw + value, a.points, f"--delta {_fmt(value)} (score before the penalty "
                     f"{_fmt(g.raw)} -> {_fmt(g.raw + value)})", f"{slug}'s maximum", allow_extra_credit)
        mode = "delta"
    if request is not None:
        r = _request(gb, request)
        if (r.student, r.slug) != (student, slug):
            raise LedgerError(f"--request {request}: that request is {r.student}/{r.slug}'s, not {student}/{slug}'s")
        if r.status != "open":
            raise LedgerError(f"--request {request}: already {r.status}")
    return append(gb, "override", student, slug, item=task, mode=mode, value=value, ref=request, reason=why, by=by,
                  data={"extra_credit": True} if allow_extra_credit else {})


def _check_range(value: float, maximum: float, what: str, of: str, allow_extra_credit: bool) -> None:
    if value < 0:
        raise LedgerError(f"{what}: a score cannot be negative")
    if value > maximum + 1e-9 and not allow_extra_credit:
        raise LedgerError(f"{what}: above {of} ({_fmt(maximum)}); pass --allow-extra-credit to give more")


def undo(gb: Gradebook, entry_id: int, *, reason: str, by: str | None = None) -> int:
    """Record the reversal of override ``entry_id`` (the override itself stays in the ledger)."""
    why = _reason(reason, f"course override --undo {entry_id}")
    e = get(gb, entry_id)
    if e.kind == "undo":
        raise LedgerError(f"--undo {entry_id}: entry {entry_id} is itself an undo; an undo cannot be undone "
                          "(record a new override instead)")
    if e.kind != "override":
        raise LedgerError(f"--undo {entry_id}: entry {entry_id} is a {e.kind}, not an override")
    done = [u for u in entries(gb, student=e.student, slug=e.slug, kinds=("undo",)) if u.ref == entry_id]
    if done:
        raise LedgerError(f"--undo {entry_id}: already undone by entry {done[0].id}")
    return append(gb, "undo", e.student, e.slug, ref=entry_id, reason=why, by=by)


# ------------------------------------------------------------------ regrade requests

@dataclass(frozen=True)
class Request:
    id: int
    at: str
    student: str
    slug: str
    message: str
    by: str | None
    status: str                  # open | resolved | rejected
    closed_by: Entry | None = None


def requests(gb: Any, *, open_only: bool = False, upto: int | None = None) -> list[Request]:
    """Every regrade request with its status: rejected by a ``reject`` row naming it; resolved by an
    override naming it, or by the next override of that student's assignment that names none."""
    rows = entries(gb, kinds=("request", "reject", "override"), upto=upto)
    out = []
    for r in (e for e in rows if e.kind == "request"):
        closer = next((e for e in rows if e.id > r.id and e.ref == r.id and e.kind in ("reject", "override")), None)
        if closer is None:
            closer = next((e for e in rows if e.id > r.id and e.kind == "override" and e.ref is None
                           and (e.student, e.slug) == (r.student, r.slug)), None)
        status = "open" if closer is None else ("rejected" if closer.kind == "reject" else "resolved")
        out.append(Request(r.id, r.at, r.student, r.slug, r.reason, r.by, status, closer))
    return [r for r in out if r.status == "open"] if open_only else out


def _request(gb: Gradebook, request_id: int) -> Request:
    found = [r for r in requests(gb) if r.id == request_id]
    if not found:
        raise LedgerError(f"request {request_id}: no such regrade request (course requests lists them)")
    return found[0]


def file_request(course: Course, gb: Gradebook, student: str, slug: str, *, message: str, by: str | None = None) -> int:
    course.assignment(slug)
    _check_student(course, gb, student)
    text = textsafe.clean(message or "", 4000).strip()
    if not text:
        raise LedgerError(f"course regrade-request {student} {slug}: the message is empty (what does the student ask?)")
    return append(gb, "request", student, slug, reason=text, by=by)


def reject(gb: Gradebook, request_id: int, *, reason: str, by: str | None = None) -> int:
    why = _reason(reason, f"course regrade-request --reject {request_id}")
    r = _request(gb, request_id)
    if r.status != "open":
        raise LedgerError(f"--reject {request_id}: request {request_id} is already {r.status}")
    return append(gb, "reject", r.student, r.slug, ref=request_id, reason=why, by=by)


# ------------------------------------------------------------------ slip days pinned by staff

def pin_slip_days(course: Course, gb: Gradebook, student: str, slug: str, days: int | None, *, reason: str,
                  by: str | None = None) -> int:
    """Pin how many slip days ``slug`` takes for ``student`` (None: automatic again)."""
    course.assignment(slug)
    _check_student(course, gb, student)
    why = _reason(reason, f"course slip-days {student} {slug}")
    policy = course.late_policy
    if policy.slip_days <= 0:
        raise LedgerError(f"{course.file.name}: late_policy.slip_days is not set: there are no slip days to pin")
    if days is not None:
        if days < 0:
            raise LedgerError(f"--use {days}: slip days cannot be negative")
        if days > policy.slip_cap:
            raise LedgerError(f"--use {days}: at most {policy.slip_cap} slip day(s) per assignment "
                              f"(late_policy.max_late)")
        pins = Book.load(gb).pins(student)
        pins[slug] = days
        total = sum(pins.values())
        if total > policy.slip_days:
            raise LedgerError(f"--use {days}: {student}'s pinned slip days would total {total}, more than "
                              f"late_policy.slip_days ({policy.slip_days}): slip days would go negative")
    return append(gb, "slip", student, slug, value=None if days is None else float(days), reason=why, by=by)


# ------------------------------------------------------------------ extensions.yml, as the ledger saw it

def sync_extensions(course: Course, gb: Gradebook) -> list[int]:
    """Record each change of extensions.yml since the last sync (added, changed or removed entries)."""
    recorded: dict[tuple[str, str], dict[str, Any]] = {}
    for e in entries(gb, kinds=("extension",)):
        recorded[(e.student, e.slug)] = e.data
    current = {(x.student, x.assignment): x.as_dict() for x in course.extensions}
    written = []
    for key in sorted(set(recorded) | set(current)):
        now_ = current.get(key, {"removed": True})
        if recorded.get(key, {"removed": True}) != now_:
            written.append(append(gb, "extension", key[0], key[1], data=now_, by="extensions.yml",
                                  reason=str(now_.get("reason", "")) if not now_.get("removed") else "removed"))
    return written


def extensions_as_of(gb: Any, upto: int | None) -> tuple[Extension, ...]:
    state: dict[tuple[str, str], dict[str, Any]] = {}
    for e in entries(gb, kinds=("extension",), upto=upto):
        state[(e.student, e.slug)] = e.data
    out = []
    for (student, slug), d in state.items():
        if d.get("removed"):
            continue
        out.append(Extension(student, slug, due=dt.datetime.fromisoformat(d["due"]) if d.get("due") else None,
                             reason=d.get("reason", ""), extra=d.get("extra"), factor=d.get("factor")))
    return tuple(out)


# ------------------------------------------------------------------ published scores (what students saw)

def publish(gb: Gradebook, scores: Iterable[tuple[str, str, float | None]], via: str) -> int:
    """Record the scores a feedback page or an export showed, where they differ from the last published."""
    book = Book.load(gb)
    n = 0
    for student, slug, score in scores:
        seen, last = book.published(student, slug)
        if seen and last == score or (not seen and score is None):
            continue
        append(gb, "published", student, slug, item=via, value=score, by="course")
        n += 1
    return n


def published_changes(gb: Gradebook, scores: Iterable[tuple[str, str, float | None]]) -> list[tuple[str, str, float | None, float | None]]:
    """(student, slug, last published, now) for each score that differs from what was last published."""
    book = Book.load(gb)
    out = []
    for student, slug, score in scores:
        seen, last = book.published(student, slug)
        if seen and last != score:
            out.append((student, slug, last, score))
    return out

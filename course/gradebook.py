"""The gradebook: one SQLite file (WAL), the single record of students, submissions and results.

One transaction per graded submission: a ``course grade`` killed at any moment leaves every
submission either fully graded or not graded at all, so a re-run resumes with nothing lost and
nothing counted twice. Grading the same submission with the same grader version again is a no-op.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from course import textsafe

SCHEMA_VERSION = 4

# Columns added after version 1, with their migration: ALTER TABLE on an existing gradebook.
# submitted_at_source: where submitted_at came from (lms-record, worksheet, fetch-time, push-record,
#   instructor-flag, lms-late-flag, lms-on-time-flag; 'unrecorded' for rows collected before v2).
# notes: a JSON list of sentences about the collection (a module renamed, a flagged commit date...).
# group_name / members: a group submission (members: JSON list of student ids, the owner included).
MIGRATIONS = {
    2: [("submissions", "submitted_at_source", "TEXT NOT NULL DEFAULT 'unrecorded'"),
        ("submissions", "notes", "TEXT NOT NULL DEFAULT '[]'"),
        ("submissions", "group_name", "TEXT"),
        ("submissions", "members", "TEXT NOT NULL DEFAULT '[]'")],
    # description: what a test checks, in words; diagnosis/misconceptions: the misconceptions a failed
    # test's output matches (course.grading.diagnose); environment: the versions that decided numbers.
    3: [("results", "description", "TEXT NOT NULL DEFAULT ''"),
        ("results", "diagnosis", "TEXT NOT NULL DEFAULT ''"),
        ("results", "misconceptions", "TEXT NOT NULL DEFAULT ''"),
        ("gradings", "environment", "TEXT NOT NULL DEFAULT '{}'")],
    # 4: the ledger (a new table, created by SCHEMA); DATA_MIGRATIONS moves the manual scores into it.
    4: [],
}

# Statements run once when a gradebook is brought up to that version (after its columns are added).
# 4: every manual score becomes a ledger row (its history starts there); manual_scores keeps the items only.
DATA_MIGRATIONS = {
    4: ["INSERT INTO ledger (at, kind, student, slug, item, value, max_value, reason, by) "
        "SELECT updated_at, 'manual', student, slug, item, score, max_score, 'recorded before the ledger (schema 3)', "
        "grader FROM manual_scores WHERE score IS NOT NULL ORDER BY updated_at, student, slug, item",
        "UPDATE manual_scores SET score = NULL, grader = NULL"],
}

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS students (id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS assignments (
    slug TEXT PRIMARY KEY, title TEXT NOT NULL, points REAL NOT NULL, due TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS submissions (
    id INTEGER PRIMARY KEY,
    student TEXT NOT NULL REFERENCES students(id),
    slug TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    submitted_at TEXT NOT NULL,
    late_by REAL NOT NULL,            -- seconds after the due date that applied when last computed
    sha256 TEXT NOT NULL,             -- content hash of the collected files
    path TEXT NOT NULL,               -- submitted/<student>/<slug>/<attempt>, relative to the course
    source TEXT,                      -- where it was collected from
    collected_at TEXT NOT NULL,
    submitted_at_source TEXT NOT NULL DEFAULT 'unrecorded',  -- who vouches for submitted_at
    notes TEXT NOT NULL DEFAULT '[]',                       -- JSON list: renamed modules, flags
    group_name TEXT,                                        -- a group submission's group
    members TEXT NOT NULL DEFAULT '[]',                     -- JSON list of the group's student ids
    UNIQUE (student, slug, attempt));
CREATE TABLE IF NOT EXISTS gradings (
    id INTEGER PRIMARY KEY,
    submission_id INTEGER NOT NULL REFERENCES submissions(id),
    grader_version TEXT NOT NULL,     -- hash of graders/<slug> + the public tests + the course engine
    status TEXT NOT NULL,             -- graded | error
    backend TEXT, device TEXT, isolation TEXT,
    points REAL, max_points REAL, pending INTEGER,
    message TEXT,                     -- for status=error: why grading could not run (retried next run)
    started_at TEXT, finished_at TEXT, duration REAL,
    environment TEXT NOT NULL DEFAULT '{}');  -- JSON: python, torch, ... versions that decided the numbers
CREATE INDEX IF NOT EXISTS gradings_by_submission ON gradings(submission_id, id);
CREATE TABLE IF NOT EXISTS results (
    grading_id INTEGER NOT NULL REFERENCES gradings(id) ON DELETE CASCADE,
    test_id TEXT NOT NULL,
    name TEXT NOT NULL,
    task TEXT,
    hidden INTEGER NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('passed','failed','error','timeout','pending','skipped')),
    points REAL NOT NULL,
    max_points REAL NOT NULL,
    message TEXT NOT NULL,            -- public message: empty for hidden tests
    detail TEXT NOT NULL,             -- instructor-only detail (never in feedback)
    location TEXT,                    -- file:line in the student's code, for public failures
    duration REAL NOT NULL,
    description TEXT NOT NULL DEFAULT '',     -- what the test checks, in words
    diagnosis TEXT NOT NULL DEFAULT '',       -- misconceptions a failure matches, in words (catalogue text)
    misconceptions TEXT NOT NULL DEFAULT '',  -- their names, comma-separated
    PRIMARY KEY (grading_id, test_id));
CREATE TABLE IF NOT EXISTS reference_timings (  -- the solution's seconds per test, recorded by validate
    slug TEXT NOT NULL, grader_version TEXT NOT NULL, test_id TEXT NOT NULL, seconds REAL NOT NULL,
    machine TEXT NOT NULL, recorded_at TEXT NOT NULL,
    PRIMARY KEY (slug, grader_version, test_id));
CREATE TABLE IF NOT EXISTS manual_scores (  -- the manually graded items (since schema 4 their scores are ledger rows)
    student TEXT NOT NULL, slug TEXT NOT NULL, item TEXT NOT NULL,
    score REAL, max_score REAL NOT NULL, grader TEXT, updated_at TEXT NOT NULL,
    PRIMARY KEY (student, slug, item));
CREATE TABLE IF NOT EXISTS ledger (         -- append-only (course/ledger.py): nothing is updated or deleted
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('override','undo','request','reject','manual','extension','slip','published')),
    student TEXT NOT NULL,
    slug TEXT NOT NULL,               -- an assignment, or '*' (a standing accommodation)
    item TEXT,                        -- override: the task (N.M), manual: the item, published: where to
    mode TEXT,                        -- override: points | delta | task
    value REAL,                       -- override, manual, published: points. slip: days pinned (NULL: automatic)
    max_value REAL,                   -- manual: the item's maximum
    ref INTEGER REFERENCES ledger(id),-- undo, reject: the row acted on. override: the request it answers
    reason TEXT NOT NULL DEFAULT '',  -- why, or a request's message (student text: escaped wherever written)
    by TEXT,                          -- who
    data TEXT NOT NULL DEFAULT '{}',  -- JSON: an extension entry, an override's extra_credit
    seen_submission INTEGER NOT NULL DEFAULT 0,   -- the newest submission and grading when recorded:
    seen_grading INTEGER NOT NULL DEFAULT 0);     -- a history orders its steps exactly by them
CREATE INDEX IF NOT EXISTS ledger_by_student ON ledger(student, slug, id);
"""

# Triggers (their bodies hold ';', so they are not in SCHEMA): the ledger refuses updates and deletes.
TRIGGERS = [
    "CREATE TRIGGER IF NOT EXISTS ledger_no_update BEFORE UPDATE ON ledger BEGIN "
    "SELECT RAISE(ABORT, 'the ledger is append-only: record a new row (course override --undo) instead'); END",
    "CREATE TRIGGER IF NOT EXISTS ledger_no_delete BEFORE DELETE ON ledger BEGIN "
    "SELECT RAISE(ABORT, 'the ledger is append-only: nothing is deleted'); END",
]


def now() -> str:
    # microseconds: a history (course/history.py) orders collections and gradings by these times
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class SubmissionRow:
    id: int
    student: str
    slug: str
    attempt: int
    submitted_at: str
    late_by: float
    sha256: str
    path: str
    source: str | None
    submitted_at_source: str = "unrecorded"
    notes: str = "[]"
    group_name: str | None = None
    members: str = "[]"

    @property
    def note_list(self) -> list[str]:
        return list(json.loads(self.notes or "[]"))

    @property
    def member_list(self) -> list[str]:
        return list(json.loads(self.members or "[]"))


@dataclass(frozen=True)
class GradingRow:
    id: int
    submission_id: int
    grader_version: str
    status: str
    backend: str | None
    device: str | None
    isolation: str | None
    points: float | None
    max_points: float | None
    pending: int | None
    message: str | None
    finished_at: str | None
    duration: float | None
    environment: str = "{}"

    @property
    def env(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.environment or "{}"))
        except ValueError:
            return {}


@dataclass(frozen=True)
class ResultRow:
    test_id: str
    name: str
    task: str | None
    hidden: bool
    outcome: str
    points: float
    max_points: float
    message: str
    detail: str
    location: str | None
    duration: float
    description: str = ""
    diagnosis: str = ""
    misconceptions: str = ""


class Gradebook:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), timeout=60, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        with self.transaction():
            fresh = self.db.execute("SELECT name FROM sqlite_master WHERE name='submissions'").fetchone() is None
            for statement in _statements(SCHEMA):
                self.db.execute(statement)
            for statement in TRIGGERS:
                self.db.execute(statement)
            if fresh:
                self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            else:
                self._migrate()

    def _migrate(self) -> None:
        """Bring an older gradebook up to SCHEMA_VERSION (inside the opening transaction)."""
        row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        version = int(row[0]) if row else 1
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"{self.path}: gradebook schema {version} is newer than this course "
                                        f"package ({SCHEMA_VERSION}); upgrade the package")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for table, column, decl in MIGRATIONS.get(target, []):
                have = {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}
                if column not in have:
                    self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
            for statement in DATA_MIGRATIONS.get(target, []):
                self.db.execute(statement)
        self.db.execute("INSERT INTO meta VALUES ('schema_version', ?) ON CONFLICT(key) DO UPDATE SET "
                        "value=excluded.value", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Gradebook":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        else:
            self.db.execute("COMMIT")

    # -------------------------------------------------------------- assignments and submissions

    def sync_assignments(self, assignments: Iterable[Any]) -> None:
        with self.transaction() as db:
            for a in assignments:
                db.execute("INSERT INTO assignments VALUES (?,?,?,?) ON CONFLICT(slug) DO UPDATE SET "
                           "title=excluded.title, points=excluded.points, due=excluded.due",
                           (a.slug, a.title, a.points, a.due.isoformat()))

    def next_attempt(self, student: str, slug: str) -> int:
        row = self.db.execute("SELECT MAX(attempt) FROM submissions WHERE student=? AND slug=?",
                              (student, slug)).fetchone()
        return (row[0] or 0) + 1

    def latest_sha(self, student: str, slug: str) -> str | None:
        row = self.db.execute("SELECT sha256 FROM submissions WHERE student=? AND slug=? ORDER BY attempt DESC "
                              "LIMIT 1", (student, slug)).fetchone()
        return row[0] if row else None

    def add_submission(self, *, student: str, slug: str, attempt: int, submitted_at: str, late_by: float,
                       sha256: str, path: str, source: str | None, submitted_at_source: str = "unrecorded",
                       notes: Sequence[str] = (), group_name: str | None = None,
                       members: Sequence[str] = ()) -> int:
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO students VALUES (?)", (student,))
            cur = db.execute("INSERT INTO submissions (student, slug, attempt, submitted_at, late_by, sha256, path, "
                             "source, collected_at, submitted_at_source, notes, group_name, members) "
                             "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                             (student, slug, attempt, submitted_at, late_by, sha256, path,
                              None if source is None else _t(source, 2000), now(),
                              submitted_at_source, _t(json.dumps(list(notes))), group_name, json.dumps(list(members))))
            return int(cur.lastrowid)

    def latest_submitted_at(self, student: str, slug: str) -> str | None:
        row = self.db.execute("SELECT submitted_at FROM submissions WHERE student=? AND slug=? ORDER BY attempt "
                              "DESC LIMIT 1", (student, slug)).fetchone()
        return row[0] if row else None

    def set_late_by(self, updates: Sequence[tuple[float, int]]) -> None:
        if updates:
            with self.transaction() as db:
                db.executemany("UPDATE submissions SET late_by=? WHERE id=?", updates)

    def submissions(self, slugs: Sequence[str] | None = None, students: Sequence[str] | None = None,
                    latest_only: bool = True) -> list[SubmissionRow]:
        sql = "SELECT * FROM submissions s"
        where, args = [], []
        if latest_only:
            where.append("attempt = (SELECT MAX(attempt) FROM submissions t WHERE t.student=s.student AND t.slug=s.slug)")
        if slugs:
            where.append(f"slug IN ({','.join('?' * len(slugs))})")
            args += list(slugs)
        if students:
            where.append(f"student IN ({','.join('?' * len(students))})")
            args += list(students)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY slug, student, attempt"
        return [SubmissionRow(**{k: r[k] for k in SubmissionRow.__dataclass_fields__})
                for r in self.db.execute(sql, args)]

    def group_submissions(self, slugs: Sequence[str] | None = None) -> list[SubmissionRow]:
        """Latest group submissions (members recorded), for giving each member the group's grade."""
        return [s for s in self.submissions(slugs) if s.member_list]

    def students(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT id FROM students ORDER BY id")]

    # -------------------------------------------------------------- gradings

    def current_grading(self, submission_id: int, *, graded_only: bool = True) -> GradingRow | None:
        sql = "SELECT * FROM gradings WHERE submission_id=?" + (" AND status='graded'" if graded_only else "")
        row = self.db.execute(sql + " ORDER BY id DESC LIMIT 1", (submission_id,)).fetchone()
        return _grading(row) if row else None

    def is_graded(self, submission_id: int, grader_version: str) -> bool:
        current = self.current_grading(submission_id)
        return current is not None and current.grader_version == grader_version

    def results(self, grading_id: int) -> list[ResultRow]:
        rows = self.db.execute("SELECT * FROM results WHERE grading_id=? ORDER BY hidden, task, test_id", (grading_id,))
        return [ResultRow(test_id=r["test_id"], name=r["name"], task=r["task"], hidden=bool(r["hidden"]),
                          outcome=r["outcome"], points=r["points"], max_points=r["max_points"], message=r["message"],
                          detail=r["detail"], location=r["location"], duration=r["duration"],
                          description=r["description"], diagnosis=r["diagnosis"],
                          misconceptions=r["misconceptions"]) for r in rows]

    def save_grading(self, submission_id: int, grader_version: str, results: Sequence[Any], *, backend: str,
                     device: str, isolation: str, started_at: str, duration: float,
                     merge_into: int | None = None, environment: dict[str, Any] | None = None) -> int:
        """Record one submission's results in one transaction; returns the grading's id.

        With ``merge_into``, the results replace only those tests in that earlier grading (used by
        ``--only-pending``), the other tests' results are carried over.
        """
        with self.transaction() as db:
            carried: list[ResultRow] = []
            if merge_into is not None:
                new_ids = {r.test_id for r in results}
                carried = [r for r in self.results(merge_into) if r.test_id not in new_ids]
            all_results = [*carried, *results]
            points = sum(r.points for r in all_results)
            max_points = sum(r.max_points for r in all_results)
            pending = sum(1 for r in all_results if r.outcome == "pending")
            cur = db.execute(
                "INSERT INTO gradings (submission_id, grader_version, status, backend, device, isolation, points, "
                "max_points, pending, message, started_at, finished_at, duration, environment) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (submission_id, grader_version, "graded", backend, device, isolation, round(points, 6),
                 round(max_points, 6), pending, None, started_at, now(), round(duration, 3),
                 json.dumps(environment or {}, sort_keys=True)))
            grading_id = int(cur.lastrowid)
            db.executemany(
                "INSERT INTO results (grading_id, test_id, name, task, hidden, outcome, points, max_points, message, "
                "detail, location, duration, description, diagnosis, misconceptions) VALUES "
                "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [(grading_id, _t(r.test_id, 1000), _t(r.name, 1000), None if r.task is None else _t(r.task, 50),
                  int(bool(r.hidden)), r.outcome, float(r.points), float(r.max_points), _t(r.message or ""),
                  _t(r.detail or ""), None if r.location is None else _t(r.location, 300), float(r.duration),
                  _t(getattr(r, "description", "") or "", 500), _t(getattr(r, "diagnosis", "") or "", 2000),
                  _t(getattr(r, "misconceptions", "") or "", 500))
                 for r in all_results])
        return grading_id

    def save_error(self, submission_id: int, grader_version: str, message: str, *, backend: str, device: str,
                   started_at: str, duration: float) -> int:
        """Grading could not run (infrastructure): recorded, and retried by the next ``course grade``."""
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO gradings (submission_id, grader_version, status, backend, device, message, started_at, "
                "finished_at, duration) VALUES (?,?,?,?,?,?,?,?,?)",
                (submission_id, grader_version, "error", backend, device, _t(message, 4000), started_at, now(),
                 round(duration, 3)))
            return int(cur.lastrowid)

    def last_error(self, submission_id: int) -> GradingRow | None:
        row = self.db.execute("SELECT * FROM gradings WHERE submission_id=? ORDER BY id DESC LIMIT 1",
                              (submission_id,)).fetchone()
        if row is None or row["status"] != "error":
            return None
        return _grading(row)

    # -------------------------------------------------------------- reference timings (calibrated time limits)

    def set_reference_timings(self, slug: str, grader_version: str, seconds: dict[str, float], machine: str) -> None:
        with self.transaction() as db:
            db.executemany("INSERT INTO reference_timings VALUES (?,?,?,?,?,?) ON CONFLICT(slug, grader_version, "
                           "test_id) DO UPDATE SET seconds=excluded.seconds, machine=excluded.machine, "
                           "recorded_at=excluded.recorded_at",
                           [(slug, grader_version, t, float(v), machine, now()) for t, v in seconds.items()])

    def reference_timings(self, slug: str, grader_version: str) -> dict[str, float]:
        return {r["test_id"]: r["seconds"] for r in self.db.execute(
            "SELECT test_id, seconds FROM reference_timings WHERE slug=? AND grader_version=?", (slug, grader_version))}

    # -------------------------------------------------------------- manual scores (notebooks)

    def set_manual_score(self, student: str, slug: str, item: str, score: float | None, max_score: float,
                         grader: str | None = None, reason: str = "") -> int | None:
        """A TA's score of a written item, appended to the ledger when it differs from the current one
        (returns the new row's id, or None when nothing changed)."""
        from course import ledger
        return ledger.record_manual(self, student, slug, item, score, max_score, by=grader, reason=reason)

    def ensure_manual_items(self, student: str, slug: str, items: Sequence[tuple[str, float]]) -> None:
        """Written parts that a TA grades by hand: listed as 'needs manual grading' until scored."""
        if items:
            with self.transaction() as db:
                db.executemany("INSERT OR IGNORE INTO manual_scores VALUES (?,?,?,NULL,?,NULL,?)",
                               [(student, slug, item, float(points), now()) for item, points in items])

    def manual_scores(self, student: str, slug: str, upto: int | None = None) -> list[sqlite3.Row]:
        """The current manual score of each item (item, score, max_score, grader, updated_at): the latest
        ledger row (up to ledger id ``upto``), or no score ("needs manual grading")."""
        from course import ledger
        return ledger.manual_scores(self, student, slug, upto)

    # -------------------------------------------------------------- history (the class report's test health)

    def history(self, slugs: Sequence[str] | None = None) -> list[tuple[SubmissionRow, GradingRow]]:
        """Every grading ever recorded (graded and error, every attempt), oldest first, with its submission."""
        subs = {s.id: s for s in self.submissions(slugs, latest_only=False)}
        if not subs:
            return []
        rows = self.db.execute(f"SELECT * FROM gradings WHERE submission_id IN ({','.join('?' * len(subs))}) "
                               "ORDER BY id", list(subs))
        return [(subs[r["submission_id"]], _grading(r)) for r in rows]

    # -------------------------------------------------------------- comparison (tests, resumability)

    def snapshot(self) -> list[tuple]:
        """Every grade, without timestamps or messages (which may quote random inputs): equal for equal
        gradebooks."""
        rows = self.db.execute(
            "SELECT s.student, s.slug, s.attempt, s.sha256, g.grader_version, g.status, g.points, g.max_points, "
            "g.pending, r.test_id, r.outcome, r.points, r.max_points "
            "FROM submissions s JOIN gradings g ON g.submission_id = s.id "
            "AND g.id = (SELECT MAX(id) FROM gradings h WHERE h.submission_id = s.id) "
            "LEFT JOIN results r ON r.grading_id = g.id ORDER BY 1, 2, 3, 10")
        return [tuple(r) for r in rows]


def _t(value: Any, limit: int = 20000) -> str:
    """Text from a student's code or files, safe to store (valid UTF-8, no control characters)."""
    return textsafe.clean(value, limit)


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def _grading(row: sqlite3.Row) -> GradingRow:
    return GradingRow(**{k: row[k] for k in GradingRow.__dataclass_fields__})

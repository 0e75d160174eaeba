"""course.yml -> frozen dataclasses. Every error names the file, the key and the bad value.

Settings are resolved here, once, into one typed object that is passed down explicitly.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import yaml

from course.errors import ConfigError, UnknownAssignment

SLUG_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d)?\s*$")
_DURATION_UNITS = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB|GB|GiB|TB|TiB)?\s*$")
_SIZE_UNITS = {None: 1, "B": 1, "KB": 10**3, "KiB": 2**10, "MB": 10**6, "MiB": 2**20,
               "GB": 10**9, "GiB": 2**30, "TB": 10**12, "TiB": 2**40}


@dataclass(frozen=True)
class Limits:
    """Resource limits for one submission's worker (the sandbox applies what the machine allows)."""

    call_timeout: float = 60.0          # default wall budget of one test's submission calls, seconds
    submission_timeout: float = 1800.0  # wall budget of a whole submission, seconds
    memory: int = 4 * 2**30             # address space of the worker, bytes
    cpu_seconds: float = 1800.0         # RLIMIT_CPU of one worker
    processes: int = 64                 # RLIMIT_NPROC for the worker's uid
    file_size: int = 256 * 2**20        # RLIMIT_FSIZE
    open_files: int = 256               # RLIMIT_NOFILE
    reply_bytes: int = 256 * 2**20      # largest reply accepted from the worker
    threads: int = 1                    # torch threads in the worker
    import_timeout: float = 30.0        # wall budget for importing one of the submission's modules
    timeout_factor: float = 10.0        # a test's limit: max(factor x the solution's time, floor), ...
    timeout_floor: float = 10.0         # ... at most call_timeout (or the test's own timeout mark)


@dataclass(frozen=True)
class LatePolicy:
    """Late days: ``grace`` seconds free, then ``penalty_percent`` per started ``per`` unit,
    and zero once more than ``max_late`` units late."""

    grace: float = 0.0
    penalty_percent: float = 10.0
    per: str = "day"                    # "day" or "hour"
    max_late: float = 3.0               # in units of ``per``; beyond it the score is zero
    slip_days: int = 0                  # whole late days each student may spend across the course (course/late.py)

    @property
    def unit_seconds(self) -> float:
        return 86400.0 if self.per == "day" else 3600.0

    @property
    def slip_cap(self) -> int:
        """The most slip days one assignment may take: ``max_late`` in whole days."""
        return int(math.ceil(self.max_late * self.unit_seconds / 86400.0 - 1e-9))

    def penalty_fraction(self, late_by: float) -> float:
        """Fraction of the score lost for a submission ``late_by`` seconds after its due date."""
        if late_by <= self.grace:
            return 0.0
        units = math.ceil((late_by - self.grace) / self.unit_seconds - 1e-9)
        if units > self.max_late:
            return 1.0
        return min(1.0, units * self.penalty_percent / 100.0)


VISIBILITY = ("names", "tasks", "total", "none")   # what students see of hidden tests (course/visibility.py)
ATTEMPT_RULES = ("latest", "best", "latest_on_time")


@dataclass(frozen=True)
class FeedbackLimit:
    """``hidden_feedback_limit``: at most ``count`` ``course ci`` runs with hidden feedback per ``per`` seconds."""

    count: int
    per: float
    per_text: str = "day"


@dataclass(frozen=True)
class Assignment:
    slug: str
    title: str
    due: dt.datetime
    points: float = 100.0
    needs_gpu: bool = False
    limits: Limits = field(default_factory=Limits)
    min_mutant_kill: float = 0.9        # `course validate --mutants` fails below this kill rate
    max_mutants: int = 40               # mutants graded per assignment by `--mutants` (0: every one)
    canvas_id: int | None = None        # Canvas's assignment id: the gradebook import matches its column by it
    release: dt.datetime | None = None  # when students got it (an accommodation's ``factor`` needs it)
    grade_attempt: str = "latest"       # latest | best | latest_on_time: which attempt counts
    hidden_feedback: str = "names"      # what students see of hidden tests before the due date
    after_due: str = "names"            # ... and after it
    hidden_feedback_limit: FeedbackLimit | None = None   # course ci runs with hidden feedback, per window
    requires: tuple[str, ...] = ()      # what its student kit needs beyond torch (pip requirements)


@dataclass(frozen=True)
class Paths:
    root: Path
    submitted: Path
    gradebook: Path
    feedback: Path
    exports: Path
    assignments: Path
    solutions: Path
    graders: Path
    roster: Path | None = None          # roster.csv: the course's students and their LMS keys


@dataclass(frozen=True)
class Extension:
    """An extensions.yml entry: one student's due date for one assignment, or (``assignment: "*"``) a
    standing accommodation for every assignment; exactly one of ``due``, ``extra`` or ``factor``."""

    student: str
    assignment: str                     # a slug, or "*": every assignment
    due: dt.datetime | None = None
    reason: str = ""
    extra: float | None = None          # seconds added to the due date
    factor: float | None = None         # the time from release to due, multiplied

    def due_of(self, a: "Assignment") -> dt.datetime:
        if self.due is not None:
            return self.due
        if self.extra is not None:
            return a.due + dt.timedelta(seconds=self.extra)
        assert self.factor is not None and a.release is not None
        return a.release + (a.due - a.release) * self.factor

    @property
    def rule(self) -> str:
        """The entry in words, e.g. ``due 2026-10-03T23:59:00+00:00``, ``+2d``, ``x1.5 of release to due``."""
        if self.due is not None:
            return f"due {self.due.isoformat()}"
        if self.extra is not None:
            days = self.extra / 86400
            return f"+{days:g}d" if days == int(days) else f"+{self.extra / 3600:g}h"
        return f"x{self.factor:g} of release to due"

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reason": self.reason}
        if self.due is not None:
            out["due"] = self.due.isoformat()
        if self.extra is not None:
            out["extra"] = self.extra
        if self.factor is not None:
            out["factor"] = self.factor
        return out


@dataclass(frozen=True)
class Executor:
    kind: str = "local"                 # "local" or "dask"
    scheduler: str | None = None


@dataclass(frozen=True)
class Course:
    name: str
    file: Path
    paths: Paths
    late_policy: LatePolicy
    assignments: tuple[Assignment, ...]
    extensions: tuple[Extension, ...] = ()
    executor: Executor = field(default_factory=Executor)
    missing: str = "zero"               # a roster student with no submission after the due date: zero | blank
    regrade_share: float = 0.0          # course grade refuses a regrade changing more than this share of scores

    @property
    def slugs(self) -> list[str]:
        return [a.slug for a in self.assignments]

    def assignment(self, slug: str) -> Assignment:
        for a in self.assignments:
            if a.slug == slug:
                return a
        raise UnknownAssignment(
            f"{self.file.name}: unknown assignment {slug!r}; known: {', '.join(self.slugs) or '(none)'}")

    def select(self, slugs: list[str] | tuple[str, ...] | None) -> list[Assignment]:
        return [self.assignment(s) for s in slugs] if slugs else list(self.assignments)

    def due_for(self, student: str, slug: str) -> dt.datetime:
        """The due date that applies to this student: their extension for ``slug`` wins over a standing
        accommodation (``assignment: "*"``), which wins over the course's."""
        a = self.assignment(slug)
        ext = self.extension_for(student, slug)
        return ext.due_of(a) if ext is not None else a.due

    def extension_for(self, student: str, slug: str) -> Extension | None:
        """The extensions.yml entry that decides this student's due date for ``slug``, if any."""
        own = [e for e in self.extensions if e.student == student and e.assignment == slug]
        standing = [e for e in self.extensions if e.student == student and e.assignment == "*"]
        return (own or standing or [None])[-1]

    def with_graders(self, graders: Path) -> "Course":
        return replace(self, paths=replace(self.paths, graders=graders.resolve()))


# ---------------------------------------------------------------- parsing helpers

class _Ctx:
    """Where a value came from, so that errors can say so."""

    def __init__(self, file: Path):
        self.file = file

    def fail(self, key: str, value: Any, why: str) -> ConfigError:
        return ConfigError(f"{self.file.name}: {key}: {value!r} {why}")


def parse_duration(value: Any, key: str, ctx: _Ctx) -> float:
    if isinstance(value, bool):
        raise ctx.fail(key, value, "is not a duration (use seconds or e.g. '15m', '2h', '1d')")
    if isinstance(value, (int, float)) and value >= 0:
        return float(value)
    m = _DURATION_RE.match(str(value))
    if not m:
        raise ctx.fail(key, value, "is not a duration (use seconds or e.g. '15m', '2h', '1d')")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2)]


def parse_size(value: Any, key: str, ctx: _Ctx) -> int:
    if isinstance(value, bool):
        raise ctx.fail(key, value, "is not a size (use bytes or e.g. '512MiB', '4GiB')")
    if isinstance(value, int) and value > 0:
        return value
    m = _SIZE_RE.match(str(value))
    if not m or float(m.group(1)) <= 0:
        raise ctx.fail(key, value, "is not a size (use bytes or e.g. '512MiB', '4GiB')")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])


def parse_datetime(value: Any, key: str, ctx: _Ctx) -> dt.datetime:
    if isinstance(value, dt.datetime):
        when = value
    else:
        try:
            when = dt.datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            raise ctx.fail(key, value, "is not an ISO 8601 date") from None
    if when.tzinfo is None:
        shown = when.isoformat(sep="T") if isinstance(value, dt.datetime) else value
        raise ctx.fail(key, shown, f"has no time zone: write it with one, e.g. {when.strftime('%Y-%m-%dT%H:%M:%S')}+00:00 "
                                   "(UTC) or with your local offset")
    return when


def _mapping(value: Any, key: str, ctx: _Ctx) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ctx.fail(key, value, "must be a mapping")
    return value


def _known(data: Mapping[str, Any], allowed: set[str], key: str, ctx: _Ctx) -> None:
    for k in data:
        if k not in allowed:
            where = f"{key}.{k}" if key else str(k)
            raise ctx.fail(where, data[k], f"is not a known key (known: {', '.join(sorted(allowed))})")


def _number(value: Any, key: str, ctx: _Ctx, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (positive and value <= 0) or value < 0:
        raise ctx.fail(key, value, "must be a positive number" if positive else "must be a number >= 0")
    return float(value)


def _limits(data: Mapping[str, Any], key: str, ctx: _Ctx, base: Limits) -> Limits:
    _known(data, set(Limits.__dataclass_fields__), key, ctx)
    parsers: dict[str, Callable[[Any, str, _Ctx], Any]] = {
        "call_timeout": parse_duration, "submission_timeout": parse_duration, "cpu_seconds": parse_duration,
        "import_timeout": parse_duration, "timeout_floor": parse_duration,
        "timeout_factor": lambda v, k, c: _number(v, k, c, positive=True),
        "memory": parse_size, "file_size": parse_size, "reply_bytes": parse_size,
        "processes": lambda v, k, c: int(_number(v, k, c, positive=True)),
        "open_files": lambda v, k, c: int(_number(v, k, c, positive=True)),
        "threads": lambda v, k, c: int(_number(v, k, c, positive=True)),
    }
    values = {name: parsers[name](v, f"{key}.{name}", ctx) for name, v in data.items()}
    for name in ("call_timeout", "submission_timeout", "cpu_seconds", "import_timeout", "timeout_floor"):
        if name in values and values[name] <= 0:
            raise ctx.fail(f"{key}.{name}", data[name], "must be positive")
    return replace(base, **values)


def _late_policy(data: Mapping[str, Any], ctx: _Ctx) -> LatePolicy:
    _known(data, {"grace", "penalty_percent", "per", "max_late", "slip_days"}, "late_policy", ctx)
    slip = data.get("slip_days", 0)
    if isinstance(slip, bool) or not isinstance(slip, int) or slip < 0:
        raise ctx.fail("late_policy.slip_days", slip, "must be a whole number of days >= 0")
    per = data.get("per", "day")
    if per not in ("day", "hour"):
        raise ctx.fail("late_policy.per", per, "must be 'day' or 'hour'")
    penalty = _number(data.get("penalty_percent", 10), "late_policy.penalty_percent", ctx)
    if penalty > 100:
        raise ctx.fail("late_policy.penalty_percent", penalty, "must be at most 100")
    return LatePolicy(
        grace=parse_duration(data.get("grace", 0), "late_policy.grace", ctx),
        penalty_percent=penalty,
        per=per,
        max_late=_number(data.get("max_late", 3), "late_policy.max_late", ctx),
        slip_days=slip,
    )


def parse_fraction(value: Any, key: str, ctx: _Ctx) -> float:
    """A fraction in [0, 1], written 0.9 or '90%'."""
    text = str(value).strip()
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(text[:-1]) / 100 if text.endswith("%") else float(value)
    except (TypeError, ValueError):
        raise ctx.fail(key, value, "is not a fraction (write e.g. 0.9 or '90%')") from None
    if not 0.0 <= number <= 1.0:
        raise ctx.fail(key, value, "must lie between 0 and 1 (or 0% and 100%)")
    return number


def _mutant_settings(data: Mapping[str, Any], key: str, ctx: _Ctx, base: Mapping[str, Any]) -> dict[str, Any]:
    """``min_mutant_kill`` and ``max_mutants``, at the top level or per assignment."""
    out = dict(base)
    if "min_mutant_kill" in data:
        out["min_mutant_kill"] = parse_fraction(data["min_mutant_kill"], f"{key}min_mutant_kill", ctx)
    if "max_mutants" in data:
        value = data["max_mutants"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ctx.fail(f"{key}max_mutants", value, "must be a whole number >= 0 (0: every mutant)")
        out["max_mutants"] = value
    return out


STAFF_KEYS = ("grade_attempt", "hidden_feedback", "after_due", "hidden_feedback_limit")
_WINDOWS = {"hour": 3600.0, "day": 86400.0, "week": 7 * 86400.0}


def _staff_settings(data: Mapping[str, Any], key: str, ctx: _Ctx, base: Mapping[str, Any]) -> dict[str, Any]:
    """grade_attempt, hidden_feedback, after_due, hidden_feedback_limit (per assignment, or course defaults)."""
    out = dict(base)
    where = f"{key}." if key else ""
    if "grade_attempt" in data:
        if data["grade_attempt"] not in ATTEMPT_RULES:
            raise ctx.fail(f"{where}grade_attempt", data["grade_attempt"], f"must be one of {', '.join(ATTEMPT_RULES)}")
        out["grade_attempt"] = data["grade_attempt"]
    for name in ("hidden_feedback", "after_due"):
        if name in data:
            if data[name] not in VISIBILITY:
                raise ctx.fail(f"{where}{name}", data[name], f"must be one of {', '.join(VISIBILITY)}")
            out[name] = data[name]
    if "hidden_feedback_limit" in data:
        out["hidden_feedback_limit"] = _feedback_limit(data["hidden_feedback_limit"], f"{where}hidden_feedback_limit",
                                                       ctx)
    return out


def _feedback_limit(value: Any, key: str, ctx: _Ctx) -> FeedbackLimit | None:
    if value is None:
        return None
    value = _mapping(value, key, ctx)
    _known(value, {"count", "per"}, key, ctx)
    count = value.get("count")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ctx.fail(f"{key}.count", count, "must be a whole number of runs >= 0")
    per = value.get("per", "day")
    seconds = _WINDOWS.get(per) if isinstance(per, str) else None
    if seconds is None:
        seconds = parse_duration(per, f"{key}.per", ctx)
    if seconds <= 0:
        raise ctx.fail(f"{key}.per", per, "must be hour, day, week or a positive duration")
    return FeedbackLimit(count=count, per=seconds, per_text=str(per))


def _assignment(data: Any, i: int, ctx: _Ctx, base_limits: Limits,
                base_mutants: Mapping[str, Any] | None = None, staff: Mapping[str, Any] | None = None) -> Assignment:
    key = f"assignments[{i}]"
    data = _mapping(data, key, ctx)
    _known(data, {"slug", "title", "due", "points", "needs_gpu", "limits", "canvas_id", "requires", "min_mutant_kill",
                  "max_mutants", "release", *STAFF_KEYS}, key, ctx)
    for required in ("slug", "due"):
        if required not in data:
            raise ctx.fail(f"{key}.{required}", None, "is missing")
    slug = data["slug"]
    if not isinstance(slug, str) or not SLUG_RE.match(slug):
        raise ctx.fail(f"{key}.slug", slug, "is not a slug (lower case letters, digits, '_')")
    needs_gpu = data.get("needs_gpu", False)
    if not isinstance(needs_gpu, bool):
        raise ctx.fail(f"{key}.needs_gpu", needs_gpu, "must be true or false")
    canvas_id = data.get("canvas_id")
    if canvas_id is not None and (isinstance(canvas_id, bool) or not isinstance(canvas_id, int) or canvas_id <= 0):
        raise ctx.fail(f"{key}.canvas_id", canvas_id, "must be Canvas's numeric assignment id")
    release = parse_datetime(data["release"], f"{key}.release", ctx) if data.get("release") is not None else None
    due = parse_datetime(data["due"], f"{key}.due", ctx)
    if release is not None and release >= due:
        raise ctx.fail(f"{key}.release", data["release"], "must be before the due date")
    requires = data.get("requires", [])
    if not isinstance(requires, list) or not all(isinstance(r, str) for r in requires):
        raise ctx.fail(f"{key}.requires", requires, "must be a list of pip requirements (strings)")
    for j, req in enumerate(requires):
        try:
            from packaging.requirements import InvalidRequirement, Requirement
            Requirement(req)
        except InvalidRequirement as exc:
            raise ctx.fail(f"{key}.requires[{j}]", req, f"is not a pip requirement ({exc})") from None
    return Assignment(
        release=release,
        **_staff_settings(data, key, ctx, staff or {}),
        canvas_id=canvas_id,
        requires=tuple(requires),
        slug=slug,
        title=str(data.get("title", slug)),
        due=parse_datetime(data["due"], f"{key}.due", ctx),
        points=_number(data.get("points", 100), f"{key}.points", ctx, positive=True),
        needs_gpu=needs_gpu,
        limits=_limits(_mapping(data.get("limits"), f"{key}.limits", ctx), f"{key}.limits", ctx, base_limits),
        **_mutant_settings(data, f"{key}.", ctx, base_mutants or {}),
    )


def _paths(root: Path, data: Mapping[str, Any], ctx: _Ctx) -> Paths:
    defaults = {"submitted": "submitted", "gradebook": "gradebook.sqlite", "feedback": "feedback",
                "exports": "exports", "assignments": "assignments", "solutions": "solutions",
                "graders": "graders", "roster": "roster.csv"}
    _known(data, set(defaults), "paths", ctx)
    resolved = {}
    for name, default in defaults.items():
        value = data.get(name, default)
        if not isinstance(value, str) or not value.strip():
            raise ctx.fail(f"paths.{name}", value, "must be a path")
        resolved[name] = (root / value).resolve()
    return Paths(root=root, **resolved)


def _executor(data: Mapping[str, Any], ctx: _Ctx) -> Executor:
    _known(data, {"kind", "scheduler"}, "executor", ctx)
    kind = data.get("kind", "local")
    if kind not in ("local", "dask"):
        raise ctx.fail("executor.kind", kind, "must be 'local' or 'dask'")
    scheduler = data.get("scheduler")
    if scheduler is not None and not isinstance(scheduler, str):
        raise ctx.fail("executor.scheduler", scheduler, "must be an address such as tcp://host:8786")
    return Executor(kind=kind, scheduler=scheduler)


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (run course commands from the course folder, or pass --course)") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path.name}:{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None


def load_extensions(path: Path, course_slugs: list[str],
                    assignments: Sequence[Assignment] = ()) -> tuple[Extension, ...]:
    """extensions.yml: a list of {student, assignment, due | extra | factor, reason}; ``assignment: "*"``
    is a standing accommodation for every assignment (an entry for one assignment wins over it)."""
    if not path.exists():
        return ()
    ctx = _Ctx(path)
    data = _read_yaml(path)
    if data is None:
        return ()
    if isinstance(data, Mapping) and "extensions" in data:
        data = data["extensions"]
    if not isinstance(data, list):
        raise ctx.fail("extensions", data, "must be a list of {student, assignment, due, reason}")
    out: list[Extension] = []
    seen: dict[tuple[str, str], int] = {}
    for i, item in enumerate(data):
        key = f"extensions[{i}]"
        item = _mapping(item, key, ctx)
        _known(item, {"student", "assignment", "due", "extra", "factor", "reason"}, key, ctx)
        for required in ("student", "assignment"):
            if required not in item:
                raise ctx.fail(f"{key}.{required}", None, "is missing")
        given = [k for k in ("due", "extra", "factor") if item.get(k) is not None]
        if len(given) != 1:
            raise ctx.fail(key, {k: item.get(k) for k in ("due", "extra", "factor")},
                           "needs exactly one of due (a date), extra (e.g. 2d) or factor (e.g. 1.5)")
        if item["assignment"] != "*" and item["assignment"] not in course_slugs:
            raise ctx.fail(f"{key}.assignment", item["assignment"], "is not an assignment of the course (or \"*\")")
        ext = Extension(student=str(item["student"]), assignment=str(item["assignment"]),
                        due=parse_datetime(item["due"], f"{key}.due", ctx) if "due" in given else None,
                        extra=parse_duration(item["extra"], f"{key}.extra", ctx) if "extra" in given else None,
                        factor=_number(item["factor"], f"{key}.factor", ctx, positive=True) if "factor" in given else None,
                        reason=str(item.get("reason", "")))
        if ext.factor is not None:
            lacking = [a.slug for a in assignments if (ext.assignment in ("*", a.slug)) and a.release is None]
            if lacking:
                raise ctx.fail(f"{key}.factor", ext.factor, f"needs a release date: set release: on "
                               f"{', '.join(lacking)} in course.yml (the factor scales the time from release to due)")
        where = (ext.student, ext.assignment)
        if where in seen and out[seen[where]] != ext:
            other = out[seen[where]]
            raise ConfigError(f"{path.name}: {key}: contradicts extensions[{seen[where]}] (both for student "
                              f"{ext.student!r}, assignment {ext.assignment!r}: {ext.rule} vs {other.rule}); keep one")
        seen.setdefault(where, len(out))
        out.append(ext)
    return tuple(out)


def load(path: str | Path = "course.yml") -> Course:
    """Load and check ``course.yml``; raises :class:`ConfigError` naming file, key and value."""
    path = Path(path).resolve()
    ctx = _Ctx(path)
    data = _mapping(_read_yaml(path), "(top level)", ctx)
    _known(data, {"name", "paths", "limits", "late_policy", "assignments", "executor", "missing",
                  "min_mutant_kill", "max_mutants", "regrade_share", *STAFF_KEYS}, "", ctx)
    share = data.get("regrade_share", 0)
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
        raise ctx.fail("regrade_share", share, "must be a share of the class between 0 and 1 (default 0: any change "
                       "asks for --accept-regrade)")
    staff = _staff_settings(data, "", ctx, {})
    missing = data.get("missing", "zero")
    if missing not in ("zero", "blank"):
        raise ctx.fail("missing", missing, "must be 'zero' (a missing submission scores 0 after the due date) or 'blank'")
    if not isinstance(data.get("name"), str) or not data.get("name"):
        raise ctx.fail("name", data.get("name"), "must be the course's name")
    base_limits = _limits(_mapping(data.get("limits"), "limits", ctx), "limits", ctx, Limits())
    raw_assignments = data.get("assignments") or []
    if not isinstance(raw_assignments, list):
        raise ctx.fail("assignments", raw_assignments, "must be a list")
    base_mutants = _mutant_settings(data, "", ctx, {})
    assignments = tuple(_assignment(a, i, ctx, base_limits, base_mutants, staff) for i, a in enumerate(raw_assignments))
    seen: set[str] = set()
    for i, a in enumerate(assignments):
        if a.slug in seen:
            raise ctx.fail(f"assignments[{i}].slug", a.slug, "appears twice")
        seen.add(a.slug)
    course = Course(
        name=data["name"],
        file=path,
        paths=_paths(path.parent, _mapping(data.get("paths"), "paths", ctx), ctx),
        late_policy=_late_policy(_mapping(data.get("late_policy"), "late_policy", ctx), ctx),
        assignments=assignments,
        executor=_executor(_mapping(data.get("executor"), "executor", ctx), ctx),
        missing=missing,
        regrade_share=float(share),
    )
    return replace(course, extensions=load_extensions(path.parent / "extensions.yml", course.slugs, assignments))


def find_course_file(start: Path | None = None) -> Path:
    """The nearest course.yml at or above ``start`` (default: the current folder)."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "course.yml"
        if candidate.is_file():
            return candidate
    raise ConfigError(f"no course.yml in {here} or any folder above it (pass --course PATH)")

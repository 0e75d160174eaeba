"""Folders, .zip files, git repositories and LMS exports -> ``submitted/<student>/<slug>/<attempt>/``.

Collection is append-only (a new attempt never overwrites an old one; identical content is not
collected twice) and executes and follows nothing of the student's: files are materialised by
:mod:`course.safefiles` (archives streamed with size caps; links, special files, unsafe, colliding
or non-UTF-8 names refused) and :mod:`course.gitread` (an uploaded ``.git`` read as data, with
this package's git configuration only; commit dates never decide lateness).

Every submission records where its time came from (``submitted_at_source``). An LMS reader
(:mod:`course.lms`) supplies the LMS's own time; a folder or zip of unknown origin has none, and
collecting it without ``--submitted-at`` (recorded as ``instructor-flag``) is an error for that
student, never "now". A single wrapper folder around the student folders is stripped (and said);
a wrongly named module is mapped to the expected name when the match is unique, with a note. A
problem with one student's files is reported for that student; the others are collected.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from course import roster as roster_mod
from course.config import Course
from course.errors import CollectError, CourseError
from course.gitread import is_repo as _is_repo, materialise_git
from course.gradebook import Gradebook
from course.safefiles import (CHUNK, MAX_FILE_BYTES, MAX_FILES, MAX_TOTAL_BYTES, SKIP_NAMES,  # noqa: F401 (re-exported)
                              _Budget, _open_zip, _safe_relpath, _zip_kind, _zip_name, check_collisions, copy_folder,
                              extract_members, extract_zip, spool_member, zip_plan)

STUDENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")
SOURCES = ("auto", "dirs", "git", "canvas", "moodle", "gradescope", "github-classroom")


@dataclass
class Collected:
    student: str
    status: str                 # collected | unchanged | error
    attempt: int | None = None
    message: str = ""
    path: str | None = None
    submitted_at: str | None = None
    time_source: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class CollectReport:
    slug: str
    items: list[Collected] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)        # about the source as a whole (a wrapper stripped...)

    @property
    def errors(self) -> list[Collected]:
        return [i for i in self.items if i.status == "error"]

    @property
    def warnings(self) -> list[Collected]:
        return [i for i in self.items if i.status != "error" and i.notes]


@dataclass
class Entry:
    """One student's submission as a source presents it, before anything is written.

    ``kind``: ``dir`` (a folder), ``zip`` (a zip file of the student's own), ``members`` (members of
    a class archive: ``data`` is ``(zip path, [(ZipInfo, relative path)])``), ``git`` (a repository),
    ``refused`` (``data`` is the reason).
    """

    student: str
    kind: str
    data: Any
    label: str
    submitted_at: dt.datetime | None = None
    time_source: str | None = None
    notes: list[str] = field(default_factory=list)
    members: tuple[str, ...] = ()
    group: str | None = None
    ref: str = "HEAD"


@dataclass(frozen=True)
class Options:
    """How to read a source: which LMS, its side files, and the instructor's overrides."""

    lms: str = "auto"
    student: str | None = None
    submitted_at: dt.datetime | None = None
    ref: str = "HEAD"
    worksheet: Path | None = None        # Moodle's grading worksheet
    times: Path | None = None            # Canvas submissions fetched with the API (course lms fetch canvas)
    timezone: str | None = None          # Moodle's site time zone
    date_format: str | None = None       # Moodle's date format when not the English default
    classroom_roster: Path | None = None  # GitHub Classroom's classroom_roster.csv
    push_times: Path | None = None       # the host's push times (GitHub Classroom)


def _descend(root: Path, slug: str) -> Path:
    """The folder that holds the assignment: ``assignments/<slug>`` or ``<slug>`` inside, or a lone folder."""
    for candidate in (root / "assignments" / slug, root / slug):
        if candidate.is_dir():
            return candidate
    while True:
        entries = [e for e in root.iterdir() if e.name not in SKIP_NAMES]
        if len(entries) == 1 and entries[0].is_dir():
            root = entries[0]
            for candidate in (root / "assignments" / slug, root / slug):
                if candidate.is_dir():
                    return candidate
            continue
        return root


def content_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder).as_posix()).encode() + b"\0")
        with open(path, "rb") as f:
            h.update(hashlib.file_digest(f, "sha256").digest() if hasattr(hashlib, "file_digest")
                     else hashlib.sha256(f.read()).digest())
    return h.hexdigest()


# ------------------------------------------------------------------ module names (issue: wrongly named files)

_COPY_SUFFIX = re.compile(r"(?:-\d+| \(\d+\)|_\d+| copy(?: \d+)?)$")
_WORD_SUFFIX = re.compile(r"^(?P<stem>.+?)[-_ .](?:solution|submission|final|done|answer|answers|v\d+|\d+)$",
                          re.IGNORECASE)


def expected_modules(course: Course, slug: str) -> list[str]:
    """The stub files a student must hand in: assignments/<slug>/*.py and *.ipynb."""
    folder = course.paths.assignments / slug
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix in (".py", ".ipynb"))


def match_modules(root: Path, expected: Sequence[str]) -> list[str]:
    """Map wrongly named modules onto the expected names in ``root``; returns notes for the record.

    A unique near-match (a case difference, an LMS copy suffix such as Canvas's ``-1``, a word such
    as ``_solution``) is renamed, with a note; anything else is left as it is, with a warning that
    names the expected files and what was found.
    """
    if not expected:
        return []
    present = {p.name: p for p in root.iterdir() if p.is_file()}
    missing = [name for name in expected if name not in present]
    if not missing:
        return []
    notes = []
    spare = [n for n in present if n not in expected]
    for want in missing:
        stem, suffix = os.path.splitext(want)
        candidates = [n for n in spare if os.path.splitext(n)[1].lower() == suffix.lower()
                      and _near(os.path.splitext(n)[0], stem)]
        if len(candidates) == 1:
            found = candidates[0]
            os.replace(present[found], root / want)
            spare.remove(found)
            notes.append(f"{found} was renamed {want} (the expected module name)")
        elif candidates:
            notes.append(f"{want} is missing; {', '.join(sorted(candidates))} could each be it, so none was "
                         f"renamed (expected files: {', '.join(expected)})")
        else:
            found = ", ".join(sorted(present)) or "no files"
            notes.append(f"{want} is missing (expected files: {', '.join(expected)}; found: {found}); "
                         "its tests will fail")
    return notes


def _near(name: str, stem: str) -> bool:
    a, b = name.casefold(), stem.casefold()
    if a == b:
        return True
    stripped = _COPY_SUFFIX.sub("", name)
    while stripped != name:
        name, stripped = stripped, _COPY_SUFFIX.sub("", stripped)
    if name.casefold() == b:
        return True
    m = _WORD_SUFFIX.match(name)
    return bool(m and m.group("stem").casefold() == b)


# ------------------------------------------------------------------ generic sources (folders, zips, repos)

def _classify_wrapper(children: dict[str, str], expected: Sequence[str], slug: str) -> str:
    """'wrapper', 'student' or 'ambiguous' for the children (name -> file|dir|zip) of a lone top folder.

    A folder of two or more folders or zips (and nothing else) wraps the students' folders; one
    holding files of the assignment, or nothing, or other files too, is a student's; a folder whose
    only entry is one folder or zip could be either, and is refused.
    """
    names = set(children)
    if names & set(expected) or "assignments" in names or slug in names:
        return "student"
    holders = [n for n, k in children.items() if k in ("dir", "zip")]
    if len(holders) != len(children) or not children:
        return "student"
    return "wrapper" if len(holders) >= 2 else "ambiguous"


def _generic_zip_entries(source: Path, slug: str, expected: Sequence[str], report: CollectReport) -> list[Entry]:
    zf = _open_zip(source, str(source))
    out: dict[str, list[zipfile.ZipInfo]] = {}
    inner: dict[str, zipfile.ZipInfo] = {}
    refused: dict[str, str] = {}
    with zf:
        infos = zf.infolist()
        tops: dict[str, str] = {}
        for info in infos:
            norm = info.filename.replace("\\", "/").lstrip("/")
            parts = [p for p in norm.split("/") if p not in ("", ".")]
            if not parts or parts[0] in SKIP_NAMES:
                continue
            kind = "dir" if len(parts) > 1 or info.is_dir() else ("zip" if parts[0].lower().endswith(".zip") else "file")
            tops.setdefault(parts[0], kind)
        strip = 0
        if len(tops) == 1 and next(iter(tops.values())) == "dir":
            top = next(iter(tops))
            children: dict[str, str] = {}
            for info in infos:
                parts = [p for p in info.filename.replace("\\", "/").split("/") if p not in ("", ".")]
                if len(parts) >= 2 and parts[0] == top and parts[1] not in SKIP_NAMES:
                    kind = "dir" if len(parts) > 2 or info.is_dir() else (
                        "zip" if parts[1].lower().endswith(".zip") else "file")
                    children.setdefault(parts[1], kind)
            verdict = _classify_wrapper(children, expected, slug)
            if verdict == "ambiguous":
                raise CollectError(f"{source}: the archive holds one folder, {top!r}, and it is not clear whether it "
                                   "is one student's submission or a folder around the students' folders; collect "
                                   f"it with --student ID, or unpack it and collect {top}/")
            if verdict == "wrapper":
                strip = 1
                report.notes.append(f"{source.name}: the wrapper folder {top!r} around the student folders was stripped")
        for info in infos:
            raw = info.filename.replace("\\", "/").split("/")[strip:]
            parts = [p for p in raw if p not in ("", ".")]
            if not parts:
                continue
            top = parts[0]
            owner = raw[0] if len(raw) > 1 and raw[0] not in ("", ".", "..") and ":" not in raw[0] else None
            who = f"{source}: student {owner}" if owner else str(source)
            try:  # one student's bad entry refuses that student, not the class
                name = _zip_name(info, who)
                _safe_relpath(name, who)
            except CollectError as exc:
                refused.setdefault(owner or source.name, str(exc))
                continue
            if top in SKIP_NAMES:
                continue
            if len(parts) == 1:
                if not info.is_dir() and top.lower().endswith(".zip"):
                    inner[top[:-4]] = info
                continue
            out.setdefault(top, []).append(info)
    entries = [Entry(s, "refused", why, f"{source}: student {s}") for s, why in refused.items()]
    for sid, info in inner.items():
        if sid not in refused:
            entries.append(Entry(sid, "zip-member", (source, info), f"{source.name}: student {sid}"))
    for sid, infos_ in out.items():
        if sid not in refused:
            entries.append(Entry(sid, "members", (source, infos_, strip + 1), f"{source.name}: student {sid}"))
    return entries


def _generic_dir_entries(source: Path, slug: str, expected: Sequence[str], report: CollectReport) -> list[Entry]:
    def kinds(folder: Path) -> dict[str, str]:
        out = {}
        for child in folder.iterdir():
            if child.name in SKIP_NAMES or child.name.startswith("."):
                continue
            out[child.name] = ("dir" if child.is_dir() and not child.is_symlink() else
                               "zip" if child.suffix.lower() == ".zip" else "file")
        return out
    top = kinds(source)
    if len(top) == 1 and next(iter(top.values())) == "dir" and not _is_repo(source / next(iter(top))):
        only = next(iter(top))
        verdict = _classify_wrapper(kinds(source / only), expected, slug)
        if verdict == "ambiguous":
            raise CollectError(f"{source}: it holds one folder, {only!r}, and it is not clear whether that is one "
                               f"student's submission or a folder around the students' folders; collect "
                               f"{source / only} (a class) or pass --student ID (one student)")
        if verdict == "wrapper":
            report.notes.append(f"{source.name}: the wrapper folder {only!r} around the student folders was stripped")
            source = source / only
    entries = []
    for child in sorted(source.iterdir()):
        if child.name in SKIP_NAMES or child.name.startswith("."):
            continue
        who = f"{source.name}: student {child.name}"
        try:
            child.name.encode("utf-8")
        except UnicodeEncodeError:
            entries.append(Entry(os.fsencode(child.name).decode("ascii", "backslashreplace"), "refused",
                                 f"{source}: the folder name {os.fsencode(child)!r} is not UTF-8", who))
            continue
        if child.is_symlink():
            entries.append(Entry(child.name, "refused", f"{who}: {child} is a symbolic link; links are not followed",
                                 who))
        elif child.is_dir():
            entries.append(Entry(child.name, "git" if _is_repo(child) else "dir", child, who))
        elif child.suffix.lower() == ".zip" and child.is_file():
            entries.append(Entry(child.stem, "zip", child, who))
        elif not child.is_file():
            entries.append(Entry(child.name, "refused", f"{who}: {child.name} is not a regular file or folder", who))
    if not entries:
        raise CollectError(f"{source}: no student folders or zip files found")
    return entries


def generic_entries(source: Path, slug: str, expected: Sequence[str], opts: Options,
                    report: CollectReport) -> list[Entry]:
    if opts.student:
        if source.is_file():
            return [Entry(opts.student, "zip", source, f"{source.name}: student {opts.student}")]
        kind = "git" if _is_repo(source) or opts.lms == "git" else "dir"
        return [Entry(opts.student, kind, source, f"{source.name}: student {opts.student}", ref=opts.ref)]
    if source.is_file():
        return _generic_zip_entries(source, slug, expected, report)
    if not source.is_dir():
        raise CollectError(f"{source}: no such file or folder")
    if _is_repo(source):
        return [Entry(source.name, "git", source, f"{source.name}: student {source.name}", ref=opts.ref)]
    entries = _generic_dir_entries(source, slug, expected, report)
    for e in entries:
        e.ref = opts.ref
    return entries


# ------------------------------------------------------------------ the verb

def collect(course: Course, source: str | Path, slug: str, *, student: str | None = None,
            submitted_at: dt.datetime | None = None, ref: str = "HEAD", gradebook: Gradebook,
            options: Options | None = None) -> CollectReport:
    """Collect every student's submission of ``slug`` from ``source`` into ``submitted/``."""
    course.assignment(slug)
    source = Path(source)
    opts = options or Options(student=student, submitted_at=submitted_at, ref=ref)
    if opts.lms not in SOURCES:
        raise CollectError(f"--from {opts.lms!r}: use one of {', '.join(SOURCES)}")
    report = CollectReport(slug)
    gradebook.sync_assignments([course.assignment(slug)])
    roster = roster_mod.load(course.paths.roster)
    groups = roster_mod.load_groups(course.file.parent / "groups.yml", course.slugs, roster.ids if len(roster) else ())
    expected = expected_modules(course, slug)
    if opts.lms in ("auto", "dirs", "git"):
        entries = generic_entries(source, slug, expected, opts, report)
        entries = [_map_generic(e, roster) for e in entries]
    else:
        from course import lms
        entries = lms.reader(opts.lms).entries(course, source, slug, roster, opts, report)
    for e in entries:
        if e.kind != "refused" and not e.members:
            g = roster_mod.group_of(groups, e.student, slug)
            if g is not None:
                e.members, e.group = tuple(g.members), g.name
    # several submissions for one student: all are recorded, oldest first, so the latest is the latest attempt
    entries.sort(key=lambda e: (e.student, e.submitted_at or dt.datetime.min.replace(tzinfo=dt.timezone.utc)))
    counts: dict[str, int] = {}
    for e in entries:
        counts[e.student] = counts.get(e.student, 0) + 1
    for e in entries:
        if e.kind == "refused":
            report.items.append(Collected(e.student, "error", message=str(e.data)))
            continue
        if counts[e.student] > 1:
            e.notes.append(f"{counts[e.student]} submissions for {e.student} in {source.name}: each is recorded, "
                           "the latest by the LMS's time is graded")
        try:
            _check_student(e.student, str(source))
            report.items.append(_collect_one(course, gradebook, slug, e, opts, expected))
        except CollectError as exc:
            report.items.append(Collected(e.student, "error", message=str(exc), notes=e.notes))
        except CourseError as exc:   # a roster problem with this one student
            report.items.append(Collected(e.student, "error", message=str(exc), notes=e.notes))
    return report


def _map_generic(e: Entry, roster: roster_mod.Roster) -> Entry:
    """With a roster, a folder's name must be a roster id (or one LMS key of one student)."""
    if e.kind == "refused" or not len(roster):
        return e
    if roster.get(e.student):
        return e
    for kind in ("sis_login_id", "email", "github", "sis_user_id", "gradescope_sid", "moodle_id", "canvas_id"):
        found = roster.lookup(kind, e.student)
        if len(found) == 1:
            e.notes.append(f"{e.student!r} is {found[0].id} on the roster (by {kind})")
            e.student = found[0].id
            return e
    return Entry(e.student, "refused", f"{e.label}: {e.student!r} is not on the roster ({roster.file}); "
                 "no submission is collected for a student the roster does not know", e.label)


def _check_student(student: str, where: str) -> str:
    if not STUDENT_RE.match(student):
        raise CollectError(f"{where}: {student!r} is not a usable student id (letters, digits, . _ @ + -)")
    return student


def _materialise(e: Entry, stage: Path) -> tuple[dt.datetime | None, list[str]]:
    """Write the entry's files into ``stage``; returns a fetch time and notes for git."""
    if e.kind == "zip":
        extract_zip(Path(e.data), stage, e.label)
    elif e.kind == "zip-member":
        path, info = e.data
        with _open_zip(path, str(path)) as zf, tempfile.TemporaryDirectory(prefix="course-inner-") as tmp:
            inner = spool_member(zf, info, Path(tmp), e.label)
            extract_zip(inner, stage, e.label)
    elif e.kind == "members":
        path, infos, strip = e.data
        with _open_zip(path, str(path)) as zf:
            extract_members(zf, zip_plan(zf, e.label, infos, strip=strip), stage, e.label)
    elif e.kind == "renamed-members":   # LMS readers: [(ZipInfo, relative path)] already decided
        path, pairs = e.data
        with _open_zip(path, str(path)) as zf:
            rels = []
            for info, rel in pairs:
                if _zip_kind(info) != "file":
                    raise CollectError(f"{e.label}: {info.filename!r} is not a regular file")
                safe = _safe_relpath(rel, e.label)
                if safe is not None:
                    rels.append((info, safe))
            check_collisions((r for _, r in rels), (), e.label)
            budget = _Budget(e.label)
            for info, rel in rels:
                budget.add(str(rel), info.file_size)
            extract_members(zf, rels, stage, e.label)
    elif e.kind == "git":
        _, notes, fetched = materialise_git(Path(e.data), e.ref, stage, e.label)
        return fetched, notes
    elif e.kind == "dir":
        copy_folder(Path(e.data), stage, e.label, strict=True)
    else:
        raise CollectError(f"{e.label}: unknown kind of entry {e.kind!r}")
    return None, []


def _collect_one(course: Course, gradebook: Gradebook, slug: str, e: Entry, opts: Options,
                 expected: Sequence[str]) -> Collected:
    notes = list(e.notes)
    with tempfile.TemporaryDirectory(prefix="course-collect-") as tmp:
        stage = Path(tmp) / "stage"
        stage.mkdir()
        fetched, git_notes = _materialise(e, stage)
        notes += git_notes
        when, source = e.submitted_at, e.time_source
        if when is None and fetched is not None:
            when, source = fetched, "fetch-time"
        if opts.submitted_at is not None:
            if when is not None and source not in (None, "fetch-time"):
                notes.append(f"the instructor's --submitted-at replaced the time from {source} ({when.isoformat()})")
            when, source = opts.submitted_at, "instructor-flag"
        root = _descend(stage, slug)
        notes += match_modules(root, expected)
        digest = content_hash(root)
        if gradebook.latest_sha(e.student, slug) == digest:
            return Collected(e.student, "unchanged", message="identical to the latest attempt; not collected again",
                             notes=notes)
        if when is None:
            raise CollectError(f"{e.label}: no trustworthy submission time (a folder or zip does not say when it was "
                               "submitted); collect the LMS's export with --from canvas|moodle|gradescope, or pass "
                               "--submitted-at (recorded as the instructor's flag)")
        if when.tzinfo is None:
            raise CollectError(f"{e.label}: submitted-at {when.isoformat()} has no time zone")
        attempt = gradebook.next_attempt(e.student, slug)
        target = course.paths.submitted / e.student / slug / str(attempt)
        if target.exists():
            raise CollectError(f"{e.label}: {target} already exists but is not in the gradebook; refusing to overwrite")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(root, target)
        late_by = max(0.0, (when - course.due_for(e.student, slug)).total_seconds())
        files = sum(1 for p in target.rglob("*") if p.is_file())
        if files == 0:
            notes.append("empty submission (no files)")
        gradebook.add_submission(student=e.student, slug=slug, attempt=attempt, submitted_at=when.isoformat(),
                                 late_by=late_by, sha256=digest, path=os.path.relpath(target, course.paths.root),
                                 source=f"{e.kind}: {e.label}", submitted_at_source=source or "instructor-flag",
                                 notes=notes, group_name=e.group, members=e.members)
        message = "; ".join(notes)
        if e.group:
            message = f"group {e.group} ({', '.join(e.members)})" + (f"; {message}" if message else "")
        return Collected(e.student, "collected", attempt=attempt, path=str(target), message=message,
                         submitted_at=when.isoformat(), time_source=source, notes=notes)

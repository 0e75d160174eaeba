"""Folders, .zip files, git repositories and LMS exports -> ``submitted/<student>/<slug>/<attempt>/``.

Collection is append-only (a new attempt never overwrites an old one; identical content is not
collected twice) and executes and follows nothing of the student's:

* archives are streamed member by member with the size checked before and while reading (a zip
  bomb costs memory proportional to the cap, never to the member);
* a member or folder entry that is not a regular file or directory (symlink, fifo, device,
  socket), an unsafe path (absolute, ``..``), two paths that collide (also case-insensitively, after
  Unicode normalisation, or a file and a folder of one name) and a name that is not UTF-8 are a
  recorded failure for that student;
* an uploaded ``.git`` is data: git runs with this module's own configuration, never the
  student's (no hooks, filters, attributes, fsmonitor), on objects whose folders hold only regular
  files; ``.git`` pointer files and alternates that lead outside the student's folder are refused,
  and commit dates never decide lateness.

Every submission records where its time came from (``submitted_at_source``). An LMS reader
(:mod:`course.lms`) supplies the LMS's own time; a folder or zip of unknown origin has none, and
collecting it without ``--submitted-at`` (recorded as ``instructor-flag``) is an error for that
student, never "now". A problem with one student's files is reported for that student; the
others are collected.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import shutil
import stat
import subprocess
import tempfile
import unicodedata
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Sequence

from course import roster as roster_mod
from course.config import Course
from course.errors import CollectError, CourseError
from course.gradebook import Gradebook

MAX_TOTAL_BYTES = 256 * 2**20
MAX_FILE_BYTES = 64 * 2**20
MAX_FILES = 2000
MAX_GIT_BYTES = 1024 * 2**20        # a student's whole object store
CHUNK = 1 << 20
SKIP_NAMES = {"__pycache__", ".git", ".DS_Store", "__MACOSX", ".ipynb_checkpoints", ".pytest_cache"}
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


# ------------------------------------------------------------------ names, budgets, collisions

class _Budget:
    def __init__(self, who: str, total: int = MAX_TOTAL_BYTES):
        self.who = who
        self.total = 0
        self.files = 0
        self.limit = total

    def add(self, name: str, size: int) -> None:
        self.files += 1
        self.total += size
        if size > MAX_FILE_BYTES:
            raise CollectError(f"{self.who}: {name} is {size} bytes, larger than the {MAX_FILE_BYTES} byte limit per file")
        if self.total > self.limit:
            raise CollectError(f"{self.who}: the submission is larger than {self.limit} bytes")
        if self.files > MAX_FILES:
            raise CollectError(f"{self.who}: the submission has more than {MAX_FILES} files")


def _safe_relpath(name: str, who: str) -> PurePosixPath | None:
    """A member name as a safe relative path, None for names to skip; CollectError for unsafe ones."""
    name = name.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise CollectError(f"{who}: unsafe absolute path {name!r} in the archive")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise CollectError(f"{who}: unsafe path {name!r} in the archive (it climbs out with '..')")
    if any("\0" in p or any(ord(c) < 32 for c in p) for p in parts):
        raise CollectError(f"{who}: the name {name!r} holds control characters")
    if not parts or any(p in SKIP_NAMES for p in parts):
        return None
    return PurePosixPath(*parts)


def _fold(path: PurePosixPath) -> str:
    return unicodedata.normalize("NFC", str(path)).casefold()


def check_collisions(files: Iterable[PurePosixPath], dirs: Iterable[PurePosixPath], who: str) -> None:
    """Two names that are one on a case-insensitive or normalising file system, or a file and a
    folder of the same name, are a failure for the student."""
    seen: dict[str, PurePosixPath] = {}
    for p in files:
        key = _fold(p)
        if key in seen:
            raise CollectError(f"{who}: {str(seen[key])!r} and {str(p)!r} collide (names that differ only in "
                               "case or Unicode normalisation are one file on many systems)")
        seen[key] = p
    folders = {_fold(d): d for d in dirs}
    for p in list(seen.values()):
        for parent in p.parents:
            if str(parent) != "." and _fold(parent) not in folders:
                folders[_fold(parent)] = parent
    for key, d in folders.items():
        if key in seen:
            raise CollectError(f"{who}: {str(seen[key])!r} is both a file and a folder")


def _zip_name(info: zipfile.ZipInfo, who: str) -> str:
    if info.flag_bits & 0x800:
        return info.filename
    raw = info.filename.encode("cp437")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CollectError(f"{who}: the archive has a file name that is not UTF-8 ({raw!r}); rename it and "
                           "submit again") from None


def _zip_kind(info: zipfile.ZipInfo) -> str:
    """file | dir | link | special, from the member's Unix mode (when the archiver recorded one)."""
    mode = (info.external_attr >> 16) & 0o170000
    if info.is_dir() or mode == stat.S_IFDIR:
        return "dir"
    if mode in (0, stat.S_IFREG):
        return "file"
    return "link" if mode == stat.S_IFLNK else "special"


def zip_plan(zf: zipfile.ZipFile, who: str, infos: Iterable[zipfile.ZipInfo] | None = None,
             strip: int = 0) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """(member, relative path) for the members to extract, every one checked; CollectError otherwise."""
    plan, dirs = [], []
    budget = _Budget(who)
    for info in (zf.infolist() if infos is None else infos):
        name = _zip_name(info, who)
        kind = _zip_kind(info)
        rel = _safe_relpath(name, who)
        if rel is None:
            continue
        if len(rel.parts) <= strip:
            continue
        rel = PurePosixPath(*rel.parts[strip:])
        if kind == "link":
            raise CollectError(f"{who}: {name!r} is a symbolic link; links are not collected (submit the file itself)")
        if kind == "special":
            raise CollectError(f"{who}: {name!r} is not a regular file or folder")
        if kind == "dir":
            dirs.append(rel)
            continue
        budget.add(name, info.file_size)     # the declared size, before a byte is read
        plan.append((info, rel))
    check_collisions((r for _, r in plan), dirs, who)
    return plan


def _copy_capped(src: Any, out: Any, name: str, who: str, cap: int = MAX_FILE_BYTES) -> int:
    """Copy a stream, stopping once it passes ``cap`` bytes (a member may inflate past its declared size)."""
    copied = 0
    while chunk := src.read(CHUNK):
        copied += len(chunk)
        if copied > cap:
            raise CollectError(f"{who}: {name} expands beyond the {cap} byte limit")
        out.write(chunk)
    return copied


def extract_members(zf: zipfile.ZipFile, plan: Sequence[tuple[zipfile.ZipInfo, PurePosixPath]], dest: Path,
                    who: str) -> None:
    total = 0
    for info, rel in plan:
        target = dest.joinpath(*rel.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with zf.open(info) as src, open(target, "xb") as out:
                total += _copy_capped(src, out, rel.as_posix(), who)
        except (zipfile.BadZipFile, zlib_error(), EOFError, NotImplementedError, RuntimeError) as exc:
            raise CollectError(f"{who}: the zip file is corrupt at {rel} ({exc})") from None
        except FileExistsError:
            raise CollectError(f"{who}: {rel} appears twice in the archive") from None
        if total > MAX_TOTAL_BYTES:
            raise CollectError(f"{who}: the submission expands beyond {MAX_TOTAL_BYTES} bytes")


def _open_zip(data: bytes | Path, who: str) -> zipfile.ZipFile:
    import io
    try:
        return zipfile.ZipFile(io.BytesIO(data) if isinstance(data, bytes) else data)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CollectError(f"{who}: not a readable zip file ({exc})") from None


def extract_zip(data: bytes | Path, dest: Path, who: str) -> None:
    """Extract a zip safely into ``dest`` (which must exist and be empty)."""
    with _open_zip(data, who) as zf:
        extract_members(zf, zip_plan(zf, who), dest, who)


def spool_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path, who: str) -> Path:
    """A class archive's inner zip (a student's own zip) copied to a file, capped, never read whole."""
    if info.file_size > MAX_TOTAL_BYTES:
        raise CollectError(f"{who}: {info.filename} is {info.file_size} bytes, larger than {MAX_TOTAL_BYTES}")
    target = dest / "inner.zip"
    try:
        with zf.open(info) as src, open(target, "wb") as out:
            _copy_capped(src, out, info.filename, who, MAX_TOTAL_BYTES)
    except (zipfile.BadZipFile, zlib_error(), EOFError, NotImplementedError, RuntimeError) as exc:
        raise CollectError(f"{who}: the zip file is corrupt at {info.filename} ({exc})") from None
    return target


def zlib_error() -> type:
    import zlib
    return zlib.error


def _walk(src: Path, who: str, strict: bool) -> tuple[list[tuple[Path, PurePosixPath, int]], list[PurePosixPath]]:
    """Regular files and folders under ``src``; in strict mode anything else is a CollectError."""
    files, dirs = [], []
    for folder, subdirs, names in os.walk(src, followlinks=False):
        rel = Path(folder).relative_to(src)
        keep = []
        for d in sorted(subdirs):
            path = Path(folder) / d
            _utf8(path, d, who)
            if d in SKIP_NAMES:
                continue
            if os.path.islink(path):
                if strict:
                    raise CollectError(f"{who}: {rel / d} is a symbolic link; links are not collected")
                continue
            keep.append(d)
            dirs.append(PurePosixPath((rel / d).as_posix()))
        subdirs[:] = keep
        for f in sorted(names):
            path = Path(folder) / f
            _utf8(path, f, who)
            if f in SKIP_NAMES:
                continue
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                if strict:
                    what = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a regular file or folder"
                    raise CollectError(f"{who}: {rel / f} is {what}; it is not collected")
                continue
            files.append((path, PurePosixPath((rel / f).as_posix()), st.st_size))
    return files, dirs


def _utf8(path: Path, name: str, who: str) -> None:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise CollectError(f"{who}: the file name {os.fsencode(path)!r} is not UTF-8") from None


def copy_folder(src: Path, dest: Path, who: str, *, strict: bool = False) -> None:
    """Copy regular files and folders into ``dest``, never following a link.

    ``strict`` (collect): a link, fifo, device or socket, or colliding names, are a CollectError;
    otherwise (``course ci``) links and special files are left out.
    """
    files, dirs = _walk(src, who, strict)
    if strict:
        check_collisions((r for _, r, _ in files), dirs, who)
    budget = _Budget(who)
    for _, rel, size in files:
        budget.add(str(rel), size)
    for d in dirs:
        dest.joinpath(*d.parts).mkdir(parents=True, exist_ok=True)
    for path, rel, _ in files:
        target = dest.joinpath(*rel.parts)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as exc:
            raise CollectError(f"{who}: cannot read {rel} ({exc.strerror})") from None
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise CollectError(f"{who}: {rel} is not a regular file")
            with open(target, "xb") as out:
                _copy_capped(handle, out, str(rel), who)


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


# ------------------------------------------------------------------ git, as data

GIT_ENV_KEEP = ("PATH", "LANG", "TZ")


def _git_env(home: Path, git_dir: Path, objects: Path) -> dict[str, str]:
    env = {k: os.environ[k] for k in GIT_ENV_KEEP if k in os.environ}
    env.update({"HOME": str(home), "XDG_CONFIG_HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1",
                "GIT_CONFIG_GLOBAL": os.devnull, "GIT_ATTR_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0",
                "GIT_NO_REPLACE_OBJECTS": "1", "GIT_DIR": str(git_dir), "GIT_OBJECT_DIRECTORY": str(objects),
                "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"})
    return env


GIT_SAFE = ("-c", "core.hooksPath=" + os.devnull, "-c", "core.fsmonitor=false", "-c", "core.attributesFile=" + os.devnull,
            "-c", "protocol.allow=never", "-c", "core.pager=cat", "-c", "diff.external=", "-c", "core.sshCommand=false")


class _Git:
    """git over a student's object store, with this module's config only (never the student's)."""

    def __init__(self, repo: Path, work: Path, who: str):
        self.who = who
        self.repo = repo.resolve()
        gitdir = _student_gitdir(repo, who)
        objects = gitdir / "objects"
        _check_objects(objects, self.repo, who)
        self.git_dir = work / "git"
        self.git_dir.mkdir()
        for name in ("HEAD", "packed-refs"):
            _copy_git_file(gitdir / name, self.git_dir / name, who)
        (self.git_dir / "refs").mkdir()
        if (gitdir / "refs").is_dir():
            copy_folder(gitdir / "refs", self.git_dir / "refs", f"{who}: .git/refs", strict=True)
        (self.git_dir / "config").write_text("[core]\n\trepositoryformatversion = 0\n\tbare = true\n")
        self.env = _git_env(work, self.git_dir, objects)
        self.prefix = ["git", *GIT_SAFE, "-c", f"safe.directory={self.git_dir}"]

    def run(self, *args: str, input: bytes | None = None) -> bytes:
        try:
            proc = subprocess.run([*self.prefix, *args], input=input, capture_output=True, env=self.env,
                                  cwd=self.git_dir, timeout=120)
        except FileNotFoundError:
            raise CollectError("git is not installed") from None
        except subprocess.TimeoutExpired:
            raise CollectError(f"{self.who}: git {args[0]} took longer than 120 s") from None
        if proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            raise CollectError(f"{self.who}: git {args[0]} failed: {(err or ['?'])[-1][:300]}")
        return proc.stdout

    def commit(self, ref: str) -> str:
        if ref.startswith("-") or not re.match(r"^[\w./@{}^~-]+$", ref):
            raise CollectError(f"{self.who}: {ref!r} is not a git ref")
        return self.run("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").decode().strip()

    def committer_time(self, commit: str) -> tuple[dt.datetime | None, list[str]]:
        raw = self.run("cat-file", "commit", commit)
        when, parents = None, []
        for line in raw.split(b"\n\n", 1)[0].split(b"\n"):
            if line.startswith(b"parent "):
                parents.append(line[7:].decode())
            elif line.startswith(b"committer "):
                m = re.search(rb" (\d+) ([+-]\d{4})$", line)
                if m:
                    when = dt.datetime.fromtimestamp(int(m.group(1)), dt.timezone.utc)
        return when, parents

    def materialise(self, commit: str, dest: Path) -> None:
        listing = self.run("ls-tree", "-r", "-z", "-l", "--full-tree", commit)
        plan: list[tuple[str, PurePosixPath, int]] = []
        budget = _Budget(self.who)
        for record in listing.split(b"\0"):
            if not record:
                continue
            meta, _, raw_path = record.partition(b"\t")
            mode, kind, sha, size = meta.split(None, 3)
            try:
                name = raw_path.decode("utf-8")
            except UnicodeDecodeError:
                raise CollectError(f"{self.who}: the git tree has a file name that is not UTF-8 ({raw_path!r})") from None
            rel = _safe_relpath(name, self.who)
            if rel is None:
                continue
            if mode == b"120000":
                raise CollectError(f"{self.who}: {name!r} is a symbolic link in the git tree; links are not collected")
            if kind != b"blob" or mode not in (b"100644", b"100755"):
                raise CollectError(f"{self.who}: {name!r} is a {kind.decode()} (mode {mode.decode()}), not a file")
            budget.add(name, int(size))
            plan.append((sha.decode(), rel, int(size)))
        check_collisions((r for _, r, _ in plan), (), self.who)
        self._read_blobs(plan, dest)

    def _read_blobs(self, plan: Sequence[tuple[str, PurePosixPath, int]], dest: Path) -> None:
        if not plan:
            return
        proc = subprocess.Popen([*self.prefix, "cat-file", "--batch"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, env=self.env, cwd=self.git_dir)
        try:
            for sha, rel, _ in plan:
                proc.stdin.write(sha.encode() + b"\n")
                proc.stdin.flush()
                header = proc.stdout.readline().split()
                if len(header) != 3 or header[1] != b"blob":
                    raise CollectError(f"{self.who}: git object {sha} of {rel} is missing or not a blob")
                size = int(header[2])
                if size > MAX_FILE_BYTES:
                    raise CollectError(f"{self.who}: {rel} is {size} bytes, larger than the {MAX_FILE_BYTES} byte limit")
                target = dest.joinpath(*rel.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                left = size
                with open(target, "xb") as out:
                    while left:
                        chunk = proc.stdout.read(min(CHUNK, left))
                        if not chunk:
                            raise CollectError(f"{self.who}: git stopped while reading {rel}")
                        out.write(chunk)
                        left -= len(chunk)
                proc.stdout.read(1)   # the newline after each object
        finally:
            proc.stdin.close()
            proc.kill()
            proc.wait()


def _student_gitdir(repo: Path, who: str) -> Path:
    dotgit = repo / ".git"
    if os.path.islink(dotgit):
        raise CollectError(f"{who}: .git is a symbolic link; refused")
    if dotgit.is_file():
        raise CollectError(f"{who}: .git is a file (a 'gitdir:' pointer to another repository); refused: "
                           "submit the repository itself")
    if dotgit.is_dir():
        return dotgit
    if (repo / "HEAD").is_file() and (repo / "objects").is_dir():
        return repo    # a bare repository
    raise CollectError(f"{who}: {repo} is not a git repository")


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root)
        return True
    except ValueError:
        return False


def _check_objects(objects: Path, root: Path, who: str, depth: int = 0) -> None:
    """Only regular files and folders in the object store; alternates and ``commondir`` stay inside."""
    if depth > 3:
        raise CollectError(f"{who}: git alternates nest too deeply")
    if not objects.is_dir() or objects.is_symlink():
        raise CollectError(f"{who}: {objects.name} is not a folder of git objects")
    commondir = objects.parent / "commondir"
    if commondir.exists():
        raise CollectError(f"{who}: .git/commondir points at another repository (a linked worktree); refused")
    total = 0
    for folder, subdirs, names in os.walk(objects, followlinks=False):
        for name in subdirs + names:
            st = os.lstat(Path(folder) / name)
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                raise CollectError(f"{who}: .git/objects holds {name!r}, which is not a regular file or folder")
            total += st.st_size
        if total > MAX_GIT_BYTES:
            raise CollectError(f"{who}: the git objects are larger than {MAX_GIT_BYTES} bytes")
    alternates = objects / "info" / "alternates"
    if alternates.is_file():
        for line in alternates.read_text(encoding="utf-8", errors="replace").splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            target = (objects / line) if not os.path.isabs(line) else Path(line)
            if not _inside(target, root):
                raise CollectError(f"{who}: .git/objects/info/alternates points outside the student's folder "
                                   f"({line!r}); refused")
            _check_objects(target, root, who, depth + 1)


def _copy_git_file(src: Path, dest: Path, who: str) -> None:
    if not src.exists() and not src.is_symlink():
        return
    st = os.lstat(src)
    if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_FILE_BYTES:
        raise CollectError(f"{who}: .git/{src.name} is not a regular file of a sensible size")
    shutil.copyfile(src, dest)


def materialise_git(repo: Path, ref: str, dest: Path, who: str) -> tuple[str, list[str], dt.datetime]:
    """The tree of ``ref`` into ``dest``: (commit, notes about its dates, the moment it was read)."""
    with tempfile.TemporaryDirectory(prefix="course-git-") as tmp:
        git = _Git(repo, Path(tmp), who)
        commit = git.commit(ref)
        git.materialise(commit, dest)
        fetched = dt.datetime.now(dt.timezone.utc)
        notes = []
        when, parents = git.committer_time(commit)
        if when and when > fetched + dt.timedelta(minutes=5):
            notes.append(f"commit {commit[:10]} is dated {when.isoformat()}, after it was fetched "
                         f"({fetched.isoformat(timespec='seconds')}): its date was set by hand")
        for parent in parents[:1]:
            before, _ = git.committer_time(parent)
            if when and before and when < before - dt.timedelta(days=1):
                notes.append(f"commit {commit[:10]} is dated {when.isoformat()}, more than a day before its "
                             f"parent ({before.isoformat()}): its date was set by hand")
    return commit, notes, fetched


# ------------------------------------------------------------------ generic sources (folders, zips, repos)

def _is_repo(path: Path) -> bool:
    return (path / ".git").exists() or (path / ".git").is_symlink()


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

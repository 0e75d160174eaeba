"""Folders, .zip files and git repositories -> ``submitted/<student>/<slug>/<attempt>/``.

Collection is append-only (a new attempt never overwrites an old one; identical content is not
collected twice) and extraction is safe: no absolute or ``..`` paths (zip-slip), symlinks are
neither followed nor kept, sizes are capped, and a file name that is not UTF-8 is a clear error.
A problem with one student's files is reported for that student; the others are collected.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
import re
import shutil
import stat
import subprocess
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from course.config import Course
from course.errors import CollectError
from course.gradebook import Gradebook

MAX_TOTAL_BYTES = 256 * 2**20
MAX_FILE_BYTES = 64 * 2**20
MAX_FILES = 2000
SKIP_NAMES = {"__pycache__", ".git", ".DS_Store", "__MACOSX", ".ipynb_checkpoints", ".pytest_cache"}
STUDENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")


@dataclass
class Collected:
    student: str
    status: str                 # collected | unchanged | error
    attempt: int | None = None
    message: str = ""
    path: str | None = None


@dataclass
class CollectReport:
    slug: str
    items: list[Collected] = field(default_factory=list)

    @property
    def errors(self) -> list[Collected]:
        return [i for i in self.items if i.status == "error"]


# ------------------------------------------------------------------ safe materialisation

class _Budget:
    def __init__(self, who: str):
        self.who = who
        self.total = 0
        self.files = 0

    def add(self, name: str, size: int) -> None:
        self.files += 1
        self.total += size
        if size > MAX_FILE_BYTES:
            raise CollectError(f"{self.who}: {name} is {size} bytes, larger than the {MAX_FILE_BYTES} byte limit per file")
        if self.total > MAX_TOTAL_BYTES:
            raise CollectError(f"{self.who}: the submission is larger than {MAX_TOTAL_BYTES} bytes")
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
    if not parts or any(p in SKIP_NAMES for p in parts):
        return None
    return PurePosixPath(*parts)


def _zip_name(info: zipfile.ZipInfo, who: str) -> str:
    if info.flag_bits & 0x800:
        return info.filename
    raw = info.filename.encode("cp437")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CollectError(f"{who}: the archive has a file name that is not UTF-8 ({raw!r}); rename it and "
                           "submit again") from None


def extract_zip(data: bytes | Path, dest: Path, who: str) -> None:
    """Extract a zip safely into ``dest`` (which must exist and be empty)."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data) if isinstance(data, bytes) else data)
    except (zipfile.BadZipFile, OSError) as exc:
        raise CollectError(f"{who}: not a readable zip file ({exc})") from None
    budget = _Budget(who)
    with zf:
        for info in zf.infolist():
            name = _zip_name(info, who)
            mode = (info.external_attr >> 16) & 0o170000
            if mode == stat.S_IFLNK:
                continue  # symlinks are never followed nor kept
            rel = _safe_relpath(name, who)
            if rel is None:
                continue
            target = dest.joinpath(*rel.parts)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            budget.add(name, info.file_size)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src, open(target, "xb") as out:
                    copied = 0
                    while chunk := src.read(1 << 20):
                        copied += len(chunk)
                        if copied > MAX_FILE_BYTES:
                            raise CollectError(f"{who}: {name} expands beyond the {MAX_FILE_BYTES} byte limit")
                        out.write(chunk)
            except (zipfile.BadZipFile, zlib_error(), EOFError) as exc:
                raise CollectError(f"{who}: the zip file is corrupt at {name} ({exc})") from None
            except FileExistsError:
                raise CollectError(f"{who}: {name} appears twice in the archive") from None


def zlib_error() -> type:
    import zlib
    return zlib.error


def copy_folder(src: Path, dest: Path, who: str) -> None:
    """Copy regular files and folders (never following or keeping symlinks) into ``dest``."""
    budget = _Budget(who)
    for folder, dirs, files in os.walk(src, followlinks=False):
        rel = Path(folder).relative_to(src)
        dirs[:] = sorted(d for d in dirs if d not in SKIP_NAMES and not os.path.islink(os.path.join(folder, d)))
        for d in dirs:
            (dest / rel / d).mkdir(parents=True, exist_ok=True)
        for f in sorted(files):
            path = Path(folder) / f
            try:
                f.encode("utf-8")
            except UnicodeEncodeError:
                raise CollectError(f"{who}: the file name {os.fsencode(path)!r} is not UTF-8") from None
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode) or f in SKIP_NAMES:
                continue
            budget.add(str(rel / f), st.st_size)
            shutil.copyfile(path, dest / rel / f, follow_symlinks=False)


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
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


# ------------------------------------------------------------------ sources

def _check_student(student: str, where: str) -> str:
    if not STUDENT_RE.match(student):
        raise CollectError(f"{where}: {student!r} is not a usable student id (letters, digits, . _ @ + -)")
    return student


def _git(repo: Path, *args: str) -> bytes:
    try:
        return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True).stdout
    except FileNotFoundError:
        raise CollectError("git is not installed") from None
    except subprocess.CalledProcessError as exc:
        raise CollectError(f"{repo}: git {' '.join(args)} failed: {exc.stderr.decode(errors='replace').strip()}") from None


def _from_git(repo: Path, ref: str, dest: Path, who: str) -> dt.datetime:
    commit = _git(repo, "rev-parse", "--verify", f"{ref}^{{commit}}").decode().strip()
    when = dt.datetime.fromisoformat(_git(repo, "show", "-s", "--format=%cI", commit).decode().strip())
    archive = _git(repo, "archive", "--format=tar", commit)
    budget = _Budget(who)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar.getmembers():
            rel = _safe_relpath(member.name, who)
            if rel is None or not (member.isfile() or member.isdir()):
                continue
            target = dest.joinpath(*rel.parts)
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            budget.add(member.name, member.size)
            target.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
    return when


def _entries(source: Path, student: str | None, who: str) -> list[tuple[str, Path | bytes | str, str]]:
    """(student, folder or zip bytes, kind) for every student in ``source``; kind ``refused`` carries
    the reason a class archive's entries for that student (or for no one) were refused."""
    if source.is_file():
        if student:
            return [(student, source, "zip")]
        try:
            zf = zipfile.ZipFile(source)
        except (zipfile.BadZipFile, OSError) as exc:
            raise CollectError(f"{source}: not a readable zip file ({exc})") from None
        out: dict[str, list[zipfile.ZipInfo]] = {}
        inner_zips: list[tuple[str, bytes]] = []
        refused: dict[str, str] = {}    # student (or the archive, for an entry of no one's) -> why
        with zf:
            for info in zf.infolist():
                norm = info.filename.replace("\\", "/")
                top = norm.split("/")[0]
                owner = top if "/" in norm and top not in ("", ".", "..") and ":" not in top else None
                try:  # one student's bad entry refuses that student, not the class
                    name = _zip_name(info, f"{source}: student {owner}" if owner else str(source))
                    rel = _safe_relpath(name, f"{source}: student {owner}" if owner else str(source))
                except CollectError as exc:
                    refused.setdefault(owner or source.name, str(exc))
                    continue
                if rel is None:
                    continue
                if len(rel.parts) == 1 and not info.is_dir():
                    if rel.suffix.lower() == ".zip":
                        inner_zips.append((rel.stem, zf.read(info)))
                    continue
                out.setdefault(rel.parts[0], []).append(info)
            entries: list[tuple[str, Path | bytes | str, str]] = [
                (s, data, "zip") for s, data in inner_zips if s not in refused]
            for top in sorted(out):
                if top in refused:
                    continue
                buf = io.BytesIO()
                with zipfile.ZipFile(buf, "w") as sub:
                    for info in out[top]:
                        name = _zip_name(info, str(source))
                        rel = _safe_relpath(name, str(source))
                        if rel is None or info.is_dir() or len(rel.parts) < 2:
                            continue
                        if ((info.external_attr >> 16) & 0o170000) == stat.S_IFLNK:
                            continue
                        sub.writestr(str(PurePosixPath(*rel.parts[1:])), zf.read(info))
                entries.append((top, buf.getvalue(), "zip"))
            entries += [(owner, why, "refused") for owner, why in refused.items()]
        return sorted(entries, key=lambda e: e[0])
    if not source.is_dir():
        raise CollectError(f"{source}: no such file or folder")
    if student or (source / ".git").exists():
        return [(student or source.name, source, "git" if (source / ".git").exists() else "dir")]
    entries = []
    for child in sorted(source.iterdir()):
        if child.name in SKIP_NAMES or child.name.startswith("."):
            continue
        if child.is_symlink():
            entries.append((child.name, child, "symlink"))
        elif child.is_dir():
            entries.append((child.name, child, "git" if (child / ".git").exists() else "dir"))
        elif child.suffix.lower() == ".zip":
            entries.append((child.stem, child.read_bytes(), "zip"))
    if not entries:
        raise CollectError(f"{source}: no student folders or zip files found")
    return entries


def collect(course: Course, source: str | Path, slug: str, *, student: str | None = None,
            submitted_at: dt.datetime | None = None, ref: str = "HEAD", gradebook: Gradebook) -> CollectReport:
    """Collect every student's submission of ``slug`` from ``source`` into ``submitted/``."""
    assignment = course.assignment(slug)
    source = Path(source)
    report = CollectReport(slug)
    gradebook.sync_assignments([assignment])
    for sid, data, kind in _entries(source, student, str(source)):
        who = f"{source.name}: student {sid}"
        if kind == "refused":  # nothing of it was written anywhere
            report.items.append(Collected(sid, "error", message=str(data)))
            continue
        try:
            _check_student(sid, str(source))
            report.items.append(_collect_one(course, gradebook, slug, sid, data, kind, ref, submitted_at, who))
        except CollectError as exc:
            report.items.append(Collected(sid, "error", message=str(exc)))
    return report


def _collect_one(course: Course, gradebook: Gradebook, slug: str, sid: str, data: Path | bytes, kind: str,
                 ref: str, submitted_at: dt.datetime | None, who: str) -> Collected:
    if kind == "symlink":
        raise CollectError(f"{who}: {data} is a symbolic link; links are not followed")
    with tempfile.TemporaryDirectory(prefix="course-collect-") as tmp:
        stage = Path(tmp) / "stage"
        stage.mkdir()
        when = submitted_at
        if kind == "zip":
            extract_zip(data, stage, who)
        elif kind == "git":
            commit_time = _from_git(Path(data), ref, stage, who)
            when = when or commit_time
        else:
            copy_folder(Path(data), stage, who)
        root = _descend(stage, slug)
        when = when or dt.datetime.now(dt.timezone.utc)
        if when.tzinfo is None:
            raise CollectError(f"{who}: submitted-at {when.isoformat()} has no time zone")
        digest = content_hash(root)
        if gradebook.latest_sha(sid, slug) == digest:
            return Collected(sid, "unchanged", message="identical to the latest attempt; not collected again")
        attempt = gradebook.next_attempt(sid, slug)
        target = course.paths.submitted / sid / slug / str(attempt)
        if target.exists():
            raise CollectError(f"{who}: {target} already exists but is not in the gradebook; refusing to overwrite")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(root, target)
        late_by = max(0.0, (when - course.due_for(sid, slug)).total_seconds())
        files = sum(1 for p in target.rglob("*") if p.is_file())
        gradebook.add_submission(student=sid, slug=slug, attempt=attempt, submitted_at=when.isoformat(),
                                 late_by=late_by, sha256=digest,
                                 path=os.path.relpath(target, course.paths.root), source=f"{kind}: {who}")
        note = "empty submission (no files)" if files == 0 else ""
        return Collected(sid, "collected", attempt=attempt, path=str(target), message=note)

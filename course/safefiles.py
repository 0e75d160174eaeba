"""Safe materialisation of untrusted files: folders and zip archives, as data.

Archives are streamed member by member with the size checked before reading (the declared size)
and while reading (the bytes actually inflated), so a zip bomb costs memory in proportion to the
cap, never to the member. A member or folder entry that is not a regular file or directory
(symlink, fifo, device, socket), an unsafe path (absolute, ``..``, control characters), two
paths that collide (case-insensitively, after Unicode normalisation, or a file and a folder of one
name) and a name that is not UTF-8 are a :class:`CollectError` naming them.
"""

from __future__ import annotations

import os
import re
import stat
import unicodedata
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Sequence

from course.errors import CollectError

MAX_TOTAL_BYTES = 256 * 2**20
MAX_FILE_BYTES = 64 * 2**20
MAX_FILES = 2000
CHUNK = 1 << 20
SKIP_NAMES = {"__pycache__", ".git", ".DS_Store", "__MACOSX", ".ipynb_checkpoints", ".pytest_cache"}


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

"""A student's git repository read as data: nothing of the student's runs or is followed.

git runs with this module's own configuration only (system and global config off, hooks to
/dev/null, no fsmonitor, no attributes, no pager or external diff, no protocols) on a fresh
git directory holding a copy of the student's refs, with the student's object store as its
objects; that store must hold only regular files and folders, and its alternates must stay inside
the student's folder. A ``.git`` file (a ``gitdir:`` pointer) or a linked worktree is refused.
File contents come from ``git cat-file --batch`` with each size checked before it is read; a
symlink, a submodule, a name that is not UTF-8 or colliding names in the tree are refused.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path, PurePosixPath
from typing import Sequence

from course import safefiles
from course.errors import CollectError
from course.safefiles import _Budget, _safe_relpath, check_collisions, copy_folder

MAX_GIT_BYTES = 1024 * 2**20        # a student's whole object store


def is_repo(path: Path) -> bool:
    return (path / ".git").exists() or (path / ".git").is_symlink()


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
                if size > safefiles.MAX_FILE_BYTES:
                    raise CollectError(f"{self.who}: {rel} is {size} bytes, larger than the {safefiles.MAX_FILE_BYTES} byte limit")
                target = dest.joinpath(*rel.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                left = size
                with open(target, "xb") as out:
                    while left:
                        chunk = proc.stdout.read(min(safefiles.CHUNK, left))
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
    if not stat.S_ISREG(st.st_mode) or st.st_size > safefiles.MAX_FILE_BYTES:
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

"""Process accounting and killing: a worker's process tree, its private memory, and SIGKILL of
everything a slot's earlier workers left behind (by uid in strong mode, re-parented orphans in weak)."""

from __future__ import annotations

import os
import signal
import time

from course.grading.sandbox.constants import MEMORY_EXACT_EVERY


class _MemoryPolice:
    """Memory of a worker's processes together (the worker and all its descendants): the fallback
    when the kernel cannot bound a worker (no cgroups).

    Cheap first: the sum of their anonymous resident memory, which over-counts pages shared
    copy-on-write with the fork server. Only when that sum exceeds the limit are the exact private
    pages read (smaps_rollup), at most every :data:`MEMORY_EXACT_EVERY` seconds per worker. With
    ``count_shared`` the worker's shared memory (anonymous shared mappings) and the files in its
    private tmpfs mounts (/tmp, /submission) count too.
    """

    def __init__(self, count_shared: bool = True) -> None:
        self.exact_at: dict[int, float] = {}
        self.count_shared = count_shared

    def forget_all_but(self, workers: dict[int, int]) -> None:
        self.exact_at = {pid: t for pid, t in self.exact_at.items() if pid in workers}

    def used(self, worker: int, limit: int) -> int:
        members = _descendants(worker)
        shared = 0
        if self.count_shared:
            shared = sum(_status_kib(pid, "RssShmem") for pid in members) * 1024 + _tmpfs_bytes(worker)
        rough = sum(_status_kib(pid, "RssAnon") for pid in members) * 1024 + shared
        if rough <= limit:
            return rough
        now = time.monotonic()
        if now - self.exact_at.get(worker, 0.0) < MEMORY_EXACT_EVERY:
            return 0
        self.exact_at[worker] = now
        return sum(_private_kib(pid) for pid in members) * 1024 + shared


def _tmpfs_bytes(worker: int) -> int:
    """Bytes held in the worker's own tmpfs mounts (strong mode), seen through its root."""
    total = 0
    for mount in ("tmp", "submission"):
        try:
            st = os.statvfs(f"/proc/{worker}/root/{mount}")
        except OSError:
            continue
        if st.f_blocks and st.f_blocks < (1 << 40):
            total += (st.f_blocks - st.f_bfree) * st.f_frsize
    return total


def _descendants(root: int, limit: int = 4096) -> list[int]:
    """``root`` and every process below it (from /proc/<pid>/task/<tid>/children).

    In strong mode that is everything the worker started: orphans are re-parented to it, the
    init of its PID namespace. (In weak mode orphans go to the fork server, which kills them.)
    """
    found, todo = [], [root]
    while todo and len(found) < limit:
        pid = todo.pop()
        found.append(pid)
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                    todo.extend(int(c) for c in f.read().split())
            except (OSError, ValueError):
                continue
    return found


def _status_kib(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f.read(4096).decode(errors="replace").splitlines():
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _private_kib(pid: int) -> int:
    total = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f.read(8192).decode(errors="replace").splitlines():
                if line.startswith(("Private_Clean:", "Private_Dirty:")):
                    total += int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return total


def _describe_status(status: int | None) -> str:
    if status is None:
        return "killed"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return f"killed by {name}"
    if os.WIFEXITED(status):
        return f"exited with status {os.WEXITSTATUS(status)}"
    return "ended"


def _kill_worker(pid: int | None, statuses: dict[int, int], *, wait: bool) -> str:
    """SIGKILL a worker (in strong mode the init of its PID namespace: everything in it dies too).

    The pid is never signalled once reaped (it may have been reused): ``statuses`` holds those.
    Without ``wait`` the exit is collected later by :func:`_reap` and discarded.
    """
    if pid is None:
        return "killed"
    if pid in statuses:
        return _describe_status(statuses.pop(pid))
    for target in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            target()
        except (ProcessLookupError, PermissionError):
            pass
    if not wait:
        return "killed"
    while True:
        try:
            _, status = os.waitpid(pid, 0)
        except InterruptedError:
            continue
        except ChildProcessError:
            return _describe_status(statuses.pop(pid, None))
        return _describe_status(status)


def _kill_uid(uid: int, rounds: int = 200) -> None:
    """SIGKILL every process of the slot's uid, wherever it hid (setsid, double fork), until none is left.

    The worker's PID namespace already dies with it; this is the second net, and it makes sure the
    slot's next worker starts with none of its uid's processes (``RLIMIT_NPROC``) left. Reads /proc
    rather than forking a helper that would ``kill(-1)``: forking the large zygote costs more.
    """
    for _ in range(rounds):
        alive = [pid for pid, ids, state in _processes() if uid in ids[:2] and state not in "ZX"]
        if not alive:
            return
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.002)


def _kill_orphans(workers: set[int], rounds: int = 200) -> None:
    """Weak mode: SIGKILL processes re-parented to this subreaper that are not live workers."""
    me = os.getpid()
    for _ in range(rounds):
        orphans = [pid for pid, ppid, state in _children_of_me(me) if pid not in workers and state not in "ZX"]
        if not orphans:
            return
        for pid in orphans:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.002)


def _proc_entries() -> list[str]:
    try:
        return [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:  # no /proc (macOS): nothing to find
        return []


def _processes() -> list[tuple[int, tuple[int, ...], str]]:
    """(pid, (real, effective, saved, fs uid), state letter) of every process this /proc shows."""
    found = []
    for entry in _proc_entries():
        try:
            with open(f"/proc/{entry}/status", "rb") as f:
                text = f.read(4096).decode(errors="replace")
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        try:
            ids = tuple(int(x) for x in fields.get("Uid", "").split())
        except ValueError:
            continue
        found.append((int(entry), ids, fields.get("State", "?").strip()[:1]))
    return found


def _children_of_me(me: int) -> list[tuple[int, int, str]]:
    """(pid, ppid, state) of this process's children, from /proc/<pid>/stat."""
    found = []
    for entry in _proc_entries():
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                text = f.read(1024).decode(errors="replace")
        except OSError:
            continue
        rest = text[text.rfind(")") + 2:].split()  # the command name may hold spaces and parentheses
        if len(rest) > 1 and rest[1].isdigit() and int(rest[1]) == me:
            found.append((int(entry), me, rest[0]))
    return found

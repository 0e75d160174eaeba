"""The zygote (fork server): preloads torch and friends once, then forks one sandboxed worker per
request and polices their memory. No grader code ever runs here."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from typing import Any

from course.grading.sandbox.cgroups import WorkerGroups
from course.grading.sandbox.constants import MEMORY_POLL
from course.grading.sandbox.entry import _seccomp_filter, _worker_child
from course.grading.sandbox.linux import CLONE_NEWPID, PR_SET_CHILD_SUBREAPER, _libc_call, _prctl_quiet
from course.grading.sandbox.procs import _kill_orphans, _kill_uid, _kill_worker, _MemoryPolice


def zygote_main(cfg: dict[str, Any]) -> None:
    """Entry point of the fork server: preload, then fork a worker per request (see :class:`_ForkServer`)."""
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    for name in cfg["preload"]:
        try:
            __import__(name)
        except Exception:
            pass  # a missing optional library only costs the workers the import later
    from course.grading import worker  # noqa: F401  (imported before any fork)
    # built once here; each worker only loads it. Without cgroups, memory the watch cannot see
    # (SysV shared memory, memfd files) is refused instead.
    cfg["seccomp"] = _seccomp_filter(deny_unwatched_memory=not cfg.get("cgroup"))
    import gc
    gc.collect()
    gc.freeze()  # the preloaded heap: never traversed by a worker's collector, so never copied on write
    if cfg["strong"]:
        cfg["pidns"] = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    else:  # orphans of weak workers (setsid and double forks) are re-parented here, to be killed
        _prctl_quiet(PR_SET_CHILD_SUBREAPER, 1)
    _ForkServer(cfg).serve()


class _ForkServer:
    """The zygote's loop. Requests (JSON over a slot's SEQPACKET socket): ``spawn`` (with the
    worker's data socket as SCM_RIGHTS), ``kill`` (one worker; ``wait`` for its exit status, else
    reply at once) and ``kill_slot`` (everything the slot's worker left behind). A slot's new worker
    starts only once nothing of its earlier workers is left. Between requests it polices memory:
    a worker whose processes together hold more private memory than its ``memory`` limit is killed
    (RLIMIT_AS bounds each process, not a fork of many)."""

    def __init__(self, cfg: dict[str, Any]):
        self.cfg = cfg
        self.strong = bool(cfg["strong"])
        self.slots = {fd: socket.socket(fileno=fd) for fd in cfg["slots"]}
        self.workers: dict[tuple[int, int], int] = {}  # (slot, worker id) -> pid
        self.statuses: dict[int, int] = {}             # pid -> wait status of a worker that ended by itself
        self.budgets: dict[int, int] = {}              # pid -> memory limit of live workers
        self.notes: dict[int, str] = {}                # pid -> why this process killed it
        self.memory = _MemoryPolice(count_shared=not cfg.get("cgroup"))
        self.groups = WorkerGroups(cfg["cgroup"]) if cfg.get("cgroup") else None
        self.group_of: dict[int, tuple[str, int]] = {}  # pid -> (its cgroup's key, its memory limit)
        self.spawned = 0

    def serve(self) -> None:
        import select
        next(iter(self.slots.values())).send(json.dumps({"ready": True}).encode())
        while self.slots:
            try:
                readable, _, _ = select.select(list(self.slots.values()), [], [],
                                               MEMORY_POLL if self.budgets or self.group_of else 1.0)
            except InterruptedError:
                continue
            self.reap()
            for sock in readable:
                self.answer(sock)
            self.police()
        for pid in self.workers.values():
            _kill_worker(pid, self.statuses, wait=False)
        for key, _ in self.group_of.values():
            if self.groups is not None:
                self.groups.remove(key)

    def answer(self, sock: socket.socket) -> None:
        try:
            data, fds, _, _ = socket.recv_fds(sock, 65536, 2)
        except OSError:
            data, fds = b"", []
        if not data:
            self.slots.pop(sock.fileno(), None)
            sock.close()
            return
        try:
            reply = self.request(json.loads(data), sock.fileno(), fds)
        finally:
            for fd in fds:
                os.close(fd)
        sock.send(json.dumps(reply).encode())

    def request(self, msg: dict[str, Any], slot: int, fds: list[int]) -> dict[str, Any]:
        op = msg.get("op")
        uid = int(msg.get("uid", -1))
        if op == "spawn":
            self.clear_slot(uid)
            memory = int(msg["limits"]["memory"])
            self.spawned += 1
            key = f"{uid}-{self.spawned}"
            try:
                if self.groups is not None:   # the kernel bounds the worker: created before the fork
                    msg["cgroup"] = self.groups.create(key, memory, int(msg["limits"]["processes"]))
                pid = _fork_worker(msg, fds[0], list(self.slots), self.cfg)
            except OSError as exc:
                if self.groups is not None:
                    self.groups.remove(key)
                return {"ok": False, "error": str(exc)}
            self.workers[(slot, msg["id"])] = pid
            if self.groups is not None:
                self.group_of[pid] = (key, memory)
            else:
                self.budgets[pid] = memory
            return {"ok": True}
        if op == "kill":
            pid = self.workers.pop((slot, msg["id"]), None)
            wait = bool(msg.get("wait", True))
            status = self.kill(pid, wait)
            if wait:
                self.clear_slot(uid)
            return {"ok": True, "status": status}
        if op == "kill_slot":
            for key in [k for k in self.workers if k[0] == slot]:
                self.kill(self.workers.pop(key), wait=False)
            self.clear_slot(uid, rounds=1)
            return {"ok": True}
        return {"ok": False, "error": f"unknown op {op!r}"}

    def kill(self, pid: int | None, wait: bool) -> str:
        self.budgets.pop(pid, None)
        status = _kill_worker(pid, self.statuses, wait=wait)
        note = self.notes.pop(pid, None) if pid is not None else None
        group = self.group_of.pop(pid, None) if pid is not None else None
        if group is not None and self.groups is not None:
            key, memory = group
            if self.groups.hit_limit(key):
                note = (f"its processes together reached the {memory / 2**20:.0f} MiB memory limit "
                        "(enforced by the kernel)")
            self.groups.remove(key)
        return f"{status}: {note}" if note else status

    def reap(self) -> None:
        """Collect ended children; keep the status of listed workers (asked for by a later ``kill``)."""
        listed = set(self.workers.values())
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.budgets.pop(pid, None)
            if pid in listed:
                self.statuses[pid] = status
            else:
                self.notes.pop(pid, None)
                group = self.group_of.pop(pid, None)
                if group is not None and self.groups is not None:
                    self.groups.remove(group[0])

    def clear_slot(self, uid: int, rounds: int = 200) -> None:
        """Kill whatever a slot's earlier workers left running (strong: by uid; weak: re-parented orphans)."""
        if self.strong:
            _kill_uid(uid, rounds)
        else:
            _kill_orphans(set(self.workers.values()), rounds)
        self.reap()

    def police(self) -> None:
        if self.groups is not None:   # the kernel bounds memory; a worker it had to OOM-kill in dies whole
            for pid, (key, memory) in list(self.group_of.items()):
                if pid in self.workers.values() and pid not in self.statuses and pid not in self.notes \
                        and self.groups.oom_killed(key):
                    self.notes[pid] = (f"its processes together reached the {memory / 2**20:.0f} MiB memory limit "
                                       "(enforced by the kernel)")
                    _signal_tree(pid)
            return
        self.memory.forget_all_but(self.budgets)
        for pid, limit in list(self.budgets.items()):
            used = self.memory.used(pid, limit)
            if used > limit:
                self.notes[pid] = (f"its processes held {used / 2**20:.0f} MiB of memory together, "
                                   f"over the {limit / 2**20:.0f} MiB limit")
                self.budgets.pop(pid, None)
                _signal_tree(pid)


def _signal_tree(pid: int) -> None:
    """SIGKILL a worker (the init of its PID namespace in strong mode: all of it dies) and its group."""
    for target in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            target()
        except (ProcessLookupError, PermissionError):
            pass


def _fork_worker(msg: dict[str, Any], data_fd: int, control_fds: list[int], cfg: dict[str, Any]) -> int:
    """Fork one worker. In strong mode the child is the init of a new PID namespace (one fork only:
    this process unshares the PID namespace *for its children*, forks, and steps back)."""
    strong = cfg["strong"]
    if strong:
        _libc_call("unshare", CLONE_NEWPID)
    pid = -1
    try:
        pid = os.fork()
    finally:
        if strong and pid != 0:  # back in the parent: later children in this namespace again
            _libc_call("setns", cfg["pidns"], CLONE_NEWPID)
    if pid:
        return pid
    code = 70
    try:
        for fd in control_fds:
            os.close(fd)
        code = _worker_child(msg, data_fd, cfg)
    except BaseException:
        try:
            os.write(2, f"course worker setup failed: {sys.exc_info()[1]!r}\n".encode())
        except OSError:
            pass
    os._exit(code)

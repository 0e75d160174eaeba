"""The trusted side's handle on a fork server: starting it (strong or weak), its job slots, the
scratch copies of submissions, and the block of uids a grading run claims."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

from course.config import Limits
from course.errors import GradingError, IsolationError
from course.grading import wire
from course.grading.sandbox import bwrap, cgroups, constants
from course.grading.sandbox.constants import (INFRASTRUCTURE_ERRORS, MAX_COPY_BYTES, MAX_COPY_FILES, PRELOAD, READY_TIMEOUT,
                                              SANDBOX_PKG, SANDBOX_SCRATCH, SETUP_TIMEOUT, UID_BASE, UID_BLOCK, UID_BLOCKS,
                                              SandboxUnavailable)


class SlotClient:
    """One job slot of a zygote: spawns and kills that slot's workers (one at a time)."""

    def __init__(self, pool: "ZygotePool", index: int, sock: socket.socket):
        self.pool = pool
        self.index = index
        self.sock = sock
        self.uid = pool.uid_base + index
        self._next = 0
        self._lock = threading.Lock()

    @property
    def isolation(self) -> str:
        return self.pool.isolation

    def _ask(self, message: dict[str, Any], fds: list[int] = (), timeout: float = 30.0) -> dict[str, Any]:
        with self._lock:
            try:
                socket.send_fds(self.sock, [json.dumps(message).encode()], list(fds))
                self.sock.settimeout(timeout)
                data = self.sock.recv(65536)
            except (OSError, socket.timeout) as exc:
                raise SandboxUnavailable(f"the sandbox's fork server did not answer ({exc})") from None
            finally:
                self.sock.settimeout(None)
        if not data:
            raise SandboxUnavailable("the sandbox's fork server is gone")
        return json.loads(data)

    def spawn(self, copy: Path, limits: Limits, device: str) -> tuple[int, socket.socket]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._next += 1
        worker_id = self._next
        try:
            reply = self._ask({"op": "spawn", "id": worker_id, "copy": str(copy), "uid": self.uid,
                               "limits": asdict(limits), "device": device}, [theirs.fileno()])
        finally:
            theirs.close()
        if not reply.get("ok"):
            ours.close()
            raise SandboxUnavailable(f"the sandbox could not start a worker: {reply.get('error')}")
        try:
            hello = wire.recv(ours, 4096, SETUP_TIMEOUT)
        except wire.WireError as exc:
            status = self.kill(worker_id)
            ours.close()
            raise SandboxUnavailable(f"a worker failed while entering its sandbox ({exc}; {status})") from None
        if type(hello) is not dict or hello.get("ready") is not True:
            self.kill(worker_id)
            ours.close()
            raise SandboxUnavailable(f"a worker could not enter its sandbox: {hello!r}"[:500])
        return worker_id, ours

    def kill_all(self) -> None:
        """Kill every worker of this slot (after its judge ended, whatever state it left)."""
        try:
            self._ask({"op": "kill_slot", "uid": self.uid})
        except SandboxUnavailable:
            pass

    def kill(self, worker_id: int, wait: bool = True) -> str:
        """Kill a worker and everything it started; returns how it ended, in words.

        Without ``wait`` the fork server replies at once and the slot's next worker starts only
        after everything of this one is gone (off the critical path of a finished submission).
        """
        try:
            reply = self._ask({"op": "kill", "id": worker_id, "uid": self.uid, "wait": wait})
        except SandboxUnavailable as exc:
            return str(exc)
        return str(reply.get("status", ""))


class ZygotePool:
    """The fork server of one grading run, with ``jobs`` slots (one per concurrent submission)."""

    def __init__(self, proc: subprocess.Popen, slots: list[socket.socket], isolation: str, reason: str,
                 run_dir: Path, scratch_host: Path, uid_base: int = UID_BASE, uid_lock: int | None = None):
        self.proc = proc
        self.isolation = isolation
        self.reason = reason
        self.run_dir = run_dir
        self.scratch_host = scratch_host
        self.uid_base = uid_base
        self._uid_lock = uid_lock
        self.slots = [SlotClient(self, i, s) for i, s in enumerate(slots)]
        self.groups: cgroups.RunGroups | None = None
        self.memory_limit_by = "sampling watch"

    @classmethod
    def start(cls, jobs: int = 1, *, require_isolation: bool = False, ro_paths: tuple[str, ...] = (),
              device: str = "cpu", preload: tuple[str, ...] = PRELOAD, isolation: str = "auto") -> "ZygotePool":
        """Start the fork server; ``ro_paths`` are extra host folders workers may read (a strong
        sandbox shows one under the host's ``/tmp`` at ``bwrap._inside(path)``)."""
        ok, reason = bwrap.strong_isolation_available()
        if isolation == "weak":
            ok, reason = False, "weak isolation was asked for"
        if not ok and require_isolation:
            raise IsolationError(f"strong isolation is required but unavailable: {reason}")
        if ok:
            try:
                return cls._launch(jobs, True, "", ro_paths, device, preload)._checked()
            except GradingError as exc:
                if require_isolation:
                    raise IsolationError(f"strong isolation is required but bubblewrap failed: {exc}") from None
                reason = f"bubblewrap failed: {exc}"
        warnings.warn(f"course: the sandbox runs with weak isolation: {reason}", RuntimeWarning, stacklevel=2)
        return cls._launch(jobs, False, reason, ro_paths, device, preload)

    @classmethod
    def _launch(cls, jobs: int, strong: bool, reason: str, ro_paths: tuple[str, ...], device: str,
                preload: tuple[str, ...]) -> "ZygotePool":
        if jobs > UID_BLOCK:
            raise GradingError(f"--jobs {jobs}: the sandbox runs at most {UID_BLOCK} submissions at once")
        uid_base, uid_lock = _claim_uid_block() if strong else (UID_BASE, None)
        run_dir = Path(tempfile.mkdtemp(prefix="course-sandbox-"))
        os.chmod(run_dir, 0o700)
        pkg = bwrap._stage_package(run_dir / "pkg")
        scratch = run_dir / "scratch"
        scratch.mkdir(mode=0o711)
        ours, theirs = zip(*(socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(jobs)))
        view = bwrap._inside if strong else os.path.realpath   # where the zygote sees the interpreter's files
        groups, no_groups = cgroups.setup() if os.geteuid() == 0 and sys.platform.startswith("linux") \
            else (None, "not running as root")
        cfg = {
            "cgroup": groups.config(inside=strong) if groups else None,
            "slots": [s.fileno() for s in theirs],
            "path": [SANDBOX_PKG if strong else str(pkg), *map(view, [*bwrap._stdlib_paths(), *bwrap._site_packages()])],
            "preload": list(preload),
            "strong": strong,
            "scratch": SANDBOX_SCRATCH if strong else str(scratch),
        }
        boot = ("import sys,json;cfg=json.loads(sys.argv[1]);sys.path[:]=cfg['path'];"
                "from course.grading.sandbox.forkserver import zygote_main;zygote_main(cfg)")
        python = view(sys.executable)
        argv = [python, "-I", "-S", "-B", "-c", boot, json.dumps(cfg)]
        env = bwrap._sandbox_env(threads=1)
        if strong:
            argv = bwrap._bwrap_argv(pkg, scratch, ro_paths, device, groups.binds() if groups else ()) + argv
        proc = subprocess.Popen(argv, pass_fds=[s.fileno() for s in theirs], env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, close_fds=True,
                                start_new_session=not strong)
        for s in theirs:
            s.close()
        pool = cls(proc, list(ours), "strong" if strong else "weak", reason, run_dir, scratch, uid_base, uid_lock)
        pool.groups = groups
        pool.memory_limit_by = (f"kernel (cgroup v{groups.version} per worker)" if groups
                                else f"sampling watch (no cgroups: {no_groups})")
        try:
            pool.slots[0].sock.settimeout(READY_TIMEOUT)
            data = pool.slots[0].sock.recv(65536)
            pool.slots[0].sock.settimeout(None)
        except (OSError, socket.timeout):
            data = b""
        if not data or not json.loads(data).get("ready"):
            err = b""
            try:
                proc.kill()
                err = proc.communicate(timeout=10)[1] or b""
            except Exception:
                pass
            pool._cleanup()
            raise GradingError(f"the sandbox's fork server did not start: {err.decode(errors='replace')[-2000:]}")
        if proc.stderr is not None:  # drain so the zygote never blocks on a full pipe
            threading.Thread(target=_drain, args=(proc.stderr,), daemon=True).start()
        return pool

    def _checked(self) -> "ZygotePool":
        """Start one worker on an empty submission and ping it: a machine where bubblewrap runs but
        the worker cannot enter its sandbox (no overlay, no namespaces) is found here, once."""
        empty = self.run_dir / "self-test"
        empty.mkdir()
        try:
            from course.grading.sandbox.backend import SandboxBackend
            backend = SandboxBackend(self.slot(0), empty, Limits(), "cpu")
            try:
                frame = wire.dumps({"op": "ping"})
                sock = backend._ensure()
                wire.send_frame(sock, frame, SETUP_TIMEOUT)
                if wire.recv(sock, 4096, SETUP_TIMEOUT) != {"ok": True, "value": "pong"}:
                    raise GradingError("the sandbox's self-test worker did not answer its ping")
            finally:
                backend.close()
                self.slot(0).kill_all()
        except (SandboxUnavailable, wire.WireError, OSError) as exc:
            self.close()
            raise GradingError(f"a sandboxed worker could not start: {exc}") from None
        except GradingError:
            self.close()
            raise
        finally:
            INFRASTRUCTURE_ERRORS.clear()
            shutil.rmtree(empty, ignore_errors=True)
        return self

    def slot(self, index: int = 0) -> SlotClient:
        return self.slots[index]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def scratch_copy(self, slot: SlotClient, source: Path) -> tuple[Path, str]:
        """Copy a submission into the slot's scratch folder; returns (host path, path seen inside)."""
        slot_dir = self.scratch_host / f"slot-{slot.index}"
        slot_dir.mkdir(mode=0o700, exist_ok=True)
        name = f"sub-{secrets.token_hex(6)}"
        dest = slot_dir / name
        safe_copy(source, dest)
        if self.isolation == "strong":
            for folder, dirs, files in os.walk(slot_dir):
                os.chown(folder, slot.uid, slot.uid)
                for f in files:
                    os.chown(os.path.join(folder, f), slot.uid, slot.uid, follow_symlinks=False)
            return dest, f"{SANDBOX_SCRATCH}/slot-{slot.index}/{name}"
        return dest, str(dest)

    def close(self) -> None:
        for s in self.slots:
            try:
                s.sock.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        if self.groups is not None:
            self.groups.remove()
            self.groups = None
        shutil.rmtree(self.run_dir, ignore_errors=True)
        if self._uid_lock is not None:
            os.close(self._uid_lock)  # releases the uid block
            self._uid_lock = None

    def __enter__(self) -> "ZygotePool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _claim_uid_block() -> tuple[int, int | None]:
    """The first uid block no other grading run on this machine holds, and the lock holding it.

    Slot uids must be private to one run: a slot's uid is swept with SIGKILL between submissions
    and counted by RLIMIT_NPROC, so two runs sharing uids would kill or starve each other's
    workers. The lock is an flock on a file per block, released when the run's pool closes or its
    process dies. If the lock folder is unusable (not root's), a random block is taken unlocked.
    """
    import fcntl
    try:
        os.makedirs(constants.UID_LOCKS, mode=0o755, exist_ok=True)
        st = os.lstat(constants.UID_LOCKS)
        usable = stat.S_ISDIR(st.st_mode) and st.st_uid == 0 and not st.st_mode & 0o022
    except OSError:
        usable = False
    if usable:
        for block in range(UID_BLOCKS):
            fd = os.open(f"{constants.UID_LOCKS}/{block}", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            return UID_BASE + block * UID_BLOCK, fd
    return UID_BASE + secrets.randbelow(UID_BLOCKS) * UID_BLOCK, None


def _drain(stream: Any) -> None:
    try:
        while stream.read(65536):
            pass
    except Exception:
        pass


def safe_copy(source: Path, dest: Path) -> None:
    """Copy regular files and folders only (no symlinks, devices or fifos), within size caps."""
    total, count = 0, 0
    dest.mkdir(mode=0o700)
    for folder, dirs, files in os.walk(source, followlinks=False):
        rel = Path(folder).relative_to(source)
        dirs[:] = [d for d in dirs if d not in ("__pycache__", ".git") and not os.path.islink(os.path.join(folder, d))]
        for d in dirs:
            (dest / rel / d).mkdir(mode=0o700)
        for f in files:
            src = Path(folder) / f
            st = os.lstat(src)
            if not stat.S_ISREG(st.st_mode) or f.endswith(".pyc"):
                continue
            total += st.st_size
            count += 1
            if total > MAX_COPY_BYTES or count > MAX_COPY_FILES:
                raise GradingError(f"{source}: the submission is larger than {MAX_COPY_BYTES} bytes "
                                   f"or {MAX_COPY_FILES} files")
            shutil.copyfile(src, dest / rel / f, follow_symlinks=False)
            os.chmod(dest / rel / f, 0o600)

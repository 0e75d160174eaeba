"""Launches isolated workers for student code: a pre-warmed fork server, limits, whole-tree kills.

Shape of a grading run::

    trusted judge (pytest + plugin)  --control (SOCK_SEQPACKET, one per job slot)-->  zygote
          |                                                                             | fork
          +------------- data socket (wire frames), passed to the zygote by SCM_RIGHTS --> worker

The *zygote* is started once per run as ``python -I -S -B`` with an explicit ``sys.path`` (the
interpreter's standard library, site-packages, and a staged copy of the ``course`` package): it
imports torch, transformers and peft once, computes nothing, never touches CUDA, and never sees
grader code. Each worker forks from it (one fork, ~the cost of copying its page tables), then
enters its sandbox; pytest never runs there, and the submission joins ``sys.path`` only then.

Isolation is **strong** when running as root with bubblewrap:

* the zygote runs under ``bwrap`` with new IPC/PID/network/UTS/cgroup namespaces, ``--clearenv``,
  ``--new-session``, ``--die-with-parent``, and read-only binds of just the system libraries, the
  interpreter and its packages. graders/, solutions/, the gradebook, other submissions and the
  course repository are not inside. Deliberately *not* ``--unshare-all``: that adds a user
  namespace mapping only uid 0, after which no worker could drop to an unprivileged uid
  (``setresuid`` fails with EPERM); the worker's own uid, capability drop, ``no_new_privs`` and
  seccomp filter below do what the user namespace would.
* each worker is the init of a PID namespace of its own (the zygote unshares the PID namespace
  for its next child, forks, and steps back), unshares mount, network, IPC and UTS namespaces,
  mounts a private ``/proc`` and a ``/tmp`` tmpfs, and sees its submission at ``/submission`` as
  an overlay: the scratch copy read-only below, a tmpfs above. Both tmpfs are capped at the
  ``file_size`` limit and :data:`TMPFS_INODES` files, so a disk fill fills the worker's cap, never
  the machine's disk, and each new worker starts from the submission as collected. Every other
  scratch copy is hidden under an empty tmpfs. It then sets its rlimits, drops every capability,
  becomes its job slot's own unprivileged uid with ``no_new_privs``, and loads a seccomp filter
  refusing network sockets, namespaces, mounts, ptrace and other kernel interfaces.
* each grading run claims a block of uids of its own (:func:`_claim_uid_block`), so concurrent
  runs on one machine never share, count or kill each other's processes.
* a timeout kills the worker's PID namespace (every descendant, ``setsid()`` or not); before a
  slot's next worker starts, every process of the slot's uid is killed.
* the zygote adds up the private memory of each worker and its descendants (``RLIMIT_AS`` bounds
  one process, not a fork of many) and kills a worker over its ``memory`` limit.

Elsewhere (no root, no bubblewrap, macOS) isolation is **weak**: a separate process in its own
session with the rlimits the system allows and the same memory watch; on Linux the zygote is a
child subreaper that kills re-parented orphans (``setsid`` grandchildren). It warns, and results
record ``isolation: weak``; ``course grade --require-isolation`` refuses to run so.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import resource
import secrets
import shutil
import signal
import site
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from course.config import Limits
from course.errors import GradingError, IsolationError
from course.grading import wire
from course.grading.failures import BadReply, SubmissionFailure, SubmissionTimeout, WorkerCrashed, submission_error

PRELOAD = ("torch", "numpy", "safetensors.torch", "transformers", "peft")
UID_BASE = 61000              # slot k of the first grading run on a machine runs as uid 61000 + k
UID_BLOCK = 256               # each concurrent run claims its own block of uids (its slots' uids)
UID_BLOCKS = 4096
UID_LOCKS = "/tmp/.course-sandbox-uids"
SANDBOX_SUBMISSION = "/submission"
SANDBOX_SCRATCH = "/scratch"
SANDBOX_PKG = "/opt/course-pkg"
SANDBOX_HOST_TMP = "/opt/course-host-tmp"   # where the host's /tmp/... shows (the worker's /tmp is its own)
# not --unshare-all: its user namespace maps only uid 0, and workers switch to a uid of their own
BWRAP_NAMESPACES = ("--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try")
READY_TIMEOUT = 180.0
SETUP_TIMEOUT = 60.0
MAX_COPY_BYTES = 512 * 2**20
MAX_COPY_FILES = 5000
TMPFS_INODES = 20000          # files a worker may create in /tmp, and in /submission
MEMORY_POLL = 0.1             # seconds between the fork server's looks at its workers' memory
MEMORY_EXACT_EVERY = 0.5      # at most this often per worker, the exact (costlier) count

# Linux constants (not all exposed by the os module on Python 3.10/3.11)
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_NOSUID, MS_NODEV, MS_REC, MS_PRIVATE = 2, 4, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_SET_CHILD_SUBREAPER = 1, 24, 38, 36


class SandboxUnavailable(SubmissionFailure):
    """The sandbox itself failed (not the student's fault): the submission is re-graded later."""

    outcome = "error"


# Set by a worker-side failure of the infrastructure; the runner then retries the submission.
INFRASTRUCTURE_ERRORS: list[str] = []


# ------------------------------------------------------------------ where things are

def _site_packages() -> list[str]:
    paths = []
    for p in [*site.getsitepackages(), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]:
        if p and os.path.isdir(p) and p not in paths:
            paths.append(p)
    return paths


def _stdlib_paths() -> list[str]:
    """The interpreter's own library folders (zip, stdlib, lib-dynload), as this process uses them."""
    base = os.path.realpath(sys.base_prefix)
    return [p for p in sys.path if p and os.path.realpath(p).startswith(base + os.sep)
            and "site-packages" not in p and os.path.exists(p)]


def _inside(path: str) -> str:
    """Where a host path of the interpreter shows inside the strong sandbox.

    Every worker mounts its own ``/tmp``, which would hide a virtual environment or checkout that
    lives under the host's ``/tmp`` (a CI runner's, say): those are bound below ``/opt`` instead.
    """
    real = os.path.realpath(path)
    if real == "/tmp" or real.startswith("/tmp/"):
        return SANDBOX_HOST_TMP + real[len("/tmp"):]
    return real


def _stage_package(dest: Path) -> Path:
    """A read-only copy of the ``course`` package: the zygote imports it from here, never the repo."""
    import course
    src = Path(course.__file__).resolve().parent
    target = dest / "course"
    shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for folder, dirs, files in os.walk(dest):
        os.chmod(folder, 0o755)
        for f in files:
            os.chmod(os.path.join(folder, f), 0o644)
    return dest


def strong_isolation_available() -> tuple[bool, str]:
    """Whether this machine can run workers strongly isolated, and if not, why."""
    if not sys.platform.startswith("linux"):
        return False, f"{sys.platform} has no Linux namespaces"
    if os.geteuid() != 0:
        return False, "not running as root (needed for namespaces and a separate uid)"
    if shutil.which("bwrap") is None:
        return False, "bubblewrap (bwrap) is not installed (Debian package 'bubblewrap')"
    return _bwrap_works()


_BWRAP_PROBE: tuple[bool, str] | None = None


def _bwrap_works() -> tuple[bool, str]:
    """Whether bwrap can make the namespaces the sandbox uses here (a container may forbid them)."""
    global _BWRAP_PROBE
    if _BWRAP_PROBE is None:
        argv = ["bwrap", *BWRAP_NAMESPACES, "--die-with-parent", "--ro-bind", "/", "/", "--proc", "/proc",
                "--dev", "/dev", "true"]
        try:
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
            why = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
            _BWRAP_PROBE = (True, "") if done.returncode == 0 else (False, f"bwrap cannot make namespaces here: {why[0]}")
        except (OSError, subprocess.TimeoutExpired) as exc:
            _BWRAP_PROBE = (False, f"bwrap did not run: {exc}")
    return _BWRAP_PROBE


# ------------------------------------------------------------------ the trusted side

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

    @classmethod
    def start(cls, jobs: int = 1, *, require_isolation: bool = False, ro_paths: tuple[str, ...] = (),
              device: str = "cpu", preload: tuple[str, ...] = PRELOAD, isolation: str = "auto") -> "ZygotePool":
        """Start the fork server; ``ro_paths`` are extra host folders workers may read (a strong
        sandbox shows one under the host's ``/tmp`` at ``_inside(path)``)."""
        ok, reason = strong_isolation_available()
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
        pkg = _stage_package(run_dir / "pkg")
        scratch = run_dir / "scratch"
        scratch.mkdir(mode=0o711)
        ours, theirs = zip(*(socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(jobs)))
        view = _inside if strong else os.path.realpath   # where the zygote sees the interpreter's files
        cfg = {
            "slots": [s.fileno() for s in theirs],
            "path": [SANDBOX_PKG if strong else str(pkg), *map(view, [*_stdlib_paths(), *_site_packages()])],
            "preload": list(preload),
            "strong": strong,
            "scratch": SANDBOX_SCRATCH if strong else str(scratch),
        }
        boot = ("import sys,json;cfg=json.loads(sys.argv[1]);sys.path[:]=cfg['path'];"
                "from course.grading.sandbox import zygote_main;zygote_main(cfg)")
        python = view(sys.executable)
        argv = [python, "-I", "-S", "-B", "-c", boot, json.dumps(cfg)]
        env = _sandbox_env(threads=1)
        if strong:
            argv = _bwrap_argv(pkg, scratch, ro_paths, device) + argv
        proc = subprocess.Popen(argv, pass_fds=[s.fileno() for s in theirs], env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, close_fds=True,
                                start_new_session=not strong)
        for s in theirs:
            s.close()
        pool = cls(proc, list(ours), "strong" if strong else "weak", reason, run_dir, scratch, uid_base, uid_lock)
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
        os.makedirs(UID_LOCKS, mode=0o755, exist_ok=True)
        st = os.lstat(UID_LOCKS)
        usable = stat.S_ISDIR(st.st_mode) and st.st_uid == 0 and not st.st_mode & 0o022
    except OSError:
        usable = False
    if usable:
        for block in range(UID_BLOCKS):
            fd = os.open(f"{UID_LOCKS}/{block}", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
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


def _sandbox_env(threads: int) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": "/tmp",
        "USER": "student",
        "LOGNAME": "student",
        "LANG": "C.UTF-8",
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
        "PYTHONHASHSEED": "0",
        "TORCHINDUCTOR_CACHE_DIR": "/tmp/inductor",
        "TRITON_CACHE_DIR": "/tmp/triton",
    }


def _ro_bind_with_parents(argv: list[str], made: set[str], path: str, target: str | None = None) -> None:
    target = target or path
    parts = Path(target).parts
    for i in range(2, len(parts)):
        parent = str(Path(*parts[:i]))
        if parent not in made and parent not in ("/usr", "/tmp", "/proc", "/dev"):
            argv += ["--perms", "0755", "--dir", parent]
            made.add(parent)
    argv += ["--ro-bind", path, target]
    made.add(target)


def _bwrap_argv(pkg: Path, scratch: Path, ro_paths: tuple[str, ...], device: str) -> list[str]:
    argv = ["bwrap", *BWRAP_NAMESPACES, "--die-with-parent", "--new-session", "--clearenv"]
    for key, value in _sandbox_env(threads=1).items():
        argv += ["--setenv", key, value]
    argv += ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            argv += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            argv += ["--ro-bind", top, top]
    for etc in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/alternatives"):
        if os.path.exists(etc):
            argv += ["--ro-bind", etc, etc]
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    made: set[str] = set()
    roots: list[str] = []
    for p in [sys.base_prefix, sys.prefix, os.path.dirname(os.path.realpath(sys.executable)),
              *_stdlib_paths(), *_site_packages(), *ro_paths]:
        real = os.path.realpath(p)
        if not os.path.exists(real) or real.startswith("/usr/") or real == "/usr":
            continue
        if any(real == r or real.startswith(r + os.sep) for r in roots):
            continue
        roots = [r for r in roots if not r.startswith(real + os.sep)] + [real]
    for real in sorted(roots):
        _ro_bind_with_parents(argv, made, real, _inside(real))
    _ro_bind_with_parents(argv, made, str(pkg), SANDBOX_PKG)
    argv += ["--bind", str(scratch), SANDBOX_SCRATCH, "--perms", "0755", "--dir", SANDBOX_SUBMISSION]
    if device == "cuda":
        for dev in sorted(Path("/dev").glob("nvidia*")):
            argv += ["--dev-bind", str(dev), str(dev)]
        for extra in ("/sys", "/usr/local/nvidia", "/usr/local/cuda", "/run/nvidia-persistenced"):
            if os.path.exists(extra) and not extra.startswith("/usr/local/cuda"):
                argv += ["--ro-bind", extra, extra]
    return argv


# ------------------------------------------------------------------ the zygote (no grader code here)

def zygote_main(cfg: dict[str, Any]) -> None:
    """Entry point of the fork server: preload, then fork a worker per request (see :class:`_ForkServer`)."""
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    for name in cfg["preload"]:
        try:
            __import__(name)
        except Exception:
            pass  # a missing optional library only costs the workers the import later
    from course.grading import worker  # noqa: F401  (imported before any fork)
    cfg["seccomp"] = _seccomp_filter()  # built once here; each worker only loads it
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
        self.memory = _MemoryPolice()

    def serve(self) -> None:
        import select
        next(iter(self.slots.values())).send(json.dumps({"ready": True}).encode())
        while self.slots:
            try:
                readable, _, _ = select.select(list(self.slots.values()), [], [],
                                               MEMORY_POLL if self.budgets else 1.0)
            except InterruptedError:
                continue
            self.reap()
            for sock in readable:
                self.answer(sock)
            self.police()
        for pid in self.workers.values():
            _kill_worker(pid, self.statuses, wait=False)

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
            try:
                pid = _fork_worker(msg, fds[0], list(self.slots), self.cfg)
            except OSError as exc:
                return {"ok": False, "error": str(exc)}
            self.workers[(slot, msg["id"])] = pid
            self.budgets[pid] = int(msg["limits"]["memory"])
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

    def clear_slot(self, uid: int, rounds: int = 200) -> None:
        """Kill whatever a slot's earlier workers left running (strong: by uid; weak: re-parented orphans)."""
        if self.strong:
            _kill_uid(uid, rounds)
        else:
            _kill_orphans(set(self.workers.values()), rounds)
        self.reap()

    def police(self) -> None:
        self.memory.forget_all_but(self.budgets)
        for pid, limit in list(self.budgets.items()):
            used = self.memory.used(pid, limit)
            if used > limit:
                self.notes[pid] = (f"its processes held {used / 2**20:.0f} MiB of memory together, "
                                   f"over the {limit / 2**20:.0f} MiB limit")
                self.budgets.pop(pid, None)
                for target in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
                    try:
                        target()
                    except (ProcessLookupError, PermissionError):
                        pass


class _MemoryPolice:
    """Private memory of a worker's processes together (the worker and all its descendants).

    Cheap first: the sum of their anonymous resident memory, which over-counts pages shared
    copy-on-write with the fork server. Only when that sum exceeds the limit are the exact private
    pages read (smaps_rollup), at most every :data:`MEMORY_EXACT_EVERY` seconds per worker.
    """

    def __init__(self) -> None:
        self.exact_at: dict[int, float] = {}

    def forget_all_but(self, workers: dict[int, int]) -> None:
        self.exact_at = {pid: t for pid, t in self.exact_at.items() if pid in workers}

    def used(self, worker: int, limit: int) -> int:
        members = _descendants(worker)
        rough = sum(_status_kib(pid, "RssAnon") for pid in members) * 1024
        if rough <= limit:
            return rough
        now = time.monotonic()
        if now - self.exact_at.get(worker, 0.0) < MEMORY_EXACT_EVERY:
            return 0
        self.exact_at[worker] = now
        return sum(_private_kib(pid) for pid in members) * 1024


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


_libc: Any = None


def _prctl_quiet(option: int, value: int) -> None:
    try:
        _libc_call("prctl", option, value, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux
        pass


def _libc_call(name: str, *args: Any) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if getattr(_libc, name)(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")


def _worker_child(msg: dict[str, Any], data_fd: int, cfg: dict[str, Any]) -> int:
    """In the forked child: enter the sandbox, say hello, then serve. Returns an exit code."""
    limits = Limits(**msg["limits"])
    strong = cfg["strong"]
    os.setsid()
    _prctl_quiet(PR_SET_PDEATHSIG, signal.SIGKILL)  # the zygote gone: the worker too (Linux)
    if strong:  # already the init of its own PID namespace: when it dies, everything it started dies
        _libc_call("unshare", CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS)
        root = _enter_mounts(msg["copy"], cfg["scratch"], int(msg["uid"]), limits)
    else:
        root = msg["copy"]
    os.chdir(root)
    os.umask(0o077)
    _redirect_stdio()
    _close_fds_except(data_fd)
    os.environ.clear()
    os.environ.update(_sandbox_env(limits.threads))
    _set_rlimits(limits, strong, cuda=msg.get("device") == "cuda")
    if strong:
        _drop_privileges(int(msg["uid"]))
    if cfg.get("seccomp") is not None:
        cfg["seccomp"].load()
    import torch
    torch.set_num_threads(limits.threads)
    sock = socket.socket(fileno=data_fd)
    sock.sendall(wire.dumps({"ready": True}))
    from course.grading.worker import serve
    serve(sock, Path(root), max_reply=limits.reply_bytes)
    return 0


def _enter_mounts(copy: str, scratch: str, uid: int, limits: Limits) -> str:
    """The worker's private view: its own /proc and /tmp, and its submission at /submission.

    Everything the worker may write lives in memory, capped: /tmp is a tmpfs, and /submission is an
    overlay of the scratch copy (read-only below, never modified) under a tmpfs, so a disk fill fills
    only the worker's own cap, never the grading machine's disk, and each new worker starts from the
    submission as collected. The other slots' scratch copies are hidden under an empty tmpfs.
    """
    cap = f"size={max(limits.file_size, 1 << 20)},nr_inodes={TMPFS_INODES}".encode()
    flags = MS_NOSUID | MS_NODEV
    sub = SANDBOX_SUBMISSION.encode()
    _libc_call("mount", b"none", b"/", None, MS_REC | MS_PRIVATE, None)
    _libc_call("mount", b"tmpfs", b"/tmp", b"tmpfs", flags, cap + b",mode=1777")
    _libc_call("mount", b"proc", b"/proc", b"proc", flags, None)
    _libc_call("mount", b"tmpfs", sub, b"tmpfs", flags, cap + b",mode=0700")
    os.mkdir(SANDBOX_SUBMISSION + "/upper", 0o700)
    os.mkdir(SANDBOX_SUBMISSION + "/work", 0o700)
    os.chown(SANDBOX_SUBMISSION + "/upper", uid, uid)
    options = f"lowerdir={copy},upperdir={SANDBOX_SUBMISSION}/upper,workdir={SANDBOX_SUBMISSION}/work"
    _libc_call("mount", b"overlay", sub, b"overlay", flags, options.encode())
    _libc_call("mount", b"tmpfs", scratch.encode(), b"tmpfs", flags, b"size=4k,nr_inodes=8,mode=0755")
    return SANDBOX_SUBMISSION


def _redirect_stdio() -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    if devnull > 2:
        os.close(devnull)


def _close_fds_except(keep: int) -> None:
    os.closerange(3, keep)
    os.closerange(keep + 1, 65536)


def _set_rlimits(limits: Limits, strong: bool, cuda: bool = False) -> None:
    """The worker's rlimits. A CUDA worker gets no ``RLIMIT_AS``: the CUDA driver reserves far more
    address space than it uses and fails to start under one; the memory watch still bounds it."""
    def setr(which: int, value: int) -> None:
        try:
            soft, hard = resource.getrlimit(which)
            value = value if hard == resource.RLIM_INFINITY else min(value, hard)
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError):
            pass
    if not cuda:
        setr(resource.RLIMIT_AS, limits.memory)
    setr(resource.RLIMIT_FSIZE, limits.file_size)
    setr(resource.RLIMIT_NOFILE, limits.open_files)
    setr(resource.RLIMIT_CORE, 0)
    cpu = int(limits.cpu_seconds)
    try:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    except (ValueError, OSError):
        pass
    if strong:  # NPROC counts every process of the uid: only meaningful with a uid of our own
        setr(resource.RLIMIT_NPROC, limits.processes)


def _drop_privileges(uid: int) -> None:
    for cap in range(0, 64):
        try:
            _libc_call("prctl", PR_CAPBSET_DROP, cap, 0, 0, 0)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                break
            raise
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    _libc_call("prctl", PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    if os.getuid() == 0 or os.geteuid() == 0:
        raise OSError("the worker is still root")


# Refused inside the worker: namespaces (a user namespace would let it mount an uncapped tmpfs),
# mounts, tracing and reading other processes, and kernel interfaces no student code needs.
DENIED_SYSCALLS = (
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "mount_setattr", "fsopen", "fsmount",
    "fsconfig", "move_mount", "open_tree", "ptrace", "process_vm_readv", "process_vm_writev", "bpf",
    "perf_event_open", "keyctl", "add_key", "request_key", "userfaultfd", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "open_by_handle_at", "name_to_handle_at", "acct", "swapon", "swapoff", "reboot", "syslog",
)
CLONE_NEWUSER = 0x10000000


def _seccomp_filter() -> Any:
    """Defence in depth (the namespaces already cut the network): a filter refusing network sockets
    and the syscalls in :data:`DENIED_SYSCALLS`, or None without pyseccomp/libseccomp."""
    try:
        import pyseccomp as seccomp
        f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    except Exception:
        return None
    for family in (socket.AF_INET, socket.AF_INET6, getattr(socket, "AF_PACKET", 17), getattr(socket, "AF_NETLINK", 16)):
        f.add_rule(seccomp.ERRNO(errno.EACCES), "socket", seccomp.Arg(0, seccomp.EQ, int(family)))
    for name in DENIED_SYSCALLS:
        try:
            f.add_rule(seccomp.ERRNO(errno.EPERM), name)
        except Exception:  # a syscall this architecture or libseccomp does not know
            pass
    f.add_rule(seccomp.ERRNO(errno.EPERM), "clone",
               seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER))
    try:  # clone3 passes its flags in memory, which seccomp cannot read: libc falls back to clone
        f.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    except Exception:
        pass
    return f


# ------------------------------------------------------------------ the judge's backend

_INJECTED: dict[str, Any] = {}


def inject(slot: SlotClient | None) -> None:
    """The runner hands its judge child the job slot to use (instead of starting a new zygote)."""
    if slot is None:
        _INJECTED.pop("slot", None)
    else:
        _INJECTED["slot"] = slot


def injected_pool() -> SlotClient | None:
    return _INJECTED.get("slot")


class SandboxBackend:
    """Student code in a sandboxed worker process; only wire frames cross."""

    def __init__(self, pool: "ZygotePool | SlotClient", path: Path, limits: Limits, device: str):
        self.slot = pool.slot(0) if isinstance(pool, ZygotePool) else pool
        self.pool = self.slot.pool
        self.path = Path(path).resolve()
        self.limits = limits
        self.device = device
        self.host_copy, self.inside = self.pool.scratch_copy(self.slot, self.path)
        self.worker_id: int | None = None
        self.sock: socket.socket | None = None

    @property
    def isolation(self) -> str:
        return self.slot.isolation

    def _ensure(self) -> socket.socket:
        if self.sock is None:
            try:
                self.worker_id, self.sock = self.slot.spawn(Path(self.inside), self.limits, self.device)
            except SandboxUnavailable as exc:
                INFRASTRUCTURE_ERRORS.append(str(exc))
                raise
        return self.sock

    def _stop(self, wait: bool = True) -> str:
        status = ""
        if self.worker_id is not None:
            status = self.slot.kill(self.worker_id, wait)
        if self.sock is not None:
            self.sock.close()
        self.sock, self.worker_id = None, None
        return status

    def _request(self, label: str, message: dict[str, Any], deadline: float, max_reply: int) -> Any:
        frame = wire.dumps(message)  # the test's own arguments: a WireError here is the test's bug
        sock = self._ensure()
        budget = deadline - time.monotonic()
        if budget <= 0:
            raise SubmissionTimeout(f"{label}: no time left in this test's budget")
        try:
            wire.send_frame(sock, frame, budget)
            reply = wire.recv(sock, max_reply, max(0.0, deadline - time.monotonic()))
        except wire.WireTimeout:
            self._stop()
            raise SubmissionTimeout(f"{label} did not finish within the time limit; the worker was stopped") from None
        except (wire.WireClosed, BrokenPipeError, ConnectionResetError):
            how = self._stop()
            raise WorkerCrashed(f"{label}: the submission's process ended abruptly ({how}): "
                                "sys.exit/os._exit, a crash, or a resource limit") from None
        except wire.WireTooLarge as exc:
            self._stop()
            raise BadReply(f"{label}: {exc}") from None
        except wire.WireError as exc:
            self._stop()
            raise BadReply(f"{label}: the reply is not valid data ({exc})") from None
        if type(reply) is not dict or type(reply.get("ok")) is not bool:
            self._stop()
            raise BadReply(f"{label}: the reply is not valid data")
        if reply["ok"]:
            return reply.get("value")
        error = reply.get("error")
        if type(error) is not dict:
            raise BadReply(f"{label}: the reply is not valid data")
        if error.get("type") == "wire":
            raise BadReply(f"{label} returned a value that cannot be graded: {error.get('message', '')}")
        raise submission_error(label, error)

    def call(self, target: str, args: tuple, kwargs: dict, deadline: float, max_reply: int) -> Any:
        return self._request(target, {"op": "call", "target": target, "args": list(args), "kwargs": dict(kwargs)},
                             deadline, max_reply)

    def run(self, probe: Callable[..., Any], args: tuple, kwargs: dict, deadline: float, max_reply: int) -> Any:
        from course.grading.judge import probe_spec
        return self._request(f"probe {probe.__name__}",
                             {"op": "run", "probe": probe_spec(probe), "args": list(args), "kwargs": dict(kwargs)},
                             deadline, max_reply)

    def close(self) -> None:
        self._stop(wait=False)
        shutil.rmtree(self.host_copy, ignore_errors=True)

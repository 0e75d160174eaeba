"""The sandbox: what a worker is, sees and may do, how it ends, and weak isolation's fallbacks.

A strong pool (root + bubblewrap) and a weak pool are each started once per module; workers are
spawned from them for a small submission written here. Process checks look for process names
the test's own submission sets (other grading runs on the machine have other names).
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
import warnings
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from course import api, cli
from course.config import Limits
from course.errors import IsolationError
from course.grading import sandbox
from course.grading.failures import BadReply, SubmissionTimeout, WorkerCrashed

HERE = Path(__file__).parent
TOY = HERE / "files" / "toycourse"
STRONG, WHY_NOT = sandbox.strong_isolation_available()
needs_strong = pytest.mark.skipif(not STRONG, reason=f"needs root and bubblewrap: {WHY_NOT}")
needs_linux = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
TAG = "t" + secrets.token_hex(5)  # names this module's lingering processes

SUBMISSION = f'''
import ctypes
import errno
import os
import resource
import signal
import socket
import time

TAG = {TAG!r}


def status():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
    return {{k: fields[k].strip() for k in ("Uid", "Gid", "CapEff", "CapBnd", "NoNewPrivs", "Seccomp")}}


def identity():
    return {{"pid": os.getpid(), "ppid": os.getppid(), "groups": os.getgroups(), "cwd": os.getcwd(),
             "pids": sorted(p for p in os.listdir("/proc") if p.isdigit()), "status": status()}}


def inherited():
    fds = {{}}
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds[int(fd)] = os.readlink(f"/proc/self/fd/{{fd}}")
        except OSError:
            pass  # the folder listing's own descriptor, closed already
    return {{"fds": fds, "env": dict(os.environ), "cmdline": open("/proc/self/cmdline", "rb").read()}}


def import_value(name):
    import importlib
    return importlib.import_module(name).VALUE


def exists(paths):
    return [os.path.exists(p) for p in paths]


def try_write(paths):
    out = []
    for p in paths:
        try:
            with open(p, "w") as f:
                f.write("x")
            out.append("ok")
        except OSError as exc:
            out.append(errno.errorcode[exc.errno])
    return out


def read(path):
    with open(path) as f:
        return f.read()


def fill(path, mib):
    block = b"x" * 2**20
    try:
        with open(path, "wb") as f:
            for _ in range(mib):
                f.write(block)
    except OSError as exc:
        return errno.errorcode[exc.errno]
    return "ok"


def refused():
    libc = ctypes.CDLL(None, use_errno=True)
    out = {{}}
    for name, family in (("inet", socket.AF_INET), ("inet6", socket.AF_INET6)):
        try:
            socket.socket(family, socket.SOCK_STREAM).close()
            out[name] = "ok"
        except OSError as exc:
            out[name] = errno.errorcode[exc.errno]
    a, b = socket.socketpair()
    a.close(), b.close()
    out["unix"] = "ok"
    out["userns"] = errno.errorcode.get(ctypes.get_errno(), "?") if libc.unshare(0x10000000) else "ok"
    out["mount"] = errno.errorcode.get(ctypes.get_errno(), "?") if libc.mount(b"none", b"/tmp", b"tmpfs", 0, None) else "ok"
    return out


def limits():
    return {{name: resource.getrlimit(getattr(resource, name))[0]
             for name in ("RLIMIT_AS", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_CORE", "RLIMIT_NPROC")}}


def daemon():
    """A grandchild in its own session, named so that the test can look for it."""
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            ctypes.CDLL(None).prctl(15, TAG.encode(), 0, 0, 0)
            while True:
                time.sleep(0.05)
        os._exit(0)
    os.wait()
    return True


def daemon_then_hang():
    daemon()
    time.sleep(3600)


def leave(code):
    os._exit(code)


def segfault():
    ctypes.string_at(0)


def big(n):
    return torch_zeros(n)


def torch_zeros(n):
    import torch
    return torch.zeros(n)


def hog_in_children(children, mib):
    """Children that each touch ``mib`` MiB (each within RLIMIT_AS), then wait."""
    for _ in range(children):
        if os.fork() == 0:
            hoard = bytearray(mib * 2**20)
            for i in range(0, len(hoard), 4096):
                hoard[i] = 1
            time.sleep(3600)
    time.sleep(3600)


def stop_reading():
    from course.grading import wire
    wire.recv = lambda *args, **kwargs: time.sleep(3600)
    return True
'''

LIMITS = Limits(call_timeout=10, memory=3 * 2**30, file_size=8 * 2**20, reply_bytes=2**20, processes=40,
                open_files=100)


def _alive(name: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == name:
                if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                    pids.append(int(entry.name))
        except (OSError, IndexError):
            pass
    return pids


def _gone(name: str, grace: float = 5.0) -> bool:
    deadline = time.monotonic() + grace
    while _alive(name):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture(scope="module")
def submission(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("submission")
    (folder / "box.py").write_text(SUBMISSION)
    (folder / "data.txt").write_text("as collected")
    return folder


@pytest.fixture(scope="module")
def strong_pool():
    if not STRONG:
        pytest.skip(f"needs root and bubblewrap: {WHY_NOT}")
    pool = sandbox.ZygotePool.start(2, preload=("torch",), require_isolation=True)
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def weak_pool():
    with pytest.warns(RuntimeWarning, match="weak isolation: weak isolation was asked for"):
        pool = sandbox.ZygotePool.start(1, preload=("torch",), isolation="weak")
    yield pool
    pool.close()


@pytest.fixture
def strong(strong_pool, submission):
    backend = sandbox.SandboxBackend(strong_pool.slot(1), submission, LIMITS, "cpu")
    yield backend
    backend.close()
    strong_pool.slot(1).kill_all()


@pytest.fixture
def weak(weak_pool, submission):
    backend = sandbox.SandboxBackend(weak_pool.slot(0), submission, LIMITS, "cpu")
    yield backend
    backend.close()
    weak_pool.slot(0).kill_all()


def call(backend, target: str, *args, timeout: float = 10.0):
    return backend.call(f"box.{target}", args, {}, time.monotonic() + timeout, LIMITS.reply_bytes)


# ------------------------------------------------------------------ strong isolation

@needs_strong
def test_the_worker_is_its_slots_unprivileged_uid_alone_in_its_namespace(strong, strong_pool):
    me = call(strong, "identity")
    uid = str(strong_pool.slot(1).uid)
    assert uid == str(strong_pool.uid_base + 1) and int(uid) >= sandbox.UID_BASE
    assert me["status"]["Uid"].split() == [uid] * 4 and me["status"]["Gid"].split() == [uid] * 4
    assert me["status"]["CapEff"] == me["status"]["CapBnd"] == "0000000000000000"
    assert me["status"]["NoNewPrivs"] == "1" and me["status"]["Seccomp"] == "2"
    assert (me["pid"], me["ppid"], me["pids"], me["groups"]) == (1, 0, ["1"], [])
    assert me["cwd"] == sandbox.SANDBOX_SUBMISSION


@needs_strong
def test_only_the_data_socket_is_inherited_and_nothing_secret_is_passed(strong, strong_pool, submission):
    got = call(strong, "inherited")
    fds = got["fds"]
    assert {fd: fds[fd] for fd in (0, 1, 2)} == {0: "/dev/null", 1: "/dev/null", 2: "/dev/null"}
    others = [target for fd, target in fds.items() if fd > 2]
    assert len(others) == 1 and others[0].startswith("socket:")
    assert got["env"] == sandbox._sandbox_env(LIMITS.threads)
    cmdline = got["cmdline"].decode()
    for secret in (str(strong_pool.run_dir), str(submission), "seed", str(HERE), "graders"):
        assert secret not in cmdline


@needs_strong
def test_nothing_outside_the_interpreter_and_the_submission_is_visible(strong, tmp_path):
    hidden = tmp_path / "graders" / "secret.txt"
    hidden.parent.mkdir()
    hidden.write_text("expected values")
    paths = [str(hidden), str(HERE.parent / "course"), str(TOY / "graders"), "/etc/shadow", "/etc/passwd", sandbox.SANDBOX_SCRATCH + "/slot-0", sandbox.SANDBOX_SCRATCH + "/slot-1"]
    assert call(strong, "exists", paths) == [False] * len(paths)
    assert call(strong, "read", "data.txt") == "as collected"


@needs_strong
def test_an_interpreter_under_the_hosts_tmp_stays_importable(tmp_path, submission, monkeypatch):
    """A CI runner may keep its checkout and virtual environment under /tmp, which every worker
    replaces with its own: modules imported only after the fork must still be found."""
    packages = tmp_path / "site-packages"
    packages.mkdir()
    name = "lazy_" + TAG
    (packages / f"{name}.py").write_text("VALUE = 42\n")
    real = sandbox._site_packages
    monkeypatch.setattr(sandbox.bwrap, "_site_packages", lambda: [*real(), str(packages)])
    pool = sandbox.ZygotePool.start(1, preload=(), require_isolation=True)
    try:
        backend = sandbox.SandboxBackend(pool.slot(0), submission, LIMITS, "cpu")
        try:
            assert call(backend, "import_value", name) == 42
            assert call(backend, "exists", [str(packages)]) == [False]   # shown below /opt, not at /tmp
        finally:
            backend.close()
    finally:
        pool.close()


@needs_strong
def test_writes_stay_inside_one_worker(strong, submission):
    assert call(strong, "try_write", ["new.txt", "data.txt", "/tmp/x"]) == ["ok"] * 3
    assert set(call(strong, "try_write", ["/usr/x", "/x", "/opt/x", "/etc/x", "/dev/shm/x"])) <= {"EACCES", "EROFS"}
    assert call(strong, "read", "data.txt") == "x"
    assert (submission / "data.txt").read_text() == "as collected" and not (submission / "new.txt").exists()
    assert not strong.host_copy.joinpath("new.txt").exists()
    strong._stop()  # the next worker starts from the submission as collected, with a fresh /tmp
    assert call(strong, "exists", ["new.txt", "/tmp/x"]) == [False, False]
    assert call(strong, "read", "data.txt") == "as collected"


@needs_strong
def test_disk_is_capped_in_memory_not_on_the_machine(strong):
    assert call(strong, "fill", "/tmp/big", 4) == "ok"
    assert call(strong, "fill", "big-1", 6) == "ok"
    assert call(strong, "fill", "big-2", 6) in ("ENOSPC", "EFBIG")  # 8 MiB cap on the folder
    assert call(strong, "fill", "/tmp/big-2", 20) in ("ENOSPC", "EFBIG")


@needs_strong
def test_network_namespaces_and_mounts_are_refused(strong):
    assert call(strong, "refused") == {"inet": "EACCES", "inet6": "EACCES", "unix": "ok", "userns": "EPERM",
                                       "mount": "EPERM"}


@needs_strong
def test_rlimits_are_the_limits(strong):
    got = call(strong, "limits")
    assert got == {"RLIMIT_AS": LIMITS.memory, "RLIMIT_FSIZE": LIMITS.file_size, "RLIMIT_NOFILE": LIMITS.open_files,
                   "RLIMIT_CORE": 0, "RLIMIT_NPROC": LIMITS.processes}


@needs_strong
def test_a_timeout_kills_the_worker_and_its_setsid_grandchild(strong):
    started = time.monotonic()
    with pytest.raises(SubmissionTimeout, match="did not finish within the time limit"):
        call(strong, "daemon_then_hang", timeout=1.5)
    assert time.monotonic() - started < 5
    assert _gone(TAG)
    assert call(strong, "identity")["pid"] == 1  # a fresh worker serves the next call


@needs_strong
def test_after_a_submission_nothing_it_started_survives(strong_pool, submission):
    backend = sandbox.SandboxBackend(strong_pool.slot(0), submission, LIMITS, "cpu")
    assert call(backend, "daemon") is True
    assert _alive(TAG)
    backend.close()
    strong_pool.slot(0).kill_all()
    assert _gone(TAG)
    assert strong_pool.alive()


@needs_strong
@pytest.mark.parametrize("target, args, how", [("leave", (3,), "exited with status 3"),
                                              ("segfault", (), "killed by SIGSEGV")])
def test_a_crash_fails_the_call_and_says_how_the_worker_ended(strong, target, args, how):
    with pytest.raises(WorkerCrashed, match=how):
        call(strong, target, *args)
    assert call(strong, "identity")["pid"] == 1


@needs_strong
def test_processes_that_together_exceed_the_memory_limit_are_killed(strong):
    started = time.monotonic()
    with pytest.raises(WorkerCrashed, match="(over|reached) the 3072 MiB (memory )?limit"):
        call(strong, "hog_in_children", 6, 700, timeout=60)
    assert time.monotonic() - started < 30


@needs_strong
def test_a_reply_over_the_cap_is_refused(strong):
    with pytest.raises(BadReply, match="cannot be graded.*byte cap"):
        call(strong, "big", 2**20)
    assert call(strong, "big", 8).shape == (8,)


@needs_strong
def test_a_worker_that_stops_reading_cannot_block_the_judge(strong):
    assert call(strong, "stop_reading") is True
    started = time.monotonic()
    with pytest.raises(SubmissionTimeout):
        strong.call("box.identity", (torch.zeros(2**22),), {}, time.monotonic() + 1.5, LIMITS.reply_bytes)
    assert time.monotonic() - started < 5


@needs_strong
def test_concurrent_pools_get_their_own_uids(strong_pool):
    other = sandbox.ZygotePool.start(1, preload=())
    try:
        assert other.uid_base != strong_pool.uid_base
        assert {s.uid for s in other.slots}.isdisjoint({s.uid for s in strong_pool.slots})
    finally:
        other.close()


# ------------------------------------------------------------------ weak isolation

@needs_linux
def test_weak_workers_are_separate_processes_with_rlimits(weak, weak_pool):
    assert weak_pool.isolation == weak.isolation == "weak"
    me = call(weak, "identity")
    assert me["pid"] != os.getpid() and me["cwd"] == str(weak.host_copy)
    got = call(weak, "limits")
    assert (got["RLIMIT_AS"], got["RLIMIT_FSIZE"], got["RLIMIT_CORE"]) == (LIMITS.memory, LIMITS.file_size, 0)
    with pytest.raises(WorkerCrashed, match="exited with status 4"):
        call(weak, "leave", 4)


@needs_linux
def test_weak_mode_still_kills_setsid_grandchildren(weak_pool, submission):
    backend = sandbox.SandboxBackend(weak_pool.slot(0), submission, LIMITS, "cpu")
    assert call(backend, "daemon") is True
    assert _alive(TAG)
    backend.close()
    weak_pool.slot(0).kill_all()
    assert _gone(TAG)


def test_require_isolation_refuses_weak_isolation():
    with pytest.raises(IsolationError, match="strong isolation is required"):
        sandbox.ZygotePool.start(1, require_isolation=True, isolation="weak")


# ------------------------------------------------------------------ through the CLI

@pytest.fixture
def toy_class(tmp_path: Path) -> Path:
    course_dir = tmp_path / "toycourse"
    shutil.copytree(TOY, course_dir, ignore=shutil.ignore_patterns("__pycache__"))
    alice = tmp_path / "class" / "alice"
    alice.mkdir(parents=True)
    shutil.copyfile(TOY / "solutions" / "vecops" / "vecops.py", alice / "vecops.py")
    result = CliRunner().invoke(cli.main, ["collect", str(tmp_path / "class"), "--assignment", "vecops",
                                           "--submitted-at", "2026-10-01T12:00:00+00:00",
                                           "--course", str(course_dir / "course.yml")])
    assert result.exit_code == 0, result.output
    return course_dir


def _pretend_no_bubblewrap(monkeypatch):
    monkeypatch.setattr(sandbox.bwrap, "strong_isolation_available", lambda: (False, "bubblewrap is not installed"))


def test_grade_require_isolation_refuses_to_run_weak(toy_class, monkeypatch):
    _pretend_no_bubblewrap(monkeypatch)
    result = CliRunner().invoke(cli.main, ["grade", "--require-isolation", "--course", str(toy_class / "course.yml")])
    assert result.exit_code == 3
    assert "strong isolation is required but unavailable: bubblewrap is not installed" in result.output
    with api.open_gradebook(api.load_course(toy_class / "course.yml")) as gb:
        assert all(gb.current_grading(s.id) is None for s in gb.submissions())


@needs_linux
def test_weak_grading_warns_once_and_records_weak(toy_class, monkeypatch):
    _pretend_no_bubblewrap(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = CliRunner().invoke(cli.main, ["grade", "--course", str(toy_class / "course.yml")])
    assert result.exit_code == 0, result.output
    assert result.output.count("weak isolation") == 1
    with api.open_gradebook(api.load_course(toy_class / "course.yml")) as gb:
        (sub,) = gb.submissions()
        grading = gb.current_grading(sub.id)
    assert (grading.isolation, grading.points) == ("weak", 9.0)


def test_an_unusable_uid_lock_folder_falls_back_to_a_random_block(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox.constants, "UID_LOCKS", str(tmp_path / "locks"))
    (tmp_path / "locks").mkdir(mode=0o777)
    os.chmod(tmp_path / "locks", 0o777)  # writable by anyone: not trusted
    base, lock = sandbox._claim_uid_block()
    assert lock is None and (base - sandbox.UID_BASE) % sandbox.UID_BLOCK == 0


def test_uid_blocks_are_claimed_in_turn_and_released(tmp_path, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("the uid lock folder must belong to root")
    monkeypatch.setattr(sandbox.constants, "UID_LOCKS", str(tmp_path / "locks"))
    first, lock1 = sandbox._claim_uid_block()
    second, lock2 = sandbox._claim_uid_block()
    assert (first, second) == (sandbox.UID_BASE, sandbox.UID_BASE + sandbox.UID_BLOCK)
    os.close(lock1)
    again, lock3 = sandbox._claim_uid_block()
    assert again == sandbox.UID_BASE
    os.close(lock2)
    os.close(lock3)


@pytest.mark.parametrize("cuda", [False, True])
def test_a_cuda_worker_has_no_address_space_limit(cuda):
    """CUDA reserves tens of GiB of address space at start: RLIMIT_AS would stop it, so a GPU
    worker is bounded by the memory watch alone."""
    import resource
    import subprocess
    import sys
    code = ("import resource; from course.config import Limits; from course.grading.sandbox import _set_rlimits;"
            f"_set_rlimits(Limits(memory=2**31), False, cuda={cuda}); print(resource.getrlimit(resource.RLIMIT_AS)[0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert int(out) == (resource.getrlimit(resource.RLIMIT_AS)[0] if cuda else 2**31)  # cuda: as this process


@needs_linux
def test_a_bwrap_that_cannot_make_namespaces_means_weak_isolation(tmp_path, monkeypatch):
    """A container may ship bwrap yet forbid namespaces: that is found before grading, with the reason."""
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to creating new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(sandbox.bwrap, "_BWRAP_PROBE", None)
    assert sandbox.strong_isolation_available() == (
        False, "bwrap cannot make namespaces here: bwrap: No permissions to creating new namespace")

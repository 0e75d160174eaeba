"""The worker's entry into its sandbox, in the forked child: mounts, stdio, environment, rlimits,
privileges and the seccomp filter, then the worker's request loop."""

from __future__ import annotations

import errno
import os
import resource
import signal
import socket
from pathlib import Path
from typing import Any

from course.config import Limits
from course.grading import wire
from course.grading.sandbox import cgroups
from course.grading.sandbox.bwrap import _sandbox_env
from course.grading.sandbox.constants import SANDBOX_SUBMISSION, TMPFS_INODES
from course.grading.sandbox.linux import (CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWUTS, MS_NODEV,
                                          MS_NOSUID, MS_PRIVATE, MS_REC, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS,
                                          PR_SET_PDEATHSIG, _libc_call, _prctl_quiet)


def _worker_child(msg: dict[str, Any], data_fd: int, cfg: dict[str, Any]) -> int:
    """In the forked child: enter the sandbox, say hello, then serve. Returns an exit code."""
    limits = Limits(**msg["limits"])
    strong = cfg["strong"]
    if msg.get("cgroup"):   # first of all: from here on the kernel counts everything this worker holds
        cgroups.join(msg["cgroup"])
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
    if os.path.isdir(cgroups.INSIDE):   # the run's cgroups: the fork server's, never the worker's to see
        _libc_call("mount", b"tmpfs", cgroups.INSIDE.encode(), b"tmpfs", flags, b"size=4k,nr_inodes=8,mode=0755")
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


# Without cgroups the memory watch cannot see memory held outside the worker's processes: refused.
UNWATCHED_MEMORY_SYSCALLS = ("memfd_create", "memfd_secret", "shmget")


def _seccomp_filter(deny_unwatched_memory: bool = False) -> Any:
    """Defence in depth (the namespaces already cut the network): a filter refusing network sockets
    and the syscalls in :data:`DENIED_SYSCALLS` (and, with ``deny_unwatched_memory``, those in
    :data:`UNWATCHED_MEMORY_SYSCALLS`), or None without pyseccomp/libseccomp."""
    try:
        import pyseccomp as seccomp
        f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    except Exception:
        return None
    for family in (socket.AF_INET, socket.AF_INET6, getattr(socket, "AF_PACKET", 17), getattr(socket, "AF_NETLINK", 16)):
        f.add_rule(seccomp.ERRNO(errno.EACCES), "socket", seccomp.Arg(0, seccomp.EQ, int(family)))
    for name in DENIED_SYSCALLS + (UNWATCHED_MEMORY_SYSCALLS if deny_unwatched_memory else ()):
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

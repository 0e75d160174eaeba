"""Linux system calls the os module lacks (unshare, setns, mount, prctl), through libc."""

from __future__ import annotations

import ctypes
import os
from typing import Any


# Linux constants (not all exposed by the os module on Python 3.10/3.11)
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000


CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000


MS_NOSUID, MS_NODEV, MS_REC, MS_PRIVATE = 2, 4, 16384, 1 << 18


PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_SET_CHILD_SUBREAPER = 1, 24, 38, 36


CLONE_NEWUSER = 0x10000000


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

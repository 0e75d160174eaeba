"""Memory is bounded by the kernel: every way of holding memory fails past the worker's limit.

Each hog (tests/files/memory/hogs.py) tries to hold 3 GiB under a 2 GiB limit: anonymous memory,
memfd files, detached SysV shared memory, shared anonymous mappings, files in the worker's tmpfs
mounts, and four forked children. With cgroups (a cgroup per worker, memory and pids limits) the
kernel refuses or kills; without them (the fallback) the watch counts shared memory and tmpfs
files and the seccomp filter refuses memfd and SysV shared memory. Either way no hog may end up
holding more than the limit.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from course.config import Limits
from course.grading import sandbox
from course.grading.failures import SubmissionError, SubmissionFailure
from course.grading.sandbox import cgroups

HOGS = Path(__file__).parent / "files" / "memory"
LIMIT = 2 * 2**30
WAYS = ["anon", "memfd", "sysv", "shared_map", "tmpfs", "children"]
STRONG, WHY = sandbox.strong_isolation_available()
CGROUPS, NO_CGROUPS = cgroups.available_here() if STRONG else (False, WHY)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not STRONG, reason=f"needs strong isolation: {WHY}")]


@pytest.fixture(scope="module", params=["cgroup", "fallback"])
def pool(request):
    if request.param == "cgroup" and not CGROUPS:
        pytest.skip(f"no cgroups on this machine: {NO_CGROUPS}")
    mp = pytest.MonkeyPatch()
    if request.param == "fallback":
        mp.setattr(cgroups, "setup", lambda *a: (None, "turned off for this test"))
    p = sandbox.ZygotePool.start(1, require_isolation=True, preload=("torch",))
    yield request.param, p
    p.close()
    mp.undo()


@pytest.mark.parametrize("way", WAYS)
def test_no_way_of_holding_memory_passes_the_limit(pool, way):
    mode, p = pool
    assert p.memory_limit_by.startswith("kernel" if mode == "cgroup" else "sampling watch")
    backend = sandbox.SandboxBackend(p.slot(0), HOGS, Limits(memory=LIMIT, file_size=8 * 2**30, call_timeout=60), "cpu")
    try:
        held = backend.call(f"hogs.{way}", (3,), {}, time.monotonic() + 60, 2**20)
    except (SubmissionError, SubmissionFailure) as exc:   # refused, or the worker was killed
        if mode == "cgroup" and "ended abruptly" in str(exc):
            assert "memory limit (enforced by the kernel)" in str(exc)
        return
    finally:
        backend.close()
    assert held <= LIMIT, f"{way} held {held / 2**30:.2f} GiB under a {LIMIT / 2**30:.0f} GiB limit"

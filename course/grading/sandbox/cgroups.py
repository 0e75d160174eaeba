"""Memory and process limits enforced by the kernel: one cgroup per worker.

A sampling watch over a worker's processes misses memory they hold outside themselves: SysV
shared memory, memfd files, tmpfs pages, anonymous shared mappings. A cgroup counts all of these
(they are charged to the cgroup of the process that touched them) and its limit is enforced at
allocation time, so the kernel, not a poll, bounds a worker.

On the trusted side, :func:`setup` makes a run's parent cgroup below this process's own, in each
controller it needs (cgroup v2: one ``unified`` folder with ``memory`` and ``pids`` enabled; v1:
the ``memory`` and ``pids`` hierarchies), and says why not when it cannot. The fork server sees
those folders bound at :data:`INSIDE`; for each worker it makes a child cgroup with the worker's
``memory`` and ``processes`` limits (:class:`WorkerGroups`), the forked child joins it before it
runs anything of the student's, and the child hides the folders from itself. After a worker ends
its cgroup tells whether the memory limit was hit, is emptied and removed.
"""

from __future__ import annotations

import os
import secrets
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path("/sys/fs/cgroup")
INSIDE = "/opt/course-cgroup"            # where the fork server sees the run's cgroup folders


@dataclass
class RunGroups:
    """The run's parent cgroups on the host: controller -> folder ('unified' for v2)."""

    version: int
    folders: dict[str, Path] = field(default_factory=dict)

    def binds(self) -> list[tuple[str, str]]:
        return [(str(path), f"{INSIDE}/{name}") for name, path in self.folders.items()]

    def config(self, inside: bool) -> dict[str, Any]:
        return {"version": self.version,
                "folders": {name: (f"{INSIDE}/{name}" if inside else str(path)) for name, path in self.folders.items()}}

    def remove(self) -> None:
        for path in self.folders.values():
            for child in sorted(path.glob("w-*"), reverse=True):
                _remove_group(child)
            _remove_group(path)


def _own_cgroups() -> dict[str, str]:
    """controller (or '' for v2) -> this process's cgroup path, from /proc/self/cgroup."""
    found = {}
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(",") if parts[1] else [""]:
                found[controller] = parts[2]
    return found


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def setup(run_id: str | None = None) -> tuple[RunGroups | None, str]:
    """The run's parent cgroups, or (None, why not). Needs write access to this process's cgroup."""
    run_id = run_id or f"course-{os.getpid()}-{secrets.token_hex(4)}"
    own = _own_cgroups()
    unified = ROOT / "cgroup.controllers"
    try:
        if unified.exists():   # pure cgroup v2
            base = ROOT / own.get("", "/").lstrip("/")
            available = (base / "cgroup.controllers").read_text().split()
            if not {"memory", "pids"} <= set(available):
                return None, f"cgroup v2 at {base} does not offer the memory and pids controllers"
            enabled = (base / "cgroup.subtree_control").read_text().split()
            if not {"memory", "pids"} <= set(enabled):
                try:
                    _write(base / "cgroup.subtree_control", "+memory +pids")
                except OSError as exc:
                    return None, (f"cannot enable memory and pids for child cgroups of {base} ({exc.strerror}); "
                                  "this process's cgroup holds processes, so run the grader in a cgroup of its own")
            run = base / run_id
            run.mkdir()
            try:
                _write(run / "cgroup.subtree_control", "+memory +pids")
            except OSError as exc:
                _remove_group(run)
                return None, f"cannot delegate memory and pids to {run} ({exc.strerror})"
            return RunGroups(2, {"unified": run}), ""
        folders = {}
        for controller in ("memory", "pids"):
            mount = ROOT / controller
            if not (mount / "cgroup.procs").exists():
                return None, f"no cgroup {controller} controller is mounted at {mount}"
            base = mount / own.get(controller, "/").lstrip("/")
            if not base.is_dir():
                base = mount
            run = base / run_id
            run.mkdir()
            folders[controller] = run
        groups = RunGroups(1, folders)
        probe = WorkerGroups(groups.config(inside=False))
        try:   # the limit files must be writable here (a read-only cgroupfs lets mkdir fail, usually)
            probe.create("probe", 64 * 2**20, 8)
        finally:
            probe.remove("probe")
        return groups, ""
    except OSError as exc:
        return None, f"cannot create a cgroup here ({exc.strerror or exc})"


def _remove_group(path: Path, attempts: int = 200) -> None:
    for _ in range(attempts):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:   # still busy: kill what is left, then try again
            _kill_members(path)
            time.sleep(0.005)


def _members(path: Path) -> list[int]:
    try:
        return [int(x) for x in (path / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def _kill_members(path: Path) -> None:
    for pid in _members(path):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class WorkerGroups:
    """In the fork server: a cgroup per worker below the run's folders (see :func:`setup`)."""

    def __init__(self, cfg: dict[str, Any]):
        self.version = int(cfg["version"])
        self.folders = {name: Path(p) for name, p in cfg["folders"].items()}

    def _paths(self, key: str) -> list[Path]:
        return [folder / f"w-{key}" for folder in self.folders.values()]

    def create(self, key: str, memory: int, processes: int) -> list[str]:
        """Make the worker's cgroups with its limits; returns the folders the child joins."""
        paths = self._paths(key)
        for path in paths:
            if path.exists():
                _remove_group(path)
            path.mkdir()
        if self.version == 2:
            (unified,) = paths
            _write(unified / "memory.max", str(memory))
            if (unified / "memory.swap.max").exists():
                _write(unified / "memory.swap.max", "0")
            if (unified / "memory.oom.group").exists():
                _write(unified / "memory.oom.group", "1")   # the whole worker dies together
            _write(unified / "pids.max", str(processes))
        else:
            mem, pids = paths
            _write(mem / "memory.limit_in_bytes", str(memory))
            if (mem / "memory.memsw.limit_in_bytes").exists():
                try:
                    _write(mem / "memory.memsw.limit_in_bytes", str(memory))   # no escape into swap
                except OSError:
                    pass
            _write(pids / "pids.max", str(processes))
        return [str(p) for p in paths]

    def oom_killed(self, key: str) -> bool:
        """Whether the kernel killed a process of the worker for reaching its memory limit."""
        path = self._paths(key)[0]
        try:
            if self.version == 2:
                events = dict(line.split() for line in (path / "memory.events").read_text().splitlines())
            else:
                events = dict(line.split() for line in (path / "memory.oom_control").read_text().splitlines())
            return int(events.get("oom_kill", 0)) > 0
        except (OSError, ValueError):
            return False

    def hit_limit(self, key: str) -> bool:
        """Whether the worker's memory limit was reached (the kernel refused or reclaimed-then-killed)."""
        paths = self._paths(key)
        try:
            if self.version == 2:
                events = dict(line.split() for line in (paths[0] / "memory.events").read_text().splitlines())
                return int(events.get("oom_kill", 0)) > 0 or int(events.get("max", 0)) > 0
            oom = dict(line.split() for line in (paths[0] / "memory.oom_control").read_text().splitlines())
            peak = int((paths[0] / "memory.max_usage_in_bytes").read_text())
            limit = int((paths[0] / "memory.limit_in_bytes").read_text())
            return int(oom.get("oom_kill", 0)) > 0 or int((paths[0] / "memory.failcnt").read_text()) > 0 \
                or peak >= limit
        except (OSError, ValueError, IndexError):
            return False

    def remove(self, key: str) -> None:
        for path in self._paths(key):
            if self.version == 2 and (path / "cgroup.kill").exists():
                try:
                    _write(path / "cgroup.kill", "1")
                except OSError:
                    pass
            _remove_group(path)


def join(folders: list[str]) -> None:
    """In the forked child, before anything else: move this process into its worker's cgroups."""
    for folder in folders:
        _write(Path(folder) / "cgroup.procs", "0")


def available_here() -> tuple[bool, str]:
    """For tests and the isolation record: can this machine put workers in cgroups?"""
    groups, why = setup()
    if groups is None:
        return False, why
    groups.remove()
    return True, ""


__all__ = ["INSIDE", "RunGroups", "WorkerGroups", "available_here", "join", "setup"]

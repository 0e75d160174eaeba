"""Where the interpreter lives on the host, how it shows inside the sandbox, and the bubblewrap
command line that starts the fork server (whether this machine allows it at all)."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Iterable

from course.grading.sandbox.constants import BWRAP_NAMESPACES, SANDBOX_HOST_TMP, SANDBOX_PKG, SANDBOX_SCRATCH, SANDBOX_SUBMISSION


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


def _bwrap_argv(pkg: Path, scratch: Path, ro_paths: tuple[str, ...], device: str,
                binds: Iterable[tuple[str, str]] = ()) -> list[str]:
    """bwrap's command line; ``binds`` are (host, inside) folders bound writable (the run's cgroups)."""
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
    for host, inside in binds:
        _ro_bind_with_parents(argv, made, host, inside)
        argv[-3] = "--bind"   # writable: the fork server makes a cgroup per worker there
    if device == "cuda":
        for dev in sorted(Path("/dev").glob("nvidia*")):
            argv += ["--dev-bind", str(dev), str(dev)]
        for extra in ("/sys", "/usr/local/nvidia", "/usr/local/cuda", "/run/nvidia-persistenced"):
            if os.path.exists(extra) and not extra.startswith("/usr/local/cuda"):
                argv += ["--ro-bind", extra, extra]
    return argv

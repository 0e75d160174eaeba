"""The grading environment: the versions that decide numbers, recorded with every grading.

Identical files can get different numbers under another torch or bitsandbytes (kernels change,
reduction orders change), so each grading records its environment, the grader version hash
covers the library versions (an upgrade is a visible regrade, never a silent one), and a student's
`course check` says once how their environment differs from the graders' (the release kit ships
the graders' manifest, ``grading-environment.json``).
"""

from __future__ import annotations

import functools
import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

LIBRARIES = ("torch", "transformers", "peft", "bitsandbytes", "safetensors", "numpy", "accelerate", "tokenizers")
SEED_SCHEME = "rng fixture: sha256(run seed : test node id), run seed secret per grading"
MANIFEST = "grading-environment.json"


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def libraries() -> dict[str, str | None]:
    """python, course and the libraries that decide numbers, as installed here (no imports)."""
    import course
    out: dict[str, str | None] = {"python": platform.python_version(), "course": course.__version__}
    for name in LIBRARIES:
        out[name] = _version(name)
    return out


def record(device: str = "cpu", *, isolation: str | None = None, memory_limit_by: str | None = None) -> dict[str, Any]:
    """What one grading records: :func:`libraries`, the device (CUDA version and GPU name when used),
    the seed scheme, and how the sandbox bounded the worker."""
    env: dict[str, Any] = dict(libraries())
    env["platform"] = f"{platform.system()} {platform.machine()}"
    env["device"] = device
    if device == "cuda":
        try:
            import torch
            env["cuda"] = torch.version.cuda
            env["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        except Exception:
            env["cuda"] = env["gpu"] = None
    env["seeds"] = SEED_SCHEME
    if isolation:
        env["isolation"] = isolation
    if memory_limit_by:
        env["memory_limit_by"] = memory_limit_by
    return env


def version_key() -> str:
    """The part of the environment that the grader version hash covers (library upgrades)."""
    return json.dumps(libraries(), sort_keys=True)


def differences(mine: dict[str, Any], graders: dict[str, Any]) -> list[str]:
    """Sentences naming each library whose version differs (for ``course check``)."""
    out = []
    for name in ("python", "course", *LIBRARIES):
        theirs, ours = graders.get(name), mine.get(name)
        if theirs and ours != theirs:
            have = f"you have {name} {ours}" if ours else f"{name} is not installed here"
            out.append(f"{have}, grading uses {name} {theirs}")
    return out


def manifest_text() -> str:
    return json.dumps({"grading": libraries(), "note": "the versions `course grade` used when this kit was "
                       "released; numbers may differ in the last digits under other versions"}, indent=1) + "\n"


def check_against_manifest(folder: Path) -> list[str]:
    """Differences from the manifest found in ``folder`` or above (empty when there is none)."""
    for parent in (folder, *folder.parents):
        path = parent / MANIFEST
        if path.is_file():
            try:
                graders = json.loads(path.read_text(encoding="utf-8"))["grading"]
            except (ValueError, KeyError, TypeError, OSError):
                return [f"{path} is not a readable environment manifest"]
            return differences(libraries(), graders)
    return []


__all__ = ["MANIFEST", "check_against_manifest", "differences", "libraries", "manifest_text", "record",
           "version_key"]

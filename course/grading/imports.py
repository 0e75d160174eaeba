"""Each of the submission's modules is imported once, first, under its own time limit.

A module that fails to import (an exception, ``sys.exit``, a crash, a hang at import) fails every
test that needs it. Without this, each test paid for the failure again: a fresh worker per test
after a crash, a full call timeout per test for a module that spins at import, and the same
traceback blamed on each function in turn. Now the first test that needs the module says, once,
"importing attention.py failed at line 28: ...", and the later ones fail at once as not run
because of it; tests of the submission's other modules still run.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from course.grading.failures import SubmissionError, SubmissionFailure, SubmissionTimeout, WorkerCrashed

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ImportFailed(SubmissionFailure):
    """A module of the submission could not be imported: the tests that need it do not run."""

    outcome = "error"

    def __init__(self, message: str, location: str | None = None):
        super().__init__(message)
        self.location = location


def submission_modules(root: Path) -> set[str]:
    """Top-level importable names of the submission: ``*.py`` files and package folders."""
    names = set()
    for p in Path(root).iterdir():
        if p.suffix == ".py" and _NAME.match(p.stem):
            names.add(p.stem)
        elif p.is_dir() and (p / "__init__.py").is_file() and _NAME.match(p.name):
            names.add(p.name)
    return names


def modules_named_in(source: str, known: set[str]) -> list[str]:
    """The submission modules a probe's source imports (``import attention``, ``from lora import x``)."""
    found: list[str] = []
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return found
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module.split(".")[0]]
        for n in names:
            if n in known and n not in found:
                found.append(n)
    return found


@dataclass
class ImportLedger:
    """Per backend: which of the submission's modules imported, and how the others failed."""

    root: Path
    known: set[str] = field(default_factory=set)
    done: set[str] = field(default_factory=set)             # imported fine (in some worker)
    failed: dict[str, tuple[str, str | None]] = field(default_factory=dict)   # module -> (message, location)
    reported: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.known = submission_modules(self.root)

    def ensure(self, module: str, load: Callable[[str], None]) -> None:
        """Import ``module`` with ``load`` the first time; raise :class:`ImportFailed` if it failed.

        ``load`` raises SubmissionError (the module raised), WorkerCrashed (the worker died) or
        SubmissionTimeout (the import hung); anything else propagates.
        """
        if module not in self.known:
            return   # not a file of the submission: the call itself will say so
        if module in self.failed:
            message, location = self.failed[module]
            if module in self.reported:
                raise ImportFailed(f"not run: importing {module}.py failed (said in the first test that needed it)",
                                   location)
            self.reported.add(module)
            raise ImportFailed(message, location)
        if module in self.done:
            return
        try:
            load(module)
        except SubmissionError as exc:
            where = f" at line {exc.location.rsplit(':', 1)[-1]}" if exc.location and exc.location.startswith(
                f"{module}.py:") else (f" at {exc.location}" if exc.location else "")
            short = exc.remote_type.rsplit(".", 1)[-1]
            self.failed[module] = (f"importing {module}.py failed{where}: {short}: {exc.remote_message}",
                                   exc.location)
        except SubmissionTimeout:
            self.failed[module] = (f"importing {module}.py did not finish within its time limit (an endless loop "
                                   "at module level?)", None)
        except WorkerCrashed as exc:
            detail = str(exc).split(": ", 1)[-1]
            self.failed[module] = (f"importing {module}.py ended the process: {detail}", None)
        else:
            self.done.add(module)
            return
        self.ensure(module, load)

"""Solution regions -> stubs. The one implementation, used by ``release`` and ``validate``.

A solution file marks the code students write::

    # Task 1.2
    def attention_scores(q, k, scale=None):
        \"\"\"...the specification...\"\"\"
        # BEGIN SOLUTION
        ...reference code...
        # END SOLUTION

The region becomes ``raise NotImplementedError("Task 1.2: attention_scores")`` at the region's
indentation, or, when the region holds ``# STUB: <line>`` comments, the text after each ``# STUB:``
(kept at that comment's indentation). The task id comes from the nearest ``# Task N.M`` comment
above the region.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from course.errors import StubError

BEGIN = "# BEGIN SOLUTION"
END = "# END SOLUTION"
MARKERS = (BEGIN, END)
_TASK_RE = re.compile(r"^\s*#\s*Task\s+(\d+(?:\.\d+)*)\b")
_DEF_RE = re.compile(r"^(\s*)(?:async\s+)?def\s+(\w+)")
_CLASS_RE = re.compile(r"^(\s*)class\s+(\w+)")
_STUB_RE = re.compile(r"^(\s*)# STUB:(?: (.*))?$")


@dataclass(frozen=True)
class Region:
    start: int          # 0-based line of BEGIN
    end: int            # 0-based line of END
    task: str
    function: str


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _enclosing_name(lines: list[str], at: int) -> str:
    """``Class.method`` or ``function`` enclosing line ``at``."""
    names: list[str] = []
    limit = _indent(lines[at])
    for i in range(at - 1, -1, -1):
        line = lines[i]
        if not line.strip() or _indent(line) >= limit:
            continue
        m = _DEF_RE.match(line) or _CLASS_RE.match(line)
        if m:
            names.append(m.group(2))
            limit = len(m.group(1))
            if limit == 0:
                break
    return ".".join(reversed(names)) or "<module>"


def _task_above(lines: list[str], at: int) -> str | None:
    for i in range(at - 1, -1, -1):
        m = _TASK_RE.match(lines[i])
        if m:
            return m.group(1)
    return None


def find_regions(text: str, filename: str = "<string>") -> list[Region]:
    """The solution regions of a file; :class:`StubError` names file and line when unbalanced."""
    lines = text.split("\n")
    regions: list[Region] = []
    start: int | None = None
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith(BEGIN):
            if start is not None:
                raise StubError(f"{filename}:{i + 1}: '{BEGIN}' inside the region opened at line {start + 1}")
            start = i
        elif stripped.startswith(END):
            if start is None:
                raise StubError(f"{filename}:{i + 1}: '{END}' without a '{BEGIN}'")
            task = _task_above(lines, start)
            if task is None:
                raise StubError(f"{filename}:{start + 1}: no '# Task N.M' comment above this solution region")
            regions.append(Region(start, i, task, _enclosing_name(lines, start)))
            start = None
    if start is not None:
        raise StubError(f"{filename}:{start + 1}: '{BEGIN}' is never closed by '{END}'")
    return regions


def strip(text: str, filename: str = "<string>", keep: Callable[[str], bool] | None = None) -> str:
    """The student's version of a solution file: every region replaced by its stub.

    With ``keep``, regions whose task id it accepts keep their solution code (without markers):
    a partially completed submission, as the demo class uses.
    """
    lines = text.split("\n")
    out: list[str] = []
    cursor = 0
    for region in find_regions(text, filename):
        out.extend(lines[cursor:region.start])
        if keep is not None and keep(region.task):
            out.extend(line for line in lines[region.start + 1:region.end] if not _STUB_RE.match(line))
            cursor = region.end + 1
            continue
        indent = lines[region.start][:_indent(lines[region.start])]
        body = lines[region.start + 1:region.end]
        stub = [m.group(1) + (m.group(2) or "") for m in map(_STUB_RE.match, body) if m]
        if stub:
            out.extend(s.rstrip() for s in stub)
        else:
            out.append(f'{indent}raise NotImplementedError("Task {region.task}: {region.function}")')
        cursor = region.end + 1
    out.extend(lines[cursor:])
    return "\n".join(out)


def tasks(text: str, filename: str = "<string>") -> dict[str, list[str]]:
    """Task id -> the functions whose regions carry it."""
    found: dict[str, list[str]] = {}
    for region in find_regions(text, filename):
        found.setdefault(region.task, [])
        if region.function not in found[region.task]:
            found[region.task].append(region.function)
    return found


def solution_files(solutions: Path) -> list[Path]:
    return sorted(p for p in solutions.glob("*.py") if p.is_file())


def expected_stubs(solutions: Path) -> dict[str, str]:
    """File name -> stub text, for every module of one assignment's solutions folder."""
    return {p.name: strip(p.read_text(encoding="utf-8"), str(p)) for p in solution_files(solutions)}


def drift(solutions: Path, assignment: Path) -> list[str]:
    """Names of stub files that differ from (or are missing against) the stripped solutions."""
    stale = []
    for name, text in expected_stubs(solutions).items():
        target = assignment / name
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            stale.append(name)
    return stale


def generate(solutions: Path, assignment: Path) -> list[str]:
    """Write the stubs of one assignment; returns the names of files that changed."""
    assignment.mkdir(parents=True, exist_ok=True)
    changed = []
    for name, text in expected_stubs(solutions).items():
        target = assignment / name
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
            changed.append(name)
    return changed


def has_markers(text: str) -> bool:
    return any(marker in text for marker in MARKERS)

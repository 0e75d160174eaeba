"""What `course validate` grades besides the solution and the stub, read from graders/<slug>/.

* ``mutants.yml``: ``bugs:`` (plausible bugs written by hand, ``{what, file?, old, new}``, the
  examples/bugs.yml format) and ``equivalent:`` (automated mutants an instructor judged
  equivalent, ``{id, why}``);
* ``alternatives/<style>/``: module files that replace the solution's (another correct style);
* ``misconceptions.py``: ``CATALOGUE`` of :class:`course.grading.diagnose.Misconception`, each
  with the bug that produces it.

Every variant is a submission folder: the assignment as a student would hand it in, with the
solution's modules, then the variant's change. Problems in these files are reported as failed
checks naming the file, the entry and the key, never as a stopped validation.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from course import stubs
from course.config import Course

MUTANTS_FILE = "mutants.yml"
ALTERNATIVES = "alternatives"
MISCONCEPTIONS = "misconceptions.py"


@dataclass(frozen=True)
class Bug:
    """A text replacement on one solution file: ``old`` becomes ``new`` (first occurrence)."""

    what: str
    old: str
    new: str
    file: str | None = None         # default: the assignment's first solution module

    def target(self, solutions: Path) -> str:
        return self.file or first_module(solutions)


@dataclass(frozen=True)
class Equivalent:
    id: str
    why: str


@dataclass
class MutantsFile:
    path: Path
    bugs: list[Bug] = field(default_factory=list)
    equivalent: list[Equivalent] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def first_module(solutions: Path) -> str:
    """The module a bug without ``file`` goes into: the first solution file (as examples/bugs.yml)."""
    files = stubs.solution_files(solutions)
    return files[0].name if files else ""


def _text(entry: dict, key: str, where: str, problems: list[str], *, required: bool = True) -> str | None:
    value = entry.get(key)
    if value is None:
        if required:
            problems.append(f"{where}.{key} is missing")
        return None
    if not isinstance(value, str) or (required and key != "new" and not value):
        problems.append(f"{where}.{key}: {value!r} must be a non-empty string")
        return None
    return value


def parse_bug(entry: Any, where: str, problems: list[str]) -> Bug | None:
    """One ``{what, file?, old, new}`` mapping (``where`` names it in messages)."""
    if not isinstance(entry, dict):
        problems.append(f"{where}: {entry!r} must be a mapping with what, old, new (and optionally file)")
        return None
    unknown = sorted(set(entry) - {"what", "file", "old", "new"})
    if unknown:
        problems.append(f"{where}: unknown key(s) {', '.join(map(str, unknown))} (known: what, file, old, new)")
    what, old, new = (_text(entry, k, where, problems) for k in ("what", "old", "new"))
    file = _text(entry, "file", where, problems, required=False)
    if file is not None and (Path(file).name != file or not file.endswith((".py", ".ipynb"))):
        problems.append(f"{where}.file: {file!r} must be the name of a solution module or notebook "
                        "(e.g. attention.py, activity.ipynb)")
        return None
    if what is None or old is None or new is None:
        return None
    return Bug(what=what, old=old, new=new, file=file)


def load_mutants_file(hidden: Path) -> MutantsFile:
    """``graders/<slug>/mutants.yml`` (absent: nothing to check)."""
    path = hidden / MUTANTS_FILE
    out = MutantsFile(path)
    if not path.is_file():
        return out
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        out.problems.append(f"{path}: not valid YAML: {getattr(exc, 'problem', exc)}")
        return out
    if not isinstance(data, dict):
        out.problems.append(f"{path}: expected a mapping with the keys bugs and equivalent")
        return out
    for key in sorted(set(data) - {"bugs", "equivalent"}):
        out.problems.append(f"{path}: {key}: unknown key (known: bugs, equivalent)")
    for name in ("bugs", "equivalent"):
        if data.get(name) is not None and not isinstance(data[name], list):
            out.problems.append(f"{path}: {name} must be a list")
            data[name] = []
    for i, entry in enumerate(data.get("bugs") or []):
        bug = parse_bug(entry, f"{path.name}: bugs[{i}]", out.problems)
        if bug is not None:
            out.bugs.append(bug)
    seen: set[str] = set()
    for i, entry in enumerate(data.get("equivalent") or []):
        where = f"{path.name}: equivalent[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) or not entry["id"]:
            out.problems.append(f"{where}: {entry!r} must be a mapping with an id (and why)")
            continue
        why = entry.get("why")
        if not isinstance(why, str) or not why.strip():
            out.problems.append(f"{where}: mutant {entry['id']!r} needs a why (the reason it is equivalent)")
        if entry["id"] in seen:
            out.problems.append(f"{where}: mutant {entry['id']!r} is listed twice")
        seen.add(entry["id"])
        out.equivalent.append(Equivalent(entry["id"], str(why or "")))
    return out


def apply_bug(solutions: Path, bug: Bug) -> tuple[str, str] | str:
    """(file name, buggy text) of the bug applied to the solution, or why it no longer applies."""
    name = bug.target(solutions)
    path = solutions / name
    if not path.is_file():
        return f"{name} is not a module of {solutions}"
    text = path.read_text(encoding="utf-8")
    if bug.old not in text:
        return f"its old text {_short(bug.old)} is no longer in {path.name}"
    if bug.old == bug.new:
        return "its old and new texts are equal"
    return name, text.replace(bug.old, bug.new, 1)


def task_at(text: str, offset: int, filename: str = "<string>") -> str | None:
    """The task of the solution region holding character ``offset`` of ``text`` (None: outside)."""
    line = text.count("\n", 0, max(offset, 0))
    try:
        regions = stubs.find_regions(text, filename)
    except Exception:
        return None
    for region in regions:
        if region.start < line < region.end:
            return region.task
    return None


def bug_task(solutions: Path, bug: Bug) -> str | None:
    path = solutions / bug.target(solutions)
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8")
    at = text.find(bug.old)
    return task_at(text, at, path.name) if at >= 0 else None


def _short(text: str, limit: int = 60) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[:limit - 3] + "...")


# ------------------------------------------------------------------ submission folders

def pristine(course: Course, slug: str, dest: Path) -> Path:
    """The assignment folder as a student would submit it, with the solution's modules."""
    shutil.copytree(course.paths.assignments / slug, dest,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "tests"))
    for src in (course.paths.solutions / slug).iterdir():
        if src.is_file():
            shutil.copyfile(src, dest / src.name)
    return dest


def variant_folder(base: Path, dest: Path, files: dict[str, str | Path]) -> Path:
    """A copy of ``base`` with ``files`` (name -> text, or a file to copy) written over it."""
    shutil.copytree(base, dest)
    for name, content in files.items():
        if isinstance(content, Path):
            shutil.copyfile(content, dest / name)
        else:
            (dest / name).write_text(content, encoding="utf-8")
    return dest


# ------------------------------------------------------------------ alternatives

def alternatives(hidden: Path, solutions: Path) -> tuple[dict[str, dict[str, Path]], list[str]]:
    """style -> {module name -> file} of graders/<slug>/alternatives/, and the problems found."""
    root = hidden / ALTERNATIVES
    found: dict[str, dict[str, Path]] = {}
    problems: list[str] = []
    if not root.is_dir():
        return found, problems
    modules = {p.name for p in stubs.solution_files(solutions)}
    for style in sorted(p for p in root.iterdir() if p.name != "__pycache__"):
        if not style.is_dir():
            problems.append(f"{style}: expected a folder of module files (alternatives/<style>/<module>.py)")
            continue
        files = {p.name: p for p in sorted(style.iterdir()) if p.is_file() and p.suffix == ".py"}
        stray = sorted(n for n in files if n not in modules)
        if stray:
            problems.append(f"{style}: {', '.join(stray)} replace(s) no module of {solutions.name} "
                            f"(its modules: {', '.join(sorted(modules))})")
        if not files:
            problems.append(f"{style}: holds no module file")
        elif not stray:
            found[style.name] = files
    return found, problems


# ------------------------------------------------------------------ misconceptions

@dataclass
class Catalogue:
    path: Path
    entries: dict[str, Any] = field(default_factory=dict)    # name -> Misconception
    problems: list[str] = field(default_factory=list)


def load_catalogue(hidden: Path) -> Catalogue | None:
    """``CATALOGUE`` of graders/<slug>/misconceptions.py (None when the file is absent).

    The file is the instructor's (trusted) code; it is imported with graders/<slug> on sys.path
    as the hidden tests see it. Import errors and a missing CATALOGUE are problems, not crashes.
    """
    path = hidden / MISCONCEPTIONS
    if not path.is_file():
        return None
    out = Catalogue(path)
    name = f"_course_validate_misconceptions_{abs(hash(str(path)))}"
    added = str(hidden) not in sys.path
    if added:
        sys.path.insert(0, str(hidden))
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except Exception as exc:  # the author's file: any error is theirs to read
        out.problems.append(f"{path}: importing it failed: {type(exc).__name__}: {exc}")
        return out
    finally:
        if added:
            sys.path.remove(str(hidden))
        sys.modules.pop(name, None)
    catalogue = getattr(module, "CATALOGUE", None)
    if not isinstance(catalogue, dict):
        out.problems.append(f"{path}: defines no CATALOGUE dict (CATALOGUE = catalogue({{name: Misconception(...)}}))")
        return out
    out.entries = dict(catalogue)
    return out

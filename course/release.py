"""The student bundle: ``assignments/<slug>/`` only, plus the engine to run the public tests.

A release regenerates the stubs from ``solutions/``, writes a folder and a .zip with

* ``assignments/<slug>/`` (README, stubs, public tests, data) for each released assignment;
* the ``course`` package, a student ``course.yml``, a student README and a pyproject, so that
  ``pip install -e .`` then ``course check <slug>`` works on a laptop;

and refuses, naming the offending file, if the bundle would contain a solution region, a file
from ``graders/`` or ``solutions/``, or the name of a hidden test.
"""

from __future__ import annotations

import json

import ast
import hashlib
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

import course as course_pkg
from course import stubs
from course.config import Course
from course.grading import environment
from course.errors import ReleaseLeak

SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", ".ipynb_checkpoints", ".DS_Store")


@dataclass
class ReleaseReport:
    folder: Path
    zip_path: Path
    slugs: list[str]
    regenerated: dict[str, list[str]] = field(default_factory=dict)


def hidden_test_names(graders: Path) -> set[str]:
    """Names of the test functions (and classes) in a graders folder."""
    names: set[str] = set()
    for path in sorted(graders.rglob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name.lower().startswith("test"):
                names.add(node.name)
    return names


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def scan_for_leaks(bundle: Path, course: Course, slugs: list[str]) -> list[str]:
    """Every reason the bundle must not go to students (empty when it is clean)."""
    problems: list[str] = []
    graders_digests = {}
    hidden: set[str] = set()
    for slug in slugs:
        gdir = course.paths.graders / slug
        if gdir.is_dir():
            hidden |= hidden_test_names(gdir)
            for p in gdir.rglob("*"):
                if p.is_file() and p.stat().st_size > 0:
                    graders_digests[_digest(p)] = p
    solution_digests = {}
    for slug in slugs:
        sdir = course.paths.solutions / slug
        for p in sdir.rglob("*") if sdir.is_dir() else ():
            if p.is_file() and p.suffix == ".py" and stubs.has_markers(p.read_text(encoding="utf-8", errors="replace")):
                solution_digests[_digest(p)] = p
    name_re = re.compile(r"\b(" + "|".join(map(re.escape, sorted(hidden))) + r")\b") if hidden else None
    for path in sorted(p for p in bundle.rglob("*") if p.is_file()):
        rel = path.relative_to(bundle)
        if rel.parts and rel.parts[0] in ("graders", "solutions"):
            problems.append(f"{rel}: a file from {rel.parts[0]}/ is in the bundle")
            continue
        digest = _digest(path)
        if digest in graders_digests:
            problems.append(f"{rel}: is a copy of the hidden file {graders_digests[digest]}")
            continue
        if digest in solution_digests:
            problems.append(f"{rel}: is a copy of the solution {solution_digests[digest]}")
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if rel.parts[0] == "course":
            continue  # the engine names the markers themselves; it holds no assignment content
        if stubs.has_markers(text):
            problems.append(f"{rel}: contains a solution region marker")
        if name_re is not None:
            m = name_re.search(text)
            if m:
                problems.append(f"{rel}: mentions the hidden test {m.group(1)!r}")
    return problems


def _student_pyproject(course: Course, slugs: list[str]) -> str:
    """The kit's own pyproject: the core (torch, pytest, click...) plus, as the ``libs`` extra, only
    what these assignments need (course.yml ``requires:``). Its version names the kit, so that two
    kits installed side by side can tell which ``course`` runs (``course check`` says so)."""
    import tomllib
    src = Path(course_pkg.__file__).resolve().parent.parent / "pyproject.toml"
    core = tomllib.loads(src.read_text(encoding="utf-8"))["project"]["dependencies"] if src.is_file() else []
    libs = sorted({r for a in course.select(slugs) for r in a.requires})
    kit = ".".join(s.replace("_", ".") for s in slugs)
    lines = ['[build-system]', 'requires = ["setuptools>=77"]', 'build-backend = "setuptools.build_meta"', "",
             "[project]", 'name = "course"', f'version = "{course_pkg.__version__}+kit.{kit}"',
             'description = "The student kit: assignments and the course tool that runs their public tests."',
             'requires-python = ">=3.10"', "dependencies = [", *(f"    {json.dumps(d)}," for d in core), "]", ""]
    if libs:
        lines += ["[project.optional-dependencies]", "# what these assignments' public tests use beyond torch",
                  "libs = [", *(f"    {json.dumps(r)}," for r in libs), "]", ""]
    lines += ["[project.scripts]", 'course = "course.cli:main"', "", "[project.entry-points.pytest11]",
              'course = "course.grading.judge"', "", "[tool.setuptools.packages.find]", 'include = ["course*"]', "",
              "[tool.setuptools.package-data]", 'course = ["templates/*"]', "", "[tool.pytest.ini_options]",
              "# short tracebacks of your own code; the engine's frames are hidden",
              'addopts = "--tb=short -p no:cacheprovider"', ""]
    return "\n".join(lines)


def _student_course_yml(course: Course, slugs: list[str]) -> str:
    data = {
        "name": course.name,
        "late_policy": {"grace": course.late_policy.grace, "penalty_percent": course.late_policy.penalty_percent,
                        "per": course.late_policy.per, "max_late": course.late_policy.max_late},
        "assignments": [{"slug": a.slug, "title": a.title, "due": a.due.isoformat(), "points": a.points,
                         "needs_gpu": a.needs_gpu} for a in course.select(slugs)],
    }
    return "# The student copy of the course: public information only.\n" + yaml.safe_dump(data, sort_keys=False)


STUDENT_README = """# {name}: student kit

This folder holds your assignments and the `course` tool that runs their public tests.

## Set up (once)

    python -m venv .venv && . .venv/bin/activate
    pip install torch==2.13.0            # or any torch 2.x for your machine
    {install}

## Work on an assignment

    cd assignments/<slug>
    # read README.md, then fill in the functions that raise NotImplementedError
    pytest                                # run the public tests (locally, debuggable with --pdb)
    course check <slug>                   # the same, with a per-task table
    course check <slug> --task 1.2        # just one task

Initially every test fails with NotImplementedError. The public tests are a subset of what
grading checks: hidden tests hold your code to the real libraries (torch, transformers, peft,
bitsandbytes) on other inputs. Your grade comes from running your code in a sandbox: do not
print or exit from your functions, and return plain tensors and numbers.

Assignments in this kit: {slugs}
"""


def release(course: Course, slugs: list[str] | None = None, out: Path | None = None, *,
            regenerate: bool = True) -> ReleaseReport:
    """Regenerate stubs and write the student bundle (folder + .zip); raise :class:`ReleaseLeak` on a leak."""
    selected = [a.slug for a in course.select(slugs)]
    out = Path(out) if out else course.paths.root / "dist" / "release"
    regenerated = {}
    for slug in selected:
        sdir = course.paths.solutions / slug
        if regenerate and sdir.is_dir():
            regenerated[slug] = stubs.generate(sdir, course.paths.assignments / slug)
    with tempfile.TemporaryDirectory(prefix="course-release-") as tmp:
        stage = Path(tmp) / "bundle"
        stage.mkdir()
        for slug in selected:
            src = course.paths.assignments / slug
            if not src.is_dir():
                raise ReleaseLeak(f"{src}: assignment {slug!r} has no student folder")
            shutil.copytree(src, stage / "assignments" / slug, ignore=SKIP)
        shutil.copytree(Path(course_pkg.__file__).resolve().parent, stage / "course", ignore=SKIP)
        (stage / "pyproject.toml").write_text(_student_pyproject(course, selected), encoding="utf-8")
        (stage / environment.MANIFEST).write_text(environment.manifest_text(), encoding="utf-8")
        (stage / "course.yml").write_text(_student_course_yml(course, selected), encoding="utf-8")
        needs_libs = any(a.requires for a in course.select(selected))
        install = 'pip install -e ".[libs]"     # the libraries these assignments use' if needs_libs else \
            "pip install -e .                # torch, pytest and the course tool: all these assignments need"
        (stage / "README.md").write_text(STUDENT_README.format(name=course.name, slugs=", ".join(selected),
                                                               install=install), encoding="utf-8")
        problems = scan_for_leaks(stage, course, selected)
        if problems:
            raise ReleaseLeak("the release would leak hidden material:\n  " + "\n  ".join(problems))
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(stage, out)
    zip_path = out.with_suffix(".zip")
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(out.rglob("*")):
            if path.is_file():
                zf.write(path, Path(out.name) / path.relative_to(out))
    return ReleaseReport(folder=out, zip_path=zip_path, slugs=selected, regenerated=regenerated)

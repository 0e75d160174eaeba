"""``course gradescope build SLUG -o autograder.zip``: a Gradescope autograder for one assignment.

The zip holds what Gradescope expects at its top level, ``setup.sh`` and ``run_autograder``, and:

    engine/                    the ``course`` package and its pyproject (installed by setup.sh)
    course/course.yml          this assignment only (points, limits), no extensions
    course/assignments/<slug>/ the instructor's public tests (and the student files)
    course/graders/<slug>/     the hidden tests, probes and data

Never ``solutions/``. ``run_autograder`` grades ``/autograder/submission`` with ``course ci`` in the
sandbox and copies its ``results.json`` to ``/autograder/results/``. Late penalties are left to
Gradescope's own settings (the score is the raw score).
"""

from __future__ import annotations

import importlib.metadata
import shutil
import stat
import tempfile
import zipfile
from dataclasses import asdict
from pathlib import Path

import yaml

import course as course_pkg
from course import ci, stubs
from course.config import Assignment, Course
from course.errors import CourseError, ReleaseLeak

SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", ".ipynb_checkpoints", ".DS_Store")
EXECUTABLE = ("setup.sh", "run_autograder")
ENGINE_README = "# course (autograder engine)\n\nInstalled by setup.sh; see the course tool's README.\n"


def build(course: Course, slug: str, out: Path, *, require_isolation: bool = True) -> Path:
    """Write the autograder zip for ``slug`` to ``out``; returns its path."""
    a = course.assignment(slug)
    for folder in (course.paths.assignments / slug / "tests", course.paths.graders / slug):
        if not folder.is_dir():
            raise CourseError(f"{folder}: missing; the autograder of {slug!r} needs it")
    out = Path(out)
    if out.suffix != ".zip":
        raise CourseError(f"-o {out}: the autograder must be a .zip file")
    with tempfile.TemporaryDirectory(prefix="course-gradescope-") as tmp:
        stage = Path(tmp)
        _engine(stage / "engine")
        shutil.copytree(course.paths.assignments / slug, stage / "course" / "assignments" / slug, ignore=SKIP)
        shutil.copytree(course.paths.graders / slug, stage / "course" / "graders" / slug, ignore=SKIP)
        (stage / "course" / "course.yml").write_text(_course_yml(course, a), encoding="utf-8")
        (stage / "setup.sh").write_text(ci.template("setup.sh").replace("@@TORCH@@", _torch_version()),
                                        encoding="utf-8")
        run = ci.template("run_autograder").replace("@@SLUG@@", slug)
        run = run.replace("@@ISOLATION@@", "--require-isolation" if require_isolation else "")
        (stage / "run_autograder").write_text(run, encoding="utf-8")
        _check_no_solutions(stage, course, slug)
        out.parent.mkdir(parents=True, exist_ok=True)
        _zip(stage, out)
    return out


def _engine(dest: Path) -> None:
    """The ``course`` package plus its pyproject, installable with ``pip install engine[libs]``."""
    src = Path(course_pkg.__file__).resolve().parent
    pyproject = src.parent / "pyproject.toml"
    if not pyproject.is_file():
        raise CourseError(f"{pyproject}: not found; build the autograder from a source checkout of course")
    shutil.copytree(src, dest / "course", ignore=SKIP)
    shutil.copyfile(pyproject, dest / "pyproject.toml")
    (dest / "README.md").write_text(ENGINE_README, encoding="utf-8")


def _course_yml(course: Course, a: Assignment) -> str:
    lp = course.late_policy
    data = {
        "name": course.name,
        "late_policy": {"grace": lp.grace, "penalty_percent": lp.penalty_percent, "per": lp.per,
                        "max_late": lp.max_late},
        "assignments": [{"slug": a.slug, "title": a.title, "due": a.due.isoformat(), "points": a.points,
                         "needs_gpu": a.needs_gpu, "limits": asdict(a.limits)}],
    }
    for key in ("hidden_feedback", "after_due"):  # what results.json shows of hidden tests (default: names)
        if getattr(a, key) != "names":
            data["assignments"][0][key] = getattr(a, key)
    if a.hidden_feedback_limit is not None:     # counted from Gradescope's own submission history
        data["assignments"][0]["hidden_feedback_limit"] = {"count": a.hidden_feedback_limit.count,
                                                           "per": a.hidden_feedback_limit.per_text}
    return "# Written by `course gradescope build`.\n" + yaml.safe_dump(data, sort_keys=False)


def _torch_version() -> str:
    return importlib.metadata.version("torch").split("+", 1)[0]


def _check_no_solutions(stage: Path, course: Course, slug: str) -> None:
    """Refuse if anything of ``solutions/`` (a file, or a solution region) would be in the zip."""
    solution_bytes = {p.read_bytes() for p in (course.paths.solutions / slug).rglob("*.py")} \
        if (course.paths.solutions / slug).is_dir() else set()
    for path in sorted(p for p in stage.rglob("*") if p.is_file()):
        rel = path.relative_to(stage)
        if rel.parts[0] == "engine":
            continue  # the engine names the markers itself; it holds no assignment content
        data = path.read_bytes()
        if data in solution_bytes:
            raise ReleaseLeak(f"{rel}: is a copy of a solution file of {slug!r}")
        if path.suffix == ".py" and stubs.has_markers(data.decode("utf-8", errors="replace")):
            raise ReleaseLeak(f"{rel}: contains a solution region marker")


def _zip(stage: Path, out: Path) -> None:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(stage.rglob("*")):
            if not path.is_file():
                continue
            rel = path.relative_to(stage).as_posix()
            info = zipfile.ZipInfo(rel, date_time=(2020, 1, 1, 0, 0, 0))
            mode = 0o755 if rel in EXECUTABLE else 0o644
            info.external_attr = (stat.S_IFREG | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())

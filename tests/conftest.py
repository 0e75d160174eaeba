"""Shared fixtures: a private copy of the toy course for each test that writes into it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

# The toy course's own tests run against submissions through the course plugin, never as part of
# this suite; the attack corpus has its own conftest that keeps its hostile files out.
collect_ignore = ["files"]

FILES = Path(__file__).parent / "files"
TOY = FILES / "toycourse"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    """A writable copy of the toy course (assignment ``vecops``, 10 points)."""
    dest = tmp_path / "toycourse"
    shutil.copytree(TOY, dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def make_class(root: Path, course_dir: Path = TOY) -> Path:
    """Per-student folders for vecops: correct, partial (dot is off by 0.5), stub, crashing at import."""
    sol = (course_dir / "solutions" / "vecops" / "vecops.py").read_text()
    stub = (course_dir / "assignments" / "vecops" / "vecops.py").read_text()
    students = {
        "alice": sol,
        "bob": sol.replace("return (a * b).sum()", "return (a * b).sum() + 0.5"),
        "carol": stub,
        "dave": "import os\nos._exit(1)\n",
    }
    for name, text in students.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / "vecops.py").write_text(text)
    return root


# alice: 9 (+1 pending GPU); bob: normalize 3 + accumulator 2 = 5; carol: 0; dave: 0
EXPECTED_POINTS = {"alice": 9.0, "bob": 5.0, "carol": 0.0, "dave": 0.0}

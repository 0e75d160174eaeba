"""examples/make_demo_class.py still builds the demo class from today's solutions and bugs.yml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import REPO


def test_demo_class_generates_from_todays_solutions(tmp_path):
    # exits non-zero when a bug in examples/bugs.yml no longer applies to its solution
    subprocess.run([sys.executable, "examples/make_demo_class.py", "--out", str(tmp_path)], cwd=REPO, check=True,
                   capture_output=True)
    generated = [p.relative_to(tmp_path) for p in sorted(tmp_path.rglob("*")) if p.is_file()]
    students = {Path(name).parts[1] for name in generated}
    assert students == {"ada", "ben", "cleo", "dev", "eve", "mal"}

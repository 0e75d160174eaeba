"""The committed demo class is what examples/make_demo_class.py produces from today's solutions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import REPO


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_demo_class_is_in_sync(tmp_path):
    subprocess.run([sys.executable, "examples/make_demo_class.py", "--out", str(tmp_path)], cwd=REPO, check=True,
                   capture_output=True)
    committed = _tree(REPO / "examples" / "demo_class")
    generated = _tree(tmp_path)
    assert sorted(committed) == sorted(generated)
    stale = [name for name in committed if committed[name] != generated[name]]
    assert not stale, f"regenerate with `python examples/make_demo_class.py`: {stale}"
    students = {Path(name).parts[1] for name in committed}
    assert students == {"ada", "ben", "cleo", "dev", "eve", "mal"}

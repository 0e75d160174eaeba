from __future__ import annotations

from pathlib import Path

import pytest

from course import stubs
from course.errors import StubError

from conftest import REPO, TOY

SOURCE = '''import torch


# Task 1.1
def f(x):
    """Doc."""
    # BEGIN SOLUTION
    return x + 1
    # END SOLUTION


# Task 2.3
class K:
    def g(self, y):
        # BEGIN SOLUTION
        # STUB: y = y  # given scaffolding
        # STUB: return None
        return y * 2
        # END SOLUTION
'''


def test_regions_become_not_implemented_or_stub_lines():
    out = stubs.strip(SOURCE, "m.py")
    assert 'raise NotImplementedError("Task 1.1: f")' in out
    assert "        y = y  # given scaffolding\n        return None\n" in out
    assert "return x + 1" not in out and "y * 2" not in out and "SOLUTION" not in out
    assert out.startswith('import torch\n\n\n# Task 1.1\ndef f(x):\n    """Doc."""\n    raise')
    assert stubs.tasks(SOURCE) == {"1.1": ["f"], "2.3": ["K.g"]}


@pytest.mark.parametrize("text, fragment", [
    ("# Task 1\ndef f():\n    # BEGIN SOLUTION\n    pass\n", "m.py:3: '# BEGIN SOLUTION' is never closed"),
    ("def f():\n    pass\n    # END SOLUTION\n", "m.py:3: '# END SOLUTION' without"),
    ("def f():\n    # BEGIN SOLUTION\n    pass\n    # END SOLUTION\n", "m.py:2: no '# Task N.M' comment"),
    ("# Task 1\ndef f():\n    # BEGIN SOLUTION\n    # BEGIN SOLUTION\n", "m.py:4: '# BEGIN SOLUTION' inside"),
])
def test_malformed_regions_name_file_and_line(text, fragment):
    with pytest.raises(StubError, match=fragment.replace("(", r"\(")):
        stubs.strip(text, "m.py")


def _assignment_pairs() -> list[tuple[Path, Path]]:
    pairs = [(TOY / "solutions" / "vecops", TOY / "assignments" / "vecops")]
    for sol in sorted((REPO / "solutions").iterdir()) if (REPO / "solutions").is_dir() else []:
        if sol.is_dir() and any(sol.glob("*.py")):
            pairs.append((sol, REPO / "assignments" / sol.name))
    return pairs


@pytest.mark.parametrize("solutions, assignment", _assignment_pairs(), ids=lambda p: p.name)
def test_stubs_are_byte_identical_to_stripped_solutions(solutions, assignment):
    """Drift check: assignments/<slug>/*.py must equal the stripped solutions (run `course release`)."""
    assert stubs.drift(solutions, assignment) == []
    for path in assignment.glob("*.py"):
        assert not stubs.has_markers(path.read_text()), f"{path} contains a solution marker"


def test_generate_writes_only_what_changed(tmp_path):
    (tmp_path / "sol").mkdir()
    (tmp_path / "sol" / "m.py").write_text(SOURCE)
    assert stubs.generate(tmp_path / "sol", tmp_path / "out") == ["m.py"]
    assert stubs.generate(tmp_path / "sol", tmp_path / "out") == []
    assert stubs.drift(tmp_path / "sol", tmp_path / "out") == []
    (tmp_path / "out" / "m.py").write_text("edited")
    assert stubs.drift(tmp_path / "sol", tmp_path / "out") == ["m.py"]

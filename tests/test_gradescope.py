"""`course gradescope build`: the zip, and its run_autograder run in a Gradescope-like folder.

Gradescope unpacks the zip into /autograder/source, puts the student's files in
/autograder/submission and reads /autograder/results/results.json; run_autograder takes that root
from $AUTOGRADER_ROOT, so the test needs no real /autograder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from course import config
from course.cli import main
from course.grading.sandbox import strong_isolation_available

from conftest import TOY

TOP_FIELDS = {"score", "execution_time", "output", "output_format", "visibility", "stdout_visibility", "tests"}
TEST_FIELDS = {"name", "score", "max_score", "status", "output", "visibility", "tags"}


@pytest.fixture(scope="module")
def autograder(tmp_path_factory) -> Path:
    course_dir = tmp_path_factory.mktemp("gs-course") / "toy"
    shutil.copytree(TOY, course_dir, ignore=shutil.ignore_patterns("__pycache__"))
    out = course_dir.parent / "autograder.zip"
    result = CliRunner().invoke(main, ["gradescope", "build", "vecops", "-o", str(out),
                                       "--course", str(course_dir / "course.yml")])
    assert result.exit_code == 0, result.output
    return out


def gradescope_root(zip_path: Path, root: Path, student_text: str) -> Path:
    """/autograder as Gradescope lays it out; the student's upload is nested in a folder."""
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(root / "source")
    (root / "submission" / "my-work").mkdir(parents=True)
    (root / "submission" / "my-work" / "vecops.py").write_text(student_text)
    return root


def run_autograder(root: Path) -> subprocess.CompletedProcess:
    env = {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "HOME": os.environ.get("HOME", "/root"),
           "AUTOGRADER_ROOT": str(root)}
    return subprocess.run(["bash", str(root / "source" / "run_autograder")], env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.fixture(scope="module")
def graded(autograder, tmp_path_factory):
    ok, why = strong_isolation_available()
    if not ok:
        pytest.skip(f"the autograder requires strong isolation by default: {why}")
    sol = (TOY / "solutions" / "vecops" / "vecops.py").read_text()
    partial = sol.replace("return (a * b).sum()", "return (a * b).sum() + 0.5")
    root = gradescope_root(autograder, tmp_path_factory.mktemp("autograder"), partial)
    return run_autograder(root), root


def test_zip_layout_and_nothing_from_solutions(autograder):
    with zipfile.ZipFile(autograder) as zf:
        names = set(zf.namelist())
        modes = {i.filename: (i.external_attr >> 16) & 0o777 for i in zf.infolist()}
        texts = {n: zf.read(n) for n in names}
    assert {"setup.sh", "run_autograder", "engine/pyproject.toml", "engine/course/cli.py", "course/course.yml",
            "course/assignments/vecops/tests/test_vecops.py", "course/graders/vecops/test_hidden_vecops.py",
            "course/graders/vecops/probes.py"} <= names
    assert modes["setup.sh"] == modes["run_autograder"] == 0o755
    assert not any(n.startswith(("solutions/", "course/solutions/")) for n in names)
    solution = (TOY / "solutions" / "vecops" / "vecops.py").read_bytes()
    assert solution not in texts.values()
    assert not any(b"BEGIN SOLUTION" in data for n, data in texts.items() if not n.startswith("engine/"))


def test_zip_course_yml_holds_this_assignment_with_its_limits(autograder, tmp_path):
    with zipfile.ZipFile(autograder) as zf:
        (tmp_path / "course.yml").write_bytes(zf.read("course/course.yml"))
    loaded = config.load(tmp_path / "course.yml")
    original = config.load(TOY / "course.yml")
    assert loaded.slugs == ["vecops"]
    assert loaded.assignment("vecops").limits == original.assignment("vecops").limits
    assert loaded.assignment("vecops").points == 10 and loaded.late_policy == original.late_policy


def test_setup_sh_is_valid_bash_and_pins_torch(autograder, tmp_path):
    import importlib.metadata
    with zipfile.ZipFile(autograder) as zf:
        text = zf.read("setup.sh").decode()
        run = zf.read("run_autograder").decode()
    (tmp_path / "setup.sh").write_text(text)
    assert subprocess.run(["bash", "-n", str(tmp_path / "setup.sh")]).returncode == 0
    assert f'"torch=={importlib.metadata.version("torch").split("+")[0]}"' in text
    assert "bubblewrap" in text and 'engine[libs]' in text
    assert "--assignment \"vecops\"" in run and "--require-isolation" in run and "@@" not in run + text


def test_run_autograder_writes_a_valid_results_json(graded):
    proc, root = graded
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(p.name for p in (root / "results").iterdir()) == ["results.json"]
    data = json.loads((root / "results" / "results.json").read_text())
    assert set(data) == TOP_FIELDS
    assert data["output_format"] == "text" and data["visibility"] == "visible"
    assert data["stdout_visibility"] == "hidden"
    assert isinstance(data["execution_time"], float) and data["execution_time"] > 0
    for t in data["tests"]:
        assert set(t) == TEST_FIELDS
        assert t["status"] in ("passed", "failed") and isinstance(t["tags"], list)
        assert 0 <= t["score"] <= t["max_score"]
    # dot off by 0.5: public dot 0/1, hidden dot 0/3; normalize 1 + 2; accumulator 2; GPU pending 0/1
    assert data["score"] == 5 == sum(t["score"] for t in data["tests"])
    assert sum(t["max_score"] for t in data["tests"]) == 10


def test_hidden_tests_are_after_published_with_empty_output(graded):
    _, root = graded
    tests = json.loads((root / "results" / "results.json").read_text())["tests"]
    hidden = [t for t in tests if t["name"].startswith("test_hidden_vecops.py::")]
    public = [t for t in tests if t["name"].startswith("test_vecops.py::")]
    assert len(hidden) == 6 and len(public) == 2
    assert all(t["visibility"] == "after_published" and t["output"] == "" for t in hidden)
    assert all(t["visibility"] == "visible" for t in public)
    [dot] = [t for t in public if t["name"].endswith("test_dot_small")]
    assert dot["status"] == "failed" and "should be 11, got 11.5" in dot["output"]


def test_an_autograder_that_cannot_grade_writes_no_results(autograder, tmp_path):
    root = gradescope_root(autograder, tmp_path, "")
    shutil.rmtree(root / "source" / "course" / "graders")
    proc = run_autograder(root)
    assert proc.returncode == 2
    assert "could not grade this submission (exit code 2)" in proc.stderr
    assert not (root / "results" / "results.json").exists()


def test_build_refuses_bad_input(tmp_path):
    course_dir = tmp_path / "toy"
    shutil.copytree(TOY, course_dir, ignore=shutil.ignore_patterns("__pycache__"))
    runner = CliRunner()
    yml = str(course_dir / "course.yml")
    unknown = runner.invoke(main, ["gradescope", "build", "nope", "--course", yml])
    assert unknown.exit_code == 2 and "unknown assignment 'nope'" in unknown.output
    not_zip = runner.invoke(main, ["gradescope", "build", "vecops", "-o", str(tmp_path / "a.tar"), "--course", yml])
    assert not_zip.exit_code == 2 and "must be a .zip file" in " ".join(not_zip.output.split())
    # A solution copied into the public folder must never ship.
    shutil.copyfile(course_dir / "solutions" / "vecops" / "vecops.py", course_dir / "assignments" / "vecops" / "vecops.py")
    leak = runner.invoke(main, ["gradescope", "build", "vecops", "-o", str(tmp_path / "a.zip"), "--course", yml])
    assert leak.exit_code == 2 and "is a copy of a solution file" in " ".join(leak.output.split())
    assert not (tmp_path / "a.zip").exists()

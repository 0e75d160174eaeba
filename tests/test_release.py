from __future__ import annotations

import zipfile

import pytest

from course import api
from course.errors import ReleaseLeak
from course.release import hidden_test_names


def test_bundle_has_stubs_tests_engine_and_nothing_hidden(toy, tmp_path):
    course = api.load_course(toy / "course.yml")
    (toy / "assignments" / "vecops" / "vecops.py").write_text("stale\n")
    rep = api.release(course, ["vecops"], tmp_path / "bundle")
    assert rep.regenerated == {"vecops": ["vecops.py"]}          # stubs regenerated from solutions
    b = rep.folder
    assert (b / "assignments" / "vecops" / "tests" / "test_vecops.py").is_file()
    assert "raise NotImplementedError" in (b / "assignments" / "vecops" / "vecops.py").read_text()
    assert (b / "course" / "grading" / "judge.py").is_file() and (b / "pyproject.toml").is_file()
    assert "vecops" in (b / "course.yml").read_text()
    assert not any(p.name == "probes.py" or "hidden" in p.name for p in b.rglob("*"))
    with zipfile.ZipFile(rep.zip_path) as zf:
        assert "bundle/assignments/vecops/vecops.py" in zf.namelist()


def test_the_student_bundle_runs_course_check(toy, tmp_path):
    course = api.load_course(toy / "course.yml")
    rep = api.release(course, ["vecops"], tmp_path / "bundle")
    student_course = api.load_course(rep.folder / "course.yml")
    result = api.check(student_course, "vecops")
    assert result.exit_code == 1 and [r["passed"] for r in result.rows] == [0, 0]
    assert "not implemented yet" in result.rows[0]["first_failure"]


@pytest.mark.parametrize("leak, fragment", [
    (("assignments/vecops/README.md", "\nSee test_dot_matches_torch.\n"), "mentions the hidden test 'test_dot_matches_torch'"),
    (("assignments/vecops/notes.py", "# BEGIN SOLUTION\n"), "contains a solution region marker"),
    (("assignments/vecops/helper.py", None), "is a copy of the hidden file"),
])
def test_release_refuses_leaks_naming_the_file(toy, tmp_path, leak, fragment):
    rel, text = leak
    target = toy / rel
    if text is None:
        target.write_bytes((toy / "graders" / "vecops" / "probes.py").read_bytes())
    else:
        target.write_text(target.read_text() + text if target.exists() else text)
    with pytest.raises(ReleaseLeak) as err:
        api.release(api.load_course(toy / "course.yml"), ["vecops"], tmp_path / "bundle")
    assert fragment in str(err.value) and rel.split("/")[-1] in str(err.value)
    assert not (tmp_path / "bundle").exists()


def test_hidden_test_names(toy):
    assert {"test_dot_matches_torch", "test_accumulator"} <= hidden_test_names(toy / "graders" / "vecops")


def test_a_kit_declares_only_what_its_assignments_need(toy, tmp_path):
    import tomllib
    course = api.load_course(toy / "course.yml")
    rep = api.release(course, ["vecops"], tmp_path / "bundle")
    project = tomllib.loads((rep.folder / "pyproject.toml").read_text())["project"]
    assert "optional-dependencies" not in project          # vecops needs torch only
    assert not any(d.startswith(("transformers", "peft", "bitsandbytes")) for d in project["dependencies"])
    assert project["version"].endswith("+kit.vecops")
    assert 'pip install -e .  ' in (rep.folder / "README.md").read_text()
    text = (toy / "course.yml").read_text().replace("    points: 10\n", "    points: 10\n    requires: [\"peft>=0.13\"]\n", 1)
    (toy / "course.yml").write_text(text)
    rep = api.release(api.load_course(toy / "course.yml"), ["vecops"], tmp_path / "bundle2")
    assert tomllib.loads((rep.folder / "pyproject.toml").read_text())["project"]["optional-dependencies"] == {
        "libs": ["peft>=0.13"]}


def test_course_check_says_once_how_the_environment_differs(toy, tmp_path):
    import json
    rep = api.release(api.load_course(toy / "course.yml"), ["vecops"], tmp_path / "bundle")
    manifest = rep.folder / "grading-environment.json"
    data = json.loads(manifest.read_text())
    assert data["grading"]["torch"]                     # the graders' versions travel with the kit
    data["grading"]["torch"] = "9.9.9"
    manifest.write_text(json.dumps(data))
    notes = api.check_notes(rep.folder / "assignments" / "vecops")
    assert any("grading uses torch 9.9.9" in n for n in notes)
    assert any("ships its own course tool" in n for n in notes)   # this test runs the repository's course

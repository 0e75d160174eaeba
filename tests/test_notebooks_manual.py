"""Written notebook answers: staged into nbgrader's formgrader, TAs' scores pulled back into the gradebook."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from course import api
from course.gradebook import Gradebook

from conftest import REPO

SLUG = "finetune_vs_prompt"


@pytest.fixture
def course_dir(tmp_path: Path) -> Path:
    real = yaml.safe_load((REPO / "course.yml").read_text())
    real["assignments"] = [a for a in real["assignments"] if a["slug"] == SLUG]
    real["paths"] = {"assignments": str(REPO / "assignments"), "solutions": str(REPO / "solutions"),
                     "graders": str(REPO / "graders")}
    (tmp_path / "course.yml").write_text(yaml.safe_dump(real))
    return tmp_path


def test_stage_then_import_manual_scores(course_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(Path(shutil.which("python") or "").parent) + ":" + __import__("os").environ["PATH"])
    course = api.load_course(course_dir / "course.yml")
    for student in ("ann", "ben"):
        folder = tmp_path / "class" / student
        folder.mkdir(parents=True)
        shutil.copyfile(REPO / "assignments" / SLUG / "activity.ipynb", folder / "activity.ipynb")
    api.collect(course, tmp_path / "class", SLUG, submitted_at="2027-02-01T00:00:00+00:00")
    nb_root = tmp_path / "nbgrader"
    (nb_root / "source" / SLUG).mkdir(parents=True)
    shutil.copyfile(REPO / "solutions" / SLUG / "activity.ipynb", nb_root / "source" / SLUG / "activity.ipynb")
    assert api.stage_formgrader(course, SLUG, nb_root) == ["ann", "ben"]

    from nbgrader.api import Gradebook as NbGradebook
    db = nb_root / "gradebook.db"
    with NbGradebook(f"sqlite:///{db}") as nbgb:          # a TA grades ann's first justification
        grade = nbgb.find_grade("justify_1", "activity", SLUG, "ann")
        grade.manual_score = 1.5
        nbgb.db.commit()
    records = api.import_manual_scores(course, SLUG, db)
    assert {(r.student, r.cell) for r in records} == {(s, f"activity/justify_{i}") for s in ("ann", "ben")
                                                      for i in range(1, 5)}
    with Gradebook(course.paths.gradebook) as gb:
        ann = {m["item"]: m["score"] for m in gb.manual_scores("ann", SLUG)}
    assert ann["activity/justify_1"] == 1.5

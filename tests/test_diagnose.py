"""Misconception diagnoses: shown only on a tight match, never changing an outcome or a point."""

from __future__ import annotations

import json
import math

import pytest
import torch

from course.grading import diagnose
from course.grading.diagnose import Misconception

pytest_plugins = ["pytester"]

CAT = diagnose.catalogue({
    "unscaled": Misconception("Your scores lack the 1/sqrt(d) factor: look at the default scale."),
    "by_d": Misconception("Your scores are divided by d, not sqrt(d)."),
    "same_as_unscaled": Misconception("An alias of unscaled, for the two-names case."),
})


def _scores():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(3, 5, 8, generator=g), torch.randn(3, 6, 8, generator=g)
    return q, k, q @ k.transpose(-2, -1)


def test_a_tight_match_names_the_variant_and_no_other():
    q, k, raw = _scores()
    variants = {"unscaled": lambda: raw, "by_d": lambda: raw / 8}
    assert diagnose.diagnose(raw, raw / math.sqrt(8), CAT, variants=variants) == ["unscaled"]
    assert diagnose.diagnose(raw / 8, raw / math.sqrt(8), CAT, variants=variants) == ["by_d"]
    assert diagnose.diagnose(raw * 1.001, raw / math.sqrt(8), CAT, variants=variants, generic=False) == []


def test_two_variants_with_the_same_answer_are_both_named():
    _, _, raw = _scores()
    names = diagnose.diagnose(raw, None, CAT, variants={"unscaled": lambda: raw, "same_as_unscaled": lambda: raw.clone()})
    assert names == ["unscaled", "same_as_unscaled"]


def test_a_variant_that_raises_or_returns_garbage_is_simply_absent():
    _, _, raw = _scores()
    variants = {"unscaled": lambda: 1 / 0, "by_d": lambda: "garbage"}
    assert diagnose.diagnose(raw, raw, CAT, variants=variants, generic=False) == []


def test_unknown_variant_names_are_an_authoring_error():
    with pytest.raises(KeyError):
        diagnose.diagnose(1, None, CAT, variants={"nope": lambda: 1})


@pytest.mark.parametrize("text", ["x" * 400, "a\nb\nc\nd", "off by {value}", ""])
def test_long_or_templated_texts_are_refused(text):
    with pytest.raises(ValueError):
        diagnose.catalogue({"bad": Misconception(text)})


def test_structural_facts():
    g = torch.Generator().manual_seed(1)
    e = torch.randn(4, 6, 5, generator=g)
    assert diagnose.structural_facts(e.transpose(-2, -1), e) == ["transposed"]
    assert diagnose.structural_facts(e * 2.5, e) == ["constant_factor"]
    assert diagnose.structural_facts(e.double(), e) == ["wrong_dtype"]
    shifted = e.roll(1, dims=1)
    shifted[:, 0] = 7.0
    assert "shifted_by_one" in diagnose.structural_facts(shifted, e)
    perm = e.flatten()[torch.randperm(e.numel(), generator=g)].view_as(e)
    assert diagnose.structural_facts(perm, e) == ["wrong_order"]
    assert diagnose.structural_facts(e + 0.1, e) == []
    assert not diagnose.rows_sum_to_one(torch.ones(2, 3)) and diagnose.rows_sum_to_one(torch.full((2, 4), 0.25))


TESTS = '''
import pytest, torch
from course.grading.diagnose import Misconception, catalogue, explain
CAT = catalogue({"doubled": Misconception("You doubled it.")})

@pytest.mark.task("1.1")
@pytest.mark.points(2)
@pytest.mark.parametrize("k", [2.0, 3.0])
def test_value(submission, k):
    out = submission.call("m.f", torch.ones(3))
    with explain(out, torch.ones(3), CAT, variants={"doubled": lambda: torch.ones(3) * k}, what="f of ones"):
        assert torch.equal(out, torch.ones(3))
'''


def test_diagnoses_reach_results_and_never_points(pytester):
    pytester.makepyfile(m="import torch\ndef f(x):\n    return x * 2\n")
    (pytester.path / "tests").mkdir()
    (pytester.path / "tests" / "test_m.py").write_text(TESTS)
    out = pytester.path / "r.json"
    pytester.runpytest("-p", "no:cacheprovider", "--course-results", str(out), "--course-device", "cpu")
    res = {r["name"].split("::")[1]: r for r in json.loads(out.read_text())["results"]}
    assert res["test_value[2.0]"]["diagnosis"] == "You doubled it." and res["test_value[2.0]"]["misconceptions"] == "doubled"
    # no variant matches 2 * ones for k=3: only the exact structural fact is named, never "doubled"
    assert res["test_value[3.0]"]["misconceptions"] == "constant_factor"
    assert all(r["outcome"] == "failed" and r["points"] == 0 and r["description"] == "f of ones" for r in res.values())


def test_the_class_view_counts_students_per_misconception(toy):
    from course import api
    from course.gradebook import Gradebook
    from course.grading.results import TestResult
    course = api.load_course(toy / "course.yml")
    gb = Gradebook(course.paths.gradebook)
    for student, names in (("ann", "transposed"), ("ben", "transposed,constant_factor"), ("cat", "")):
        sid = gb.add_submission(student=student, slug="vecops", attempt=1, submitted_at="2026-10-01T10:00:00+00:00",
                                late_by=0.0, sha256=student, path="p", source="dir")
        gb.save_grading(sid, "v", [TestResult(test_id="hidden:t", name="t", task="1.1", hidden=True,
                                              outcome="failed" if names else "passed", points=0.0, max_points=1.0,
                                              misconceptions=names)],
                        backend="sandbox", device="cpu", isolation="strong", started_at="x", duration=1.0)
    gb.close()
    rows, graded = api.misconceptions(course, "vecops")
    assert graded == 3
    assert [(r.name, r.students, r.tasks) for r in rows] == [("transposed", 2, ["1.1"]), ("constant_factor", 1, ["1.1"])]
    assert rows[0].text.startswith("Your result is the transpose")

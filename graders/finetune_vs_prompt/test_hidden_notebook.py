"""Hidden tests of part D (activity.ipynb): the notebook runs in the sandbox, its answers come back
as data, and they are checked here against the answer key (never inside the student's kernel).
The written justifications (task 4.2) are graded by TAs: see manual.json and RUBRIC.md."""

import json

import pytest

import fvp_oracle as oracle
import probes

KEY = json.loads((oracle.HERE / "answer_key.json").read_text(encoding="utf-8"))


def _answers(submission):
    out = submission.run(probes.notebook_answers)
    values = out["values"]
    assert "DECISIONS" in values, f"DECISIONS is not defined after running the notebook; errors: {out['errors']}"
    decisions = values["DECISIONS"]
    assert isinstance(decisions, dict), "DECISIONS must be a dict"
    use_case = values.get("USE_CASE")
    return ({str(k): v for k, v in decisions.items()},
            {str(k): v for k, v in use_case.items()} if isinstance(use_case, dict) else use_case)


@pytest.mark.task("4.1")
@pytest.mark.points(4)
@pytest.mark.timeout(120)
@pytest.mark.parametrize("scenario", ["1", "2", "3", "4"])
def test_hidden_decision_follows_the_rule_of_thumb(submission, scenario):
    decisions, _ = _answers(submission)
    assert decisions.get(scenario) == KEY["decisions"][scenario]


@pytest.mark.task("4.1")
@pytest.mark.points(3)
@pytest.mark.timeout(120)
def test_hidden_use_cases_name_the_kind_of_fine_tuning(submission):
    _, use_case = _answers(submission)
    assert isinstance(use_case, dict), "USE_CASE must be a dict"
    assert use_case == KEY["use_case"]

"""Hidden tests of part D (activity.ipynb): the notebook runs in the sandbox, its answers come back
as data, and they are checked here against the answer key (never inside the student's kernel).
The written justifications (task 4.2) are graded by TAs: see manual.json and RUBRIC.md."""

import json

import pytest

import fvp_oracle as oracle
import probes

KEY = json.loads((oracle.HERE / "answer_key.json").read_text(encoding="utf-8"))["accepted"]
SCENARIOS = {"1": "news summaries", "2": "hospital chatbot", "3": "Iago", "4": "flight emails"}


@oracle.once
def _answers(submission):
    """The notebook is executed once per submission; every scenario's test reads the same answers."""
    return submission.run(probes.notebook_answers)


def _choice(submission, scenario):
    out = _answers(submission)
    values = out.get("values", {}) if isinstance(out, dict) else {}
    decisions, use_case = values.get("DECISIONS"), values.get("USE_CASE")
    assert isinstance(decisions, dict), "DECISIONS is not a dict after running the notebook"
    decisions = {str(k): v for k, v in decisions.items()}
    use_case = {str(k): v for k, v in use_case.items()} if isinstance(use_case, dict) else {}
    choice = {"decision": decisions.get(scenario)}
    if choice["decision"] == "fine-tune":
        choice["use_case"] = use_case.get(scenario)
    return choice


@pytest.mark.task("4.1")
@pytest.mark.points(7)
@pytest.mark.timeout(120)
@pytest.mark.parametrize("scenario", list(SCENARIOS), ids=[f"scenario {k}: {v}" for k, v in SCENARIOS.items()])
def test_hidden_scenario_choice_and_kind(submission, scenario):
    # one test per scenario: a choice (and, when fine-tuning, its kind) counts once
    assert _choice(submission, scenario) in KEY[scenario], \
        "the decision (and, for fine-tuning, the kind of fine-tuning) for this scenario"

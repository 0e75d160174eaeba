"""The pytest plugin, exercised through pytester on a tiny assignment written on the fly."""

from __future__ import annotations

import json
import textwrap

import pytest

pytest_plugins = ["pytester"]

STUDENT = '''
import math
import torch

def add(a, b):
    return a + b

def scale(x, s):
    if s == 0:
        raise ValueError("s must not be zero")
    return x * s

def give_nan():
    return torch.tensor([float("nan"), 1.0])

def give_object():
    return object()

def give_int_keys():
    return {1: "prompt", 4: ("a", 2.5)}

def todo():
    raise NotImplementedError("Task 3.1: todo")

def clip(x, bounds=(0.0, 1.0)):
    return x.clamp(*bounds)

def clip_inplace(x, bounds=(0.0, 1.0)):
    return x.clamp_(*bounds)

def clip_kwarg_inplace(x, out=None):
    out.copy_(x.clamp(0, 1))
    return out
'''

TESTS = '''
import pytest
import torch

@pytest.mark.task("1.1")
@pytest.mark.points(4)
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_add(submission, n):
    assert submission.call("m.add", n, 1) == n + 1

@pytest.mark.task("1.2")
@pytest.mark.points(2)
def test_scale_raises_value_error(submission):
    with pytest.raises(ValueError, match="must not be zero"):
        submission.call("m.scale", torch.ones(2), 0)

@pytest.mark.task("1.2")
@pytest.mark.points(1)
def test_scale_tensor_is_a_copy(submission):
    x = torch.ones(2)
    out = submission.call("m.scale", x, 3.0)
    assert type(out) is torch.Tensor and torch.equal(out, torch.full((2,), 3.0)) and torch.equal(x, torch.ones(2))

@pytest.mark.task("2.1")
@pytest.mark.points(1)
def test_nan_is_refused(submission):
    submission.call("m.give_nan")

@pytest.mark.task("2.1")
@pytest.mark.points(1)
def test_nan_allowed_when_asked(submission):
    out = submission.allow_nonfinite().call("m.give_nan")
    assert torch.isnan(out[0])

@pytest.mark.task("2.2")
@pytest.mark.points(1)
def test_objects_cannot_cross(submission):
    submission.call("m.give_object")

@pytest.mark.task("2.2")
@pytest.mark.points(1)
def test_int_keys_and_tuples_survive(submission):
    assert submission.call("m.give_int_keys") == {1: "prompt", 4: ("a", 2.5)}

@pytest.mark.task("3.1")
@pytest.mark.points(1)
def test_todo(submission):
    submission.call("m.todo")

@pytest.mark.task("3.2")
@pytest.mark.points(1)
@pytest.mark.gpu
def test_on_gpu(submission):
    submission.call("m.add", 1, 1)

@pytest.mark.task("3.3")
@pytest.mark.points(1)
def test_missing_function(submission):
    submission.call("m.nope")

@pytest.mark.task("4.1")
@pytest.mark.points(1)
@pytest.mark.parametrize("name", ["clip", "clip_inplace"])
def test_pure(submission, name):
    x = torch.tensor([-1.0, 0.5, 2.0])
    assert torch.equal(submission.call_pure("m." + name, x), torch.tensor([0.0, 0.5, 1.0]))
    assert torch.equal(x, torch.tensor([-1.0, 0.5, 2.0]))

@pytest.mark.task("4.1")
@pytest.mark.points(1)
def test_pure_keyword(submission):
    submission.call_pure("m.clip_kwarg_inplace", torch.tensor([3.0]), out=torch.zeros(1))

@pytest.mark.task("4.3")
@pytest.mark.points(1)
def test_match_never_sees_the_location(submission):
    with pytest.raises(ValueError, match="m[.]py"):
        submission.call("m.scale", torch.ones(2), 0)

@pytest.mark.task("4.2")
@pytest.mark.points(1)
def test_source_is_read_here(submission):
    assert "def clip_inplace" in submission.source("m.py")
    assert submission.source("../outside.py") == "" and submission.source("nope.py") == ""
'''


@pytest.fixture
def assignment(pytester):
    pytester.makepyfile(**{"m": STUDENT})
    (pytester.path / "tests").mkdir()
    (pytester.path / "tests" / "test_m.py").write_text(TESTS)
    return pytester


def run(pytester, *args):
    out = pytester.path / "results.json"
    result = pytester.runpytest("-p", "no:cacheprovider", "--course-results", str(out), "--course-device", "cpu", *args)
    data = json.loads(out.read_text())
    return result, {r["name"].split("::")[1]: r for r in data["results"]}


def test_points_outcomes_and_messages(assignment):
    result, res = run(assignment)
    assert res["test_add[1]"]["max_points"] == 1.0 and res["test_add[1]"]["outcome"] == "passed"
    assert res["test_scale_raises_value_error"]["outcome"] == "passed"      # pytest.raises(ValueError) works
    assert res["test_scale_tensor_is_a_copy"]["outcome"] == "passed"
    assert res["test_nan_is_refused"]["outcome"] == "failed"
    assert "returned NaN or infinity (at result)" in res["test_nan_is_refused"]["message"]
    assert res["test_nan_allowed_when_asked"]["outcome"] == "passed"
    assert "cannot cross to the grader" in res["test_objects_cannot_cross"]["message"]
    assert res["test_int_keys_and_tuples_survive"]["outcome"] == "passed"
    assert "m.todo is not implemented yet (Task 3.1: todo)" in res["test_todo"]["message"]
    lines = (assignment.path / "m.py").read_text().splitlines()
    todo_line = next(i for i, line in enumerate(lines, 1) if "raise NotImplementedError" in line)
    assert res["test_todo"]["location"] == f"m.py:{todo_line}"
    assert res["test_on_gpu"]["outcome"] == "pending" and res["test_on_gpu"]["points"] == 0
    assert "has no 'nope'" in res["test_missing_function"]["message"]
    assert res["test_pure[clip]"]["outcome"] == "passed" and res["test_pure[clip_inplace]"]["outcome"] == "failed"
    assert "m.clip_inplace modified argument 1 in place" in res["test_pure[clip_inplace]"]["message"]
    assert "modified argument 'out' in place" in res["test_pure_keyword"]["message"]
    assert res["test_source_is_read_here"]["outcome"] == "passed"
    # the engine's [at file:line] is carried apart from the message: a match= can never hit it
    assert res["test_match_never_sees_the_location"]["outcome"] == "failed"
    assert res["test_match_never_sees_the_location"]["location"].startswith("m.py:")
    result.stdout.fnmatch_lines(["*course: results per task*", "1.1 * 4/4 *4.00/4.00*"])


def test_task_selection_runs_exactly_that_task(assignment):
    result, res = run(assignment, "--task", "1.2")
    assert sorted(res) == ["test_scale_raises_value_error", "test_scale_tensor_is_a_copy"]
    result, res = run(assignment, "-m", "task_1_1")
    assert sorted(res) == [f"test_add[{n}]" for n in range(1, 5)]
    result, res = run(assignment, "--task", "2")
    assert all(r["task"].startswith("2.") for r in res.values()) and len(res) == 4


def test_hidden_tests_have_no_public_message(assignment):
    _, res = run(assignment, "--course-hidden", str(assignment.path / "tests"))
    failed = res["test_nan_is_refused"]
    assert failed["hidden"] and failed["message"] == "" and "NaN" in failed["detail"]
    assert failed["test_id"].startswith("hidden:")


def test_sandbox_backend_gives_the_same_outcomes(assignment):
    _, local = run(assignment)
    out = assignment.path / "sandbox.json"
    assignment.runpytest_subprocess("-p", "no:cacheprovider", "--backend", "sandbox", "--course-results", str(out),
                                    "--course-device", "cpu", "--course-seed", "1")
    sandbox = {r["name"].split("::")[1]: r for r in json.loads(out.read_text())["results"]}
    assert {k: v["outcome"] for k, v in sandbox.items()} == {k: v["outcome"] for k, v in local.items()}
    for name in ("test_nan_is_refused", "test_objects_cannot_cross", "test_todo", "test_missing_function",
                 "test_pure[clip_inplace]", "test_pure_keyword", "test_match_never_sees_the_location"):
        assert sandbox[name]["message"] == local[name]["message"]


# ------------------------------------------------------------------ a module that fails at import, a hang

BROKEN_TESTS = '''
import pytest

@pytest.mark.task("1.1")
@pytest.mark.points(1)
@pytest.mark.parametrize("n", [1, 2, 3])
def test_broken(submission, n):
    submission.call("broken.f", n)

@pytest.mark.task("1.2")
@pytest.mark.points(1)
def test_other_module_still_runs(submission):
    assert submission.call("fine.g", 2) == 4
'''


@pytest.mark.parametrize("backend", ["local", "sandbox"])
def test_an_import_failure_is_said_once_and_fails_its_dependents_at_once(pytester, backend):
    pytester.makepyfile(broken="import math\n\nx = 1\nimport numpyy\n\ndef f(n):\n    return n\n",
                        fine="def g(n):\n    return 2 * n\n")
    (pytester.path / "tests").mkdir()
    (pytester.path / "tests" / "test_b.py").write_text(BROKEN_TESTS)
    out = pytester.path / "r.json"
    args = ["-p", "no:cacheprovider", "--course-results", str(out), "--course-device", "cpu", "--backend", backend]
    (pytester.runpytest_subprocess if backend == "sandbox" else pytester.runpytest)(*args)
    res = {r["name"].split("::")[1]: r for r in json.loads(out.read_text())["results"]}
    first, *others = [res[f"test_broken[{n}]"] for n in (1, 2, 3)]
    assert first["outcome"] == "error"
    assert first["message"].startswith("importing broken.py failed at line 4: ModuleNotFoundError: No module named 'numpyy'")
    assert first["location"] == "broken.py:4"
    for r in others:
        assert r["outcome"] == "error" and r["message"].startswith("not run: importing broken.py failed")
    assert res["test_other_module_still_runs"]["outcome"] == "passed"


HANG_TESTS = '''
import pytest

@pytest.mark.task("1.1")
@pytest.mark.points(1)
@pytest.mark.timeout(1)
def test_hangs(submission):
    submission.call("slow.spin")

@pytest.mark.task("1.1")
@pytest.mark.points(1)
@pytest.mark.timeout(1)
def test_slow_but_finishes(submission):
    assert submission.call("slow.nap", 1.5) == "done"
'''


def test_the_local_backend_stops_a_hang_and_names_it(pytester):
    pytester.makepyfile(slow="import time\n\ndef spin():\n    while True:\n        pass\n\n"
                             "def nap(s):\n    time.sleep(s)\n    return 'done'\n")
    (pytester.path / "tests").mkdir()
    (pytester.path / "tests" / "test_h.py").write_text(HANG_TESTS)
    out = pytester.path / "r.json"
    pytester.runpytest("-p", "no:cacheprovider", "--course-results", str(out), "--course-device", "cpu")
    res = {r["name"].split("::")[1]: r for r in json.loads(out.read_text())["results"]}
    assert res["test_hangs"]["outcome"] == "timeout"
    assert "slow.spin did not finish within the time limit (1 s)" in res["test_hangs"]["message"]
    assert "--no-timeout" in res["test_hangs"]["message"]
    pytester.runpytest("-p", "no:cacheprovider", "--course-results", str(out), "--course-device", "cpu",
                       "--no-timeout", "-k", "slow_but")
    res = {r["name"].split("::")[1]: r for r in json.loads(out.read_text())["results"]}
    assert res["test_slow_but_finishes"]["outcome"] == "passed"


def test_calibrated_limits_stop_a_hang_in_seconds(pytester):
    from course.config import Limits
    from course.grading.runner import calibrated_timeouts
    limits = Limits(call_timeout=60, timeout_factor=10, timeout_floor=1.0)
    assert dict(calibrated_timeouts({"a::t": 0.01, "a::u": 0.5}, limits)) == {"a::t": 1.0, "a::u": 5.0}
    pytester.makepyfile(slow="def spin():\n    while True:\n        pass\n")
    (pytester.path / "tests").mkdir()
    (pytester.path / "tests" / "test_s.py").write_text(
        "import pytest\n\n@pytest.mark.task('1.1')\n@pytest.mark.points(1)\ndef test_spin(submission):\n"
        "    submission.call('slow.spin')\n")
    out = pytester.path / "r.json"
    import time
    t0 = time.monotonic()
    pytester.runpytest("-p", "no:cacheprovider", "--course-results", str(out), "--course-device", "cpu",
                       "--course-timeouts", json.dumps({"test_s.py::test_spin": 1.0}))
    assert time.monotonic() - t0 < 20      # the 60 s call_timeout did not apply
    [r] = json.loads(out.read_text())["results"]
    assert r["outcome"] == "timeout" and "(1 s)" in r["message"]


def test_grading_plans_calibrated_limits_from_the_reference_timings(toy):
    from course import api
    from course.gradebook import Gradebook
    from course.grading.runner import spec_for
    course = api.load_course(toy / "course.yml")
    spec = spec_for(course, "vecops")
    with Gradebook(course.paths.gradebook) as gb:
        gb.add_submission(student="ann", slug="vecops", attempt=1, submitted_at="2026-10-01T10:00:00+00:00",
                          late_by=0.0, sha256="x", path="submitted/ann/vecops/1", source="dir")
        gb.set_reference_timings("vecops", spec.version, {"test_hidden_vecops.py::test_accumulator": 0.05}, "here")
        gb.set_reference_timings("vecops", "an-older-grader", {"test_hidden_vecops.py::test_accumulator": 99}, "here")
        jobs, _ = api.plan_grading(course, gb, None, None, force=False, only_pending=False)
    [job] = jobs
    assert dict(job.timeouts) == {"test_hidden_vecops.py::test_accumulator": spec.limits.timeout_floor}

"""`course ci` and the workflow templates, run against a fixture course repository with a PR.

The fixture is a workspace laid out as grade.yml's job leaves it: ``instructor/`` (the private
course repository: the toy course with graders and solutions) and ``pr/`` (a git repository whose
last commit is a student's pull request). The grade step's own script, taken from the YAML, is
run with bash; its summary, annotations, JUnit XML and results.json are then checked.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from course import ci, report
from course.cli import main
from course.grading.sandbox import strong_isolation_available

from conftest import TOY

STUDENT = "octo-student"
SUBMITTED_AT = "2026-10-02T10:00:00Z"          # 10 h after the toy course's due date: 10 % off
PYTHON_BIN = str(Path(sys.executable).parent)


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "s", "GIT_AUTHOR_EMAIL": "s@example.org", "GIT_COMMITTER_NAME": "s",
           "GIT_COMMITTER_EMAIL": "s@example.org"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


def student_module() -> tuple[str, int]:
    """The stub with dot and Accumulator done, normalize left as the stub; and the stub's line."""
    text = (TOY / "assignments" / "vecops" / "vecops.py").read_text()
    text = text.replace('raise NotImplementedError("Task 1.1: dot")', "return (a * b).sum()")
    text = text.replace('raise NotImplementedError("Task 2.1: Accumulator.__init__")', "self.total = torch.zeros(n)")
    text = text.replace('raise NotImplementedError("Task 2.1: Accumulator.add")', "self.total += v")
    text = text.replace('raise NotImplementedError("Task 2.1: Accumulator.value")', "return self.total.clone()")
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if "Task 1.2: normalize" in ln)
    return text, line


def workflow(name: str) -> dict:
    return yaml.safe_load(ci.render_workflow(name, course_repo="teacher/course-private"))


def triggers(wf: dict) -> dict:
    return wf.get("on", wf.get(True))     # YAML 1.1 reads the key `on` as true


def steps(wf: dict) -> list[dict]:
    return [s for job in wf["jobs"].values() for s in job["steps"]]


def run_step(step: dict, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """A `run:` step as GitHub runs it: bash --noprofile --norc -eo pipefail."""
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    ws = tmp_path_factory.mktemp("ci-workspace")
    shutil.copytree(TOY, ws / "instructor", ignore=shutil.ignore_patterns("__pycache__"))
    pr = ws / "pr"
    (pr / "assignments").mkdir(parents=True)
    shutil.copytree(TOY / "assignments" / "vecops", pr / "assignments" / "vecops",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copyfile(TOY / "course.yml", pr / "course.yml")
    _git(pr, "init", "-q", "-b", "main")
    _git(pr, "add", "-A")
    _git(pr, "commit", "-q", "-m", "the student kit")
    text, _ = student_module()
    (pr / "assignments" / "vecops" / "vecops.py").write_text(text)
    # The PR also "fixes" the public tests: they may not count.
    (pr / "assignments" / "vecops" / "tests" / "test_vecops.py").write_text(
        "def test_pr_says_everything_passes():\n    assert True\n")
    _git(pr, "add", "-A")
    _git(pr, "commit", "-q", "-m", "dot and the accumulator")
    bin_dir = ws / "bin"
    bin_dir.mkdir()
    (bin_dir / "sudo").write_text('#!/bin/sh\nwhile [ "${1#-}" != "$1" ]; do shift; done\nexec "$@"\n')
    (bin_dir / "sudo").chmod(0o755)
    return ws


@pytest.fixture(scope="module")
def graded_pr(workspace: Path):
    """The grade step of grade.yml, run once on the fixture PR."""
    ok, why = strong_isolation_available()
    if not ok:
        pytest.skip(f"grade.yml grades with --require-isolation: {why}")
    [step] = [s for s in steps(workflow("grade.yml")) if s.get("id") == "grade"]
    base = _git(workspace / "pr", "rev-parse", "HEAD^")
    expressions = {"${{ github.event.pull_request.base.sha }}": base,
                   "${{ github.event.pull_request.user.login }}": STUDENT,
                   "${{ github.event.pull_request.updated_at }}": SUBMITTED_AT}
    env = {k: expressions[v] for k, v in step["env"].items()}
    summary = workspace / "step_summary.md"
    summary.write_text("")
    env.update(PATH=f"{workspace / 'bin'}:{PYTHON_BIN}:{os.environ['PATH']}", HOME=os.environ.get("HOME", "/root"),
               GITHUB_STEP_SUMMARY=str(summary))
    proc = run_step(step, workspace, env)
    return proc, workspace


# ------------------------------------------------------------------ the grade step, end to end

def test_grade_step_grades_the_pr_and_exits_0(graded_pr):
    proc, ws = graded_pr
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(p.name for p in (ws / "results" / "vecops").iterdir()) == ["junit.xml", "results.json",
                                                                             "summary.md"]


def test_step_summary_shows_tasks_public_failures_and_hidden_names_only(graded_pr):
    _, ws = graded_pr
    text = (ws / "step_summary.md").read_text()
    # dot 1 + 3, accumulator 2, normalize 0 (stub), GPU test pending: raw 6, 10 h late: 5.4
    assert text.startswith("## Vector operations: 5.4 / 10\n")
    assert "| 1.1 | 4/4 | 4 / 4 |" in text and "| 1.2 | 0/2 | 0 / 3 |" in text and "| 2.1 | 1/2 | 2 / 3 |" in text
    assert "vecops.normalize is not implemented yet (Task 1.2: normalize)" in text
    assert "| `test_hidden_vecops.py::test_normalize_zero_raises` | failed |" in text
    assert "| `test_hidden_vecops.py::test_accumulator_on_gpu` | pending |" in text
    assert "10.0 h late: late penalty 10 %" in text and "strong isolation" in text
    hidden_source = (ws / "instructor" / "graders" / "vecops" / "test_hidden_vecops.py").read_text()
    assert "ValueError" not in text and "torch.dot" not in text and "probes" not in text
    assert "torch.dot(a, b)" in hidden_source   # (the check above is meaningful)
    assert text == (ws / "results" / "vecops" / "summary.md").read_text() + "\n"


def test_annotation_points_at_the_students_line(graded_pr):
    proc, _ = graded_pr
    _, line = student_module()
    errors = [ln for ln in proc.stdout.splitlines() if ln.startswith("::error")]
    assert errors == [f"::error file=assignments/vecops/vecops.py,line={line},"
                      "title=test_vecops.py%3A%3Atest_normalize_unit::vecops.normalize is not implemented yet "
                      "(Task 1.2: normalize)"]


def test_junit_xml(graded_pr):
    _, ws = graded_pr
    root = ET.parse(ws / "results" / "vecops" / "junit.xml").getroot()
    [suite] = root.findall("testsuite")
    assert suite.get("name") == f"{STUDENT}/vecops"
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) == ("8", "2", "0", "1")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    hidden = cases["test_hidden_vecops.py::test_normalize_zero_raises"]
    assert hidden.get("classname") == "vecops.hidden"
    assert hidden.find("failure").get("message") == report.HIDDEN_FAILED and not hidden.find("failure").text
    public = cases["test_vecops.py::test_normalize_unit"].find("failure")
    assert "not implemented yet" in public.get("message")
    assert cases["test_hidden_vecops.py::test_accumulator_on_gpu"].find("skipped") is not None


def test_results_json_has_gradescopes_fields(graded_pr):
    _, ws = graded_pr
    data = json.loads((ws / "results" / "vecops" / "results.json").read_text())
    assert set(data) == {"score", "execution_time", "output", "output_format", "visibility", "stdout_visibility",
                         "tests"}
    assert data["score"] == 5.4 and sum(t["score"] for t in data["tests"]) == 6
    for t in data["tests"]:
        assert set(t) == {"name", "score", "max_score", "status", "output", "visibility", "tags"}
        if t["name"].startswith("test_hidden_"):
            assert t["visibility"] == "after_published" and t["output"] == ""
        else:
            assert t["visibility"] == "visible"


def test_the_pr_cannot_replace_the_public_tests(graded_pr):
    _, ws = graded_pr
    names = [t["name"] for t in json.loads((ws / "results" / "vecops" / "results.json").read_text())["tests"]]
    assert "test_vecops.py::test_normalize_unit" in names
    assert not any("test_pr_says_everything_passes" in n for n in names)


# ------------------------------------------------------------------ the command's exit codes

def ci_args(ws: Path, *extra: str) -> list[str]:
    return ["ci", "--course", str(ws / "instructor" / "course.yml"), "--assignment", "vecops",
            "--submission", str(ws / "pr" / "assignments" / "vecops"), *extra]


def test_fail_under_exits_1_and_still_writes_everything(workspace, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ci_args(workspace, "--out", str(out), "--fail-under", "6.5"),
                                env={"GITHUB_STEP_SUMMARY": None})
    assert result.exit_code == 1, result.output
    assert "6 points is below --fail-under 6.5" in said(result)    # on time (no --submitted-at): raw 6
    assert "::error file=assignments/vecops/vecops.py," in result.output
    assert "Required: 6.5 points (not met)." in (out / "summary.md").read_text()
    assert json.loads((out / "results.json").read_text())["score"] == 6


def said(result) -> str:
    return " ".join(result.output.split())      # rich wraps long messages


def test_bad_input_exits_2(workspace, tmp_path):
    runner = CliRunner()
    unknown = runner.invoke(main, ci_args(workspace)[:4] + ["nope", "--submission", str(tmp_path)])
    assert unknown.exit_code == 2 and "unknown assignment 'nope'" in said(unknown)
    missing = runner.invoke(main, ci_args(workspace)[:6] + [str(tmp_path / "absent")])
    assert missing.exit_code == 2 and "absent: no such folder" in said(missing)
    no_graders = runner.invoke(main, ci_args(workspace, "--graders", str(tmp_path)))
    assert no_graders.exit_code == 2 and "no hidden tests for assignment 'vecops'" in said(no_graders)
    bad_time = runner.invoke(main, ci_args(workspace, "--submitted-at", "friday"))
    assert bad_time.exit_code == 2 and "--submitted-at: 'friday' is not an ISO 8601 date" in said(bad_time)


def test_no_sandbox_exits_3(workspace, tmp_path):
    # --require-isolation where bubblewrap cannot be found: the grade could not be produced.
    result = CliRunner().invoke(main, ci_args(workspace, "--require-isolation", "--out", str(tmp_path)),
                                env={"PATH": str(tmp_path)})
    assert result.exit_code == 3, result.output
    assert "strong isolation is required but unavailable" in said(result)
    assert not (tmp_path / "results.json").exists()


# ------------------------------------------------------------------ the workflow templates

def test_init_ci_writes_both_workflows_and_refuses_to_overwrite(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["init-ci", "--into", str(tmp_path), "--course-repo", "teacher/course-private"])
    assert result.exit_code == 0, result.output
    folder = tmp_path / ".github" / "workflows"
    assert sorted(p.name for p in folder.iterdir()) == ["check.yml", "grade.yml"]
    assert "COURSE_REPO: \"teacher/course-private\"" in (folder / "grade.yml").read_text()
    assert 'python-version: "3.11"' in (folder / "check.yml").read_text()
    again = runner.invoke(main, ["init-ci", "--into", str(tmp_path), "--course-repo", "teacher/course-private"])
    assert again.exit_code == 2 and "already exists (use --force to overwrite)" in said(again)
    forced = runner.invoke(main, ["init-ci", "--into", str(tmp_path), "--course-repo", "t/c", "--python", "3.12",
                                  "--force"])
    assert forced.exit_code == 0 and 'python-version: "3.12"' in (folder / "grade.yml").read_text()
    bad = runner.invoke(main, ["init-ci", "--into", str(tmp_path), "--course-repo", "not a repo", "--force"])
    assert bad.exit_code == 2 and "--course-repo 'not a repo': expected OWNER/NAME" in said(bad)


@pytest.mark.parametrize("name", ci.WORKFLOWS)
def test_workflows_read_only_by_default_and_no_expressions_in_scripts(name):
    wf = workflow(name)
    assert wf["permissions"] == {"contents": "read"}
    for job in wf["jobs"].values():
        assert "permissions" not in job                                 # nothing widens the default
        for step in job["steps"]:
            if step.get("uses", "").startswith("actions/checkout"):
                assert step["with"]["persist-credentials"] is False
            assert not step.get("uses", "").startswith("./")            # no action from the checkout
            # Untrusted values (branch names, titles, logins) reach scripts only through env.
            assert "${{" not in step.get("run", "")


def test_check_runs_the_public_tests_on_pull_requests():
    wf = workflow("check.yml")
    assert set(triggers(wf)) == {"pull_request"}
    assert triggers(wf)["pull_request"]["paths"] == ["assignments/**"]
    assert list(wf["jobs"]) == ["check"]
    runs = [s["run"] for s in steps(wf) if "run" in s]
    assert any('pip install -e ".[libs]"' in r for r in runs)
    assert any('course check "$slug"' in r for r in runs)
    assert "secrets." not in ci.render_workflow("check.yml", course_repo="t/c")


def test_grade_uses_pull_request_target_and_never_runs_pr_code_outside_the_sandbox():
    wf = workflow("grade.yml")
    assert set(triggers(wf)) == {"pull_request_target"}
    assert list(wf["jobs"]) == ["grade"] and wf["jobs"]["grade"]["environment"] == "grading"
    all_steps = steps(wf)
    pr_checkouts = [s for s in all_steps if s.get("with", {}).get("path") == "pr"]
    assert len(pr_checkouts) == 1
    assert pr_checkouts[0]["with"]["ref"] == "${{ github.event.pull_request.head.sha }}"
    for step in all_steps:
        assert step.get("working-directory") is None
        for line in step.get("run", "").splitlines():
            if re.search(r"(^|[\s\"'./])pr(/|\s|\"|$)", line):
                # The PR's files are only read by git (to list changed paths) or handed to course ci.
                assert re.search(r"git -C pr (diff|ls-files)", line) or '--submission "pr/assignments/$slug"' in line, line
            if "pip install" in line:                    # only the trusted course package is installed
                assert line.strip() in ("python -m pip install --upgrade pip", 'pip install "./instructor[libs]"',
                                        "pip install --index-url https://download.pytorch.org/whl/cpu torch"), line
    [grade] = [s for s in all_steps if s.get("id") == "grade"]
    assert "--require-isolation" in grade["run"] and "sudo" in grade["run"]


def test_grade_keeps_the_secret_out_of_the_sandbox_step_and_shares_no_cache():
    text = ci.render_workflow("grade.yml", course_repo="t/c")
    wf = yaml.safe_load(text)
    assert text.count("secrets.") == 3
    private, record, save = [s for s in steps(wf) if "secrets." in json.dumps(s)]
    assert private["with"]["ssh-key"] == "${{ secrets.COURSE_DEPLOY_KEY }}"
    assert private["with"]["path"] == "instructor" and "run" not in private
    # the record of graded runs (hidden_feedback_limit): its key reaches a checkout and a step running git only
    assert record["with"]["ssh-key"] == "${{ secrets.COURSE_LEDGER_KEY }}" and record["with"]["path"] == "ledger"
    assert save["env"] == {"LEDGER_KEY": "${{ secrets.COURSE_LEDGER_KEY }}"} and "course " not in save["run"]
    assert all(re.match(r"\s*(\[|sudo chown|git |if git|key=|trap|printf|export GIT_SSH|commit|for |sleep|done|echo|exit|"
                        r"fi|then|commit -q)", line) for line in save["run"].splitlines() if line.strip()), save["run"]
    assert "pr/" not in save["run"] and record.get("if") == save["if"].replace("always() && ", "")
    [grade] = [s for s in steps(wf) if s.get("id") == "grade"]
    environment = {**wf.get("env", {}), **wf["jobs"]["grade"].get("env", {}), **grade.get("env", {})}
    assert not any("secret" in str(v).lower() for v in environment.values())
    for step in steps(wf):
        assert not step.get("uses", "").startswith("actions/cache")
        assert "cache" not in step.get("with", {})


def test_check_step_runs_locally_on_the_fixture_pr(workspace):
    [step] = [s for s in steps(workflow("check.yml")) if 'course check "$slug"' in s.get("run", "")]
    env = {"PATH": f"{PYTHON_BIN}:{os.environ['PATH']}", "HOME": os.environ.get("HOME", "/root")}
    proc = run_step(step, workspace / "pr", env)
    # Advisory, and it runs the PR's own (here: replaced) public tests: 1 passing test, exit 0.
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "::group::course check vecops" in proc.stdout and "1/1" in proc.stdout


def test_annotations_cannot_inject_workflow_commands():
    # The location comes from the worker (student-controlled); it must stay inside its property.
    row = report.ResultRow(test_id="public:t", name="test_x.py::test_y", task="1.1", hidden=False, outcome="failed",
                           points=0, max_points=1, message="boom\n::warning::fake", detail="",
                           location="a.py,title=You passed\n::set-output name=x::1:7", duration=0.0)
    g = report.Graded("s", "vecops", "Vector operations", 10, "graded", results=[row])
    [line] = report.github_annotations(g, "assignments/vecops")
    assert "\n" not in line and line.count("::") == 2
    assert line == ("::error file=assignments/vecops/a.py%2Ctitle=You passed%0A%3A%3Aset-output name=x%3A%3A1,"
                    "line=7,title=test_x.py%3A%3Atest_y::boom")


# ------------------------------------------------------------------ the PR's files, not what they point to

def _grade_step_on(workspace: Path, pr: Path, extra_path: str = "") -> tuple[subprocess.CompletedProcess, Path]:
    """grade.yml's grade step on another PR checkout (a copy of the workspace with ``pr`` swapped in)."""
    ws = pr.parent
    for name in ("instructor", "bin"):
        if not (ws / name).exists():
            shutil.copytree(workspace / name, ws / name, symlinks=True)
    [step] = [s for s in steps(workflow("grade.yml")) if s.get("id") == "grade"]
    base = _git(pr, "rev-list", "--max-parents=0", "HEAD").split()[0]
    env = {"BASE_SHA": base, "STUDENT": STUDENT, "SUBMITTED_AT": SUBMITTED_AT,
           "PATH": f"{extra_path}{ws / 'bin'}:{PYTHON_BIN}:{os.environ['PATH']}", "HOME": os.environ.get("HOME", "/root"),
           "GITHUB_STEP_SUMMARY": str(ws / "summary.md")}
    return run_step(step, ws, env), ws


def _pr_with(tmp_path: Path, change) -> Path:
    pr = tmp_path / "ws" / "pr"
    (pr / "assignments").mkdir(parents=True)
    shutil.copytree(TOY / "assignments" / "vecops", pr / "assignments" / "vecops",
                    ignore=shutil.ignore_patterns("__pycache__"))
    _git(pr, "init", "-q", "-b", "main")
    _git(pr, "add", "-A")
    _git(pr, "commit", "-q", "-m", "kit")
    change(pr)
    _git(pr, "add", "-A")
    _git(pr, "commit", "-q", "-m", "the attack")
    return pr


def test_an_assignment_folder_that_is_a_link_into_the_instructors_checkout_is_not_graded(workspace, tmp_path):
    def link(pr):
        shutil.rmtree(pr / "assignments" / "vecops")
        os.symlink("../../instructor/solutions/vecops", pr / "assignments" / "vecops")
    proc, ws = _grade_step_on(workspace, _pr_with(tmp_path, link))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "symbolic link" in proc.stderr
    assert not (ws / "results" / "vecops" / "results.json").exists()


@pytest.mark.parametrize("kind", ["file_link", "folder_link", "fifo"])
def test_links_and_special_files_below_the_assignment_folder_refuse_the_pr(workspace, tmp_path, kind):
    def plant(pr):
        folder = pr / "assignments" / "vecops"
        if kind == "file_link":
            (folder / "vecops.py").unlink()
            os.symlink("../../../instructor/solutions/vecops/vecops.py", folder / "vecops.py")
        elif kind == "folder_link":
            os.symlink("../../../instructor/graders/vecops", folder / "helpers")
            (folder / "vecops.py").write_text("from helpers.probes import *\n")
        else:
            (folder / "notes.txt").write_text("x")
    pr = _pr_with(tmp_path, plant)
    if kind == "fifo":   # git cannot hold a fifo: it appears in the checkout after the fact
        os.mkfifo(pr / "assignments" / "vecops" / "pipe")
    proc, ws = _grade_step_on(workspace, pr)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert not (ws / "results" / "vecops" / "results.json").exists()


def test_an_exit_without_results_is_a_failed_job_not_a_grade(workspace, tmp_path):
    """An internal error (or anything else) that exits 0 or 1 without this run's results file fails
    the job: 1 means "graded, below the bar" only with results."""
    pr = _pr_with(tmp_path, lambda pr: (pr / "assignments" / "vecops" / "vecops.py").write_text("x = 1\n"))
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (fake / "course").write_text("#!/bin/sh\necho 'Traceback: boom' >&2\nexit 1\n")
    (fake / "course").chmod(0o755)
    proc, ws = _grade_step_on(workspace, pr, extra_path=f"{fake}:")
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "wrote no results" in proc.stdout


def test_an_internal_error_exits_4(workspace, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise ZeroDivisionError("a bug")
    monkeypatch.setattr(ci, "grade_tree", boom)
    result = CliRunner().invoke(main, ci_args(workspace, "--out", str(tmp_path)))
    assert result.exit_code == 4 and "internal error" in result.output

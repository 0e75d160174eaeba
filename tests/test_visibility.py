"""Feedback visibility (hidden_feedback / after_due: names | tasks | total | none) in feedback pages,
`course ci` output and results.json, and the CI rate limit on hidden feedback (hidden_feedback_limit),
counted in a record kept outside the pull request."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from course import api, ci, ledger, report, visibility
from course.cli import main
from course.grading.results import TestResult
from course.grading.runner import JobResult
from course.grading.sandbox import strong_isolation_available
from staffkit import grade, said, submit

from conftest import TOY

UTC = dt.timezone.utc
DUE = dt.datetime(2026, 10, 1, 23, 59, tzinfo=UTC)
BEFORE, AFTER = DUE - dt.timedelta(days=2), DUE + dt.timedelta(days=1)
HIDDEN_NAMES = ("test_hidden_vecops.py::test_dot_matches_torch", "test_hidden_vecops.py::test_normalize_zero_raises",
                "test_hidden_vecops.py::test_accumulator")
RESULTS = [
    TestResult("p1", "test_vecops.py::test_dot_small", "1.1", False, "passed", 1, 1),
    TestResult("p2", "test_vecops.py::test_normalize_unit", "1.2", False, "failed", 0, 2,
               message="vecops.normalize is not implemented yet", location="vecops.py:12"),
    TestResult("h1", HIDDEN_NAMES[0], "1.1", True, "passed", 3, 3),
    TestResult("h2", HIDDEN_NAMES[1], "1.2", True, "failed", 0, 2),
    TestResult("h3", HIDDEN_NAMES[2], "2.1", True, "passed", 2, 2),
]                                                    # public 1 of 3, hidden 5 of 7: 6 of 10


def outputs(g) -> dict[str, str]:
    return {"markdown": report.feedback_markdown(g), "html": report.feedback_html(g), "summary": report.ci_summary(g),
            "junit": report.junit_xml([g]), "results.json": json.dumps(report.gradescope_results(g))}


@pytest.mark.parametrize("level", visibility.LEVELS)
def test_each_level_reaches_every_student_facing_output(level):
    g = report.graded_from_results(None, "ann", "vecops", RESULTS, title="Vector operations", max_points=10)
    shown = visibility.view(g, level)
    assert (shown.raw, shown.final) == (6.0, 6.0) and g.hidden_view == "names"     # the record is unchanged
    for name, text in outputs(shown).items():
        assert "vecops.normalize is not implemented yet" in text, name                # public failures always
        names = all(h in text for h in HIDDEN_NAMES)
        assert names == (level == "names"), (name, level)
        assert ("hidden tests of task 1.1" in text) == (level == "tasks"), (name, level)
        if level == "none":
            assert "hidden tests" not in text.lower().replace("hidden tests are not shown", ""), name
    summary = report.ci_summary(shown)
    if level == "none":
        assert summary.startswith("## Vector operations: not shown yet (public tests: 1 / 3)\n")
        assert "| 1.1 | 1/1 | 1 / 1 |" in summary and "| 2.1 |" not in summary       # no hidden points per task
        assert report.gradescope_results(shown)["score"] == 1.0
    else:
        assert summary.startswith("## Vector operations: 6 / 10\n")
        assert report.gradescope_results(shown)["score"] == 6.0
    if level == "tasks":
        assert "| 1.1 | 2/2 | 4 / 4 |" in summary and "| 2.1 | 1/1 | 2 / 2 |" in summary
        cases = [c.get("name") for c in ET.fromstring(report.junit_xml([shown])).iter("testcase")]
        assert "hidden tests of task 1.2" in cases and HIDDEN_NAMES[1] not in cases
    if level == "total":
        assert "| hidden | 0/1 | 5 / 7 |" in summary and "| 2.1 |" not in summary      # one line for them all


def _visibility_course(toy: Path, before: str, after: str, limit: str = "") -> None:
    (toy / "course.yml").write_text((toy / "course.yml").read_text().replace(
        "    points: 10\n", f"    points: 10\n    hidden_feedback: {before}\n    after_due: {after}\n{limit}"))


def test_course_feedback_follows_the_level_before_and_after_the_due_date(toy, tmp_path):
    _visibility_course(toy, "none", "tasks")
    course = api.load_course(toy / "course.yml")
    submit(course, tmp_path, "ann", "2026-10-01T20:00:00+00:00")
    grade(course, "ann", "vecops", RESULTS)
    api.feedback(course, now=BEFORE)
    early = (toy / "feedback" / "vecops" / "ann.md").read_text()
    assert "not shown yet (public tests: 1 / 3)" in early and "test_hidden_vecops" not in early
    api.feedback(course, now=AFTER)
    late = (toy / "feedback" / "vecops" / "ann.md").read_text()
    assert "**Score: 6 / 10**" in late and "hidden tests of task 2.1" in late and "test_hidden_vecops" not in late
    with api.open_gradebook(course) as gb:           # only the score shown was published
        published = [e.value for e in ledger.entries(gb, kinds=("published",))]
    assert published == [6.0]


# ------------------------------------------------------------------ course ci: the rate limit, across runs

class FakeExecutor:
    """Stands in for the sandbox: the judge's results for RESULTS (the limit's logic is what is tested)."""

    isolation_note = ""

    def __init__(self, *args, **kwargs):
        pass

    def run(self, jobs, on_start=None, on_done=None):
        return [JobResult(j, True, results=[TestResult(**vars(r)) for r in RESULTS], isolation="strong",
                          started_at="2026-09-29T00:00:00+00:00", duration=0.2) for j in jobs]

    def close(self):
        pass


@pytest.fixture
def ci_course(toy, tmp_path, monkeypatch):
    _visibility_course(toy, "names", "names", "    hidden_feedback_limit: {count: 2, per: day}\n")
    monkeypatch.setattr(ci, "LocalExecutor", FakeExecutor)
    pr = tmp_path / "pr"
    shutil.copytree(TOY / "assignments" / "vecops", pr / "assignments" / "vecops")
    (pr / ".git").mkdir()                                # the PR's work tree
    return api.load_course(toy / "course.yml"), pr, tmp_path / "ledger"


def run_ci(course, pr, ledger, when, out, **kw):
    return ci.grade_tree(course, "vecops", pr / "assignments" / "vecops", out=out, student="octo", now=when,
                         ci_ledger=ledger, **kw)


def test_the_limit_is_honoured_across_runs_and_says_when_feedback_comes_back(ci_course, tmp_path):
    course, pr, ledger = ci_course
    t0 = BEFORE - dt.timedelta(hours=20)
    first = run_ci(course, pr, ledger, t0, tmp_path / "o1")
    second = run_ci(course, pr, ledger, t0 + dt.timedelta(hours=1), tmp_path / "o2")
    third = run_ci(course, pr, ledger, t0 + dt.timedelta(hours=2), tmp_path / "o3")
    assert [r.hidden_feedback for r in (first, second, third)] == ["shown", "shown", "withheld"]
    summary = (tmp_path / "o3" / "summary.md").read_text()
    assert summary.startswith("## Vector operations: not shown yet (public tests: 1 / 3)\n")
    assert "limited to 2 run(s) per day before the due date (2 used): it comes back at 2026-09-30T03:59+00:00" in summary
    assert "vecops.normalize is not implemented yet" in summary                  # the public part is there
    data = json.loads((tmp_path / "o3" / "results.json").read_text())
    assert not any(n in json.dumps(data) for n in HIDDEN_NAMES) and data["score"] == 1.0
    assert data["extra_data"] == {"hidden_feedback": "withheld"}
    assert not any(n in (tmp_path / "o3" / "junit.xml").read_text() for n in HIDDEN_NAMES)
    assert HIDDEN_NAMES[0] in (tmp_path / "o1" / "summary.md").read_text()
    records = sorted((ledger / "vecops" / "octo").glob("*.json"))
    assert [json.loads(p.read_text())["hidden_feedback"] for p in records] == ["shown", "shown", "withheld"]
    assert all(json.loads(p.read_text())["score"] == 6.0 for p in records)       # every run's grade is recorded
    later = run_ci(course, pr, ledger, t0 + dt.timedelta(hours=24, minutes=1), tmp_path / "o4")
    assert later.hidden_feedback == "shown"                                      # the first run left the window
    after_due = run_ci(course, pr, ledger, AFTER, tmp_path / "o5")
    assert after_due.hidden_feedback == "unlimited" and HIDDEN_NAMES[0] in (tmp_path / "o5" / "summary.md").read_text()


def test_a_pull_requests_tree_cannot_reset_or_raise_the_limit(ci_course, tmp_path):
    course, pr, ledger = ci_course
    for i in range(2):
        run_ci(course, pr, ledger, BEFORE + dt.timedelta(minutes=i), tmp_path / f"o{i}")
    # the PR ships its own course.yml without a limit, an empty "ledger" and a forged record
    (pr / "course.yml").write_text((TOY / "course.yml").read_text())
    forged = pr / "ledger" / "vecops" / "octo"
    forged.mkdir(parents=True)
    (pr / "assignments" / "vecops" / "hidden-feedback").mkdir()
    third = run_ci(course, pr, ledger, BEFORE + dt.timedelta(minutes=5), tmp_path / "o3")
    assert third.hidden_feedback == "withheld"
    for inside in (pr / "ledger", pr / "assignments" / "vecops" / "hidden-feedback"):
        result = CliRunner().invoke(main, ["ci", "--course", str(course.file), "--assignment", "vecops",
                                           "--submission", str(pr / "assignments" / "vecops"), "--out",
                                           str(tmp_path / "o9"), "--ci-ledger", str(inside)])
        assert result.exit_code == 2 and "inside the submission's work tree" in said(result), result.output


def test_without_a_record_of_runs_hidden_feedback_is_withheld(ci_course, tmp_path):
    course, pr, _ = ci_course
    rep = ci.grade_tree(course, "vecops", pr / "assignments" / "vecops", out=tmp_path / "o", student="octo",
                        now=BEFORE)
    assert rep.hidden_feedback == "withheld" and "no record of earlier runs to count (--ci-ledger)" in \
        (tmp_path / "o" / "summary.md").read_text()


def test_a_withheld_score_is_not_judged_by_fail_under(ci_course, tmp_path):
    course, pr, ledger = ci_course
    text = course.file.read_text().replace("2026-10-01T23:59", "2099-10-01T23:59")    # runs now, before the due date
    course.file.write_text(text)
    args = ["ci", "--course", str(course.file), "--assignment", "vecops", "--submission",
            str(pr / "assignments" / "vecops"), "--ci-ledger", str(ledger), "--fail-under", "9"]
    runs = [CliRunner().invoke(main, [*args, "--out", str(tmp_path / f"o{i}")]) for i in range(3)]
    assert [r.exit_code for r in runs] == [1, 1, 0]             # 6 < 9 while the score shows; then not judged
    assert "Required: 9 points (not judged while the score is not shown)." in (tmp_path / "o2" / "summary.md").read_text()
    assert "not shown yet (public tests: 1 / 3) points" in said(runs[2]) and "hidden tests: hidden-test feedback " \
        "is limited to 2 run(s) per day" in said(runs[2])


def test_gradescope_counts_from_its_own_submission_history(ci_course, tmp_path):
    course, pr, _ = ci_course
    meta = tmp_path / "submission_metadata.json"
    shown = {"results": {"extra_data": {"hidden_feedback": "shown"}}}
    meta.write_text(json.dumps({"previous_submissions": [
        {"submission_time": (BEFORE - dt.timedelta(hours=2)).isoformat(), **shown},
        {"submission_time": (BEFORE - dt.timedelta(hours=30)).isoformat(), **shown},      # outside the day
        {"submission_time": (BEFORE - dt.timedelta(hours=1)).isoformat(), "results": {}}]}))
    rep = ci.grade_tree(course, "vecops", pr / "assignments" / "vecops", out=tmp_path / "a", student="gradescope",
                        now=BEFORE, gradescope_metadata=meta)
    assert rep.hidden_feedback == "shown"
    data = json.loads(meta.read_text())
    data["previous_submissions"].append({"submission_time": (BEFORE - dt.timedelta(minutes=5)).isoformat(), **shown})
    meta.write_text(json.dumps(data))
    rep = ci.grade_tree(course, "vecops", pr / "assignments" / "vecops", out=tmp_path / "b", student="gradescope",
                        now=BEFORE, gradescope_metadata=meta)
    assert rep.hidden_feedback == "withheld"


# ------------------------------------------------------------------ end to end: the real sandbox, the CLI

@pytest.mark.slow
def test_course_ci_in_the_sandbox_shows_the_level_and_records_the_run(toy, tmp_path):
    ok, why = strong_isolation_available()
    if not ok:
        pytest.skip(f"course ci grades with --require-isolation: {why}")
    _visibility_course(toy, "total", "names", "    hidden_feedback_limit: {count: 1, per: week}\n")
    (toy / "course.yml").write_text((toy / "course.yml").read_text().replace("2026-10-01T23:59", "2099-10-01T23:59"))
    sol = (TOY / "solutions" / "vecops" / "vecops.py").read_text()
    work = tmp_path / "work" / "vecops"
    work.mkdir(parents=True)
    (work / "vecops.py").write_text(sol.replace("return (a * b).sum()", "return (a * b).sum() + 0.5"))
    args = ["ci", "--course", str(toy / "course.yml"), "--assignment", "vecops", "--submission", str(work),
            "--ci-ledger", str(tmp_path / "ledger"), "--require-isolation", "--student", "octo"]
    first = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "o1")])
    assert first.exit_code == 0, first.output
    summary = (tmp_path / "o1" / "summary.md").read_text()
    assert "Hidden tests are shown as their total points only." in summary and "test_hidden_vecops" not in summary
    assert "| hidden |" in summary and "test_hidden_vecops" not in (tmp_path / "o1" / "results.json").read_text()
    [record] = (tmp_path / "ledger" / "vecops" / "octo").glob("*.json")
    assert json.loads(record.read_text())["score"] == 5.0      # bob's partial solution: 5 of 10 (1 pending)
    assert "not shown yet" not in said(first)


# ------------------------------------------------------------------ grade.yml keeps the record in a private repository

def _git(repo: Path, *args: str) -> str:
    import subprocess
    env = {**__import__("os").environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


def test_grade_yml_counts_in_the_record_repository_and_saves_each_run_there(tmp_path):
    import os
    import subprocess
    import yaml
    wf = yaml.safe_load(ci.render_workflow("grade.yml", course_repo="t/course", ledger_repo="t/ledger"))
    assert wf["env"]["LEDGER_REPO"] == "t/ledger"
    steps = [s for job in wf["jobs"].values() for s in job["steps"]]
    [grade_step] = [s for s in steps if s.get("id") == "grade"]
    [save] = [s for s in steps if "LEDGER_KEY" in s.get("env", {})]
    ws = tmp_path / "ws"
    shutil.copytree(TOY, ws / "instructor")
    pr = ws / "pr"
    shutil.copytree(TOY / "assignments" / "vecops", pr / "assignments" / "vecops")
    _git(pr, "init", "-q", "-b", "main")
    _git(pr, "add", "-A")
    _git(pr, "commit", "-q", "-m", "kit")
    base = _git(pr, "rev-parse", "HEAD")
    (pr / "assignments" / "vecops" / "vecops.py").write_text("x = 1\n")
    _git(pr, "commit", "-qam", "work")
    remote, seed = tmp_path / "ledger.git", tmp_path / "seed"
    _git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    _git(tmp_path, "clone", "-q", str(remote), str(seed))
    (seed / "README.md").write_text("graded runs\n")
    _git(seed, "add", "-A")
    _git(seed, "commit", "-qm", "start")
    _git(seed, "push", "-q", "origin", "main")
    _git(tmp_path, "clone", "-q", str(remote), str(ws / "ledger"))      # what the checkout step leaves
    bin_dir = ws / "bin"
    bin_dir.mkdir()
    (bin_dir / "sudo").write_text('#!/bin/sh\nwhile [ "${1#-}" != "$1" ]; do shift; done\nexec "$@"\n')
    # a stand-in for course ci: says how it was called, writes its results and a run into --ci-ledger
    (bin_dir / "course").write_text('#!/bin/bash\necho "$@" >> "$PWD/calls.txt"\nout=; rec=\n'
                                    'while [ $# -gt 0 ]; do case "$1" in --out) out=$2;; --ci-ledger) rec=$2;; esac; '
                                    'shift; done\nmkdir -p "$out" "$rec/vecops/octo"\necho "{}" > "$out/results.json"\n'
                                    'echo "{}" > "$rec/vecops/octo/run-1.json"\n')
    for name in ("sudo", "course"):
        (bin_dir / name).chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path), "BASE_SHA": base, "STUDENT": "octo",
           "SUBMITTED_AT": "2026-10-01T10:00:00Z", "GITHUB_STEP_SUMMARY": str(ws / "summary.md")}
    run = lambda step, extra: subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
                                             cwd=ws, env={**env, **extra}, capture_output=True, text=True, timeout=120)
    graded = run(grade_step, {})
    assert graded.returncode == 0, graded.stdout + graded.stderr
    assert "--ci-ledger ledger/runs" in (ws / "calls.txt").read_text()
    saved = run(save, {"LEDGER_KEY": "not-a-real-key", "LEDGER_REPO": "t/ledger", "GITHUB_RUN_ID": "42"})
    assert saved.returncode == 0, saved.stdout + saved.stderr
    assert "runs/vecops/octo/run-1.json" in _git(remote, "log", "--name-only", "--format=%s", "main")
    assert "graded runs of workflow run 42" in _git(remote, "log", "-1", "--format=%s", "main")


def test_init_ci_takes_a_record_repository(tmp_path):
    from course.cli import main as cli_main
    result = CliRunner().invoke(cli_main, ["init-ci", "--into", str(tmp_path), "--course-repo", "t/c",
                                           "--ledger-repo", "t/records"])
    assert result.exit_code == 0, result.output
    assert 'LEDGER_REPO: "t/records"' in (tmp_path / ".github" / "workflows" / "grade.yml").read_text()
    bad = CliRunner().invoke(cli_main, ["init-ci", "--into", str(tmp_path), "--course-repo", "t/c", "--force",
                                        "--ledger-repo", "not a repo"])
    assert bad.exit_code == 2 and "--ledger-repo 'not a repo': expected OWNER/NAME" in said(bad)


def test_the_gradescope_autograder_keeps_the_level_and_the_limit(toy, tmp_path):
    import zipfile
    from course import config
    _visibility_course(toy, "tasks", "names", "    hidden_feedback_limit: {count: 3, per: day}\n")
    result = CliRunner().invoke(main, ["gradescope", "build", "vecops", "-o", str(tmp_path / "ag.zip"),
                                       "--course", str(toy / "course.yml")])
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(tmp_path / "ag.zip") as zf:
        (tmp_path / "course.yml").write_bytes(zf.read("course/course.yml"))
        run = zf.read("run_autograder").decode()
    a = config.load(tmp_path / "course.yml").assignment("vecops")
    assert (a.hidden_feedback, a.after_due, a.hidden_feedback_limit.count, a.hidden_feedback_limit.per) == \
        ("tasks", "names", 3, 86400.0)
    assert '--gradescope-metadata "$root/submission_metadata.json"' in run

"""course validate's test-strength checks (course/validation/) on the toy course.

Fast tests cover mutant generation and ids, sampling, mutants.yml parsing, the slow variant and
config keys without grading. Three slow tests grade: the toy course with every check (alternatives,
hand-written bugs, misconceptions, mutants, determinism under load), a copy of it broken in every
way a check must name, and one file collected for six students and graded with --jobs 2.
"""

from __future__ import annotations

import builtins
import shutil
import textwrap
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from course import api, cli, config
from course.cli import main
from course.errors import ConfigError, CourseError
from course.grading import static
from course.grading.results import TestResult
from course.grading.runner import GraderSpec, Job, JobResult, grader_version
from course.validation import Options, determinism, kill, mutants, variants

from conftest import TOY

SOLUTION = TOY / "solutions" / "vecops" / "vecops.py"
HIDDEN = TOY / "graders" / "vecops"


# ------------------------------------------------------------------ mutants (no grading)

def test_mutants_come_only_from_solution_regions_with_readable_diffs():
    found = mutants.mutate_source(SOLUTION.read_text(), "vecops.py")
    assert {m.function for m in found} == {"dot", "normalize", "Accumulator.add"}
    assert {m.task for m in found} == {"1.1", "1.2", "2.1"}
    assert all(m.id.startswith("vecops.") for m in found)
    assert len({m.id for m in found}) == len(found) == len({m.code for m in found})
    by_op = {(m.function, m.operator): m for m in found}
    assert "-    return (a * b).sum()\n+    return (a / b).sum()" in by_op[("dot", "swap_operator")].diff
    assert "+        self.total = v" in by_op[("Accumulator.add", "augmented_to_plain")].diff
    for m in found:    # every mutant compiles, and nothing outside the regions (eps=1e-12, docstrings) changes
        compile(m.code, "vecops.py", "exec")
        assert m.code.split("# Task 1.2")[1].split("\n")[1] == SOLUTION.read_text().split("# Task 1.2")[1].split("\n")[1]


def test_mutant_ids_survive_moved_lines_but_not_an_edited_line():
    text = SOLUTION.read_text()
    before = {m.id for m in mutants.mutate_source(text, "vecops.py")}
    moved = text.replace('"""Vector operations', '# a comment\n\n\n"""Vector operations', 1)
    assert {m.id for m in mutants.mutate_source(moved, "vecops.py")} == before
    edited = text.replace("return a / norm", "return a / norm  # scaled")
    after = {m.id for m in mutants.mutate_source(edited, "vecops.py")}
    assert "vecops.normalize:db978b80" in before and "vecops.normalize:db978b80" not in after
    assert len(after & before) == len(before) - 1


def test_dropping_a_keyword_argument_is_one_operator_and_never_none():
    text = textwrap.dedent('''\
        import torch

        # Task 1.1
        def f(x, device=None):
            # BEGIN SOLUTION
            return torch.zeros(3, dtype=torch.float64, device=device).sum(dim=-1)
            # END SOLUTION
        ''')
    dropped = [m for m in mutants.mutate_source(text, "m.py") if m.operator == "drop_keyword_argument"]
    lines = sorted(m.code.split("\n")[5].strip() for m in dropped)
    assert lines == sorted(["return torch.zeros(3, dtype=torch.float64, device=device).sum()",
                            "return torch.zeros(3, dtype=torch.float64).sum(dim=-1)",
                            "return torch.zeros(3, device=device).sum(dim=-1)"])
    assert not any("None" in m.code.split("\n")[5] for m in mutants.mutate_source(text, "m.py"))


def test_error_messages_are_not_mutated():
    text = textwrap.dedent('''\
        # Task 1.1
        def f(x):
            # BEGIN SOLUTION
            if x < 0:
                raise ValueError("x must be >= 0")
            return "ok"
            # END SOLUTION
        ''')
    strings = [m for m in mutants.mutate_source(text, "m.py") if m.operator == "string"]
    assert strings and all("x must be >= 0" in m.code for m in strings)


def test_sample_is_stable_spread_over_tasks_and_keeps_equivalents():
    found = [mutants.Mutant(f"m.f{t}:{i:08x}", "m.py", f"f{t}", t, "number", 1, f"code {t} {i}", "")
             for t in ("1.1", "1.2", "2.1") for i in range(10)]
    picked = mutants.sample(found, 6)
    assert {m.id for m in picked} == {m.id for m in mutants.sample(list(reversed(found)), 6)}
    assert sorted(m.task for m in picked) == ["1.1", "1.1", "1.2", "1.2", "2.1", "2.1"]
    keep = next(m.id for m in found if m not in picked)
    assert keep in {m.id for m in mutants.sample(found, 6, {keep})}
    assert mutants.sample(found, 0) == found


def test_missing_mutation_tool_names_the_package(monkeypatch, toy):
    real_import = builtins.__import__

    def no_mutmut(name, *args, **kwargs):
        if name.startswith("mutmut"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_mutmut)
    with pytest.raises(CourseError, match="'mutmut'.*pip install"):
        api.validate(api.load_course(toy / "course.yml"), options=Options(mutants=True))
    result = CliRunner().invoke(main, ["validate", "--course", str(toy / "course.yml"), "--mutants"])
    assert result.exit_code == 2 and "mutmut" in result.output


# ------------------------------------------------------------------ graders/<slug> files (no grading)

def test_mutants_yml_problems_name_the_entry_and_key(tmp_path):
    (tmp_path / "mutants.yml").write_text(yaml.safe_dump({
        "bugs": [{"what": "ok", "old": "a", "new": "b"}, {"what": "no old", "new": "b"},
                 {"what": "bad file", "file": "../x.py", "old": "a", "new": "b"}, "just text",
                 {"what": "typo", "old": "a", "new": "b", "neww": "c"}],
        "equivalent": [{"id": "m.f:1", "why": "same"}, {"id": "m.f:1", "why": "again"}, {"id": "m.f:2"}],
        "survivors": []}))
    mf = variants.load_mutants_file(tmp_path)
    assert [b.what for b in mf.bugs] == ["ok", "typo"]
    text = "\n".join(mf.problems)
    for expected in ("survivors: unknown key", "bugs[1].old is missing", "bugs[2].file: '../x.py'",
                     "bugs[3]: 'just text' must be a mapping", "bugs[4]: unknown key(s) neww",
                     "equivalent[1]: mutant 'm.f:1' is listed twice", "equivalent[2]: mutant 'm.f:2' needs a why"):
        assert expected in text, (expected, text)
    (tmp_path / "mutants.yml").write_text("bugs: [\n")
    assert "not valid YAML" in variants.load_mutants_file(tmp_path).problems[0]


def test_a_bug_applies_once_knows_its_task_and_goes_stale():
    sol = TOY / "solutions" / "vecops"
    bug = variants.Bug("keeps last", "self.total += v", "self.total = v")
    name, text = variants.apply_bug(sol, bug)
    assert name == "vecops.py" and "self.total = v\n" in text and "+=" not in text.split("def add")[1][:80]
    assert variants.bug_task(sol, bug) == "2.1"
    stale = variants.apply_bug(sol, variants.Bug("gone", "return a / norm2", "x"))
    assert isinstance(stale, str) and "no longer in vecops.py" in stale
    assert "not a module" in variants.apply_bug(sol, variants.Bug("w", "a", "b", file="nope.py"))


def test_alternatives_must_replace_solution_modules(tmp_path):
    (tmp_path / "alternatives" / "typo").mkdir(parents=True)
    (tmp_path / "alternatives" / "typo" / "vecop.py").write_text("")
    (tmp_path / "alternatives" / "empty").mkdir()
    shutil.copytree(HIDDEN / "alternatives" / "loops", tmp_path / "alternatives" / "loops")
    found, problems = variants.alternatives(tmp_path, TOY / "solutions" / "vecops")
    assert list(found) == ["loops"]
    assert any("vecop.py replace(s) no module" in p for p in problems)
    assert any("empty: holds no module file" in p for p in problems)


def test_catalogue_import_errors_are_problems(tmp_path):
    (tmp_path / "misconceptions.py").write_text("import nonexistent_module_xyz\n")
    assert "importing it failed: ModuleNotFoundError" in variants.load_catalogue(tmp_path).problems[0]
    (tmp_path / "misconceptions.py").write_text("X = 1\n")
    assert "defines no CATALOGUE" in variants.load_catalogue(tmp_path).problems[0]
    assert variants.load_catalogue(tmp_path / "absent") is None
    assert set(variants.load_catalogue(HIDDEN).entries) == {"not_summed", "keeps_last_vector"}


def test_validation_only_files_do_not_change_the_grader_version(toy):
    course = api.load_course(toy / "course.yml")
    a = course.assignment("vecops")

    def version() -> str:
        return grader_version(toy, "vecops", course.paths.graders, course.paths.assignments, a, course.paths.solutions)
    before = version()
    (toy / "graders" / "vecops" / "mutants.yml").write_text("bugs: []\n")
    (toy / "graders" / "vecops" / "alternatives" / "loops" / "vecops.py").write_text("# changed\n")
    assert version() == before
    (toy / "graders" / "vecops" / "misconceptions.py").write_text("CATALOGUE = {}\n")   # feedback depends on it
    assert version() != before


def test_min_mutant_kill_and_max_mutants_config(toy):
    path = toy / "course.yml"
    text = path.read_text()
    path.write_text("min_mutant_kill: 95%\nmax_mutants: 12\n" + text.replace(
        "    points: 10\n", "    points: 10\n    min_mutant_kill: 0.8\n"))
    a = config.load(path).assignment("vecops")
    assert (a.min_mutant_kill, a.max_mutants) == (0.8, 12)
    path.write_text("min_mutant_kill: 95%\n" + text)
    assert config.load(path).assignment("vecops").min_mutant_kill == 0.95
    for bad, why in (("min_mutant_kill: 1.5", "must lie between 0 and 1"), ("min_mutant_kill: lots", "not a fraction"),
                     ("max_mutants: -1", "whole number")):
        path.write_text(bad + "\n" + text)
        with pytest.raises(ConfigError, match=f"course.yml: {bad.split(':')[0]}: .*{why}"):
            config.load(path)


# ------------------------------------------------------------------ verdicts (no grading)

def _result(outcomes: dict[str, str], ok: bool = True, detail: str = "") -> JobResult:
    spec = GraderSpec("vecops", TOY, HIDDEN, TOY, config.Limits(), "v")
    rows = [TestResult(f"hidden:{n}", n, "1.1", True, o, 1.0 if o == "passed" else 0.0, 1.0, detail=detail)
            for n, o in outcomes.items()]
    return JobResult(Job("k", spec, TOY), ok, rows, message="" if ok else "the judge process ended without results")


def test_a_variant_is_killed_only_by_a_test_the_solution_passes():
    passed = {"a", "b"}
    assert kill.verdict_of(_result({"a": "passed", "b": "passed", "c": "failed"}), passed) is None
    v = kill.verdict_of(_result({"a": "passed", "b": "timeout"}), passed)
    assert (v.killed, v.by, v.how) == (True, "b", "timeout")
    assert kill.verdict_of(_result({"a": "error", "b": "error"}, detail=kill.NOT_RUN), passed) is None
    judge = kill.verdict_of(_result({}, ok=False), passed)
    assert judge.killed and judge.how == "judge" and "without results" in judge.by


def test_determinism_judge_names_the_test_that_varies():
    same = determinism.judge("vecops", 2, {"solution": [_result({"a": "passed"})] * 2,
                                           "slow variant": [_result({"a": "passed"})] * 2})
    assert same.ok and same.scores == {"solution": [1.0, 1.0], "slow variant": [1.0, 1.0]}
    flip = determinism.judge("vecops", 2, {"solution": [_result({"a": "passed"}), _result({"a": "failed"})],
                                           "slow variant": [_result({"a": "passed"})] * 2})
    assert not flip.ok and flip.varying == {"a": ["solution: passed", "solution: failed", "slow variant: passed",
                                                  "slow variant: passed"]}


def test_slow_variant_adds_vectorised_work_and_no_python_loop(tmp_path):
    slow = determinism.slow_source(SOLUTION.read_text(), "vecops.py")
    assert slow.count("torch.ones(256, 256) @ torch.ones(256, 256)") == 5     # one per solution region
    compile(slow, "vecops.py", "exec")
    (tmp_path / "vecops.py").write_text(slow)
    index = static.SourceIndex(tmp_path)
    assert static.python_loops(index, "vecops.dot") == []
    plain = determinism.slow_source("# Task 1.1\ndef f():\n    # BEGIN SOLUTION\n    return 1\n    # END SOLUTION\n")
    assert "sum(range(" in plain


# ------------------------------------------------------------------ graded end to end (slow)

@pytest.fixture(scope="module")
def toy_reports(tmp_path_factory):
    # a copy: validate records the reference timings in the course's gradebook
    course_dir = tmp_path_factory.mktemp("validate") / "toycourse"
    shutil.copytree(TOY, course_dir, ignore=shutil.ignore_patterns("__pycache__"))
    course = api.load_course(course_dir / "course.yml")
    messages: list[str] = []
    [rep] = api.validate(course, ["vecops"], jobs=2, on_progress=messages.append,
                         options=Options(mutants=True, determinism=2))
    return rep, messages


@pytest.mark.slow
def test_toy_course_passes_every_check(toy_reports):
    rep, messages = toy_reports
    checks = {name: (ok, detail) for name, ok, detail in rep.checks}
    assert rep.ok, [c for c in rep.checks if not c[1]]
    # bugs[2] makes the same file as the misconception keeps_last_vector: graded once, judged twice
    assert any("3 bugs (1 judged from their misconception's grading)" in m for m in messages), messages[:3]
    assert not any("vecops/bug/2#" in m for m in messages)
    assert checks["alternative implementations score full marks"] == (True, "2 style(s): functional, loops")
    assert checks["hand-written bugs lose points"] == (True, "3 caught")
    assert checks["misconceptions are proven (grade drops, diagnosed by that name only)"] == (True, "2 proven")
    assert checks["mutant kill rate at least 90%"][1].startswith("100%: 4 of 4 killed, 1 equivalent")
    m = rep.mutation
    assert (m.generated, m.killed, m.equivalent, m.survivors, m.stale) == (5, 4, 1, [], [])
    assert {o.mutant.id: o.equivalent is not None for o in m.outcomes}["vecops.normalize:45820a1c"]
    assert [r["task"] for r in m.per_task()] == ["1.1", "1.2", "2.1"]
    assert all(o.by for o in m.outcomes if o.killed)       # each kill names the test that lost points
    d = rep.determinism
    assert d.ok and d.burners >= 2 and d.scores == {"solution": [9.0, 9.0], "slow variant": [9.0, 9.0]}


def _break(course_dir: Path) -> None:
    """Every way a test-strength check must fail, in one copy of the toy course."""
    hidden = course_dir / "graders" / "vecops"
    yml = course_dir / "course.yml"
    yml.write_text(yml.read_text().replace("    points: 10\n", "    points: 10\n    min_mutant_kill: 100%\n"))
    (hidden / "mutants.yml").write_text(yaml.safe_dump({
        "bugs": [
            {"what": "dot sums in the other order", "old": "return (a * b).sum()", "new": "return (b * a).sum()"},
            {"what": "an old bug", "old": "return a / norm2", "new": "return a"},
            {"what": "dot hangs", "old": "return (a * b).sum()", "new": "while True:\n        pass"},
            {"what": "dot kills the worker", "old": "return (a * b).sum()", "new": "import os\n    os._exit(3)"},
        ],
        "equivalent": [{"id": "vecops.dot:00000000", "why": "an old judgement"}]}))
    wrong = hidden / "alternatives" / "off_by_a_bit"
    wrong.mkdir()
    (wrong / "vecops.py").write_text(SOLUTION.read_text().replace("return (a * b).sum()", "return (a * b).sum() + 1e-3"))
    (hidden / "alternatives" / "typo").mkdir()
    (hidden / "alternatives" / "typo" / "vecop.py").write_text("")
    (hidden / "misconceptions.py").write_text(textwrap.dedent('''\
        from course.grading.diagnose import Misconception
        CATALOGUE = {
            "not_summed": Misconception("Sum the element-wise products.", task="1.1",
                                        bug={"old": "return (a * b).sum()", "new": "return a * b"}),
            "wrong_label": Misconception("Also the element-wise products.", task="1.1",
                                         bug={"old": "return (a * b).sum()", "new": "return a * b"}),
            "templated": Misconception("Your {value} is off.", task="2.1",
                                       bug={"old": "self.total += v", "new": "self.total = v.clone()"}),
            "stale_one": Misconception("Gone.", task="1.2", bug={"old": "return a / norm2", "new": "x"}),
            "unproven": Misconception("No bug given.", task="1.2"),
        }
        '''))
    test = hidden / "test_hidden_vecops.py"
    test.write_text(test.read_text().replace('variants={"not_summed": lambda: a * b}',
                                             'variants={"not_summed": lambda: a * b, "wrong_label": lambda: a * b}'))


@pytest.mark.slow
def test_every_failure_is_named(toy, monkeypatch):
    _break(toy)
    monkeypatch.setattr(cli.console, "width", 2000)     # table cells unwrapped, for the asserts below
    result = CliRunner().invoke(main, ["validate", "--course", str(toy / "course.yml"), "--mutants", "--jobs", "2"],
                                catch_exceptions=False)
    out = result.output
    assert result.exit_code == 1, out
    for expected in (
            "keeps full marks: dot sums in the other order",
            "stale: bugs[1] (an old bug): its old text 'return a / norm2' is no longer in vecops.py",
            "off_by_a_bit: 5/10, fails test_vecops.py::test_dot_small, test_hidden_vecops.py::test_dot_matches_torch[1]",
            "vecop.py replace(s) no module of vecops",
            "not_summed: also diagnosed as wrong_label", "wrong_label: also diagnosed as not_summed",
            "templated: its text looks like a template", "stale_one: its bug is stale",
            "unproven: has no bug", "80%: 4 of 5 killed",
            "survivor vecops.normalize:45820a1c (task 1.2, swap_operator)", "+    if norm <= eps:",
            "stale equivalent entry vecops.dot:00000000: no mutant has this id any more",
            "mutant kill rate per assignment: vecops 80%"):
        assert expected in out, (expected, out)
    assert "dot hangs" not in out and "dot kills the worker" not in out    # both lose points: caught


@pytest.mark.slow
def test_six_students_with_one_file_get_six_equal_grades(toy, tmp_path):
    """Issue 13 item 2: the same bytes get the same grade, six times over, with --jobs 2."""
    course = api.load_course(toy / "course.yml")
    students = [f"s{i}" for i in range(6)]
    for s in students:
        (tmp_path / "class" / s).mkdir(parents=True)
        shutil.copyfile(SOLUTION, tmp_path / "class" / s / "vecops.py")
    collected = api.collect(course, tmp_path / "class", "vecops", submitted_at="2026-10-01T12:00:00+00:00")
    assert sorted(i.student for i in collected.items if i.status == "collected") == students
    rep = api.grade(course, ["vecops"], jobs=2)
    assert sorted(r.student for r in rep.rows if r.status == "graded") == students
    with api.open_gradebook(course) as gb:
        seen = []
        for sub in gb.submissions(["vecops"]):
            g = gb.current_grading(sub.id)
            seen.append((g.points, g.pending, tuple((r.name, r.outcome, r.points) for r in gb.results(g.id))))
    assert len(seen) == 6 and len(set(seen)) == 1, seen
    assert seen[0][0] == 9.0 and seen[0][1] == 1


def test_a_bug_may_target_a_solution_notebook_but_nothing_else():
    problems: list[str] = []
    bug = variants.parse_bug({"what": "w", "file": "activity.ipynb", "old": "a", "new": "b"}, "bugs[0]", problems)
    assert bug is not None and bug.file == "activity.ipynb" and problems == []
    for bad in ("notes.txt", "../domain.py", "sub/domain.py"):
        problems = []
        assert variants.parse_bug({"what": "w", "file": bad, "old": "a", "new": "b"}, "bugs[1]", problems) is None
        assert problems and problems[0].startswith("bugs[1].file:")

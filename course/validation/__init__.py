"""The checks of `course validate` beyond "solution full marks, stub 0": test strength and fairness.

* **alternatives** (graders/<slug>/alternatives/<style>/): other correct implementations must
  score full marks (pending GPU points count as full): the hidden tests are fair;
* **hand-written bugs** (graders/<slug>/mutants.yml ``bugs:``): each must lose points;
* **misconceptions** (graders/<slug>/misconceptions.py): each catalogue entry's bug must lose
  points and be diagnosed by that name and no other catalogue name; texts pass the lint;
* **mutants** (``--mutants``): automated mutants of the solution regions (:mod:`.mutants`) must
  be killed at a rate of at least ``min_mutant_kill``; survivors are listed with their diff
  unless graders/<slug>/mutants.yml marks them ``equivalent``;
* **determinism** (``--determinism N``): the solution and a slow variant, graded N times each on a
  loaded machine, give every test the same outcome (:mod:`.determinism`).

Everything is graded by the project's own judge through the one executor (one sandbox fork
server) that graded the solution, ``jobs`` at a time. :func:`run` adds its findings to the
validation reports as checks; the mutation and determinism reports hang off them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from course import stubs
from course.config import Course
from course.grading.runner import Job, JobResult
from course.validation import determinism as det
from course.validation import kill, mutants as mut, variants as var


@dataclass(frozen=True)
class Options:
    variants: bool = True            # alternatives, hand-written bugs, misconceptions
    mutants: bool = False
    max_mutants: int | None = None   # None: course.yml's max_mutants for each assignment
    determinism: int = 0             # gradings of the solution and of its slow variant (0: off)

    @property
    def any(self) -> bool:
        return self.variants or self.mutants or self.determinism > 0


def preflight(options: Options | None) -> None:
    """Fail before any grading when a requested check cannot run (the mutation tool is missing)."""
    if options is not None and options.mutants:
        mut.require_tool()


@dataclass
class MutantOutcome:
    mutant: mut.Mutant
    killed: bool
    by: str = ""                     # the test that lost points (or why the judge failed)
    how: str = ""                    # failed | error | timeout | judge
    equivalent: str | None = None    # the instructor's reason, for a survivor marked equivalent


@dataclass
class MutationReport:
    slug: str
    generated: int
    min_kill: float
    outcomes: list[MutantOutcome] = field(default_factory=list)
    stale: list[tuple[str, str]] = field(default_factory=list)     # (equivalent id, why it is stale)
    judge_seconds: float = 0.0
    untested: dict[str, int] = field(default_factory=dict)          # task -> mutants not graded (GPU-only task)

    @property
    def killed(self) -> int:
        return sum(o.killed for o in self.outcomes)

    @property
    def equivalent(self) -> int:
        return sum(o.equivalent is not None for o in self.outcomes)

    @property
    def survivors(self) -> list[MutantOutcome]:
        return [o for o in self.outcomes if not o.killed and o.equivalent is None]

    @property
    def kill_rate(self) -> float:
        counted = len(self.outcomes) - self.equivalent
        return self.killed / counted if counted else 1.0

    def per_task(self) -> list[dict[str, Any]]:
        rows: dict[str, dict[str, Any]] = {}
        for o in self.outcomes:
            row = rows.setdefault(o.mutant.task, {"task": o.mutant.task, "mutants": 0, "killed": 0,
                                                  "equivalent": 0, "survived": 0})
            row["mutants"] += 1
            row["killed"] += o.killed
            row["equivalent"] += o.equivalent is not None
            row["survived"] += not o.killed and o.equivalent is None
        return [rows[t] for t in sorted(rows, key=mut._task_key)]


@dataclass
class _Plan:
    """What one assignment contributes to the run, and what to judge afterwards."""

    slug: str
    baseline: kill.Baseline
    alternatives: dict[str, str] = field(default_factory=dict)       # job key -> style
    bugs: dict[str, var.Bug] = field(default_factory=dict)           # candidate key -> bug
    stale_bugs: list[str] = field(default_factory=list)
    catalogue: var.Catalogue | None = None
    misconceptions: dict[str, str] = field(default_factory=dict)     # job key -> name
    misconception_problems: list[str] = field(default_factory=list)
    same_as: dict[str, str] = field(default_factory=dict)            # bug key -> the misconception job
    mutants_file: var.MutantsFile | None = None
    mutants: dict[str, mut.Mutant] = field(default_factory=dict)     # candidate key -> mutant
    generated: int = 0
    alternative_problems: list[str] = field(default_factory=list)
    report: MutationReport | None = None
    untested: list[mut.Mutant] = field(default_factory=list)


class Checks(list):
    """(check, ok, detail) rows of one assignment, in the order they were added."""

    def add(self, name: str, ok: bool, detail: str = "") -> None:
        self.append((name, ok, detail))


def run(course: Course, reports: dict[str, Any], solutions: dict[str, JobResult], executor: Any,
        options: Options, tmp: Path, on_progress: Callable[[str], None] | None = None) -> dict[str, Checks]:
    """Grade every variant the options ask for with ``executor``; return the checks per assignment.

    ``solutions`` holds each assignment's graded solution (the baseline a variant is compared
    with); assignments whose solution could not be graded are skipped with a failed check. The
    mutation and determinism reports are set on ``reports[slug]`` (``.mutation``, ``.determinism``).
    """
    say = on_progress or (lambda _m: None)
    checks = {slug: Checks() for slug in reports}
    plans: dict[str, _Plan] = {}
    candidates: list[kill.Candidate] = []
    extra: list[Job] = []
    for slug, rep in reports.items():
        sol = solutions.get(slug)
        if sol is None or not sol.ok:
            if sol is not None:
                checks[slug].add("test-strength checks ran", False, "skipped: the solution could not be graded")
            continue
        plan = plans[slug] = _Plan(slug, kill.Baseline.of(sol))
        base = var.pristine(course, slug, tmp / slug / "variants" / "pristine")
        _plan_assignment(course, plan, sol.job.spec, base, options, candidates, extra)
    count = len(candidates) + len(extra)
    if count:
        say(f"grading {count} variant(s) of {len(plans)} assignment(s): "
            + ", ".join(f"{s}: {len(p.mutants)} mutants, {len(p.bugs)} bugs"
                        + (f" ({len(p.same_as)} judged from their misconception's grading)" if p.same_as else "")
                        + f", {len(p.alternatives)} alternatives, {len(p.misconceptions)} misconceptions"
                        for s, p in plans.items()))
    done = [0]

    def grade(jobs: list[Job]) -> list[JobResult]:
        def progress(r: JobResult) -> None:
            done[0] += 1
            say(f"[{done[0]}] {r.job.key}: {r.points:g}/{r.max_points:g} in {r.duration:.1f} s"
                + ("" if r.ok else f" ({r.message})"))
        return executor.run(jobs, on_done=progress)

    verdicts, extra_results = kill.run_phases(grade, candidates, {s: p.baseline for s, p in plans.items()}, extra) \
        if count else ({}, [])
    by_key = {r.job.key: r for r in extra_results}
    for slug, plan in plans.items():
        _judge_assignment(course, checks[slug], plan, verdicts, by_key, options)
        if plan.report is not None:
            reports[slug].mutation = plan.report
    if options.determinism > 0:
        for slug, report in _determinism(course, plans, solutions, options.determinism, tmp, executor, say).items():
            reports[slug].determinism = report
            checks[slug].add(*_determinism_check(report))
    return checks


# ------------------------------------------------------------------ planning

def _plan_assignment(course: Course, plan: _Plan, spec: Any, base: Path, options: Options,
                     candidates: list[kill.Candidate], extra: list[Job]) -> None:
    slug = plan.slug
    hidden, solutions = course.paths.graders / slug, course.paths.solutions / slug
    folders = _folders(base.parent)
    plan.mutants_file = var.load_mutants_file(hidden)
    if options.variants:
        styles, plan.alternative_problems = var.alternatives(hidden, solutions)
        for style, files in styles.items():
            key = f"{slug}/alternative/{style}"
            plan.alternatives[key] = style
            extra.append(Job(key, spec, var.variant_folder(base, next(folders), dict(files))))
        plan.catalogue = var.load_catalogue(hidden)
        graded: dict[tuple[str, str], str] = {}    # (file, text) -> the misconception job grading it in full
        if plan.catalogue is not None:
            graded = _plan_misconceptions(plan, spec, base, solutions, folders, extra)
        for i, bug in enumerate(plan.mutants_file.bugs):
            applied = var.apply_bug(solutions, bug)
            if isinstance(applied, str):
                plan.stale_bugs.append(f"bugs[{i}] ({bug.what}): {applied}")
                continue
            key = f"{slug}/bug/{i}"
            plan.bugs[key] = bug
            if applied in graded:                  # the same file as a misconception's: judged from that grading
                plan.same_as[key] = graded[applied]
                continue
            candidates.append(kill.Candidate(key, spec, var.variant_folder(base, next(folders), dict([applied])),
                                             var.bug_task(solutions, bug)))
    if options.mutants:
        generated = mut.generate(solutions)
        plan.generated = len(generated)
        pending = plan.baseline.pending_tasks      # their tests need a GPU: nothing here can kill these
        plan.untested = [m for m in generated if m.task in pending]
        limit = options.max_mutants if options.max_mutants is not None else course.assignment(slug).max_mutants
        keep = {e.id for e in plan.mutants_file.equivalent}
        for m in mut.sample([m for m in generated if m.task not in pending], limit, keep):
            key = f"{slug}/mutant/{m.id}"
            plan.mutants[key] = m
            candidates.append(kill.Candidate(key, spec, var.variant_folder(base, next(folders), {m.file: m.code}),
                                             m.task))


def _plan_misconceptions(plan: _Plan, spec: Any, base: Path, solutions: Path, folders: Any,
                         extra: list[Job]) -> dict[tuple[str, str], str]:
    """Plan one full grading per catalogue entry; return (file, text) -> its job key, so that a
    hand-written bug making the very same file is judged from that grading, not graded again."""
    from course.grading import diagnose
    graded: dict[tuple[str, str], str] = {}
    cat = plan.catalogue
    assert cat is not None
    problems = plan.misconception_problems
    problems.extend(cat.problems)
    for name, entry in cat.entries.items():
        if not isinstance(entry, diagnose.Misconception):
            problems.append(f"{name}: {type(entry).__name__} is not a Misconception")
            continue
        problems.extend(f"{name}: {p}" for p in diagnose.lint(name, entry))
        if not entry.bug:
            problems.append(f"{name}: has no bug (bug={{'old': ..., 'new': ...}}) to prove it with")
            continue
        raw = dict(entry.bug) if isinstance(entry.bug, dict) else entry.bug
        bug = var.parse_bug({"what": name, **raw} if isinstance(raw, dict) else raw, f"{name}.bug", problems)
        if bug is None:
            continue
        applied = var.apply_bug(solutions, bug)
        if isinstance(applied, str):
            problems.append(f"{name}: its bug is stale: {applied}")
            continue
        key = f"{plan.slug}/misconception/{name}"
        plan.misconceptions[key] = name
        graded.setdefault(applied, key)
        extra.append(Job(key, spec, var.variant_folder(base, next(folders), dict([applied]))))
    return graded


def _folders(root: Path) -> Iterator[Path]:
    i = 0
    while True:
        i += 1
        yield root / f"v{i:04d}"


# ------------------------------------------------------------------ judging

def _lost(result: JobResult, baseline: kill.Baseline) -> list[str]:
    passed = set(baseline.passed)
    return [r.name for r in result.results if r.name in passed and r.outcome != "passed"]


def _judge_assignment(course: Course, rep: Checks, plan: _Plan, verdicts: dict[str, kill.Verdict],
                      results: dict[str, JobResult], options: Options) -> None:
    slug = plan.slug
    hidden = course.paths.graders / slug
    mf = plan.mutants_file
    if mf is not None and mf.problems:
        rep.add("mutants.yml is well formed", False, "; ".join(mf.problems[:5]))
    if options.variants:
        _judge_alternatives(rep, plan, results, hidden)
        passed = set(plan.baseline.passed)
        for key, job in plan.same_as.items():
            full = results.get(job)
            verdicts[key] = (kill.verdict_of(full, passed) if full is not None else None) or kill.Verdict(False)
        kept = [plan.bugs[k].what for k in plan.bugs if not verdicts.get(k, kill.Verdict(False)).killed]
        problems = [f"keeps full marks: {w}" for w in kept] + [f"stale: {s}" for s in plan.stale_bugs]
        detail = "; ".join(problems[:8]) if problems else (
            f"{len(plan.bugs)} caught" if plan.bugs else f"none (add bugs: to {hidden / var.MUTANTS_FILE})")
        rep.add("hand-written bugs lose points", not problems, detail)
        _judge_misconceptions(rep, plan, results, hidden)
    if options.mutants:
        _judge_mutants(course, rep, plan, verdicts)


def _judge_alternatives(rep: Checks, plan: _Plan, results: dict[str, JobResult], hidden: Path) -> None:
    bad = list(plan.alternative_problems)
    for key, style in plan.alternatives.items():
        r = results.get(key)
        if r is None or not r.ok:
            bad.append(f"{style}: not graded ({r.message if r else 'no result'})")
            continue
        lost = [t.name for t in r.results if t.outcome not in ("passed", "pending")]
        if lost:
            bad.append(f"{style}: {r.points:g}/{r.max_points:g}, fails {', '.join(lost[:3])}"
                       + (f" and {len(lost) - 3} more" if len(lost) > 3 else ""))
    detail = "; ".join(bad[:6]) if bad else (
        f"{len(plan.alternatives)} style(s): {', '.join(plan.alternatives.values())}" if plan.alternatives
        else f"none (add {hidden / var.ALTERNATIVES}/<style>/<module>.py)")
    rep.add("alternative implementations score full marks", not bad, detail)


PROVEN = "misconceptions are proven (grade drops, diagnosed by that name only)"


def _judge_misconceptions(rep: Checks, plan: _Plan, results: dict[str, JobResult], hidden: Path) -> None:
    cat = plan.catalogue
    if cat is None:
        rep.add(PROVEN, True, f"none (add {hidden / var.MISCONCEPTIONS})")
        return
    lint = [p for p in plan.misconception_problems]
    proofs: list[str] = []
    names_in_catalogue = set(cat.entries)
    for key, name in plan.misconceptions.items():
        r = results.get(key)
        if r is None or not r.ok:
            proofs.append(f"{name}: not graded ({r.message if r else 'no result'})")
            continue
        if not _lost(r, plan.baseline):
            proofs.append(f"{name}: its bug keeps full marks")
            continue
        named: set[str] = set()
        texts_ok = True
        for t in r.results:
            these = {n for n in t.misconceptions.split(",") if n}
            named |= these
            if name in these and cat.entries[name].text not in t.diagnosis:
                texts_ok = False
        others = sorted((named & names_in_catalogue) - {name})
        if name not in named:
            proofs.append(f"{name}: not diagnosed (" + (f"diagnosed: {', '.join(sorted(named))}" if named
                                                         else "no diagnosis") + ")")
        elif others:
            proofs.append(f"{name}: also diagnosed as {', '.join(others)}")
        elif not texts_ok:
            proofs.append(f"{name}: the diagnosis shown is not the catalogue's text (does the test use CATALOGUE?)")
    bad = lint + proofs
    ok_detail = f"{len(plan.misconceptions)} proven" if plan.misconceptions else "the catalogue is empty"
    rep.add(PROVEN, not bad,
            "; ".join(bad[:12]) if bad else ok_detail)


def _judge_mutants(course: Course, rep: Checks, plan: _Plan, verdicts: dict[str, kill.Verdict]) -> None:
    a = course.assignment(plan.slug)
    mf = plan.mutants_file or var.MutantsFile(course.paths.graders / plan.slug / var.MUTANTS_FILE)
    equivalent = {e.id: e.why for e in mf.equivalent}
    report = MutationReport(plan.slug, plan.generated, a.min_mutant_kill)
    for m in plan.untested:
        report.untested[m.task] = report.untested.get(m.task, 0) + 1
    surviving: set[str] = set()
    killed_ids: set[str] = set()
    for key, m in plan.mutants.items():
        v = verdicts.get(key, kill.Verdict(False, "not graded"))
        report.judge_seconds += v.seconds
        eq = equivalent.get(m.id) if not v.killed else None
        report.outcomes.append(MutantOutcome(m, v.killed, v.by, v.how, eq))
        (killed_ids if v.killed else surviving).add(m.id)
    untested_ids = {m.id for m in plan.untested}
    for e in mf.equivalent:
        if e.id in untested_ids:
            continue
        if e.id in killed_ids:
            report.stale.append((e.id, "the hidden tests kill it now"))
        elif e.id not in surviving:
            report.stale.append((e.id, "no mutant has this id any more (its line changed or is gone)"))
    report.judge_seconds = round(report.judge_seconds, 1)
    plan.report = report
    counted = len(report.outcomes) - report.equivalent
    rep.add(f"mutant kill rate at least {a.min_mutant_kill:.0%}", report.kill_rate >= a.min_mutant_kill - 1e-9,
            f"{report.kill_rate:.0%}: {report.killed} of {counted} killed"
            + (f", {report.equivalent} equivalent" if report.equivalent else "")
            + f" ({len(report.outcomes)} of {report.generated} generated graded"
            + (f"; {sum(report.untested.values())} in GPU-only task(s) {', '.join(sorted(report.untested))} "
               "not graded on this machine" if report.untested else "") + ")"
            + (f"; {len(report.survivors)} survivor(s) listed below" if report.survivors else ""))
    rep.add("equivalent mutants in mutants.yml still survive", not report.stale,
            "; ".join(f"{i}: {why}" for i, why in report.stale[:5]))


# ------------------------------------------------------------------ determinism

def _determinism(course: Course, plans: dict[str, _Plan], solutions: dict[str, JobResult], runs: int, tmp: Path,
                 executor: Any, say: Callable[[str], None]) -> dict[str, det.DeterminismReport]:
    jobs: list[Job] = []
    for slug in plans:
        spec = solutions[slug].job.spec
        base = tmp / slug / "variants" / "pristine"
        sol_dir = course.paths.solutions / slug
        slow = var.variant_folder(base, tmp / slug / "variants" / "slow", {
            p.name: det.slow_source(p.read_text(encoding="utf-8"), p.name) for p in stubs.solution_files(sol_dir)})
        for i in range(runs):
            jobs.append(Job(f"{slug}/determinism/solution/{i + 1}", spec, base))
            jobs.append(Job(f"{slug}/determinism/slow variant/{i + 1}", spec, slow))
    if not jobs:
        return {}
    t0 = time.monotonic()
    with det.cpu_burners() as pids:
        say(f"determinism: grading the solution and a slow variant {runs} times each with {len(pids)} CPU burner(s)")
        done = executor.run(jobs, on_done=lambda r: say(f"{r.job.key}: {r.points:g}/{r.max_points:g} "
                                                        f"in {r.duration:.1f} s"))
    wall = round(time.monotonic() - t0, 1)
    out = {}
    for slug in plans:
        grouped: dict[str, list[JobResult]] = {"solution": [], "slow variant": []}
        for r in done:
            parts = r.job.key.split("/")
            if parts[0] == slug:
                grouped[parts[2]].append(r)
        report = out[slug] = det.judge(slug, runs, grouped)
        report.wall_seconds, report.burners = wall, len(pids)
    return out


def _determinism_check(report: det.DeterminismReport) -> tuple[str, bool, str]:
    scores = "; ".join(f"{k}: {', '.join(f'{s:g}' for s in v)}" for k, v in report.scores.items())
    problems = report.failures + [f"{n}: {', '.join(v)}" for n, v in list(report.varying.items())[:3]]
    return (f"same grade on every run under load ({report.runs} runs each, {report.burners} CPU burners)", report.ok,
            "; ".join(problems) if problems else scores)

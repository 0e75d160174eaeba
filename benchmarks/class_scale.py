"""Class-size benchmark: one synthetic class graded by `--jobs 1`, `--jobs 2` and a Dask cluster.

Builds a throw-away course holding the toy assignment ``vecops`` (tests/files/toycourse) plus every
CPU assignment of this repository that is complete (solutions/, graders/ and public tests of
``attention``, ``positional_encoding``, ``lora``), generates N students per assignment, collects
them once, and grades a fresh copy per mode. The class is realistic by default (a seeded mix:
40 % correct, 40 % partial or with one plausible bug from examples/bugs.yml, 15 % the untouched stub
or a module that crashes at import, 5 % hostile: patching torch's checks, reading /etc/shadow,
opening a socket, forking); ``--mix cycle`` takes each kind in turn and ``--mix correct`` only
correct copies. Modes:

* ``local --jobs 1`` and ``local --jobs 2``: the local executor (fork server started in the run);
* ``dask cold``: a new ``LocalCluster`` (or ``--scheduler``'s cluster), its workers' judges and
  fork servers started by the run;
* ``dask warm``: the same cluster again (fork servers already up, bundles sent again);
* ``correct-only``: an all-correct class of the same size beside it, for the per-core figure.

Prints, per mode, the wall time, the time to the first result (start-up), submissions per minute
overall and after the first result (steady state) and per core, the steady speed-up over
``--jobs 1``, the judge's seconds per submission (``GradeRow.seconds``; per assignment and kind
too) and worker-seconds per submission (workers x 60 / steady rate), and checks that every mode gave
every submission the same points. Asserts nothing.

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "tests" / "files" / "toycourse"
CPU_ASSIGNMENTS = ("attention", "positional_encoding", "lora")
KINDS = ("correct", "partial", "buggy", "stub", "crashing", "hostile")
# A realistic class (seeded): 40 % correct, 40 % partial or buggy, 15 % stub or crash, 5 % hostile.
REALISTIC = {"correct": 40, "partial": 20, "buggy": 20, "stub": 8, "crashing": 7, "hostile": 5}
HOSTILE = ("\n\n# hostile: patches torch's checks, reads what it should not, opens a socket, forks\n"
           "import os as _o, socket as _s, torch as _t\n_t.allclose = lambda *a, **k: True\n"
           "_t.testing.assert_close = lambda *a, **k: None\n"
           "try:\n    open('/etc/shadow').read()\nexcept OSError:\n    pass\n"
           "try:\n    _s.create_connection(('127.0.0.1', 9), 0.2)\nexcept OSError:\n    pass\n"
           "if _o.fork() == 0:\n    _o._exit(0)\n")
SUBMITTED_AT = "2026-10-01T12:00:00+00:00"
CRASH = "\n\nimport os as _os\n_os._exit(1)  # crashes at import\n"
TOY_BUG = {"old": "return (a * b).sum()", "new": "return (a * b).sum() + 0.5"}


# ------------------------------------------------------------------ the synthetic course and class

def complete(base: Path, slug: str) -> bool:
    return (any((base / "solutions" / slug).glob("*.py")) and any((base / "graders" / slug).glob("test_*.py"))
            and any((base / "assignments" / slug / "tests").glob("test_*.py")))


def build_course(dest: Path, slugs: list[str]) -> Path:
    """A course folder with these assignments (vecops from the toy course, the rest from the repo)."""
    repo_cfg = yaml.safe_load((ROOT / "course.yml").read_text(encoding="utf-8"))
    toy_cfg = yaml.safe_load((TOY / "course.yml").read_text(encoding="utf-8"))
    entries = {a["slug"]: a for a in repo_cfg["assignments"]}
    entries.update({a["slug"]: a for a in toy_cfg["assignments"]})
    cfg = {"name": "class-scale benchmark", "limits": repo_cfg.get("limits", {}),
           "assignments": [entries[s] for s in slugs]}
    for slug in slugs:
        base = TOY if slug == "vecops" else ROOT
        for part in ("solutions", "assignments", "graders"):
            shutil.copytree(base / part / slug, dest / part / slug, ignore=shutil.ignore_patterns("__pycache__"))
    (dest / "course.yml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return dest


def submission_files(course_dir: Path, slug: str, kind: str, bugs: dict) -> dict[str, str]:
    """File name -> text of one synthetic submission of ``kind``."""
    from course import stubs
    keep = {"correct": lambda t: True, "buggy": lambda t: True, "crashing": lambda t: True, "hostile": lambda t: True,
            "stub": lambda t: False, "partial": lambda t: t.split(".")[0] == "1"}[kind]
    files = {p.name: stubs.strip(p.read_text(encoding="utf-8"), str(p), keep=keep)
             for p in sorted((course_dir / "solutions" / slug).glob("*.py"))}
    main = sorted(files)[0]
    if kind == "crashing":
        files[main] += CRASH
    elif kind == "hostile":
        files[main] += HOSTILE
    elif kind == "buggy":
        bug = TOY_BUG if slug == "vecops" else bugs.get(slug)
        target = (bug or {}).get("file", main)
        if bug and bug["old"] in files.get(target, ""):
            files[target] = files[target].replace(bug["old"], bug["new"], 1)
        else:  # no known bug for this assignment: the last task left undone
            last = max(stubs.tasks((course_dir / "solutions" / slug / main).read_text(encoding="utf-8")),
                       key=lambda t: tuple(int(x) for x in t.split(".")))
            files = {p.name: stubs.strip(p.read_text(encoding="utf-8"), str(p), keep=lambda t: t != last)
                     for p in sorted((course_dir / "solutions" / slug).glob("*.py"))}
    return files


def class_kinds(students: int, mix: str) -> list[str]:
    """The kind of each student: ``realistic`` (seeded draw from REALISTIC), ``correct``, or ``cycle``."""
    if mix == "correct":
        return ["correct"] * students
    if mix == "cycle":
        return [KINDS[i % len(KINDS)] for i in range(students)]
    import random
    rng = random.Random(0)
    return rng.choices(list(REALISTIC), weights=list(REALISTIC.values()), k=students)


def make_class(course_dir: Path, slugs: list[str], students: int, mix: str = "realistic") -> dict[str, str]:
    """Write and collect ``students`` submissions per assignment; returns student -> kind."""
    from course import api
    bugs_file = ROOT / "examples" / "bugs.yml"
    bugs = yaml.safe_load(bugs_file.read_text(encoding="utf-8")) if bugs_file.is_file() else {}
    course = api.load_course(course_dir / "course.yml")
    kinds = {}
    for slug in slugs:
        folder = course_dir.parent / "class" / slug
        for i, kind in enumerate(class_kinds(students, mix)):
            student = f"s{i:03d}-{kind}"
            kinds[student] = kind
            (folder / student).mkdir(parents=True)
            for name, text in submission_files(course_dir, slug, kind, bugs).items():
                (folder / student / name).write_text(text, encoding="utf-8")
        report = api.collect(course, folder, slug, submitted_at=SUBMITTED_AT)
        if report.errors:
            raise SystemExit(f"could not collect {slug}: {[e.message for e in report.errors]}")
    return kinds


# ------------------------------------------------------------------ grading and figures

@dataclass
class Run:
    mode: str
    workers: int
    wall: float
    rows: list = field(default_factory=list)
    finished: list[float] = field(default_factory=list)   # seconds from the start to each result
    cluster: dict | None = None

    @property
    def per_minute(self) -> float:
        return 60.0 * len(self.rows) / self.wall if self.wall else 0.0

    @property
    def steady_per_minute(self) -> float:
        """Results per minute after the first one: start-up (fork servers, workers) left out."""
        if len(self.finished) < 2 or self.finished[-1] <= self.finished[0]:
            return self.per_minute
        return 60.0 * (len(self.finished) - 1) / (self.finished[-1] - self.finished[0])


def grade(base: Path, name: str, mode: str, workers: int, **kwargs) -> Run:
    from course import api
    copy = base.parent / name
    shutil.copytree(base, copy)
    made = []
    real_make = api.make_executor

    def make_executor(*args, **kw):  # keep the executor, to read its per-worker summary afterwards
        made.append(real_make(*args, **kw))
        return made[-1]

    api.make_executor = make_executor
    finished: list[float] = []
    try:
        t0 = time.monotonic()
        rep = api.grade(api.load_course(copy / "course.yml"),
                        on_done=lambda row: finished.append(time.monotonic() - t0), **kwargs)
        wall = time.monotonic() - t0
    finally:
        api.make_executor = real_make
    summary = made[0].summary() if made and hasattr(made[0], "summary") else None
    print(f"  {mode:<18} {wall:7.1f} s  ({len(rep.rows)} submissions, {len(rep.errors)} errors)", flush=True)
    return Run(mode, workers, wall, rep.rows, finished, summary)


def table(runs: list[Run], kinds: dict[str, str]) -> str:
    base = next((r for r in runs if r.mode == "local --jobs 1"), runs[0])
    lines = [f"{'mode':<22} {'workers':>7} {'subs':>5} {'wall s':>7} {'1st s':>6} {'subs/min':>9} "
             f"{'steady/min':>11} {'/min/core':>10} {'speed-up':>9} {'judge s/sub':>12} {'worker-s/sub':>13}"]
    for r in runs:
        judge = sum(x.seconds for x in r.rows) / max(1, len(r.rows))
        speedup = r.steady_per_minute / base.steady_per_minute if base.steady_per_minute else 0.0
        first = r.finished[0] if r.finished else 0.0
        lines.append(f"{r.mode:<22} {r.workers:>7} {len(r.rows):>5} {r.wall:>7.1f} {first:>6.1f} "
                     f"{r.per_minute:>9.1f} {r.steady_per_minute:>11.1f} {r.steady_per_minute / r.workers:>10.1f} "
                     f"{speedup:>8.2f}x {judge:>12.1f} "
                     f"{60.0 * r.workers / r.steady_per_minute if r.steady_per_minute else 0:>13.1f}")
    lines.append("(1st s: until the first result; steady/min: results per minute after it; speed-up: of steady/min)")
    lines.append("")
    lines.append(f"judge seconds per submission, by assignment and kind ({base.mode}):")
    cells: dict[tuple[str, str], list[float]] = {}
    for x in base.rows:
        cells.setdefault((x.slug, kinds.get(x.student, "?")), []).append(x.seconds)
    for slug in sorted({s for s, _ in cells}):
        parts = [f"{k} {sum(v) / len(v):5.1f}" for k in KINDS if (v := cells.get((slug, k)))]
        lines.append(f"  {slug:<20} " + "   ".join(parts))
    for r in runs:
        if r.cluster and r.cluster.get("workers"):
            counts = ", ".join(f"{w}: {c['graded']}+{c['errors']} err" for w, c in r.cluster["workers"].items())
            lines.append(f"per worker ({r.mode}): {counts}")
    runs = [r for r in runs if not r.mode.startswith("correct-only")]
    points = [{(x.slug, x.student): (x.status, round(x.points, 4)) for x in r.rows} for r in runs]
    differ = sorted(k for k in points[0] if any(p.get(k) != points[0][k] for p in points[1:]))
    lines.append(f"every mode gave every submission the same points: {'NO' if differ else 'yes'}")
    for slug, student in differ[:10]:
        lines.append(f"  {slug} {student}: " + ", ".join(f"{r.mode} {p.get((slug, student))}"
                                                        for r, p in zip(runs, points)))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=8, help="submissions per assignment (default 8)")
    parser.add_argument("--assignments", default=None,
                        help="comma-separated slugs (default: vecops and every complete CPU assignment)")
    parser.add_argument("--modes", default="jobs1,jobs2,dask", help="comma-separated: jobs1, jobs2, dask")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (default 2)")
    parser.add_argument("--scheduler", default=None, help="use this Dask scheduler instead of a LocalCluster")
    parser.add_argument("--keep", type=Path, default=None, help="build everything here and keep it")
    parser.add_argument("--mix", choices=("realistic", "cycle", "correct"), default="realistic",
                        help="the class: realistic (seeded 40%% correct, 40%% partial/buggy, 15%% stub/crash, "
                             "5%% hostile), cycle (each kind in turn) or correct only")
    parser.add_argument("--no-correct-only", action="store_true",
                        help="skip grading an all-correct class of the same size beside it (for the per-core figure)")
    parser.add_argument("--no-freeze", action="store_true",
                        help="local judges without gc.freeze() (the Dask workers' judges always use it)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if not args.no_freeze:  # like for like: the local judges get what the Dask workers' judges get
        from course.grading.dask_executor import _freeze_heap_in_forked_children
        _freeze_heap_in_forked_children()
    slugs = args.assignments.split(",") if args.assignments else \
        ["vecops", *[s for s in CPU_ASSIGNMENTS if complete(ROOT, s)]]
    modes = args.modes.split(",")
    work = args.keep or Path(tempfile.mkdtemp(prefix="class-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        print(f"course {', '.join(slugs)}; {args.students} students each; {os.cpu_count()} CPUs; in {work}; "
              f"local judges {'without' if args.no_freeze else 'with'} gc.freeze()", flush=True)
        base = build_course(work / "base", slugs)
        kinds = make_class(base, slugs, args.students, args.mix)
        mix = {k: list(kinds.values()).count(k) // len(slugs) for k in KINDS if k in kinds.values()}
        print("class per assignment: " + ", ".join(f"{k} {n}" for k, n in mix.items()), flush=True)
        runs = []
        if "jobs1" in modes:
            runs.append(grade(base, "jobs1", "local --jobs 1", 1, jobs=1))
        if "jobs2" in modes:
            runs.append(grade(base, "jobs2", "local --jobs 2", 2, jobs=2))
        if "dask" in modes:
            runs += dask_runs(base, args.scheduler, args.workers)
        if args.mix != "correct" and not args.no_correct_only:
            ref = build_course(work / "ref" / "base", slugs)
            make_class(ref, slugs, args.students, "correct")
            jobs = 2 if "jobs2" in modes else 1
            runs.append(grade(ref, "correct", f"correct-only --jobs {jobs}", jobs, jobs=jobs))
        print()
        print(table(runs, kinds))
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


def dask_runs(base: Path, scheduler: str | None, workers: int) -> list[Run]:
    from distributed import Client, LocalCluster
    cluster = None
    if scheduler is None:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        scheduler = cluster.scheduler_address
    try:
        with Client(scheduler) as client:
            n = len(client.scheduler_info(n_workers=-1)["workers"])
        return [grade(base, "dask-cold", "dask cold", n, executor="dask", scheduler=scheduler),
                grade(base, "dask-warm", "dask warm", n, executor="dask", scheduler=scheduler)]
    finally:
        if cluster is not None:
            cluster.close()


if __name__ == "__main__":
    main()

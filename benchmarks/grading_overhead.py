"""Grading overhead: the sandbox against the local backend and nbgrader, per submission.

Grades N copies of a reference solution (default ``solutions/attention`` with all of its hidden
and public tests; ``--assignment vecops`` uses the toy course) and prints, side by side, the
wall seconds per submission, the throughput, and the CPU seconds per submission of

* ``local``        the executor behind ``course grade`` with ``--backend local``: judges forked
                   from a warm parent, the student's code imported into the judge (the floor);
* ``sandbox``      the same with ``--backend sandbox``: each submission's worker forked from the
                   fork server, which imported torch, transformers and peft once;
* ``no fork srv``  the sandbox with a fresh fork server per submission (``python -I`` and the
                   imports each time): what a sandbox costs without the fork server;
* ``sandbox --jobs J`` the fork server with J submissions at a time (throughput);
* ``nbgrader api`` ``NbGraderAPI.autograde`` of an equivalent notebook: the student's code in a
                   solution cell, and one graded cell per test function running the very same
                   hidden and public test functions (every parametrised case) through a shim
                   ``submission``;
* ``nbgrader cli`` ``nbgrader autograde`` on the command line, the way instructors run it.

``local`` and ``sandbox`` grade one submission at a time, alternating, so that the machine's
load hits both alike; ``sandbox - local`` is the sandbox's overhead per submission beyond the
tests' own compute, in wall seconds and in CPU seconds (judge, worker and fork server, counted
from /proc: independent of how loaded the machine is). The fork server's start-up is shown apart
(paid once per run). Asserts nothing.

    python benchmarks/grading_overhead.py                       # attention, 8 copies
    python benchmarks/grading_overhead.py --n 4 --assignment vecops --skip-nbgrader

nbgrader shells out to ``alembic``: the venv's bin folder is put on PATH here.
"""

from __future__ import annotations

import argparse
import ast
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "tests" / "files" / "toycourse"


@dataclass
class Mode:
    name: str
    per_submission: list[float]   # seconds of each submission (the judge's, or the autograde call's)
    wall: float                   # seconds for the whole mode
    count: int
    points: list[float]
    note: str = ""
    startup: float = 0.0          # seconds before the first submission started (fork server start)
    cpu: float = 0.0              # CPU seconds of this process and every process it waited for

    @property
    def cpu_per_submission(self) -> float:
        return self.cpu / self.count if self.count else float("nan")

    @property
    def median(self) -> float:
        return statistics.median(self.per_submission) if self.per_submission else float("nan")

    @property
    def throughput(self) -> float:
        """Submissions per minute once started (the fork server's start-up is paid once per run)."""
        busy = self.wall - self.startup
        return 60.0 * self.count / busy if busy > 0 else float("nan")


# ------------------------------------------------------------------ the course and the class

def source_course(slug: str) -> Path:
    return TOY if slug == "vecops" else ROOT


def build_course(dest: Path, slug: str, n: int) -> tuple[Path, Path]:
    """A course holding only ``slug`` (course.yml as in the source), and a class of n solutions."""
    src = source_course(slug)
    course_dir = dest / "course"
    course_dir.mkdir(parents=True)
    shutil.copyfile(src / "course.yml", course_dir / "course.yml")
    for part in ("graders", "assignments"):
        shutil.copytree(src / part / slug, course_dir / part / slug, ignore=shutil.ignore_patterns("__pycache__"))
    klass = dest / "class"
    for i in range(n):
        folder = klass / f"s{i:03d}"
        shutil.copytree(src / "solutions" / slug, folder, ignore=shutil.ignore_patterns("__pycache__"))
    return course_dir, klass


# ------------------------------------------------------------------ course grade, three ways

def cpu_seconds() -> float:
    """User + system CPU of this process and of every child it has waited for (the judges;
    nbgrader's kernels). The fork server's tree is counted apart (:func:`tree_cpu`)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def tree_cpu(root: int) -> float:
    """CPU seconds of a process and its descendants, with the children they reaped (from /proc):
    the fork server under bubblewrap and its workers, which getrusage never sees."""
    from course.grading.sandbox import _descendants
    ticks = 0
    for pid in _descendants(root):
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().decode(errors="replace").rsplit(")", 1)[1].split()
            ticks += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        except (OSError, ValueError, IndexError):
            continue
    return ticks / os.sysconf("SC_CLK_TCK")


class Executor:
    """A runner executor with its own clocks: wall per submission, and CPU of judges and workers."""

    def __init__(self, jobs: int, backend: str):
        from course.grading.runner import LocalExecutor
        self.ex = LocalExecutor(jobs, backend=backend, device="cpu")
        self.startup = 0.0
        self.cpu = 0.0

    def start(self) -> None:
        started = time.perf_counter()
        self.ex.start()
        self.startup = time.perf_counter() - started

    def pool_cpu(self) -> float:
        return tree_cpu(self.ex.pool.proc.pid) if self.ex.pool is not None else 0.0

    def run(self, jobs: list) -> tuple[list, float]:
        """Grade ``jobs``; returns the results and the wall seconds."""
        cpu0, pool0 = cpu_seconds(), self.pool_cpu()
        started = time.perf_counter()
        results = self.ex.run(jobs)
        wall = time.perf_counter() - started
        self.cpu += cpu_seconds() - cpu0 + self.pool_cpu() - pool0
        return results, wall

    def close(self) -> None:
        self.ex.close()


def interleaved(jobs: list, backends: tuple[str, ...]) -> list[Mode]:
    """One submission at a time, alternating the backends (so that the machine's load hits all alike)."""
    executors = {b: Executor(1, b) for b in backends}
    modes = {b: Mode(b, [], 0.0, 0, []) for b in backends}
    try:
        for b, ex in executors.items():
            ex.start()
            modes[b].startup = ex.startup
        for job in jobs:
            for b, ex in executors.items():
                (result,), wall = ex.run([job])
                m = modes[b]
                m.per_submission.append(wall)
                m.wall += wall
                m.count += result.ok
                m.points.append(result.points)
                if not result.ok:
                    m.note = result.message[:100]
    finally:
        for b, ex in executors.items():
            modes[b].cpu = ex.cpu
            modes[b].wall += modes[b].startup
            ex.close()
    return list(modes.values())


def parallel(jobs: list, n_jobs: int) -> Mode:
    ex = Executor(n_jobs, "sandbox")
    try:
        ex.start()
        results, wall = ex.run(jobs)
    finally:
        ex.close()
    per = [r.duration for r in results]
    return Mode(f"sandbox --jobs {n_jobs}", per, wall + ex.startup, sum(r.ok for r in results),
                [r.points for r in results], startup=ex.startup, cpu=ex.cpu)


def no_fork_server(jobs: list) -> Mode:
    """A fresh fork server per submission (``python -I`` and the imports each time)."""
    mode = Mode("no fork srv", [], 0.0, 0, [])
    for job in jobs:
        ex = Executor(1, "sandbox")
        started = time.perf_counter()
        try:
            ex.start()
            (result,), _ = ex.run([job])
            ex.cpu += ex.pool_cpu()  # its start-up too: that is the point of this mode
        finally:
            ex.close()
        wall = time.perf_counter() - started
        mode.per_submission.append(wall)
        mode.wall += wall
        mode.count += result.ok
        mode.points.append(result.points)
        mode.cpu += ex.cpu
    return mode


# ------------------------------------------------------------------ nbgrader

HARNESS = '''
import copy, hashlib, inspect, itertools, sys, types
import torch

_student = types.ModuleType({slug!r})
_student.__dict__.update({{k: v for k, v in globals().items() if not k.startswith("_")}})
sys.modules[{slug!r}] = _student


def _module(name, source):
    module = types.ModuleType(name)
    module.__file__ = name + ".py"
    sys.modules[name] = module
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module


class _Submission:
    """The notebook's stand-in for the course's `submission` fixture: plain in-kernel calls."""
    device, backend = "cpu", "notebook"

    def call(self, target, *args, **kwargs):
        module, _, name = target.partition(".")
        fn = sys.modules[module]
        for part in name.split("."):
            fn = getattr(fn, part)
        return fn(*copy.deepcopy(args), **copy.deepcopy(kwargs))

    def run(self, probe, *args, **kwargs):
        return probe(*copy.deepcopy(args), **copy.deepcopy(kwargs))

    def allow_nonfinite(self):
        return self


def _rng(key):
    gen = torch.Generator()
    gen.manual_seed(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") & (2**63 - 1))
    return gen


def _cases(fn):
    axes = []
    for mark in reversed([m for m in getattr(fn, "pytestmark", []) if m.name == "parametrize"]):
        names, values = mark.args[0], mark.args[1]
        names = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
        rows = []
        for value in values:
            if hasattr(value, "values") and hasattr(value, "marks"):  # pytest.param(...)
                rows.append(dict(zip(names, value.values)))
            else:
                rows.append(dict(zip(names, value)) if len(names) > 1 else {{names[0]: value}})
        axes.append(rows)
    for combo in itertools.product(*axes) if axes else [()]:
        merged = {{}}
        for part in combo:
            merged.update(part)
        yield merged


def _run(module, name):
    fn = getattr(sys.modules[module], name)
    wanted = inspect.signature(fn).parameters
    for i, case in enumerate(_cases(fn)):
        if "submission" in wanted:
            case["submission"] = _Submission()
        if "rng" in wanted:
            case["rng"] = _rng(f"{{module}}::{{name}}[{{i}}]")
        fn(**case)
'''


def test_functions(path: Path) -> list[tuple[str, float]]:
    """(name, points) of every test function of a test file, read with ast (nothing imported)."""
    out = []
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
            points = 0.0
            for dec in node.decorator_list:
                if isinstance(dec, ast.Call) and getattr(dec.func, "attr", "") == "points" and dec.args:
                    points = float(ast.literal_eval(dec.args[0]))
            out.append((node.name, points))
    return out


def build_notebook_course(dest: Path, course_dir: Path, slug: str, students: list[str], solution: Path) -> Path:
    """An nbgrader course: source/<slug>/<slug>.ipynb, released, and one submitted copy per student."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    def cell(source: str, **meta) -> object:
        c = new_code_cell(source)
        c.metadata["nbgrader"] = {"schema_version": 3, "task": False, "solution": False, "grade": False,
                                  "locked": True, **meta}
        return c

    code = "\n".join(line for p in sorted(solution.glob("*.py")) for line in p.read_text(encoding="utf-8").splitlines()
                     if "BEGIN SOLUTION" not in line and "END SOLUTION" not in line)  # nbgrader's own markers
    cells = [cell(f"### BEGIN SOLUTION\n{code}\n### END SOLUTION", grade_id="solution", solution=True, locked=False)]
    setup = [HARNESS.format(slug=slug)]
    helpers = [p for p in (course_dir / "graders" / slug).glob("*.py") if not p.name.startswith("test_")]
    helpers += [p for p in (course_dir / "assignments" / slug / "tests").glob("*.py") if not p.name.startswith("test_")]
    for path in helpers:
        setup.append(f"_module({path.stem!r}, {path.read_text(encoding='utf-8')!r})")
    tests = sorted((course_dir / "graders" / slug).glob("test_*.py")) + sorted(
        (course_dir / "assignments" / slug / "tests").glob("test_*.py"))
    for path in tests:
        setup.append(f"_module({path.stem!r}, {path.read_text(encoding='utf-8')!r})")
    first = True
    for path in tests:
        for name, points in test_functions(path):
            body = ("\n".join(setup) + "\n" if first else "") + f"_run({path.stem!r}, {name!r})"
            cells.append(cell(f"### BEGIN HIDDEN TESTS\n{body}\n### END HIDDEN TESTS", grade_id=f"{path.stem}-{name}",
                              grade=True, points=points))
            first = False
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    root = dest / "nbgrader"
    (root / "source" / slug).mkdir(parents=True)
    nbformat.write(nb, root / "source" / slug / f"{slug}.ipynb")
    api = nbgrader_api(root)
    result = api.generate_assignment(slug)
    if not result["success"]:
        raise SystemExit(f"nbgrader generate_assignment failed:\n{result['log'][-3000:]}")
    released = nbformat.read(root / "release" / slug / f"{slug}.ipynb", as_version=4)
    released.cells[0].source = code  # the student's answer
    for student in students:
        folder = root / "submitted" / student / slug
        folder.mkdir(parents=True)
        nbformat.write(released, folder / f"{slug}.ipynb")
        (folder / "timestamp.txt").write_text("2026-10-01 12:00:00.000000 UTC")
    return root


def nbgrader_api(root: Path):
    from nbgrader.apps import NbGraderAPI
    from traitlets.config import Config
    config = Config()
    config.CourseDirectory.root = str(root)
    config.CourseDirectory.course_id = "benchmark"
    config.ExecutePreprocessor.timeout = 600
    return NbGraderAPI(config=config)


def nbgrader_scores(root: Path, slug: str, students: list[str]) -> list[float]:
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{root}/gradebook.db") as gb:
        return [gb.find_submission(slug, s).score for s in students]


def nbgrader_mode(root: Path, slug: str, students: list[str]) -> Mode:
    api = nbgrader_api(root)
    per = []
    cpu0 = cpu_seconds()
    started = time.perf_counter()
    for student in students:
        t0 = time.perf_counter()
        result = api.autograde(slug, student)
        per.append(time.perf_counter() - t0)
        if not result["success"]:
            print(f"nbgrader autograde {student} failed:\n{result['log'][-2000:]}", file=sys.stderr)
    return Mode("nbgrader api", per, time.perf_counter() - started, len(students),
                nbgrader_scores(root, slug, students), cpu=cpu_seconds() - cpu0)


def nbgrader_cli_mode(root: Path, slug: str, students: list[str]) -> Mode:
    per = []
    cpu0 = cpu_seconds()
    started = time.perf_counter()
    for student in students:
        t0 = time.perf_counter()
        subprocess.run([str(Path(sys.executable).parent / "nbgrader"), "autograde", slug, "--student", student,
                        "--force", "--course-dir", str(root), f"--CourseDirectory.course_id=benchmark"],
                       check=True, capture_output=True, cwd=root)
        per.append(time.perf_counter() - t0)
    return Mode("nbgrader cli", per, time.perf_counter() - started, len(students),
                nbgrader_scores(root, slug, students), cpu=cpu_seconds() - cpu0)


# ------------------------------------------------------------------ report

def show(modes: list[Mode], local: Mode, sandbox: Mode, best: Mode, cli: Mode | None, max_points: float) -> None:
    print(f"\n{'mode':<18} {'subs':>4} {'median s/sub':>12} {'mean s/sub':>10} {'wall s':>8} {'start s':>8} "
          f"{'subs/min':>9} {'cpu s/sub':>9} {'x local':>8} {'points':>14}  note")
    for m in modes:
        ratio = m.median / local.median if local.median else float("nan")
        pts = f"{min(m.points, default=0):g}-{max(m.points, default=0):g}/{max_points:g}"
        mean = statistics.fmean(m.per_submission) if m.per_submission else float("nan")
        print(f"{m.name:<18} {m.count:>4} {m.median:>12.3f} {mean:>10.3f} {m.wall:>8.1f} {m.startup:>8.1f} "
              f"{m.throughput:>9.1f} {m.cpu_per_submission:>9.3f} {ratio:>8.2f} {pts:>14}  {m.note}")
    print(f"\nsandbox overhead per submission, wall (sandbox - local, medians): "
          f"{sandbox.median - local.median:+.3f} s; CPU (judge + worker, the fork server's start-up apart): "
          f"{sandbox.cpu_per_submission - local.cpu_per_submission:+.3f} s   (goal <= 0.1 s)")
    if cli is not None:
        print(f"throughput once started: {best.name} {best.throughput:.1f} subs/min vs nbgrader cli "
              f"{cli.throughput:.1f} subs/min = {best.throughput / cli.throughput:.1f}x (goal >= 10x); "
              f"with the fork server's start-up ({best.startup:.1f} s): "
              f"{60 * best.count / best.wall:.1f} subs/min = {60 * best.count / best.wall / cli.throughput:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assignment", default="attention")
    parser.add_argument("--n", type=int, default=8, help="copies of the solution")
    parser.add_argument("--jobs", type=int, default=2, help="jobs of the throughput run")
    parser.add_argument("--no-fork-n", type=int, default=2, help="submissions graded with a fresh fork server each")
    parser.add_argument("--nbgrader-n", type=int, default=None, help="submissions for nbgrader's API (default n)")
    parser.add_argument("--cli-n", type=int, default=2, help="submissions for nbgrader's CLI")
    parser.add_argument("--skip-nbgrader", action="store_true")
    args = parser.parse_args()
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

    from course import api
    from course.grading import runner
    from course.grading.sandbox import strong_isolation_available
    runner.preload()
    strong, why = strong_isolation_available()
    print(f"{args.assignment}: {args.n} copies of the solution; {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.1f}; "
          f"isolation {'strong' if strong else 'weak (' + why + ')'}")
    with tempfile.TemporaryDirectory(prefix="course-overhead-") as tmp:
        tmp = Path(tmp)
        course_dir, klass = build_course(tmp, args.assignment, args.n)
        course = api.load_course(course_dir / "course.yml")
        spec = runner.spec_for(course, args.assignment)
        students = sorted(p.name for p in klass.iterdir())
        jobs = [runner.Job(s, spec, klass / s) for s in students]
        max_points = course.assignment(args.assignment).points
        local, sandbox = interleaved(jobs, ("local", "sandbox"))
        modes = [local, sandbox, no_fork_server(jobs[:args.no_fork_n])]
        best = parallel(jobs, args.jobs)
        modes.append(best)
        cli = None
        if not args.skip_nbgrader:
            nb_students = students[:args.nbgrader_n or args.n]
            root = build_notebook_course(tmp, course_dir, args.assignment, nb_students,
                                         source_course(args.assignment) / "solutions" / args.assignment)
            modes.append(nbgrader_mode(root, args.assignment, nb_students))
            cli = nbgrader_cli_mode(root, args.assignment, nb_students[:args.cli_n])
            modes.append(cli)
        show(modes, local, sandbox, best, cli, max_points)


if __name__ == "__main__":
    main()

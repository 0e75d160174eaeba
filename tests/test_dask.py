"""The Dask executor against a real ``distributed.LocalCluster`` (2 single-threaded worker processes).

One toy class (4 students) is collected once; the local executor grades one copy of it, the Dask
executor others: through the CLI, and with a worker killed mid-run. GPU routing uses a third
worker started like a real GPU worker (``dask worker ... --resources GPU=1``) on this CPU machine.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from distributed import Client, LocalCluster

from conftest import EXPECTED_POINTS, TOY, make_class
from course import api
from course.cli import main
from course.errors import GradingError
from course.gradebook import Gradebook
from course.grading import dask_executor
from course.grading.dask_executor import DaskExecutor, GraderPlugin, pack_bundle, pack_submission, unpack_bundle
from course.grading.runner import Job, spec_for

SUBMITTED_AT = "2026-10-02T10:00:00+00:00"


def grades(course_dir: Path) -> list[tuple]:
    """The gradebook's snapshot without messages (they may hold random values): points and outcomes."""
    with Gradebook(course_dir / "gradebook.sqlite") as gb:
        return [row[:13] for row in gb.snapshot()]


def gradings_per_submission(course_dir: Path) -> dict[str, int]:
    with Gradebook(course_dir / "gradebook.sqlite") as gb:
        rows = gb.db.execute("SELECT s.student, COUNT(g.id) FROM submissions s LEFT JOIN gradings g "
                             "ON g.submission_id = s.id GROUP BY s.id ORDER BY s.student").fetchall()
    return {student: n for student, n in rows}


@pytest.fixture(scope="module")
def collected(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy course with the four-student class collected (not graded)."""
    root = tmp_path_factory.mktemp("dask")
    course_dir = root / "course"
    shutil.copytree(TOY, course_dir, ignore=shutil.ignore_patterns("__pycache__"))
    make_class(root / "class")
    api.collect(api.load_course(course_dir / "course.yml"), root / "class", "vecops", submitted_at=SUBMITTED_AT)
    return course_dir


def fresh_copy(collected: Path, name: str) -> Path:
    dest = collected.parent / name
    shutil.copytree(collected, dest)
    return dest


@pytest.fixture(scope="module")
def local_grades(collected: Path) -> list[tuple]:
    course_dir = fresh_copy(collected, "local")
    rep = api.grade(api.load_course(course_dir / "course.yml"), jobs=2)
    assert {r.student: r.points for r in rep.rows} == EXPECTED_POINTS
    return grades(course_dir)


@pytest.fixture(scope="module")
def cluster() -> tuple[LocalCluster, Client]:
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(cluster)
    yield cluster, client
    client.close()
    cluster.close()


def test_dask_grades_the_class_like_the_local_executor(collected, local_grades, cluster):
    course_dir = fresh_copy(collected, "dask-cli")
    address = cluster[0].scheduler_address
    result = CliRunner().invoke(main, ["grade", "--executor", "dask", "--scheduler", address,
                                       "--course", str(course_dir / "course.yml")])
    assert result.exit_code == 0, result.output
    assert "graded on the Dask cluster at" in result.output
    assert grades(course_dir) == local_grades
    assert gradings_per_submission(course_dir) == {s: 1 for s in EXPECTED_POINTS}


def test_a_worker_killed_mid_run_loses_nothing(collected, local_grades, cluster, monkeypatch):
    course_dir = fresh_copy(collected, "dask-kill")
    _, client = cluster
    made: list[DaskExecutor] = []
    real_make = api.make_executor

    def make_executor(*args, **kwargs):
        made.append(real_make(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(api, "make_executor", make_executor)
    starts: dict[str, int] = {}
    killed: list[str] = []

    def on_start(job: Job) -> None:
        starts[job.key] = starts.get(job.key, 0) + 1
        if not killed:  # the first judge to start: kill its worker process while it grades
            address = made[0].placements[job.key][-1]
            pid = client.run(os.getpid, workers=[address])[address]
            os.kill(pid, signal.SIGKILL)
            killed.append(job.key)

    course = api.load_course(course_dir / "course.yml")
    rep = api.grade(course, executor="dask", scheduler=cluster[0].scheduler_address, on_start=on_start)
    assert killed
    assert {r.student: (r.status, r.points) for r in rep.rows} == {s: ("graded", p) for s, p in EXPECTED_POINTS.items()}
    assert starts[killed[0]] >= 2                      # it ran again on another worker...
    summary = made[0].summary()
    assert killed[0] in summary["rescheduled"]
    assert sum(w["graded"] for w in summary["workers"].values()) == len(EXPECTED_POINTS)
    assert grades(course_dir) == local_grades         # ...and nothing was lost or counted twice
    assert gradings_per_submission(course_dir) == {s: 1 for s in EXPECTED_POINTS}


def test_gpu_jobs_go_only_to_gpu_workers(collected, cluster):
    cluster_, client = cluster
    address = cluster_.scheduler_address
    course = api.load_course(collected / "course.yml")
    spec = spec_for(course, "vecops")
    jobs = [Job(f"{s}/vecops", spec, collected / "submitted" / s / "vecops" / "1") for s in ("alice", "bob")]
    ex = DaskExecutor(address, device="cuda", worker_wait=0)
    try:
        with pytest.raises(GradingError, match="GPU=1"):  # CPU-only workers never receive GPU work
            ex.run(jobs)
    finally:
        ex.close()
    gpu = subprocess.Popen([sys.executable, "-m", "dask", "worker", address, "--nthreads", "1",
                            "--no-nanny", "--resources", "GPU=1", "--name", "gpu-0"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client.wait_for_workers(3, timeout=120)
        gpu_address = next(a for a, w in client.scheduler_info(n_workers=-1)["workers"].items() if w["name"] == "gpu-0")
        ex = DaskExecutor(address, device="cuda")
        try:
            results = ex.run(jobs)
        finally:
            ex.close()
    finally:
        gpu.terminate()
        gpu.wait(timeout=60)
    assert {w for where in ex.placements.values() for w in where} == {gpu_address}
    assert ex.summary()["workers"] == {gpu_address: {"graded": 0, "errors": 2, "seconds": 0.0}}
    # this machine has no CUDA: the GPU worker refuses rather than recording the GPU tests as pending again
    assert all(not r.ok and "CUDA is not available" in r.message for r in results)


def test_a_run_that_makes_no_progress_ends_with_a_clear_error(collected, cluster, monkeypatch):
    """GPU work with no GPU worker (the check for one skipped) is never placed: the run must end."""
    from dataclasses import replace
    spec = spec_for(api.load_course(collected / "course.yml"), "vecops")
    spec = replace(spec, limits=replace(spec.limits, submission_timeout=1.0))
    monkeypatch.setattr(dask_executor, "STALL_SLACK", 2.0)
    ex = DaskExecutor(cluster[0].scheduler_address, device="cuda")
    monkeypatch.setattr(ex, "_wait_for_workers", lambda: None)
    try:
        with pytest.raises(GradingError, match="no judge started or finished for 3 s with 1 submission still"):
            ex.run([Job("alice/vecops", spec, collected / "submitted" / "alice" / "vecops" / "1")])
    finally:
        ex.close()


# ------------------------------------------------------------------ no cluster needed

def test_an_unreachable_scheduler_is_a_grading_error():
    with pytest.raises(GradingError, match="tcp://127.0.0.1:9: cannot reach the Dask scheduler"):
        DaskExecutor("tcp://127.0.0.1:9", timeout=1)


def test_grader_bundle_is_deterministic_and_checked(tmp_path):
    course_dir = tmp_path / "course"
    shutil.copytree(TOY, course_dir, ignore=shutil.ignore_patterns("__pycache__"))
    # tests may read data next to the public tests, and use any assignment's solution as an oracle
    (course_dir / "assignments" / "vecops" / "data").mkdir()
    (course_dir / "assignments" / "vecops" / "data" / "inputs.json").write_text("[1, 2]")
    (course_dir / "solutions" / "attention").mkdir()
    (course_dir / "solutions" / "attention" / "attention.py").write_text("def f():\n    return 1\n")
    (course_dir / "conftest.py").write_text("")  # pytest loads it above the tests: it goes along
    spec = spec_for(api.load_course(course_dir / "course.yml"), "vecops")
    bundle = pack_bundle(spec)
    assert bundle == pack_bundle(spec)
    assert bundle.sha256 == hashlib.sha256(bundle.data).hexdigest()
    root = unpack_bundle(bundle.data, bundle.sha256, tmp_path / "ok")
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert files == ["assignments/vecops/README.md", "assignments/vecops/data/inputs.json",
                     "assignments/vecops/tests/test_vecops.py", "assignments/vecops/vecops.py", "conftest.py",
                     "graders/vecops/alternatives/functional/vecops.py", "graders/vecops/alternatives/loops/vecops.py",
                     "graders/vecops/misconceptions.py", "graders/vecops/mutants.yml",
                     "graders/vecops/probes.py", "graders/vecops/test_hidden_vecops.py",
                     "solutions/attention/attention.py", "solutions/vecops/vecops.py"]
    tampered = bytearray(bundle.data)
    tampered[len(tampered) // 2] ^= 0xFF
    with pytest.raises(GradingError, match="hashes to"):
        unpack_bundle(bytes(tampered), bundle.sha256, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_plugin_refuses_a_folder_the_sandbox_can_read(tmp_path):
    bundle = pack_bundle(spec_for(api.load_course(TOY / "course.yml"), "vecops"))
    plugin = GraderPlugin("course-grade-test", {bundle.sha256: bundle.data}, backend="sandbox", device="cpu",
                          require_isolation=False)
    with pytest.raises(GradingError, match="--local-directory"):
        plugin.setup(SimpleNamespace(address="tcp://w", local_directory=sys.prefix))
    plugin.setup(SimpleNamespace(address="tcp://w", local_directory=str(tmp_path)))
    root = plugin.roots[bundle.sha256]
    assert (root / "graders" / "vecops" / "test_hidden_vecops.py").is_file()
    plugin.teardown(None)
    assert not root.exists()


def test_submission_travels_without_links_or_caches(tmp_path, monkeypatch):
    sub = tmp_path / "alice"
    (sub / "__pycache__").mkdir(parents=True)
    (sub / "vecops.py").write_text("x = 1\n")
    (sub / "__pycache__" / "vecops.cpython-311.pyc").write_bytes(b"\0")
    (sub / "passwd").symlink_to("/etc/passwd")
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(pack_submission(sub)))) as tar:
        assert sorted(m.name for m in tar.getmembers() if m.isfile()) == ["submission/vecops.py"]
    with pytest.raises(GradingError, match="missing"):
        pack_submission(tmp_path / "nobody")
    monkeypatch.setattr(dask_executor, "MAX_SUBMISSION_BYTES", 3)
    with pytest.raises(GradingError, match="larger than 3 bytes"):
        pack_submission(sub)

"""Grading on a Dask cluster: ``course grade --executor dask --scheduler tcp://host:8786``.

One Dask task grades one submission. On the worker, the judge runs exactly as it does locally:
in a child forked from the worker process (pytest cannot run in a Dask worker thread), with its
own sandbox fork server, through a process-local :class:`~course.grading.runner.LocalExecutor`
held by the :class:`JudgePool` worker plugin (so the fork server starts once per worker).

What travels, and where it goes::

    coordinator (course grade)                              Dask worker (one per core or GPU)
      grader bundle: graders/<slug>, assignments/<slug> --> GraderPlugin.setup: sha256 checked,
        (public tests, data), solutions/ (tar; once/run)     unpacked in the worker's own folder,
                                                             never inside a sandbox
      submission folder (tar bytes, one per task)       --> unpacked to a scratch folder; the
                                                             judge copies it into the sandbox
      on_done(JobResult) <-- encode_result() JSON bytes <-- the judge's results (plain data)

The gradebook is written only by the coordinator (``api.grade``'s ``on_done``: one transaction
per submission). A worker lost mid-task makes Dask run that task again elsewhere; only the
result that reaches the coordinator is recorded, once. A killed coordinator cancels its tasks and
records nothing more, so the next ``course grade`` resumes where it stopped.

GPU routing: with ``device="cuda"`` every task carries ``resources={"GPU": 1}``, so only workers
started with ``--resources GPU=1`` receive it; CPU-only workers never do.
"""

from __future__ import annotations

import gc
import gzip
import hashlib
import importlib.util
import io
import os
import queue
import secrets
import shutil
import stat
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import course
from course.config import Limits
from course.errors import GradingError
from course.grading.runner import GraderSpec, Job, JobResult, decode_result, encode_result

try:  # the optional extra ``course[cluster]``
    from distributed import WorkerPlugin
except ImportError:  # pragma: no cover - exercised only without dask installed
    WorkerPlugin = object  # type: ignore[assignment,misc]

MAX_BUNDLE_BYTES = 256 * 2**20      # a grader bundle larger than this is refused (it goes to every worker)
MAX_SUBMISSION_BYTES = 512 * 2**20  # the sandbox's own cap on a submission copy
MAX_SUBMISSION_FILES = 5000
WORKER_WAIT = 60.0                  # seconds to wait for a first worker (or a GPU worker) to join
STALL_SLACK = 300.0                 # beyond the longest submission timeout: a run with no start or end is stuck
_SKIP_DIRS = ("__pycache__", ".git", ".ipynb_checkpoints")


# ------------------------------------------------------------------ packing (deterministic tars)

def _add_file(tar: tarfile.TarFile, path: Path, arcname: str, *, max_bytes: int, max_files: int,
              counts: list[int], source: Path) -> None:
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode) or path.name.endswith(".pyc"):
        return
    counts[0] += st.st_size
    counts[1] += 1
    if counts[0] > max_bytes or counts[1] > max_files:
        raise GradingError(f"{source}: larger than {max_bytes} bytes or {max_files} files")
    info = tarfile.TarInfo(arcname)
    info.size, info.mode, info.mtime = st.st_size, 0o644, 0
    with open(path, "rb") as fh:
        tar.addfile(info, fh)


def _add_tree(tar: tarfile.TarFile, source: Path, arcname: str, *, max_bytes: int, max_files: int,
              counts: list[int]) -> None:
    """Regular files and folders under ``source`` (no links, devices, caches), sorted, timestamps zeroed."""
    if source.is_file():
        _add_file(tar, source, arcname, max_bytes=max_bytes, max_files=max_files, counts=counts, source=source)
        return
    for folder, dirs, files in os.walk(source, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not os.path.islink(os.path.join(folder, d)))
        rel = Path(folder).relative_to(source)
        base = f"{arcname}/{rel.as_posix()}" if rel.parts else arcname
        info = tarfile.TarInfo(base)
        info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
        tar.addfile(info)
        for name in sorted(files):
            _add_file(tar, Path(folder) / name, f"{base}/{name}", max_bytes=max_bytes, max_files=max_files,
                      counts=counts, source=source)


def _tar(trees: list[tuple[Path, str]], *, max_bytes: int, max_files: int = 10**6) -> bytes:
    buf = io.BytesIO()
    counts = [0, 0]
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for source, arcname in trees:
            _add_tree(tar, source, arcname, max_bytes=max_bytes, max_files=max_files, counts=counts)
    return gzip.compress(buf.getvalue(), compresslevel=6, mtime=0)


def _untar(data: bytes, dest: Path) -> None:
    """Extract with the ``data`` filter: no absolute paths, no ``..``, no links out, no devices."""
    try:
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data)), mode="r") as tar:
            tar.extractall(dest, filter="data")
    except (OSError, EOFError, tarfile.TarError) as exc:
        raise GradingError(f"cannot unpack into {dest}: {exc}") from None


@dataclass(frozen=True)
class Bundle:
    """What the workers need to grade one assignment, as a tar whose sha256 names it."""

    slug: str
    sha256: str
    data: bytes = field(repr=False)


def bundle_trees(spec: GraderSpec) -> list[tuple[Path, str]]:
    """(folder, name in the bundle) for one assignment: the layout mirrors the course folder.

    ``graders/<slug>`` (hidden tests, probes, data), ``assignments/<slug>`` (the instructor's
    copy of the public tests, and the data they read next to them) and the whole ``solutions/``
    folder: tests may use reference code as an oracle, also another assignment's (e.g. the
    positional-encoding tests build the reference attention), so every solution goes along.
    """
    slug, root = spec.slug, spec.root
    trees = [(spec.hidden, f"graders/{slug}")]
    if spec.public.parent.is_dir():
        trees.append((spec.public.parent, f"assignments/{slug}"))
    if (root / "solutions").is_dir():
        trees.append((root / "solutions", "solutions"))
    return trees


def _conftests(spec: GraderSpec) -> list[tuple[Path, str]]:
    """The ``conftest.py`` files pytest loads between the course folder and the bundled folders."""
    candidates = ((spec.root / "conftest.py", "conftest.py"),
                  (spec.hidden.parent / "conftest.py", "graders/conftest.py"),
                  (spec.root / "assignments" / "conftest.py", "assignments/conftest.py"))
    return [(path, name) for path, name in candidates if path.is_file()]


def pack_bundle(spec: GraderSpec) -> Bundle:
    """The grader bundle of ``spec``'s assignment (deterministic: equal folders, equal sha256)."""
    data = _tar(bundle_trees(spec) + _conftests(spec), max_bytes=MAX_BUNDLE_BYTES)
    if len(data) > MAX_BUNDLE_BYTES:
        raise GradingError(f"{spec.hidden}: the grader bundle of {spec.slug!r} is {len(data)} bytes "
                           f"(more than {MAX_BUNDLE_BYTES}); move large data out of graders/")
    return Bundle(spec.slug, hashlib.sha256(data).hexdigest(), data)


def unpack_bundle(data: bytes, sha256: str, dest: Path) -> Path:
    """Check the bundle's hash, then unpack it into ``dest`` (a fresh folder)."""
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise GradingError(f"grader bundle {sha256[:16]}: its content hashes to {got[:16]}; refusing to use it")
    dest.mkdir(mode=0o700, parents=True)
    _untar(data, dest)
    return dest


def pack_submission(path: Path) -> bytes:
    """One submission folder as tar bytes (regular files only, within the sandbox's size caps)."""
    if not path.is_dir():
        raise GradingError(f"{path}: the submission folder is missing")
    return _tar([(path, "submission")], max_bytes=MAX_SUBMISSION_BYTES, max_files=MAX_SUBMISSION_FILES)


def _inside(path: Path, roots: Iterable[str]) -> str | None:
    real = os.path.realpath(path)
    for root in roots:
        r = os.path.realpath(root)
        if real == r or real.startswith(r.rstrip(os.sep) + os.sep):
            return r
    return None


def _sandbox_visible_roots() -> list[str]:
    """Folders the sandbox binds read-only: a grader bundle must never lie under one of them."""
    from course.grading import sandbox
    return ["/usr", sys.prefix, sys.base_prefix, *sandbox._stdlib_paths(), *sandbox._site_packages()]


# ------------------------------------------------------------------ the worker side

JUDGES_PLUGIN = "course-judges"


class JudgePool(WorkerPlugin):
    """On every worker, for its whole life: the sandboxed judges, one :class:`LocalExecutor` per setting.

    Registered once per cluster (``idempotent``), so its sandbox fork server starts with the
    worker's first submission and then serves every later run; ``teardown`` (the worker closing)
    stops it. One judge at a time per worker process: start workers with ``--nthreads 1``.
    """

    idempotent = True
    name = JUDGES_PLUGIN

    def setup(self, worker: Any) -> None:
        self.lock = threading.Lock()
        self.executors: dict[tuple, Any] = {}
        _freeze_heap_in_forked_children()
        # The judges' and fork servers' scratch folders live (and die) with the worker's own folder,
        # which Dask deletes when the worker closes, or on the next start if the worker was killed.
        tempfile.tempdir = str(worker.local_directory)

    def teardown(self, worker: Any) -> None:
        executors, self.executors = getattr(self, "executors", {}), {}
        for executor in executors.values():
            executor.close()

    def run(self, job: Job, settings: dict[str, Any],
            on_start: Callable[[Job], None] | None) -> tuple[JobResult, str]:
        """Judge one job with the executor of these settings; returns its result and isolation note."""
        from course.grading.runner import LocalExecutor
        key = tuple(sorted(settings.items()))
        with self.lock:
            executor = self.executors.get(key)
            if executor is None:
                executor = self.executors[key] = LocalExecutor(1, **settings)
            return executor.run([job], on_start=on_start)[0], executor.isolation_note


_FREEZE_REGISTERED: list[bool] = []


def _freeze_heap_in_forked_children() -> None:
    """Judges forked from this worker move the inherited heap out of the garbage collector's sight.

    pytest runs full collections when a session ends; in a child forked from a process holding
    torch, transformers and Dask, each one walks (and, copy-on-write, copies) the whole inherited
    heap: most of a small submission's judge time. ``gc.freeze()`` in the child is O(1).
    """
    if not _FREEZE_REGISTERED:
        os.register_at_fork(after_in_child=gc.freeze)
        _FREEZE_REGISTERED.append(True)


class GraderPlugin(WorkerPlugin):
    """Installed on every worker for one run (also on workers that join later): the grader bundles.

    ``setup`` checks each bundle's sha256 and unpacks it into the worker's own folder, which no
    sandbox can see; ``teardown`` (when the run ends) deletes them.
    """

    def __init__(self, name: str, bundles: dict[str, bytes], *, backend: str, device: str,
                 require_isolation: bool, isolation: str = "auto"):
        self.name = name
        self.bundles = bundles              # sha256 -> tar bytes
        self.settings = {"backend": backend, "device": device, "require_isolation": require_isolation,
                         "isolation": isolation}
        self.course_version = course.__version__

    def setup(self, worker: Any) -> None:
        self.address = str(getattr(worker, "address", "") or "")
        self.folder = Path(worker.local_directory) / self.name
        under = _inside(self.folder, _sandbox_visible_roots())
        if under is not None:
            raise GradingError(f"worker {self.address}: its local directory {worker.local_directory} lies under "
                               f"{under}, which the sandbox can read; start the worker with --local-directory "
                               "elsewhere (e.g. /tmp or node-local scratch)")
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(mode=0o700, parents=True)
        self.roots = {sha: unpack_bundle(data, sha, self.folder / sha[:16]) for sha, data in self.bundles.items()}
        self.bundles = {}  # unpacked; the bytes are not needed any more

    def teardown(self, worker: Any) -> None:
        folder = getattr(self, "folder", None)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    def judge(self, judges: JudgePool, task: dict[str, Any], submission: bytes,
              on_start: Callable[[Job], None] | None = None) -> dict[str, Any]:
        """Grade one submission here; returns plain data (the result as JSON bytes, the log, a note)."""
        if task["course_version"] != self.course_version:
            raise GradingError(f"worker {self.address} runs course {self.course_version}, the coordinator "
                               f"{task['course_version']}: install the same version on every worker")
        root = self.roots.get(task["bundle"])
        if root is None:
            raise GradingError(f"worker {self.address} has no grader bundle {task['bundle'][:16]}")
        if self.settings["device"] == "cuda" and not _cuda_available():
            job = Job(task["key"], _worker_spec(root, task), Path("."))
            return {"result": encode_result(JobResult(job, False, message=(
                f"worker {self.address} offers the resource GPU but CUDA is not available there "
                "(start GPU workers only on machines with a working CUDA driver)"), started_at=_now())),
                "log": "", "note": ""}
        scratch = Path(tempfile.mkdtemp(prefix="sub-", dir=self.folder))
        try:
            _untar(submission, scratch)
            job = Job(task["key"], _worker_spec(root, task), scratch / "submission", tuple(task["only"]))
            result, note = judges.run(job, self.settings, on_start)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return {"result": encode_result(result), "log": result.log[-4000:] if not result.ok else "",
                "note": note}


def _worker_spec(root: Path, task: dict[str, Any]) -> GraderSpec:
    slug = task["slug"]
    return GraderSpec(slug=slug, root=root, hidden=root / "graders" / slug, public=root / "assignments" / slug / "tests",
                      limits=Limits(**task["limits"]), version=task["version"])


def _cuda_available() -> bool:
    try:
        import torch
        return bool(torch.cuda.is_available())
    except Exception:
        return False


def _now() -> str:
    import datetime as dt
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def grade_task(plugin_name: str, task: dict[str, Any], submission: bytes) -> dict[str, Any]:
    """The Dask task: runs on a worker, grades one submission, returns plain data."""
    from distributed import get_worker
    worker = get_worker()
    plugin, judges = worker.plugins.get(plugin_name), worker.plugins.get(JUDGES_PLUGIN)
    if plugin is None or not hasattr(plugin, "roots") or judges is None:
        raise GradingError(f"worker {worker.address} did not install the grader bundles of run {plugin_name}")

    def started(job: Job) -> None:  # the judge has forked: tell the coordinator (its progress bar)
        worker.log_event(f"{plugin_name}-start", {"key": task["key"], "worker": worker.address})

    out = plugin.judge(judges, task, submission, on_start=started)
    out["worker"] = worker.address
    return out


# ------------------------------------------------------------------ the coordinator side

@dataclass
class WorkerCounts:
    graded: int = 0
    errors: int = 0
    seconds: float = 0.0


class DaskExecutor:
    """Judges on the workers of a Dask cluster; same interface as :class:`LocalExecutor`.

    ``scheduler`` is the scheduler's address (``tcp://host:8786``); ``None`` starts a
    ``LocalCluster`` on this machine (one single-threaded worker process per core, or ``workers``).
    """

    name = "dask"

    def __init__(self, scheduler: str | None = None, *, backend: str = "sandbox", device: str = "cpu",
                 require_isolation: bool = False, isolation: str = "auto", workers: int | None = None,
                 timeout: float = 30.0, worker_wait: float = WORKER_WAIT):
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise GradingError("--executor dask needs Dask: pip install 'course[cluster]'") from None
        self.settings = {"backend": backend, "device": device, "require_isolation": require_isolation,
                         "isolation": isolation}
        self.device = device
        self.worker_wait = worker_wait
        self.isolation_note = ""
        self.run_id = secrets.token_hex(4)
        self.plugin_name = f"course-grade-{self.run_id}"
        self.placements: dict[str, list[str]] = {}   # job key -> the workers it started on, in order
        self.counts: dict[str, WorkerCounts] = {}    # worker address -> what it graded
        self._notes: dict[str, str] = {}              # worker address -> its sandbox's isolation note
        self._plugin_registered = False
        self.cluster: Any = None
        self.client: Any = None
        try:
            if scheduler is None:
                has_bokeh = importlib.util.find_spec("bokeh") is not None  # the dashboard needs it
                self.cluster = LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1,
                                            processes=True, dashboard_address=":0" if has_bokeh else None)
                scheduler = self.cluster.scheduler_address
            self.scheduler = scheduler
            self.client = Client(scheduler, timeout=timeout, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            self.close()
            raise GradingError(f"--scheduler {scheduler}: cannot reach the Dask scheduler ({exc})") from None

    @property
    def dashboard_link(self) -> str | None:
        try:
            return self.client.dashboard_link
        except Exception:  # no dashboard (bokeh not installed) or no scheduler info
            return None

    @property
    def resources(self) -> dict[str, float] | None:
        """What each task needs from its worker: a GPU when grading with ``device="cuda"``."""
        return {"GPU": 1} if self.device == "cuda" else None

    def summary(self) -> dict[str, Any]:
        """Scheduler, dashboard link and per-worker counts, as plain data (for the CLI's final table)."""
        return {
            "scheduler": self.scheduler,
            "dashboard": self.dashboard_link,
            "workers": {w: asdict(c) for w, c in sorted(self.counts.items())},
            "rescheduled": sorted(k for k, where in self.placements.items() if len(where) > 1),
        }

    # -------------------------------------------------------------- running

    def run(self, jobs: Iterable[Job], on_start: Callable[[Job], None] | None = None,
            on_done: Callable[[JobResult], None] | None = None) -> list[JobResult]:
        """Grade every job on the cluster; ``on_start`` and ``on_done`` are called in this thread.

        ``on_start`` when a worker's judge starts a job (again if a lost worker's job restarts
        elsewhere), ``on_done`` once per job, with the result that the caller then records.
        """
        jobs = list(jobs)
        if not jobs:
            return []
        self._wait_for_workers()
        shas = self._register(jobs)
        run = _Run(self, on_start, on_done)
        self.client.subscribe_topic(f"{self.plugin_name}-start", run.started_event)
        try:
            for job in jobs:
                self._submit(run, job, shas[job.spec.slug])
            run.wait()
        finally:
            try:
                self.client.unsubscribe_topic(f"{self.plugin_name}-start")
            except Exception:
                pass
            left = [f for f in run.futures if not f.done()]
            if left:  # interrupted: nothing more is recorded, the next run grades these
                self.client.cancel(left)
        self.isolation_note = _merge_notes(self._notes)
        return run.done

    def _wait_for_workers(self) -> None:
        deadline = time.monotonic() + self.worker_wait
        while True:
            workers = self.client.scheduler_info(n_workers=-1).get("workers", {})
            if self.device != "cuda" and workers:
                return
            if any(float(w.get("resources", {}).get("GPU", 0)) >= 1 for w in workers.values()):
                return
            if time.monotonic() > deadline:
                if self.device == "cuda":
                    raise GradingError(f"--device cuda: no worker of {self.scheduler} offers a GPU; start GPU "
                                       "workers with `dask worker SCHEDULER --nthreads 1 --resources GPU=1`")
                raise GradingError(f"--scheduler {self.scheduler}: no worker joined within {self.worker_wait:.0f} s")
            time.sleep(0.5)

    def _register(self, jobs: list[Job]) -> dict[str, str]:
        """Pack one bundle per assignment and install them on every worker; returns slug -> sha256."""
        bundles: dict[str, Bundle] = {}
        for job in jobs:
            if job.spec.slug not in bundles:
                bundles[job.spec.slug] = pack_bundle(job.spec)
        plugin = GraderPlugin(self.plugin_name, {b.sha256: b.data for b in bundles.values()}, **self.settings)
        try:
            self.client.register_plugin(JudgePool(), name=JUDGES_PLUGIN)  # once per cluster
            self.client.register_plugin(plugin, name=self.plugin_name)
        except GradingError:
            raise
        except Exception as exc:
            raise GradingError(f"a worker of {self.scheduler} could not install the grader bundles: {exc}") from None
        self._plugin_registered = True
        return {slug: b.sha256 for slug, b in bundles.items()}

    def _submit(self, run: "_Run", job: Job, bundle: str) -> None:
        run.jobs[job.key] = job
        try:
            payload = pack_submission(job.submission)
        except GradingError as exc:
            run.finish(job, JobResult(job, False, message=str(exc), started_at=_now()), None)
            return
        task = {"key": job.key, "slug": job.spec.slug, "bundle": bundle, "version": job.spec.version,
                "limits": asdict(job.spec.limits), "only": list(job.only), "course_version": course.__version__}
        key = f"course-{job.key.replace('/', '.')}-{self.run_id}"
        run.tasks[key] = job
        run.futures.append(self.client.submit(grade_task, self.plugin_name, task, payload, key=key, pure=False,
                                              resources=self.resources))

    def result_of(self, fut: Any, job: Job) -> tuple[JobResult, str | None]:
        """A finished task's result and worker; a failed or lost task is an infrastructure error."""
        if fut.status == "finished":
            try:
                data = fut.result()
                result = decode_result(job, data["result"])
            except Exception as exc:  # a malformed reply is an infrastructure failure, never a grade
                return JobResult(job, False, message=f"the worker's reply could not be read: {exc}",
                                 started_at=_now()), None
            result.log = str(data.get("log", ""))
            worker = str(data.get("worker", "?"))
            if data.get("note"):
                self._notes[worker] = str(data["note"])
            return result, worker
        if fut.status == "error":
            exc = fut.exception()
            return JobResult(job, False, message=f"the Dask task failed: {type(exc).__name__}: {exc}"[:2000],
                             started_at=_now()), None
        return JobResult(job, False, message=f"the Dask task was {fut.status} (scheduler {self.scheduler} lost?)",
                         started_at=_now()), None

    def close(self) -> None:
        if self.client is not None:
            if self._plugin_registered:
                try:
                    self.client.unregister_worker_plugin(self.plugin_name)
                except Exception:
                    pass
            try:
                self.client.close()
            except Exception:
                pass
            self.client = None
        if self.cluster is not None:
            try:
                self.cluster.close()
            except Exception:
                pass
            self.cluster = None


class _Run:
    """One ``run()``'s bookkeeping: futures, start events (from the workers) and finished jobs."""

    def __init__(self, ex: DaskExecutor, on_start: Callable[[Job], None] | None,
                 on_done: Callable[[JobResult], None] | None):
        self.ex, self.on_start, self.on_done = ex, on_start, on_done
        self.jobs: dict[str, Job] = {}      # job key -> job
        self.tasks: dict[str, Job] = {}     # Dask task key -> job
        self.futures: list[Any] = []
        self.done: list[JobResult] = []
        self.finished: set[str] = set()
        self.events: queue.Queue = queue.Queue()
        self.progress = time.monotonic()    # when a judge last started or finished

    def started_event(self, event: tuple[float, dict[str, str]]) -> None:
        """Called in the client's event loop thread: only queue it for the coordinating thread."""
        self.events.put(event[1])

    def started(self, job: Job, worker: str) -> None:
        self.ex.placements.setdefault(job.key, []).append(worker)
        self.progress = time.monotonic()
        if self.on_start:
            self.on_start(job)

    def drain(self, timeout: float = 0.0) -> None:
        while True:
            try:
                msg = self.events.get(timeout=timeout) if timeout else self.events.get_nowait()
            except queue.Empty:
                return
            timeout = 0.0
            job = self.jobs.get(msg["key"])
            if job is not None and job.key not in self.finished:
                self.started(job, msg["worker"])

    def finish(self, job: Job, result: JobResult, worker: str | None) -> None:
        if job.key not in self.ex.placements:  # its start event is still in flight: keep the order
            self.started(job, worker or "?")
        self.finished.add(job.key)
        self.progress = time.monotonic()
        if worker is not None:
            c = self.ex.counts.setdefault(worker, WorkerCounts())
            c.graded += result.ok
            c.errors += not result.ok
            c.seconds = round(c.seconds + result.duration, 3)
        self.done.append(result)
        if self.on_done:
            self.on_done(result)

    def wait(self) -> None:
        from distributed import as_completed
        pending = as_completed(self.futures, loop=self.ex.client.loop)
        stall = max(job.spec.limits.submission_timeout for job in self.jobs.values()) + STALL_SLACK
        while not pending.is_empty():
            if time.monotonic() - self.progress > stall:
                left = len(self.jobs) - len(self.finished)
                raise GradingError(
                    f"--scheduler {self.ex.scheduler}: no judge started or finished for {stall:.0f} s with "
                    f"{left} submission{'s' * (left != 1)} still to grade (are the workers alive, and do any "
                    "offer what these jobs need?); what was graded is recorded: run again for the rest")
            self.drain()
            batch = pending.next_batch(block=False) if pending.has_ready() else []
            if not batch:
                self.drain(timeout=0.1)
                continue
            for fut in batch:
                job = self.tasks[fut.key]
                result, worker = self.ex.result_of(fut, job)
                fut.release()
                self.finish(job, result, worker)


def _merge_notes(notes: dict[str, str]) -> str:
    """One line per distinct isolation note, with how many workers gave it."""
    count: dict[str, int] = {}
    for note in notes.values():
        if note:
            count[note] = count.get(note, 0) + 1
    return "; ".join(f"{note} (on {n} worker{'s' * (n > 1)})" for note, n in sorted(count.items()))

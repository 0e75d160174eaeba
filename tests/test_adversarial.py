"""The attack corpus (tests/adversarial/), graded end to end by `course grade`.

One class run grades every hostile submission together with honest controls, one graded before
them and two after, through ``api.collect`` and ``api.grade`` (sandbox backend, two jobs, strong
isolation required). For each case: its score is at most what its honest code earns (the
``ceiling`` in tests/adversarial/cases.toml, which also names the layer that stops it); the
controls' results are exactly those of a quiet run; every submission is graded, so the grader kept
running. Attacks that escape would leave traces that are checked too: a connection to a listener
on this machine's loopback, a file that unpickling would create, processes that outlive their
submission, hidden text in feedback.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from course import api, report
from course.gradebook import ResultRow
from course.grading.sandbox import strong_isolation_available

HERE = Path(__file__).parent
CORPUS = HERE / "adversarial"
TOY = HERE / "files" / "toycourse"
CASES: dict[str, dict] = tomllib.loads((CORPUS / "cases.toml").read_text(encoding="utf-8"))
CONTROLS = {"aaa-honest": 9.0, "zzz-honest": 9.0, "zzz-partial": 5.0}
MARKERS = [Path("/tmp/course-adversarial-pickle-ran"), Path("/tmp/course-adversarial-zip-slip.py"),
           Path("/tmp/course-adversarial-zip-slip-absolute.py")]
LINGERERS = {"setsid_daemon": "adv-daemon", "fork_bomb": "adv-forkbomb"}  # process names they set

STRONG, WHY_NOT = strong_isolation_available()
pytestmark = pytest.mark.skipif(not STRONG, reason=f"the corpus needs strong isolation: {WHY_NOT}")


@dataclass
class ClassRun:
    course: object
    collected: dict[str, object]
    rows: dict[str, object]
    results: dict[str, list[ResultRow]]
    connections: list[bytes]
    lingering: dict[str, list[int]] = field(default_factory=dict)


def _alive_named(name: str) -> list[int]:
    """Pids of live (not zombie) processes whose name is ``name``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if comm == name and state not in ("Z", "X"):
            pids.append(int(entry.name))
    return pids


def _lingering(name: str, grace: float = 5.0) -> list[int]:
    """Processes named ``name`` still alive ``grace`` seconds from now (SIGKILL is asynchronous)."""
    deadline = time.monotonic() + grace
    while (pids := _alive_named(name)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return pids


def _build_class(folder: Path) -> None:
    folder.mkdir()
    for name in CASES:
        src = CORPUS / name
        if (src / "submission.zip").exists():
            shutil.copyfile(src / "submission.zip", folder / f"{name}.zip")
        else:
            shutil.copytree(src, folder / name)
    solution = (TOY / "solutions" / "vecops" / "vecops.py").read_text(encoding="utf-8")
    partial = solution.replace("return (a * b).sum()", "return (a * b).sum() + 0.5")
    for student, text in (("aaa-honest", solution), ("zzz-honest", solution), ("zzz-partial", partial)):
        (folder / student).mkdir()
        (folder / student / "vecops.py").write_text(text, encoding="utf-8")


def _listen(server: socket.socket, got: list[bytes], stop: threading.Event) -> None:
    server.settimeout(0.2)
    while not stop.is_set():
        try:
            conn, _ = server.accept()
        except socket.timeout:
            continue
        with conn:
            conn.settimeout(1.0)
            try:
                got.append(conn.recv(100) or b"<connected>")
            except OSError:
                got.append(b"<connected>")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> ClassRun:
    root = tmp_path_factory.mktemp("adversarial")
    course_dir = root / "course"
    shutil.copytree(TOY, course_dir, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copyfile(CORPUS / "course.yml", course_dir / "course.yml")
    klass = root / "class"
    _build_class(klass)
    for marker in MARKERS:
        marker.unlink(missing_ok=True)
    server = socket.create_server(("127.0.0.1", 0))
    (klass / "network_connect" / "port.txt").write_text(str(server.getsockname()[1]))
    connections: list[bytes] = []
    stop = threading.Event()
    listener = threading.Thread(target=_listen, args=(server, connections, stop), daemon=True)
    listener.start()

    course = api.load_course(course_dir / "course.yml")
    collected = api.collect(course, klass, "vecops", submitted_at="2026-10-01T12:00:00+00:00")
    lingering: dict[str, list[int]] = {}

    def on_done(row: api.GradeRow) -> None:  # the runner has killed the slot's leftovers by now
        if row.student in LINGERERS:
            lingering[row.student] = _lingering(LINGERERS[row.student])

    try:
        report = api.grade(course, ["vecops"], jobs=2, require_isolation=True, on_done=on_done)
    finally:
        stop.set()
        listener.join()
        server.close()
    with api.open_gradebook(course) as gb:
        results = {}
        for sub in gb.submissions(["vecops"]):
            grading = gb.current_grading(sub.id)
            results[sub.student] = gb.results(grading.id) if grading else []
    return ClassRun(course, {c.student: c for c in collected.items}, {r.student: r for r in report.rows},
                    results, connections, lingering)


def test_the_corpus_is_complete() -> None:
    folders = {p.name for p in CORPUS.iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert folders == set(CASES), "every folder of tests/adversarial/ needs an entry in cases.toml, and back"
    assert len(CASES) >= 30
    for name, case in CASES.items():
        assert {"ceiling", "attack", "layer"} <= set(case), name


@pytest.mark.parametrize("case", sorted(c for c in CASES if CASES[c].get("archive") != "refused"))
def test_a_hostile_submission_earns_no_more_than_its_honest_code(run: ClassRun, case: str) -> None:
    row = run.rows[case]
    assert row.status == "graded", f"{case}: {row.message}"
    assert row.points <= CASES[case]["ceiling"], (
        f"{case} ({CASES[case]['attack']}) earned {row.points}: "
        + "; ".join(f"{r.name} {r.outcome}" for r in run.results[case] if r.outcome == "passed"))
    assert row.isolation == "strong"


def test_the_honest_controls_are_untouched(run: ClassRun) -> None:
    for student, points in CONTROLS.items():
        row = run.rows[student]
        assert (row.status, row.points, row.pending, row.isolation) == ("graded", points, 1, "strong"), student
    honest = {r.name: r.outcome for r in run.results["zzz-honest"]}
    assert honest == {r.name: r.outcome for r in run.results["aaa-honest"]}
    assert set(honest.values()) == {"passed", "pending"}
    partial = {r.name: r.outcome for r in run.results["zzz-partial"]}
    assert {n for n, o in partial.items() if o != "passed" and o != "pending"} == {
        n for n in partial if "dot" in n}


def test_the_grader_kept_running_and_graded_everyone(run: ClassRun) -> None:
    graded = {s for s, r in run.rows.items() if r.status == "graded"}
    expected = set(CONTROLS) | {c for c in CASES if CASES[c].get("archive") != "refused"}
    assert graded == expected
    assert not [r for r in run.rows.values() if r.status == "error"]


def test_a_zip_slip_archive_is_refused_and_writes_nothing_outside(run: ClassRun) -> None:
    item = run.collected["zip_slip"]
    assert item.status == "error" and "unsafe" in item.message
    assert "zip_slip" not in run.rows
    assert not [m for m in MARKERS[1:] if m.exists()]


def test_a_zip_holding_symlinks_is_refused(run: ClassRun) -> None:
    item = run.collected["zip_symlink_shadow"]
    assert item.status == "error" and "is a symbolic link" in item.message
    assert "zip_symlink_shadow" not in run.rows


def test_no_connection_reached_the_grading_machine(run: ClassRun) -> None:
    assert run.rows["network_connect"].status == "graded"
    assert run.connections == []


def test_nothing_was_ever_unpickled(run: ClassRun) -> None:
    assert run.rows["pickle_payload"].status == "graded"
    assert not MARKERS[0].exists()


@pytest.mark.parametrize("case", sorted(LINGERERS))
def test_no_process_outlives_its_submission(run: ClassRun, case: str) -> None:
    assert run.lingering[case] == []
    assert _alive_named(LINGERERS[case]) == []


def test_the_layers_say_what_stopped_them(run: ClassRun) -> None:
    def outcomes(case: str, word: str) -> set[str]:
        return {r.outcome for r in run.results[case] if word in r.name}

    assert outcomes("cpu_spin_sigxcpu", "normalize") == {"timeout"}
    assert outcomes("exit_os_in_call", "dot") == {"error"}
    assert outcomes("stack_overflow", "dot") == {"error"}
    assert outcomes("exit_sys_in_call", "normalize") == {"failed"}
    huge = [r for r in run.results["huge_reply"] if r.name.endswith("test_dot_small")]
    assert huge and "byte cap" in huge[0].message
    nan = [r for r in run.results["nan_inf_reply"] if r.name.endswith("test_dot_small")]
    assert nan and "NaN or infinity" in nan[0].message
    bomb = [r for r in run.results["memory_fork_bomb"] if r.name.endswith("test_dot_small")]
    assert bomb and bomb[0].outcome in ("error", "timeout")  # a slow machine may reach the timeout first
    assert bomb[0].outcome == "timeout" or "MiB memory limit" in bomb[0].message or "of memory together" in bomb[0].message


def test_no_hidden_text_reaches_students(run: ClassRun) -> None:
    hidden_source = (TOY / "graders" / "vecops" / "test_hidden_vecops.py").read_text(encoding="utf-8")
    secrets = [line.strip() for line in hidden_source.splitlines() if "assert" in line or "torch.randn" in line]
    try:
        secrets.append(Path("/etc/shadow").read_text().splitlines()[0])
    except (OSError, IndexError):
        pass
    secrets += ["HIDDEN-SENTINEL", "PROBE-SENTINEL"]   # planted in the hidden inputs and in probes.py
    public = [r.message for rows in run.results.values() for r in rows] + [
        p.read_text(encoding="utf-8", errors="replace") for p in api.feedback(run.course)]
    for fmt in ("csv", "junit", "gradescope"):
        public += [p.read_text(encoding="utf-8", errors="replace") for p in api.export(run.course, fmt)]
    with api.open_gradebook(run.course) as gb:
        for g in report.load_graded(run.course, gb, ["vecops"]):
            if g.status == "graded":
                public += [report.ci_summary(g), *report.github_annotations(g)]
    leaks = [s for s in secrets if s and any(s in text for text in public)]
    assert leaks == []
    hidden_messages = [r.message for rows in run.results.values() for r in rows if r.hidden]
    assert set(hidden_messages) == {""}


def test_poisoned_text_breaks_no_output(run: ClassRun) -> None:
    """The poison_* cases' strings leave every trusted output parseable and unforged."""
    import xml.etree.ElementTree as ET
    (junit,) = api.export(run.course, "junit")
    ET.parse(junit)                                      # XML 1.0 throughout
    (grades,) = api.export(run.course, "csv")
    text = grades.read_text(encoding="utf-8")
    assert "\ud800" not in text and "\x00" not in text
    pages = {p.name: p.read_text(encoding="utf-8") for p in api.feedback(run.course, ["vecops"],
                                                                           [c for c in CASES if c.startswith("poison")])}
    for name, page in pages.items():
        assert "\x1b" not in page and "\x00" not in page
        if name.endswith(".html"):
            assert "<script>" not in page
        else:
            from markdown_it import MarkdownIt
            tokens = MarkdownIt("commonmark").enable("table").parse(page)
            assert not [t for t in tokens if t.type in ("html_block", "html_inline")]
            assert "\n# Score: 100" not in page and "\n# Forged" not in page
            headings = [line for line in page.splitlines() if line.startswith("#")]
            assert all(not h.startswith("# ") or "feedback for" in h for h in headings), headings
    with api.open_gradebook(run.course) as gb:
        for g in report.load_graded(run.course, gb, ["vecops"], [c for c in CASES if c.startswith("poison")]):
            for line in report.github_annotations(g):
                assert "\n" not in line and line.count("::") == 2

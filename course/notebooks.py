"""nbgrader-backed notebook parts of an assignment.

nbgrader is the notebook tool instructors know, and it stays the tool for authoring (its cell
metadata), generating the student version, the formgrader where TAs grade written answers, and
feedback. It does not decide points: its hidden-test cells run inside the student's kernel, where
student code can subvert them (an always-true ``__eq__``, a patched ``assert``). So:

* :func:`execute_notebook` runs a submitted notebook **inside the sandbox worker** (called from a
  probe): a Jupyter kernel started by nbclient as a child of the worker, under the worker's
  limits, talking over ZeroMQ's ``ipc`` transport (Unix sockets: the worker's seccomp filter
  refuses ``AF_INET``/``AF_INET6`` sockets and there is no network anyway). The named answers come
  back as JSON data, never as objects, and the hidden tests compare them with the answer key in
  the trusted process.
* :func:`tampered_cells` (trusted process) checks the submission's read-only and graded cells
  against nbgrader's checksums of the released notebook.
* :func:`manual_scores` (trusted process) reads the TAs' manual scores from nbgrader's gradebook
  as plain records for the course gradebook; :func:`stage_for_formgrader` puts submissions into
  nbgrader's gradebook without running any student code, so that TAs can grade them.
* :func:`generate_student_version` runs nbgrader's ``generate_assignment`` on a source notebook.

Traps: nbgrader shells out to ``alembic`` when it creates a gradebook (this module puts the
interpreter's ``bin`` folder on ``PATH``), and executing a notebook needs ``ipykernel``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from course import textsafe
from course.errors import CourseError

# jsonschema (imported by nbformat) imports the optional ``rfc3987_syntax`` when it is installed,
# which builds a grammar for about 9 seconds: in every grading worker that runs a notebook. Nothing
# here validates IRIs, so it is kept out; jsonschema then simply skips that one format checker.
sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]


class NotebookError(CourseError):
    """A notebook could not be generated, read or executed (the message says which and why)."""


# ------------------------------------------------------------------ reading (plain JSON: no code runs)

def load_notebook(source: Path | str | dict) -> dict:
    """A notebook as plain JSON data, from a ``Path``, its JSON text (a ``str``) or a parsed dict.

    Only JSON is parsed (no nbformat validation, no code), so this is safe and fast on untrusted
    submissions, and a submission that nbformat would reject can still be inspected. Each cell's
    ``source`` is joined into one string, as nbformat does.
    """
    try:
        if isinstance(source, dict):
            data = source
        elif isinstance(source, Path):
            if not source.is_file():
                raise NotebookError(f"{source}: no such notebook")
            data = json.loads(source.read_text(encoding="utf-8"))
        else:  # text: never taken for a file name (it may come from a submission)
            data = json.loads(source)
    except (ValueError, OSError) as exc:
        raise NotebookError(f"the notebook is not valid JSON: {exc}"[:500]) from None
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        raise NotebookError("the notebook has no list of cells")
    cells = []
    for cell in data["cells"]:
        if not isinstance(cell, dict):
            raise NotebookError("the notebook holds a cell that is not a JSON object")
        text = cell.get("source", "")
        cells.append({**cell, "source": "".join(text) if isinstance(text, list) else str(text)})
    return {**data, "cells": cells}


def _nbgrader_meta(cell: dict) -> dict:
    metadata = cell.get("metadata", {})
    meta = metadata.get("nbgrader", {}) if isinstance(metadata, dict) else {}
    return meta if isinstance(meta, dict) else {}


def grade_cells(notebook: dict) -> dict[str, dict]:
    """``grade_id`` -> cell, for every cell that carries nbgrader metadata (the first one wins)."""
    out: dict[str, dict] = {}
    for cell in notebook["cells"]:
        grade_id = _nbgrader_meta(cell).get("grade_id")
        if isinstance(grade_id, str) and grade_id not in out:
            out[grade_id] = cell
    return out


def checksum(cell: dict) -> str:
    """nbgrader's checksum of a cell (``nbgrader.utils.compute_checksum``), without importing nbgrader.

    md5 over the source, the cell type, the grade/solution/locked flags, the grade id and, for
    grade cells, the points. :func:`generate_student_version` verifies that this agrees with the
    checksums nbgrader itself writes, so a change of nbgrader's algorithm cannot go unnoticed.
    """
    meta = _nbgrader_meta(cell)
    grade, solution = meta.get("grade", False), meta.get("solution", False)
    locked = False if solution else True if grade else meta.get("locked", False)  # nbgrader's is_locked
    m = hashlib.md5()
    for part in (cell.get("source", ""), cell.get("cell_type", ""), str(grade), str(solution), str(locked),
                 meta["grade_id"]):
        m.update(str(part).encode("utf-8"))
    if grade:
        m.update(str(float(meta["points"])).encode("utf-8"))
    return m.hexdigest()


# ------------------------------------------------------------------ generating (instructor side)

@contextlib.contextmanager
def _nbgrader_environment() -> Iterator[None]:
    """nbgrader shells out to ``alembic``: put this interpreter's ``bin`` folder on PATH."""
    old = os.environ.get("PATH", "")
    bin_dir = str(Path(sys.executable).parent)
    os.environ["PATH"] = bin_dir + os.pathsep + old if bin_dir not in old.split(os.pathsep) else old
    try:
        yield
    finally:
        os.environ["PATH"] = old


def generate_student_version(source: Path, dest: Path, assignment: str = "assignment") -> Path:
    """Run nbgrader's ``generate_assignment`` on one source notebook and write the student version.

    Solution regions (``### BEGIN SOLUTION``) become stubs, manually graded answers become
    "YOUR ANSWER HERE", hidden tests go, and nbgrader records checksums of the read-only and
    graded cells in their metadata. Runs in a scratch nbgrader course (no gradebook is written).

    Returns:
        ``dest``.
    """
    from traitlets.config import Config
    from nbgrader.converters import GenerateAssignment
    source, dest = Path(source), Path(dest)
    with tempfile.TemporaryDirectory(prefix="course-nbgrader-") as tmp, _nbgrader_environment():
        (Path(tmp) / "source" / assignment).mkdir(parents=True)
        shutil.copyfile(source, Path(tmp) / "source" / assignment / source.name)
        config = Config()
        config.CourseDirectory.root = tmp
        config.CourseDirectory.assignment_id = assignment
        config.GenerateAssignment.no_database = True
        config.SaveCells.enabled = False  # what nbgrader's --no-db flag sets
        config.GenerateAssignment.force = True
        _run_converter(GenerateAssignment, config, f"generate_assignment of {source}")
        produced = Path(tmp) / "release" / assignment / source.name
        if not produced.is_file():
            raise NotebookError(f"{source}: nbgrader generate_assignment wrote no notebook")
        for grade_id, cell in grade_cells(load_notebook(produced)).items():
            stored = _nbgrader_meta(cell).get("checksum")
            if stored is not None and stored != checksum(cell):
                raise NotebookError(f"{source}: cell {grade_id!r}: course.notebooks.checksum disagrees with "
                                    "nbgrader's checksum (did nbgrader change its algorithm?)")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(produced, dest)
    return dest


def readonly_checksums(released: Path | str | dict) -> dict[str, str]:
    """``grade_id`` -> nbgrader checksum of every cell the student may not change (released notebook).

    Those are the read-only cells and the autograder-test cells; answer cells are excluded.
    """
    nb = load_notebook(released)
    out = {}
    for grade_id, cell in grade_cells(nb).items():
        meta = _nbgrader_meta(cell)
        if (meta.get("locked") or meta.get("grade")) and not meta.get("solution"):
            if "checksum" not in meta:
                raise NotebookError(f"cell {grade_id!r} has no nbgrader checksum: is this the generated version?")
            out[grade_id] = meta["checksum"]
    return out


# ------------------------------------------------------------------ tampering (trusted process)

def tampered_cells(submitted: Path | str | dict, reference: dict[str, str] | Path | str) -> list[str]:
    """Read-only or test cells of a submission that differ from the released notebook, in words.

    ``reference`` is :func:`readonly_checksums` of the released notebook (or the released notebook
    itself). Each such cell is found in the submission by its nbgrader ``grade_id`` and its
    checksum recomputed from what was submitted (source, cell type, nbgrader flags, points), so
    edits of the stored checksum do not hide a change. An empty list means nothing was tampered
    with. A submission that is not a notebook at all is reported as such.
    """
    if not (isinstance(reference, dict) and all(isinstance(v, str) for v in reference.values())):
        reference = readonly_checksums(reference)
    try:
        nb = load_notebook(submitted)
    except NotebookError as exc:
        return [str(exc)]
    cells = grade_cells(nb)
    problems = []
    for grade_id, expected in reference.items():
        cell = cells.get(grade_id)
        if cell is None:
            problems.append(f"read-only cell {grade_id!r} was deleted (or its nbgrader metadata removed)")
            continue
        try:
            actual = checksum(cell)
        except (KeyError, TypeError, ValueError):  # malformed metadata (e.g. points that are not a number)
            problems.append(f"read-only cell {grade_id!r} has malformed nbgrader metadata")
            continue
        if actual != expected:
            problems.append(f"read-only cell {grade_id!r} was changed")
    seen: dict[str, int] = {}
    for cell in nb["cells"]:
        grade_id = _nbgrader_meta(cell).get("grade_id")
        if isinstance(grade_id, str):
            seen[grade_id] = seen.get(grade_id, 0) + 1
    problems += [f"cell id {g!r} appears {n} times" for g, n in seen.items() if n > 1 and g in reference]
    return problems


# ------------------------------------------------------------------ executing (inside the sandbox)

# How the kernel starts. ipykernel's IOPub thread binds a ``tcp://127.0.0.1`` pipe (it carries the
# output of forked subprocesses); in the sandbox the seccomp filter refuses AF_INET sockets and
# libzmq aborts the kernel on that refusal. Every other channel uses the ``ipc`` transport, so this
# launcher turns that one pipe off (forked subprocesses' output is then not captured) and starts
# ipykernel as ``python -m ipykernel_launcher`` would.
_KERNEL_BOOT = (
    "import ipykernel.iostream as _iostream\n"
    "def _no_pipe(self):\n"
    "    self._pipe_flag = False\n"
    "_iostream.IOPubThread._setup_pipe_in = _no_pipe\n"
    "from ipykernel.kernelapp import launch_new_instance\n"
    "launch_new_instance()\n"
)


def _kernel_spec_dir(root: Path) -> Path:
    """A kernel spec running this interpreter with this process's import path (the sandbox's
    interpreter runs with ``-I -S`` and an explicit ``sys.path``; the kernel must see the same)."""
    spec_dir = root / "kernels" / "course-python"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-c", _KERNEL_BOOT, "-f", "{connection_file}",
                 "--HistoryManager.hist_file=:memory:"],
        "display_name": "Python (course sandbox)",
        "language": "python",
        "env": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "PYTHONNOUSERSITE": "1",
                "MPLBACKEND": "agg"},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    return root / "kernels"


def _extraction_source(names: list[str], marker: str) -> str:
    """The code appended to the notebook: prints the named globals as one JSON line."""
    return (
        "import json as _course_json\n"
        f"_course_names = {names!r}\n"
        "_course_values = {}\n"
        "for _course_name in _course_names:\n"
        "    if _course_name in globals():\n"
        "        try:\n"
        "            _course_json.dumps(globals()[_course_name])\n"
        "            _course_values[_course_name] = globals()[_course_name]\n"
        "        except Exception as _course_exc:\n"
        "            _course_values[_course_name] = {'$unserialisable': repr(type(globals()[_course_name]))[:200]}\n"
        f"print({marker!r} + _course_json.dumps(_course_values))\n"
    )


def execute_notebook(path: Path | str, names: list[str], *, timeout: float = 60.0,
                     startup_timeout: float = 60.0) -> dict[str, Any]:
    """Execute a notebook in a fresh Jupyter kernel and return the named global variables as data.

    Meant to run inside the sandbox worker (from a probe). The kernel is a child process of the
    caller (so it inherits the worker's limits, namespaces and seccomp filter) and talks to it over
    ZeroMQ's ``ipc`` transport in a private temporary folder. Every code cell runs, errors or not
    (``allow_errors``), then one appended cell prints the values of ``names`` as JSON, which is
    parsed here: only JSON-able data (dicts, lists, strings, numbers, bools, None) comes back.
    JSON turns dict keys into strings.

    Returns:
        ``{"values": {name: value}, "missing": [names not defined], "errors": ["cell 3: ValueError: ..."],
        "unserialisable": [names whose value is not JSON data]}``.

    Raises:
        NotebookError: the notebook cannot be read, or the kernel cannot start or run it.
    """
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    import nbformat

    try:
        nb = nbformat.read(Path(path), as_version=4)
    except Exception as exc:  # nbformat raises several kinds (JSON, validation, version)
        raise NotebookError(f"{path}: the notebook cannot be read: {type(exc).__name__}: {exc}"[:500]) from None
    marker = f"__course_answers_{secrets.token_hex(8)}__:"
    nb.cells.append(nbformat.v4.new_code_cell(_extraction_source(list(names), marker)))
    workdir = str(Path(path).resolve().parent)
    with tempfile.TemporaryDirectory(prefix="course-kernel-") as tmp:
        root = Path(tmp)
        ksm = KernelSpecManager(kernel_dirs=[str(_kernel_spec_dir(root))], ensure_native_kernel=False)

        class SandboxKernelManager(AsyncKernelManager):
            """Our kernel spec, over ipc sockets in the private folder. nbclient creates it, so nbclient
            also shuts the kernel down and closes its sockets when the notebook is done."""

            def __init__(self, **kwargs: Any):
                super().__init__(kernel_spec_manager=ksm, transport="ipc", ip=str(root / "ipc"),
                                 connection_file=str(root / "connection.json"), **kwargs)

        client = NotebookClient(nb, kernel_manager_class=SandboxKernelManager, kernel_name="course-python",
                                timeout=timeout, startup_timeout=startup_timeout, allow_errors=True,
                                shutdown_kernel="immediate", resources={"metadata": {"path": workdir}})
        try:
            client.execute()  # starts the kernel, runs every cell, shuts the kernel down
        except (CellTimeoutError, DeadKernelError, TimeoutError, RuntimeError, OSError) as exc:
            raise NotebookError(f"the notebook could not be executed: {type(exc).__name__}: {exc}"[:1000]) from None
    errors = []
    for index, cell in enumerate(nb.cells[:-1]):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                errors.append(f"cell {index}: {output.get('ename', '?')}: {output.get('evalue', '')}"[:300])
    payload = None
    for output in nb.cells[-1].get("outputs", []):
        if output.get("output_type") == "stream" and output.get("name") == "stdout":
            for line in output.get("text", "").splitlines():
                if line.startswith(marker):
                    payload = line[len(marker):]
    if payload is None:
        raise NotebookError("the notebook's answers could not be read back (the last cell printed nothing); "
                            + ("; ".join(errors[-3:]) or "no error was shown"))
    values = json.loads(payload)
    unserialisable = sorted(n for n, v in values.items() if isinstance(v, dict) and "$unserialisable" in v)
    for name in unserialisable:
        del values[name]
    return {"values": values, "missing": [n for n in names if n not in values and n not in unserialisable],
            "errors": errors, "unserialisable": unserialisable}


def written_answers(notebook: Path | str | dict) -> dict[str, str]:
    """``grade_id`` -> text of every manually graded answer cell (markdown or code)."""
    nb = load_notebook(notebook)
    return {grade_id: cell["source"] for grade_id, cell in grade_cells(nb).items()
            if _nbgrader_meta(cell).get("solution") and _nbgrader_meta(cell).get("grade")}


# ------------------------------------------------------------------ the TAs' manual scores

@dataclass(frozen=True)
class ManualScore:
    """One manually graded cell of one submission; ``score`` is None until a TA has graded it."""

    student: str
    assignment: str
    cell: str           # nbgrader grade_id, prefixed by the notebook name: "activity/justify_1"
    score: float | None
    max_score: float

    @property
    def needs_grading(self) -> bool:
        return self.score is None


def _gradebook_url(gradebook: Path | str) -> str:
    text = str(gradebook)
    return text if "://" in text else f"sqlite:///{Path(text).resolve()}"


def manual_scores(gradebook: Path | str, assignment: str | None = None) -> list[ManualScore]:
    """The manually graded cells of every submission in an nbgrader gradebook, as plain records.

    ``gradebook`` is nbgrader's ``gradebook.db`` (a path) or a database URL. A cell counts as
    manually graded when nbgrader says it needs a person: written answers (markdown or code
    answer cells with points), or any grade a TA overrode. Its score is the TA's
    ``manual_score``; an answer left as distributed scores nbgrader's automatic 0; otherwise
    ``None`` ("needs manual grading"). Overridden autograded cells report the override.
    Sorted by student, assignment, cell.
    """
    from nbgrader.api import Gradebook
    path = Path(str(gradebook))
    if "://" not in str(gradebook) and not path.is_file():
        raise NotebookError(f"{gradebook}: no nbgrader gradebook here (run nbgrader's autograde first)")
    out = []
    with _nbgrader_environment(), Gradebook(_gradebook_url(gradebook)) as gb:
        for assignment_row in gb.assignments:
            if assignment is not None and assignment_row.name != assignment:
                continue
            for submission in assignment_row.submissions:
                for notebook in submission.notebooks:
                    for grade in notebook.grades:
                        cell = grade.cell
                        written = cell.cell_type == "markdown" or bool(getattr(cell, "solution", False))
                        if not written and grade.manual_score is None:
                            continue  # an autograded cell nobody overrode: not a manual score
                        if grade.manual_score is not None:
                            score = float(grade.manual_score)
                        elif not grade.needs_manual_grade and grade.auto_score is not None:
                            score = float(grade.auto_score)  # nbgrader's 0 for an answer left blank
                        else:
                            score = None
                        out.append(ManualScore(
                            student=submission.student.id, assignment=assignment_row.name,
                            cell=f"{notebook.name}/{cell.name}", score=score, max_score=float(grade.max_score)))
    return sorted(out, key=lambda s: (s.student, s.assignment, s.cell))


_ACTIVE_OUTPUTS = ("text/html", "application/javascript", "text/javascript", "image/svg+xml", "text/markdown",
                   "text/latex", "application/vnd.jupyter.widget-view+json")


def _inert_markdown(text: str) -> str:
    """Markdown that renders as the student wrote it, but with no live HTML (tags show as text)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def inert_notebook(path: Path | str) -> dict:
    """A student's notebook made safe to open in the formgrader a TA uses: markdown cells keep their
    text but cannot carry HTML or script, outputs keep only their plain-text form, attachments go.
    Code is untouched (it never runs there)."""
    nb = load_notebook(Path(path))
    for cell in nb.get("cells", []):
        cell.pop("attachments", None)
        if cell.get("cell_type") in ("markdown", "raw"):
            source = cell.get("source", "")
            text = "".join(source) if isinstance(source, list) else str(source)
            cell["source"] = _inert_markdown(textsafe.clean(text, 200_000))
        for output in cell.get("outputs", []) or []:
            data = output.get("data")
            if isinstance(data, dict):
                for mime in [m for m in data if m in _ACTIVE_OUTPUTS or "javascript" in m or "html" in m]:
                    del data[mime]
                if not data:
                    data["text/plain"] = "(an output that can only be shown as HTML was removed)"
    return nb


def stage_for_formgrader(nbgrader_root: Path, assignment: str, submissions: dict[str, Path]) -> list[str]:
    """Put submitted notebooks into an nbgrader course so that TAs can grade them in the formgrader.

    ``nbgrader_root`` is an nbgrader course folder holding ``source/<assignment>/`` (the source
    notebooks; :func:`generate_student_version` needs no course, but nbgrader's gradebook does).
    ``submissions`` maps student ids to their submitted notebook files (renamed to the source
    notebook's name when the assignment has a single notebook). The assignment is added to
    ``gradebook.db`` if needed; then nbgrader's autograde runs **without its Execute step**: no
    student code runs here (the course grades the code in the sandbox), nbgrader only overwrites
    read-only cells from the source, records the answers and creates the grades that TAs fill in.
    nbgrader's automatic scores are therefore meaningless and are not the course's.

    Returns:
        The student ids staged.
    """
    from traitlets.config import Config
    from nbconvert.preprocessors import ClearMetadataPreprocessor
    from nbgrader.converters import Autograde, GenerateAssignment
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.preprocessors import (AssignLatePenalties, CheckCellMetadata, IgnorePattern, LimitOutput,
                                        SaveAutoGrades)
    root = Path(nbgrader_root).resolve()
    if not (root / "source" / assignment).is_dir():
        raise NotebookError(f"{root}: no source/{assignment}/ folder (the nbgrader source notebooks)")
    staged = []
    with _nbgrader_environment():
        config = Config()
        config.CourseDirectory.root = str(root)
        config.CourseDirectory.assignment_id = assignment
        config.GenerateAssignment.force = True
        config.GenerateAssignment.create_assignment = True
        _run_converter(GenerateAssignment, config, f"generate_assignment {assignment}")
        sources = sorted((root / "source" / assignment).glob("*.ipynb"))
        for student, notebook in sorted(submissions.items()):
            target = root / "submitted" / student / assignment
            target.mkdir(parents=True, exist_ok=True)
            # nbgrader matches submitted notebooks to source notebooks by file name
            name = sources[0].name if len(sources) == 1 else Path(notebook).name
            try:
                inert = inert_notebook(notebook)
            except NotebookError as exc:
                raise NotebookError(f"student {student}: {exc}") from None
            (target / name).write_text(json.dumps(inert, ensure_ascii=False), encoding="utf-8")
            staged.append(student)
        config = Config()
        config.CourseDirectory.root = str(root)
        config.CourseDirectory.assignment_id = assignment
        config.Autograde.create_student = True
        config.Autograde.force = True
        config.Autograde.autograde_preprocessors = [IgnorePattern, ClearMetadataPreprocessor, LimitOutput,
                                                    SaveAutoGrades, AssignLatePenalties, CheckCellMetadata]
        for student in staged:
            config.CourseDirectory.student_id = student
            _run_converter(Autograde, config, f"autograde {assignment} for {student}")
    return staged


class _Collect(logging.Handler):
    """Keeps nbgrader's error messages: its exceptions only say "see the above traceback"."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _run_converter(cls: Any, config: Any, what: str) -> None:
    from nbgrader.coursedir import CourseDirectory
    converter = cls(coursedir=CourseDirectory(config=config), config=config)
    collect = _Collect()
    converter.log.addHandler(collect)
    try:
        converter.start()
    except BaseException as exc:  # nbgrader reports failures as NbGraderException (or SystemExit)
        detail = " | ".join(m.strip().splitlines()[-1] for m in collect.messages[-3:] if m.strip())
        raise NotebookError(f"nbgrader {what} failed: {detail or exc}"[:1500]) from None
    finally:
        converter.log.removeHandler(collect)

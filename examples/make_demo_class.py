"""Generate the demo class under <out>/<slug>/<student>/ from today's solutions and stubs.

Students (the same six for every assignment):

* ``ada``  — correct: the solution.
* ``ben``  — partial: the tasks of part 1 solved, the rest left as stubs.
* ``cleo`` — the pristine stub (never started).
* ``dev``  — buggy: the solution with one deliberate, plausible bug (examples/bugs.yml).
* ``eve``  — crashes: the solution, but the module calls ``os._exit`` when imported.
* ``mal``  — hostile: the stub plus code that tries to forge a grade (patch torch's comparisons,
  read the graders, write a fake results.json, open a socket). Its honest score is 0.

The class is derived, never committed: examples/run_demo.py generates it into .course/demo/class/
on every run (collect then records only what changed). ``python examples/make_demo_class.py --out
DIR`` writes it anywhere to look at; a bug in examples/bugs.yml that no longer applies is an error.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from course import stubs  # noqa: E402

STUDENTS = ("ada", "ben", "cleo", "dev", "eve", "mal")
# For the Moodle-style round trip: full names, emails and Moodle's participant numbers.
NAMES = {"ada": "Ada Byron", "ben": "Ben Okafor", "cleo": "Cleo Marsh", "dev": "Dev Patel", "eve": "Eve Moreau",
         "mal": "Mal Reyes"}

CRASH = """

# --- eve's leftover debugging line ---
import os as _os
_os._exit(0)
"""

HOSTILE = '''

# --- mal's attempt to forge a grade (the sandbox makes every line of it useless) ---
import builtins as _b, os as _os, socket as _s
import torch as _t

_t.allclose = lambda *a, **k: True                      # patch the comparisons...
_t.equal = lambda *a, **k: True
_t.testing.assert_close = lambda *a, **k: None
for _p in ("../../graders", "/work/main/graders", "/etc/shadow", "../../gradebook.sqlite"):
    try:                                                  # ...read the hidden tests and the gradebook...
        _b.open(_p).read()
    except Exception:
        pass
try:                                                      # ...write a fake result...
    _b.open("results.json", "w").write('{"score": 100}')
except Exception:
    pass
try:                                                      # ...and phone home.
    _s.create_connection(("127.0.0.1", 8786), timeout=1)
except Exception:
    pass
'''


def answered_notebook(student_text: str, source: Path) -> str:
    """The student's notebook with every answer cell filled in from the nbgrader source notebook."""
    answers = {}
    for cell in json.loads(source.read_text(encoding="utf-8"))["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("solution"):
            lines = [ln for ln in "".join(cell["source"]).splitlines(keepends=True)
                     if ln.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION")]
            answers[meta["grade_id"]] = "".join(lines).rstrip("\n")
    notebook = json.loads(student_text)
    for cell in notebook["cells"]:
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if grade_id in answers:
            cell["source"] = answers[grade_id]
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"


def _main_module(slug: str) -> Path:
    """The solution module a bug or crash goes into: the first one in the folder."""
    return sorted((ROOT / "solutions" / slug).glob("*.py"))[0]


def student_files(slug: str, student: str, bugs: dict) -> dict[str, str]:
    """File name -> text of one student's submission."""
    sol_dir = ROOT / "solutions" / slug
    out: dict[str, str] = {}
    for path in sorted(sol_dir.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        if student in ("ada", "dev", "eve"):
            out[path.name] = stubs.strip(text, str(path), keep=lambda task: True)
        elif student == "ben":
            out[path.name] = stubs.strip(text, str(path), keep=lambda task: task.split(".")[0] == "1")
        else:  # cleo, mal
            out[path.name] = stubs.strip(text, str(path))
    for extra in sorted((ROOT / "assignments" / slug).iterdir()):
        if extra.is_file() and extra.suffix not in (".py", ".md") and extra.name not in out:
            out[extra.name] = extra.read_text(encoding="utf-8")  # e.g. a notebook handed out to students
            source = sol_dir / extra.name
            if extra.suffix == ".ipynb" and source.is_file() and student in ("ada", "dev", "eve"):
                out[extra.name] = answered_notebook(out[extra.name], source)
    main = _main_module(slug).name
    if student == "dev":
        bug = bugs[slug]
        target = bug.get("file", main)
        if bug["old"] not in out[target]:
            raise SystemExit(f"examples/bugs.yml: {slug}: {bug['old']!r} is not in {target} any more")
        out[target] = out[target].replace(bug["old"], bug["new"], 1)
    elif student == "eve":
        out[main] += CRASH
    elif student == "mal":
        out[main] += HOSTILE
    return out


def load_bugs() -> dict:
    return yaml.safe_load((ROOT / "examples" / "bugs.yml").read_text(encoding="utf-8"))


def all_slugs() -> list[str]:
    """Every assignment the demo covers: those with a bug in examples/bugs.yml."""
    return sorted(load_bugs())


def generate(out: Path, slugs: list[str]) -> None:
    bugs = load_bugs()
    for slug in slugs:
        for student in STUDENTS:
            folder = out / slug / student
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
            for name, text in student_files(slug, student, bugs).items():
                (folder / name).write_text(text, encoding="utf-8")


def roster_csv(path: Path) -> Path:
    """roster.csv for the demo class (Moodle's worksheet is matched by email)."""
    lines = ["id,name,email,section"] + [f"{s},{NAMES[s]},{s}@demo.example,A" for s in STUDENTS]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def moodle_export(class_dir: Path, slug: str, times: dict, out: Path) -> tuple[Path, Path]:
    """What Moodle's "Download all submissions" and "Download grading worksheet" give for ``slug``:
    one folder ``<Full Name>_<participant>_assignsubmission_file_`` per student, and the worksheet
    whose "Last modified (submission)" is written as Moodle writes it (English, the site's zone: UTC)."""
    import csv
    import zipfile
    out.mkdir(parents=True, exist_ok=True)
    archive = out / f"{slug}-submissions.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for i, student in enumerate(STUDENTS):
            folder = class_dir / slug / student
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    zf.write(path, f"{NAMES[student]}_{101 + i}_assignsubmission_file_/{path.relative_to(folder)}")
    sheet = out / f"{slug}-worksheet.csv"
    with open(sheet, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["Identifier", "Full name", "Email address", "Status", "Grade", "Maximum Grade",
                    "Grade can be changed", "Last modified (submission)", "Last modified (grade)", "Feedback comments"])
        for i, student in enumerate(STUDENTS):
            t = times[student]
            when = f"{t:%A}, {t.day} {t:%B %Y}, {int(t.strftime('%I'))}:{t:%M %p}"
            w.writerow([f"Participant {101 + i}", NAMES[student], f"{student}@demo.example", "Submitted for grading",
                        "", "100.00", "Yes", when, "-", ""])
    return archive, sheet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / ".course" / "demo" / "class",
                        help="where to write it (default: .course/demo/class, where the demo reads it)")
    parser.add_argument("--assignments", default=None, help="comma-separated slugs (default: all in bugs.yml)")
    args = parser.parse_args()
    slugs = args.assignments.split(",") if args.assignments else all_slugs()
    generate(args.out, slugs)
    print(f"wrote {len(slugs)} assignment(s) x {len(STUDENTS)} students under {args.out}")


if __name__ == "__main__":
    main()

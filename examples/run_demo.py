"""Run the demo class end to end with the `course` CLI: collect -> grade -> status -> feedback -> export.

The class itself is generated from today's solutions into .course/demo/class/ (make_demo_class.py).
The demo works in its own folder (.course/demo/) with a course.yml derived from the real one (the
same assignments, hidden tests and solutions; its own submitted/, gradebook, feedback/, exports/)
and an extensions.yml giving ``dev`` two extra days. Submission times are set relative to each
assignment's due date so that the late policy shows: ada is on time, ben 3 hours late, dev two
days late but within his extension, the others on time.

The first assignment makes the Moodle round trip: its submissions arrive as Moodle's "Download all
submissions" zip and grading worksheet (the times are the worksheet's), and its grades leave as the
filled worksheet and a feedback-files zip for Moodle's uploads. The others are collected per
student with the instructor's --submitted-at.
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
import time
from pathlib import Path

import yaml

from make_demo_class import all_slugs, generate, moodle_export, roster_csv

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".course" / "demo"
CLASS = WORK / "class"          # generated from today's solutions on every run
LATE_HOURS = {"ada": -20, "ben": 3, "cleo": -1, "dev": 47, "eve": -2, "mal": -5}


def course(*args: str) -> None:
    cmd = ["course", *args[:1], "--course", str(WORK / "course.yml"), *args[1:]]
    print("$", " ".join(cmd[:1] + list(args)), flush=True)
    code = subprocess.run(cmd).returncode
    if code not in (0,):
        raise SystemExit(f"course {args[0]} exited with {code}")


def write_demo_course(slugs: list[str]) -> dict:
    real = yaml.safe_load((ROOT / "course.yml").read_text(encoding="utf-8"))
    real["name"] = real["name"] + " (demo)"
    real["paths"] = {"submitted": "submitted", "gradebook": "gradebook.sqlite", "feedback": "feedback",
                     "exports": "exports", "assignments": str(ROOT / "assignments"),
                     "solutions": str(ROOT / "solutions"), "graders": str(ROOT / "graders")}
    real["assignments"] = [a for a in real["assignments"] if a["slug"] in slugs]
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "course.yml").write_text(yaml.safe_dump(real, sort_keys=False), encoding="utf-8")
    extensions = [{"student": "dev", "assignment": a["slug"], "reason": "illness (demo)",
                   "due": (_due(a) + dt.timedelta(days=2)).isoformat()} for a in real["assignments"]]
    (WORK / "extensions.yml").write_text(yaml.safe_dump(extensions, sort_keys=False), encoding="utf-8")
    return real


def _due(a: dict) -> dt.datetime:
    due = a["due"]
    return due if isinstance(due, dt.datetime) else dt.datetime.fromisoformat(str(due))


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the demo class end to end.")
    parser.add_argument("--assignments", default=None, help="comma-separated slugs (default: every one in examples/bugs.yml)")
    parser.add_argument("--jobs", default="2", help="submissions graded at once")
    args = parser.parse_args()
    slugs = args.assignments.split(",") if args.assignments else all_slugs()
    real = write_demo_course(slugs)
    generate(CLASS, slugs)
    roster_csv(WORK / "roster.csv")
    t0 = time.monotonic()
    moodle_slug = real["assignments"][0]["slug"]
    for a in real["assignments"]:
        if a["slug"] == moodle_slug:
            times = {s: (_due(a) + dt.timedelta(hours=h)).astimezone(dt.timezone.utc) for s, h in LATE_HOURS.items()}
            archive, sheet = moodle_export(CLASS, a["slug"], times, WORK / "moodle")
            course("collect", str(archive), "--assignment", a["slug"], "--from", "moodle", "--worksheet", str(sheet),
                   "--timezone", "UTC")
            continue
        for student in sorted(LATE_HOURS):
            folder = CLASS / a["slug"] / student
            if folder.is_dir():
                when = _due(a) + dt.timedelta(hours=LATE_HOURS[student])
                course("collect", str(folder), "--assignment", a["slug"], "--student", student,
                       "--submitted-at", when.isoformat())
    # a rerun after a grader change regrades at once; a real course would read `course grade --preview` first
    course("grade", "--jobs", args.jobs, "--accept-regrade")
    course("status")
    course("feedback")
    course("export", "--format", "csv")
    course("export", "--format", "gradescope")
    course("export", "--format", "junit")
    course("export", "--format", "moodle", "--assignment", moodle_slug)
    course("report")
    for a in real["assignments"]:
        course("similarity", a["slug"])
    print((WORK / "exports" / "grades.csv").read_text(encoding="utf-8"))
    print(f"demo finished in {time.monotonic() - t0:.0f} s; feedback under {WORK / 'feedback'}, "
          f"exports under {WORK / 'exports'} (Moodle: exports/moodle/{moodle_slug}-grading-worksheet.csv and "
          f"-feedback-files.zip), the class report in {WORK / 'report' / 'index.html'}")


if __name__ == "__main__":
    sys.exit(main())

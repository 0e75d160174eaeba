"""Collect at class scale: a 300-student Canvas download, a Moodle download, and a zip bomb.

Builds a throw-away copy of the toy course (tests/files/toycourse) with a roster of N students,
then times ``course collect --from canvas`` (with the API's times) and ``--from moodle`` (with a
worksheet) over N submissions each, and the collection of one class zip whose student zip inflates
to 300 MiB of zeros behind a header that declares 100 bytes. Prints seconds, submissions per
second for the two downloads and the peak of Python's allocations (tracemalloc) for the bomb.
Asserts nothing.

    python benchmarks/collect_scale.py                 # 300 students
    python benchmarks/collect_scale.py --students 1000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import struct
import sys
import tempfile
import time
import tracemalloc
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from course import api  # noqa: E402
from course import roster as roster_mod  # noqa: E402

DUE = dt.datetime(2026, 10, 1, 23, 59, tzinfo=dt.timezone.utc)


def measure(label: str, n: int, fn, memory: bool = False) -> None:
    """Seconds (without tracemalloc, which slows Python down) or the peak of Python's allocations."""
    if memory:
        tracemalloc.start()
    t0 = time.perf_counter()
    rep = fn()
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] if memory else 0
    tracemalloc.stop()
    ok = sum(1 for i in rep.items if i.status == "collected")
    figure = f"peak {peak / 2**20:6.1f} MiB" if memory else f"{n / seconds:7.1f} submissions/s"
    print(f"{label:34s} {seconds:7.2f} s  {figure}  collected {ok}/{len(rep.items)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=300)
    args = parser.parse_args()
    n = args.students
    sol = (ROOT / "tests" / "files" / "toycourse" / "solutions" / "vecops" / "vecops.py").read_text()
    with tempfile.TemporaryDirectory(prefix="course-bench-collect-") as tmp:
        tmp = Path(tmp)
        for name in ("canvas", "moodle", "bomb"):
            shutil.copytree(ROOT / "tests" / "files" / "toycourse", tmp / name, ignore=shutil.ignore_patterns("__pycache__"))
        people = [(f"s{i:04d}", 10000 + i, 500 + i, f"Student {i:04d}", f"s{i:04d}@uni.example") for i in range(n)]
        roster = roster_mod.Roster(tuple(roster_mod.Student(sid, name, email, "A", {"canvas_id": str(cid)})
                                         for sid, cid, _, name, email in people))
        for name in ("canvas", "moodle"):
            roster_mod.save(roster, tmp / name / "roster.csv")
        with zipfile.ZipFile(tmp / "canvas.zip", "w", zipfile.ZIP_DEFLATED) as zf:
            for i, (sid, cid, _, _, _) in enumerate(people):
                zf.writestr(f"student{sid}_{cid}_{90000 + i}_vecops.py", sol + f"# {sid}\n")
        times = [{"user_id": cid, "submitted_at": (DUE - dt.timedelta(minutes=i)).isoformat(), "late": False}
                 for i, (_, cid, _, _, _) in enumerate(people)]
        (tmp / "times.json").write_text(json.dumps({"submissions": times}))
        with zipfile.ZipFile(tmp / "moodle.zip", "w", zipfile.ZIP_DEFLATED) as zf:
            for sid, _, pid, name, _ in people:
                zf.writestr(f"{name}_{pid}_assignsubmission_file_/vecops.py", sol + f"# {sid}\n")
        lines = ["Identifier,Full name,Email address,Status,Grade,Last modified (submission),Last modified (grade)"]
        lines += [f'Participant {pid},{name},{email},Submitted for grading,,"Thursday, 1 October 2026, 10:00 PM",-'
                  for _, _, pid, name, email in people]
        (tmp / "worksheet.csv").write_text("\n".join(lines) + "\n")
        bomb = tmp / "inner.zip"
        with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("vecops.py", b"\0" * (300 * 2**20))
        data = bytearray(bomb.read_bytes())
        struct.pack_into("<I", data, data.find(b"PK\x03\x04") + 22, 100)
        struct.pack_into("<I", data, data.find(b"PK\x01\x02") + 24, 100)
        with zipfile.ZipFile(tmp / "bomb-class.zip", "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("mal.zip", bytes(data))
            zf.writestr("zed/vecops.py", sol)
        print(f"collect, {n} students, toy assignment vecops (one file each)")
        measure("canvas zip + API times", n, lambda: api.collect(
            api.load_course(tmp / "canvas" / "course.yml"), tmp / "canvas.zip", "vecops", lms="canvas",
            times=tmp / "times.json"))
        measure("moodle zip + worksheet", n, lambda: api.collect(
            api.load_course(tmp / "moodle" / "course.yml"), tmp / "moodle.zip", "vecops", lms="moodle",
            worksheet=tmp / "worksheet.csv", timezone="Europe/Berlin"))
        measure("class zip holding a 300 MiB bomb", 2, lambda: api.collect(
            api.load_course(tmp / "bomb" / "course.yml"), tmp / "bomb-class.zip", "vecops",
            submitted_at="2026-10-01T12:00:00+00:00"), memory=True)


if __name__ == "__main__":
    main()

"""The student loop's cost: `course check SLUG` on a correct file against `python -c "import torch"`.

Releases a student kit of SLUG (attention by default) into a temporary folder, puts the reference
solution in it, and times, interleaved so that both see the same load, ``python -c "import
torch"`` and ``course check SLUG`` (run from the kit's assignment folder, with this interpreter's
environment), ``--repeats`` times each. Prints every time, the medians and their ratio; the
target is a ratio of at most 1.5 (everything beyond importing torch costs at most half a torch
import). Also prints where ``course check``'s imports go (``python -X importtime``, top entries).
Asserts nothing.

    python benchmarks/student_loop.py
    python benchmarks/student_loop.py --slug positional_encoding --repeats 7
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def timed(argv: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slug", default="attention")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from course import api
    course = api.load_course(ROOT / "course.yml")
    with tempfile.TemporaryDirectory(prefix="student-loop-") as tmp:
        kit = api.release(course, [args.slug], Path(tmp) / "kit").folder
        for src in (ROOT / "solutions" / args.slug).glob("*.py"):
            shutil.copyfile(src, kit / "assignments" / args.slug / src.name)
        folder = kit / "assignments" / args.slug
        check = [sys.executable, "-c", "from course.cli import main; main()", "check", args.slug]
        torch_only = [sys.executable, "-c", "import torch"]
        timed(torch_only, folder)   # warm the file cache once for both
        torch_times, check_times = [], []
        for i in range(args.repeats):
            torch_times.append(timed(torch_only, folder))
            check_times.append(timed(check, folder))
            print(f"  run {i + 1}: import torch {torch_times[-1]:.2f} s, course check {check_times[-1]:.2f} s", flush=True)
        t, c = statistics.median(torch_times), statistics.median(check_times)
        print(f"median of {args.repeats}: import torch {t:.2f} s, course check {args.slug} {c:.2f} s, ratio {c / t:.2f} "
              "(target <= 1.5)")
        imports = subprocess.run([sys.executable, "-X", "importtime", "-c", "from course.cli import main; main()",
                                  "check", args.slug], cwd=folder, capture_output=True, text=True).stderr
        rows = []
        for line in imports.splitlines():
            parts = line.split("|")
            if len(parts) == 3 and parts[1].strip().isdigit():
                name = parts[2].rstrip()
                if len(name) - len(name.lstrip()) <= 3:   # top-level imports only
                    rows.append((int(parts[1]), name.strip()))
        print("largest top-level imports of course check (cumulative s):")
        for us, name in sorted(rows, reverse=True)[:8]:
            print(f"  {us / 1e6:6.2f}  {name}")


if __name__ == "__main__":
    main()

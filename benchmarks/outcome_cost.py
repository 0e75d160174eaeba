"""What each kind of outcome costs to grade, side by side in one run (issue: a failure costs what a pass costs).

For each assignment (attention, positional_encoding, lora by default) it grades, through the real
sandbox (one fork server for the whole run, one job at a time):

* correct: the reference solution (its per-test times calibrate the others' limits, as
  ``course validate`` does);
* partial: the solution with the plausible bug of examples/bugs.yml;
* stub: the untouched student stub (every test fails with NotImplementedError);
* import-crash: the solution's module ends the process at import (``os._exit``);
* hang: the solution with one function made an endless loop (the tests that call it hit their
  calibrated limit).

and prints seconds per submission and the ratio to the correct submission; for the hang kind the
ratio leaves out the time spent waiting for its timeouts (count x limit), which is the price of a
hang by design. The target is a ratio of at most 1.5 for every kind. Asserts nothing.

    python benchmarks/outcome_cost.py
    python benchmarks/outcome_cost.py --assignments attention --repeats 3
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from course import api  # noqa: E402
from course.grading.runner import Job, LocalExecutor, calibrated_timeouts, spec_for  # noqa: E402

HANG_IN = {"attention": ("attention.py", "causal_mask"), "positional_encoding": ("positional_encoding.py", "relative_scores"),
           "lora": ("lora.py", "lora_parameter_count")}
KINDS = ("correct", "partial", "stub", "import-crash", "hang")


def variant(course, slug: str, kind: str, dest: Path) -> Path:
    folder = api._overlay(course, slug, dest, kind != "stub")
    main = sorted((course.paths.solutions / slug).glob("*.py"))[0].name
    if kind == "partial":
        bug = yaml.safe_load((ROOT / "examples" / "bugs.yml").read_text())[slug]
        target = folder / bug.get("file", main)
        target.write_text(target.read_text().replace(bug["old"], bug["new"], 1))
    elif kind == "import-crash":
        target = folder / main
        target.write_text(target.read_text() + "\n\nimport os as _os\n_os._exit(1)\n")
    elif kind == "hang":
        file, function = HANG_IN[slug]
        target = folder / file
        text = target.read_text()
        m = re.search(rf"^def {function}\(.*?\).*?:\n(\s+)", text, flags=re.S | re.M)
        if m is None:
            raise SystemExit(f"{slug}: cannot find def {function} in {file}")
        indent = m.group(1)
        text = text[:m.end()] + f"while True:\n{indent}    pass\n{indent}" + text[m.end():]
        target.write_text(text)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--assignments", nargs="+", default=list(HANG_IN))
    parser.add_argument("--repeats", type=int, default=1, help="grade each variant this many times (median)")
    args = parser.parse_args()
    course = api.load_course(ROOT / "course.yml")
    ex = LocalExecutor(1)
    t0 = time.monotonic()
    ex.start()
    print(f"sandbox started in {time.monotonic() - t0:.1f} s ({ex.pool.isolation} isolation, "
          f"memory bounded by {ex.pool.memory_limit_by})")
    rows = []
    with tempfile.TemporaryDirectory(prefix="outcome-cost-") as tmp:
        for slug in args.assignments:
            spec = spec_for(course, slug)
            folders = {k: variant(course, slug, k, Path(tmp) / slug / k) for k in KINDS}
            [ref] = ex.run([Job(f"{slug}/calibrate", spec, folders["correct"])])
            timeouts = calibrated_timeouts({r.name: r.duration for r in ref.results if r.outcome == "passed"},
                                           spec.limits)
            limit_of = dict(timeouts)
            for kind in KINDS:
                seconds, result = [], None
                for _ in range(args.repeats):
                    [result] = ex.run([Job(f"{slug}/{kind}", spec, folders[kind], timeouts=timeouts)])
                    seconds.append(result.duration)
                waited = sum(limit_of.get(r.name, spec.limits.call_timeout) for r in result.results
                             if r.outcome == "timeout")
                rows.append((slug, kind, statistics.median(seconds), waited, result.points, result.max_points,
                             sum(r.outcome == "timeout" for r in result.results)))
    ex.close()
    print(f"\n{'assignment':<20} {'kind':<13} {'seconds':>8} {'waited':>7} {'ratio':>6} {'points':>9} {'timeouts':>8}")
    for slug in args.assignments:
        correct = next(r[2] for r in rows if r[0] == slug and r[1] == "correct")
        for s, kind, sec, waited, pts, mx, n_to in (r for r in rows if r[0] == slug):
            ratio = (sec - waited) / correct if correct else float("nan")
            print(f"{s:<20} {kind:<13} {sec:>8.2f} {waited:>7.1f} {ratio:>6.2f} {pts:>4.0f}/{mx:<4.0f} {n_to:>8}")
    print("\nratio: (seconds - waited for timeouts) / the correct submission's seconds; target <= 1.5")


if __name__ == "__main__":
    main()

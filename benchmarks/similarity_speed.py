"""How long ``course similarity`` takes on a large class of ``attention`` (goal: 300 students in < 60 s).

    python benchmarks/similarity_speed.py [--students 300] [--threshold 0.7] [--seed 0] [--keep-common]

The class is generated from the reference solution of ``attention`` (about 200 lines): each student's
task regions are the solution's code with random line-level edits (extra checks, reshaped
expressions, debugging lines, comments), the untouched stub for an unfinished task, or, for a few
students, a copy of another student with its comments changed. That makes a class far more alike than independent
work is: most pairs share much of their code, the worst case for the pairwise stage. Prints the
time of each stage and the figures of the result.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from course.insight import similarity as sim, similarity_pages  # noqa: E402

EXTRA = [
    "assert {v}.dim() >= 2, 'expected a batch'",
    "{v} = {v}.contiguous()",
    "# print({v}.shape)",
    "_debug_{n} = {v}.shape[-1]",
    "if {v}.numel() == 0:\n{ind}    raise ValueError('empty input')",
    "{v} = {v} * 1.0",
]


def student_text(solution: str, stub: str, rng: random.Random) -> str:
    """The solution's regions edited line by line; an unfinished task keeps the stub's line."""
    regions = re.split(r"(    # BEGIN SOLUTION\n.*?    # END SOLUTION\n|        # BEGIN SOLUTION\n.*?        # END SOLUTION\n)",
                       solution, flags=re.S)
    stub_lines = iter(re.findall(r"^\s*raise NotImplementedError\(.*\)$", stub, flags=re.M))
    out = []
    for part in regions:
        if "# BEGIN SOLUTION" not in part:
            out.append(part)
            continue
        body = [ln for ln in part.splitlines() if "SOLUTION" not in ln]
        stub_line = next(stub_lines, None)
        if stub_line is not None and rng.random() < 0.1:
            out.append(stub_line + "\n")
            continue
        edited = []
        for n, line in enumerate(body):
            edited.append(line)
            names = re.findall(r"\b([a-z_][a-z0-9_]*)\s*=", line)
            if names and rng.random() < 0.35:
                ind = line[: len(line) - len(line.lstrip())]
                extra = rng.choice(EXTRA).format(v=names[0], n=n, ind=ind)
                edited += [ind + e for e in extra.split("\n")] if "\n" not in extra else [ind + extra]
        out.append("\n".join(edited) + "\n")
    return "".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--students", type=int, default=300)
    ap.add_argument("--threshold", type=float, default=sim.DEFAULT_THRESHOLD)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep-common", action="store_true",
                    help="Do not drop the fingerprints most of the class shares: every pair is then a candidate "
                         "(the slowest case).")
    args = ap.parse_args()
    if args.keep_common:
        sim.COMMON_MIN = 10**9
    rng = random.Random(args.seed)
    solution = (REPO / "solutions" / "attention" / "attention.py").read_text()
    stub_dir = REPO / "assignments" / "attention"
    stub = (stub_dir / "attention.py").read_text()
    with tempfile.TemporaryDirectory(prefix="similarity-bench-") as tmp:
        root = Path(tmp)
        folders, lines = {}, []
        for i in range(args.students):
            who = f"student{i:03d}"
            if i >= 10 and rng.random() < 0.03:   # a copy of an earlier student, its comments changed
                text = re.sub(r"#.*", "# mine", (root / f"student{rng.randrange(i):03d}" / "attention.py").read_text())
            else:
                text = student_text(solution, stub, rng)
            (root / who).mkdir()
            (root / who / "attention.py").write_text(text)
            folders[who] = root / who
            lines.append(text.count("\n"))
        t0 = time.perf_counter()
        rep = sim.analyse("attention", folders, stub=stub_dir, reference=REPO / "solutions" / "attention",
                          threshold=args.threshold)
        t1 = time.perf_counter()
        written = similarity_pages.write(rep, root / "out")
        t2 = time.perf_counter()
    exact = sum(1 for p in rep.pairs if p.exact)
    print(f"students: {args.students}, lines per file: median {sorted(lines)[len(lines) // 2]} "
          f"(min {min(lines)}, max {max(lines)})")
    print(f"pairs scored: {len(rep.pairs)} ({exact} with the exact overlap), at or above {args.threshold:g}: "
          f"{len(rep.flagged)}, groups: {len(rep.clusters)}")
    print(f"fingerprints and scores: {t1 - t0:.1f} s; pages ({len(written)} files): {t2 - t1:.1f} s; "
          f"total {t2 - t0:.1f} s")


if __name__ == "__main__":
    main()

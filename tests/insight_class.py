"""A seeded class of 30 for the class report, test health and similarity (tests/files/insightcourse).

Run it to look at the result: ``python tests/insight_class.py OUT`` builds a copy of the course in
OUT, collects the class, records the gradings and writes the report and the similarity pages.

What is planted (and nothing else):

* **code** (real files, collected with ``course collect``): 20 independent solutions s01-s20 built
  from five hand-written implementations of each of the five functions, assigned by an orthogonal
  array (student (x, y) uses variant (x + f*y) mod 5 for function f), so any two of them share at
  most one function's implementation; an earlier term e1-e5 (the array's last row); three copies:
  s21 is s03 with every local name renamed and the functions in reverse order, s22 is the reference
  solution, s23 is e2 from the earlier term; s24 and s25 hand in the untouched stub, s26 one
  enormous file, s27 two functions of its own, s28 a binary file, s29 a Latin-1 file, s05 also a
  binary ``notes.bin``; s30 hands in nothing (only
  an answer to ``later``, never graded).
* **grades** (rows written through the Gradebook API): every graded student has an ability spread
  evenly over (0, 1) in a seeded order, and passes a test when the ability reaches the test's
  difficulty. Planted: ``test_top_k_zero`` expects a wrong answer (only students of ability 0.1-0.35
  pass it: the strong fail it), and ``test_cosine_scale`` changed its outcome between two gradings
  of identical content (s02, s07); s24 and s25 (the same stub) always fail alike. s27's grading only ever failed (infrastructure), s28 is collected
  but not graded, the GPU test is pending except for s01-s05, s10/s11/s13 are late (s13 beyond the
  last accepted day), s12 used an extension, s04 has an older attempt under an older grader.
"""

from __future__ import annotations

import ast
import datetime as dt
import io
import random
import shutil
import sys
import tokenize
from pathlib import Path

FIXTURE = Path(__file__).parent / "files" / "insightcourse"
SLUG = "wordstats"
FUNCTIONS = ["tokenize", "count_words", "top_words", "bigrams", "cosine"]
BROKEN = "test_top_k_zero"
FLAKY = "test_cosine_scale"
EARLIER = "term-2025"
COPIES = {("s03", "s21"), ("s22", "reference"), ("s23", f"against:{EARLIER}/e2")}
INDEPENDENT = [f"s{i:02d}" for i in range(1, 21)]

VARIANTS = {
    "tokenize": [
        '''allowed = set("abcdefghijklmnopqrstuvwxyz0123456789'")
words, current = [], []
for ch in text.lower():
    if ch in allowed:
        current.append(ch)
    elif current:
        words.append("".join(current))
        current = []
if current:
    words.append("".join(current))
return words''',
        '''pattern = re.compile(r"[a-z0-9']+")
return pattern.findall(text.lower())''',
        '''import string
keep = string.ascii_lowercase + string.digits + "'"
cleaned = "".join(c if c in keep else " " for c in text.lower())
return cleaned.split()''',
        '''out = []
start = None
lowered = text.lower()
for i, c in enumerate(lowered):
    inside = c.isascii() and (c.isalnum() or c == "'")
    if inside and start is None:
        start = i
    elif not inside and start is not None:
        out.append(lowered[start:i])
        start = None
if start is not None:
    out.append(lowered[start:])
return out''',
        '''return [m.group(0) for m in re.finditer("[0-9a-z']+", text.lower())]''',
    ],
    "count_words": [
        '''counts = {}
for token in tokens:
    counts[token] = counts.get(token, 0) + 1
return counts''',
        '''from collections import Counter
return dict(Counter(tokens))''',
        '''result = {}
for word in tokens:
    if word in result:
        result[word] += 1
    else:
        result[word] = 1
return result''',
        '''return {w: tokens.count(w) for w in dict.fromkeys(tokens)}''',
        '''from collections import defaultdict
tally = defaultdict(int)
for t in tokens:
    tally[t] += 1
return dict(tally)''',
    ],
    "top_words": [
        '''ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
return ranked[:k]''',
        '''import heapq
return heapq.nsmallest(k, counts.items(), key=lambda kv: (-kv[1], kv[0]))''',
        '''by_word = sorted(counts.items())
by_word.sort(key=lambda pair: pair[1], reverse=True)
return by_word[:k]''',
        '''result = []
remaining = dict(counts)
while remaining and len(result) < k:
    best = min(remaining, key=lambda w: (-remaining[w], w))
    result.append((best, remaining.pop(best)))
return result''',
        '''order = sorted(counts, key=lambda word: (-counts[word], word))
return [(word, counts[word]) for word in order[:k]]''',
    ],
    "bigrams": [
        '''pairs = {}
for i in range(len(tokens) - 1):
    key = (tokens[i], tokens[i + 1])
    pairs[key] = pairs.get(key, 0) + 1
return pairs''',
        '''from collections import Counter
return dict(Counter(zip(tokens, tokens[1:])))''',
        '''result = {}
previous = None
for token in tokens:
    if previous is not None:
        pair = (previous, token)
        result[pair] = result.get(pair, 0) + 1
    previous = token
return result''',
        '''out = {}
for left, right in zip(tokens, tokens[1:]):
    if (left, right) not in out:
        out[(left, right)] = 0
    out[(left, right)] += 1
return out''',
        '''import itertools
first, second = itertools.tee(tokens)
next(second, None)
seen = {}
for pair in zip(first, second):
    seen[pair] = seen.get(pair, 0) + 1
return seen''',
    ],
    "cosine": [
        '''dot = sum(a[w] * b[w] for w in a if w in b)
norm_a = math.sqrt(sum(v * v for v in a.values()))
norm_b = math.sqrt(sum(v * v for v in b.values()))
if norm_a == 0 or norm_b == 0:
    return 0.0
return dot / (norm_a * norm_b)''',
        '''shared = set(a) & set(b)
numerator = 0.0
for word in shared:
    numerator += a[word] * b[word]
length_a = sum(x ** 2 for x in a.values()) ** 0.5
length_b = sum(x ** 2 for x in b.values()) ** 0.5
return numerator / (length_a * length_b) if length_a and length_b else 0.0''',
        '''words = sorted(set(a) | set(b))
va = [a.get(w, 0) for w in words]
vb = [b.get(w, 0) for w in words]
dot = sum(x * y for x, y in zip(va, vb))
na = sum(x * x for x in va) ** 0.5
nb = sum(y * y for y in vb) ** 0.5
if not na or not nb:
    return 0.0
return dot / na / nb''',
        '''if not a or not b:
    return 0.0
total = 0
for key, value in a.items():
    total += value * b.get(key, 0)
denominator = math.hypot(*a.values()) * math.hypot(*b.values())
return total / denominator if denominator else 0.0''',
        '''import numpy as np
keys = sorted(set(a).union(b))
x = np.array([a.get(key, 0) for key in keys], dtype=float)
y = np.array([b.get(key, 0) for key in keys], dtype=float)
if not x.any() or not y.any():
    return 0.0
return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))''',
    ],
}

PARTIAL = {   # s27's own code for the first two tasks (no one else's)
    "tokenize": '''lowered = text.lower()
table = {ord(c): " " for c in set(lowered) if not (c.isascii() and (c.isalnum() or c == "'"))}
return lowered.translate(table).split()''',
    "count_words": '''from itertools import groupby
return {word: len(list(group)) for word, group in groupby(sorted(tokens))}''',
}


def stub_text(course: Path = FIXTURE) -> str:
    return (course / "assignments" / SLUG / f"{SLUG}.py").read_text(encoding="utf-8")


def fill(stub: str, bodies: dict[str, str]) -> str:
    """The stub with each named function's ``raise NotImplementedError`` replaced by a body."""
    out = []
    for line in stub.splitlines():
        name = next((f for f in bodies if line.strip().startswith("raise NotImplementedError(") and f"{f}\")" in line),
                    None)
        if name is None:
            out.append(line)
            continue
        indent = line[: len(line) - len(line.lstrip())]
        out += [indent + b if b else b for b in bodies[name].splitlines()]
    return "\n".join(out) + "\n"


def design_point(x: int, y: int) -> dict[str, str]:
    return {f: VARIANTS[f][(x + i * y) % 5] for i, f in enumerate(FUNCTIONS)}


def disguise(source: str) -> str:
    """Every local name and parameter renamed, the task blocks in reverse order: the same program."""
    tree = ast.parse(source)
    names: set[str] = set()
    for fn in (n for n in tree.body if isinstance(n, ast.FunctionDef)):
        for node in ast.walk(fn):
            if isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
    lines = source.splitlines(keepends=True)
    edits: dict[int, list[tuple[int, int, str]]] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NAME and tok.string in names:
            row, col = tok.start
            edits.setdefault(row - 1, []).append((col, tok.end[1], f"the_{tok.string}_value"))
    for row, changes in edits.items():
        line = lines[row]
        for start, end, new in sorted(changes, reverse=True):
            line = line[:start] + new + line[end:]
        lines[row] = line
    text = "".join(lines)
    head, *blocks = text.split("\n# Task ")
    return head + "".join("\n# Task " + b.rstrip("\n") + "\n\n" for b in reversed(blocks))


def make_class(dest: Path, course: Path = FIXTURE) -> tuple[Path, Path]:
    """Student folders under ``dest/class`` and the earlier term under ``dest/earlier/term-2025``."""
    stub = stub_text(course)
    klass, earlier = dest / "class", dest / "earlier" / EARLIER
    files: dict[str, bytes] = {}
    for n, student in enumerate(INDEPENDENT):
        files[student] = fill(stub, design_point(n % 5, n // 5)).encode()
    for x in range(5):
        (earlier / f"e{x + 1}").mkdir(parents=True, exist_ok=True)
        (earlier / f"e{x + 1}" / f"{SLUG}.py").write_text(fill(stub, design_point(x, 4)), encoding="utf-8")
    solution = (course / "solutions" / SLUG / f"{SLUG}.py").read_text(encoding="utf-8")
    files["s21"] = disguise(files["s03"].decode()).encode()
    files["s22"] = "".join(ln for ln in solution.splitlines(keepends=True) if "SOLUTION" not in ln).encode()
    files["s23"] = ((earlier / "e2" / f"{SLUG}.py").read_text(encoding="utf-8")
                    .replace('"""Word statistics', '"""My word statistics', 1)).encode()
    files["s24"] = files["s25"] = stub.encode()
    files["s26"] = (stub + "\n" + "\n".join(f"WORD_{i:05d} = {i * 7919 % 100003}" for i in range(40_000)) + "\n").encode()
    files["s27"] = fill(stub, PARTIAL).encode()
    files["s28"] = bytes(range(256)) * 16
    files["s29"] = ("# café au lait\n" + fill(stub, design_point(2, 2))).encode("latin-1")
    for student, data in files.items():
        (klass / student).mkdir(parents=True, exist_ok=True)
        (klass / student / f"{SLUG}.py").write_bytes(data)
    (klass / "s05" / "notes.bin").write_bytes(b"\x00\x01binary notes\xff" * 8)
    return klass, earlier


# ------------------------------------------------------------------ grades

DUE = "2026-10-01T23:59:00+00:00"
# (name, task, hidden, points, difficulty); None: planted separately
TESTS = [
    ("test_tokenize_simple", "1.1", False, 1, 0.05), ("test_tokenize_punctuation", "1.1", True, 1, 0.30),
    ("test_tokenize_apostrophes", "1.1", True, 1, 0.45),
    ("test_count_small", "1.2", False, 1, 0.05), ("test_count_many", "1.2", True, 1, 0.20),
    ("test_count_empty", "1.2", True, 1, 0.35),
    ("test_top_order", "1.3", True, 1, 0.30), ("test_top_k_larger", "1.3", True, 1, 0.40),
    ("test_top_ties", "1.3", True, 1, 0.55), (BROKEN, "1.3", True, 1, None),
    ("test_bigrams_one", "2.1", False, 1, 0.10), ("test_bigrams_cases[0]", "2.1", True, 1, 0.30),
    ("test_bigrams_cases[1]", "2.1", True, 1, 0.35), ("test_bigrams_cases[2]", "2.1", True, 1, 0.40),
    ("test_bigrams_short", "2.1", True, 1, 0.50),
    ("test_cosine_identical", "2.2", True, 1, 0.30), ("test_cosine_orthogonal", "2.2", True, 1, 0.45),
    (FLAKY, "2.2", True, 1, 0.40), ("test_cosine_empty", "2.2", True, 1, 0.60),
    ("test_cosine_gpu", "2.2", True, 2, 0.20),
]
GRADED = [f"s{i:02d}" for i in range(1, 27)] + ["s29"]
LATE_HOURS = {"s10": 3.0, "s11": 30.0, "s12": 24.0, "s13": 120.0}
GPU_DONE = {"s01", "s02", "s03", "s04", "s05"}
FLAKY_STUDENTS = ("s02", "s07")


STUBS = ("s24", "s25")   # identical content: identical outcomes (they fail everything)


def abilities() -> dict[str, float]:
    order = [s for s in GRADED if s not in STUBS]
    random.Random(18).shuffle(order)
    return {**{s: round((i + 0.5) / len(order), 4) for i, s in enumerate(order)}, **{s: 0.0 for s in STUBS}}


def outcome(student: str, ability: float, name: str, difficulty: float | None) -> str:
    if name == "test_cosine_gpu" and student not in GPU_DONE:
        return "pending"
    if name == BROKEN:
        return "passed" if 0.1 <= ability < 0.35 else "failed"
    return "passed" if ability >= difficulty else "failed"


def results_for(student: str, ability: float, flip: str | None = None) -> list:
    from course.grading.results import TestResult
    weakest = min((kv for kv in abilities().items() if kv[0] not in STUBS), key=lambda kv: kv[1])[0]
    out = []
    for name, task, hidden, points, difficulty in TESTS:
        o = flip if (flip and name == FLAKY) else outcome(student, ability, name, difficulty)
        message = ""
        if o == "failed" and student == weakest and name == "test_bigrams_short":
            o = "timeout"
        if o == "failed" and student == weakest and name == "test_cosine_empty":
            o, message = "error", "wordstats.cosine: the submission's process ended abruptly (signal 9)"
        out.append(TestResult(f"{'graders' if hidden else 'tests'}/{name}", name, task, hidden, o,
                              float(points) if o == "passed" else 0.0, float(points), message, "", None,
                              0.05 + ability / 10))
    return out


def seed_grades(course_dir: Path) -> None:
    """Record the class's gradings (collect first: :func:`collect_class`)."""
    from course.api import load_course, open_gradebook
    course = load_course(course_dir / "course.yml")
    ab = abilities()
    with open_gradebook(course) as gb:
        subs = {s.student: s for s in gb.submissions([SLUG])}
        common = dict(backend="sandbox", device="cpu", isolation="strong", started_at=DUE)
        for student in GRADED:
            sub = subs[student]
            duration = 40.0 if student == "s05" else round(1.0 + 2 * ab[student], 2)
            if student in FLAKY_STUDENTS:
                gb.save_grading(sub.id, "v1", results_for(student, ab[student], flip="passed"), duration=duration,
                                **common)
                gb.save_grading(sub.id, "v1", results_for(student, ab[student], flip="failed"), duration=duration,
                                **common)
                continue
            if student == "s04":   # graded first under an older grader: a different outcome is no flake
                gb.save_grading(sub.id, "v0", results_for(student, ab[student], flip="failed"), duration=duration,
                                **common)
            gb.save_grading(sub.id, "v1", results_for(student, ab[student]), duration=duration, **common)
        for _ in range(2):
            gb.save_error(subs["s27"].id, "v1", "sandbox failure: bwrap: setting up uid map: Permission denied",
                          backend="sandbox", device="cpu", started_at=DUE, duration=0.4)


def collect_class(course_dir: Path, work: Path) -> tuple[Path, Path]:
    from course import api
    klass, earlier = make_class(work, course_dir)
    course = api.load_course(course_dir / "course.yml")
    due = dt.datetime.fromisoformat(DUE)
    for folder in sorted(klass.iterdir()):
        late = LATE_HOURS.get(folder.name)
        when = due + (dt.timedelta(hours=late) if late else -dt.timedelta(days=1))
        rep = api.collect(course, folder, SLUG, student=folder.name, submitted_at=when.isoformat())
        bad = [i for i in rep.items if i.status == "error"]
        assert not bad, bad
    (work / "s30-later").mkdir(exist_ok=True)
    (work / "s30-later" / "answer.py").write_text("ANSWER = 42\n", encoding="utf-8")
    api.collect(course, work / "s30-later", "later", student="s30", submitted_at=DUE)
    return klass, earlier


def build(dest: Path) -> Path:
    """A copy of the fixture course in ``dest/course`` with the class collected and graded."""
    course_dir = dest / "course"
    shutil.copytree(FIXTURE, course_dir, ignore=shutil.ignore_patterns("__pycache__"))
    collect_class(course_dir, dest)
    seed_grades(course_dir)
    return course_dir


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "insight-class").resolve()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from course import api
    course_dir = build(out)
    course = api.load_course(course_dir / "course.yml")
    _, pages = api.class_report(course)
    rep = api.similarity(course, SLUG, against=[out / "earlier" / EARLIER])
    print("\n".join(map(str, [*pages, *rep.written[:1]])))

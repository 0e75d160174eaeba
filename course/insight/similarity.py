"""Code similarity across a class: MOSS's winnowing over normalised token fingerprints.

The building blocks are copydetect's (``copydetect.utils``, ``compare_files``): its Pygments-based
normaliser (every variable, function and class name becomes one letter, strings one symbol,
comments and layout vanish, so renaming changes nothing), Schleimer, Wilkerson and Aiken's robust
winnowing, the matching-passage overlap and the HTML highlighter. Two things differ from
copydetect's own driver: the k-gram hash is a stable polynomial hash (copydetect's uses Python's
``hash``, salted per process, so scores would change from run to run), and pairs are first ranked
by shared fingerprints (set intersections, cheap) so that copydetect's exact overlap runs only for
the pairs that may be above the threshold.

One document per source: a student's latest submission (their code files, concatenated in path
order), the reference solution, and each ``--against`` source. Fingerprints of the stub (the
assignment folder as released, public tests included) are boilerplate and never count.

A pair's score is the larger of the two shares: the share of each side's own (non-stub) code
covered by matching passages. Against the reference solution and ``--against`` sources only the
student's side counts. As MOSS does (its ``-m``), a fingerprint that more than half of the class's
submissions (and more than ten of them) share is a common idiom and not evidence: so a source copied
by most of a class shows as a class-wide shift in the distribution, not as pairs. Similarity is
evidence for a human to look at, never a verdict.
"""

from __future__ import annotations

import codecs
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from copydetect.utils import filter_code, get_token_coverage, winnow

from course.errors import CourseError

DEFAULT_THRESHOLD = 0.7
NOISE = 25                 # k: the shortest match (in normalised characters) that counts
GUARANTEE = 30             # every match at least this long is found: the winnowing window is GUARANTEE - NOISE + 1
MAX_CHARS = 200_000        # per document: an enormous submission is capped there, with a note
MIN_COVERAGE = 60          # normalised characters beyond the stub below which a document is not compared
CANDIDATE_SHARE = 0.5      # pairs sharing at least threshold × this of their fingerprints get the exact overlap
COMMON_SHARE = 0.5         # a fingerprint in more than this share of the class's submissions (and in more than
COMMON_MIN = 10            # COMMON_MIN of them) is a common idiom, not evidence: MOSS's -m option
CODE_SUFFIXES = (".py", ".ipynb")
NOTEBOOK_BYTES = 64 << 20  # a notebook is read whole (its outputs may be large) up to this size
VERDICT_NOTE = ("Similarity is evidence for a human to look at, never a verdict: shared code can be "
                "allowed collaboration, a common tutorial, or chance in a short task. Read the matching "
                "regions before anything else.")


@dataclass
class Fingerprint:
    """What ``copydetect.utils``/``compare_files`` need of a document (copydetect's CodeFingerprint's fields)."""

    k: int
    filtered_code: str
    offsets: np.ndarray
    hashes: set[int]
    hash_idx: dict[int, list[int]]
    token_coverage: float


@dataclass
class Document:
    key: str                   # "alice", "reference", "against:term1/bob": unique
    label: str
    kind: str                  # student | reference | against
    text: str = ""
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    fp: Fingerprint | None = None

    @property
    def comparable(self) -> bool:
        return self.fp is not None and self.fp.token_coverage >= MIN_COVERAGE


@dataclass
class Pair:
    a: str
    b: str
    score: float               # the larger share (students) or the student's share (reference, against)
    share_a: float
    share_b: float
    exact: bool                # copydetect's token overlap (True) or the fingerprint share estimate (False)
    slices_a: Any = None
    slices_b: Any = None


@dataclass
class SimilarityReport:
    slug: str
    threshold: float
    documents: dict[str, Document]
    pairs: list[Pair]                          # every compared pair, highest score first
    clusters: list[list[str]] = field(default_factory=list)
    seconds: float = 0.0
    written: list[Path] = field(default_factory=list)

    @property
    def flagged(self) -> list[Pair]:
        return [p for p in self.pairs if p.score >= self.threshold]

    @property
    def student_pairs(self) -> list[Pair]:
        return [p for p in self.pairs if self.documents[p.b].kind == "student"]

    def label(self, key: str) -> str:
        """How a source is named on the pages and in the terminal."""
        d = self.documents[key]
        return {"reference": "the reference solution", "against": f"{d.label} (--against)"}.get(d.kind, d.label)

    @property
    def notes(self) -> list[tuple[str, str]]:
        return [(d.label, n) for d in self.documents.values() for n in d.notes]


# ------------------------------------------------------------------ reading sources

def read_source(folder: Path, max_chars: int = MAX_CHARS) -> tuple[str, list[str], list[str]]:
    """A folder's code files as one text (a comment line names each file), the files, and notes on
    what was skipped or capped. Binary and non-UTF-8 files are skipped with a note."""
    parts, files, notes = [], [], []
    used = 0
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()
                   and "__pycache__" not in p.parts and not any(x.startswith(".") for x in p.relative_to(folder).parts))
    for path in paths:
        rel = path.relative_to(folder).as_posix()
        limit = {".py": 4 * max_chars + 4, ".ipynb": NOTEBOOK_BYTES}.get(path.suffix, 8192)
        with path.open("rb") as fh:   # never more than a capped document's worth of bytes
            data = fh.read(limit)
        if b"\0" in data[:8192]:
            notes.append(f"skipped {rel}: a binary file")
            continue
        if path.suffix not in CODE_SUFFIXES:
            continue
        try:   # a prefix may end inside a character: the incremental decoder leaves it out
            text = codecs.getincrementaldecoder("utf-8")().decode(data, final=len(data) < limit)
        except UnicodeDecodeError as exc:
            notes.append(f"skipped {rel}: not UTF-8 text (byte {exc.start})")
            continue
        size = path.stat().st_size
        if path.suffix == ".ipynb":
            text = _notebook_code(text, rel, notes)
            if text is None:
                continue
        if used + len(text) > max_chars:
            keep = max(0, max_chars - used)
            notes.append(f"capped {rel}: {size:,} bytes, only the first {keep:,} characters compared "
                         f"(at most {max_chars:,} per submission)")
            text = text[:keep]
        if not text:
            continue
        parts.append(f"# ===== {rel} =====\n{text}\n")
        files.append(rel)
        used += len(text)
    return "".join(parts), files, notes


def _notebook_code(text: str, rel: str, notes: list[str]) -> str | None:
    try:
        cells = json.loads(text)["cells"]
        return "\n".join("".join(c["source"]) if isinstance(c["source"], list) else str(c["source"])
                         for c in cells if c.get("cell_type") == "code")
    except (ValueError, KeyError, TypeError) as exc:
        notes.append(f"skipped {rel}: not a readable notebook ({exc.__class__.__name__})")
        return None


def against_sources(folder: Path) -> list[tuple[str, Path]]:
    """An ``--against`` folder: one source if it holds code files itself (a cloned repository's root),
    otherwise one source per subfolder (an earlier term's folder of students)."""
    if not folder.is_dir():
        raise CourseError(f"--against {folder}: not a folder")
    if any(p.is_file() and p.suffix in CODE_SUFFIXES for p in folder.iterdir()):
        return [(folder.name, folder)]
    return [(f"{folder.name}/{d.name}", d) for d in sorted(folder.iterdir()) if d.is_dir() and not d.name.startswith(".")]


# ------------------------------------------------------------------ fingerprints

_BASE = np.uint64(1_000_003)
_MASK = np.uint64((1 << 53) - 1)   # copydetect's winnower compares hashes as floats: keep them exact


def kgram_hashes(text: str, k: int) -> np.ndarray:
    """A stable hash of every k-character window (polynomial over code points, then a 64-bit mix)."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    n = len(codes) - k + 1
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    with np.errstate(over="ignore"):
        h = np.zeros(n, dtype=np.uint64)
        for j in range(k):
            h = h * _BASE + codes[j:j + n]
        h ^= h >> np.uint64(31)
        h *= np.uint64(0x9E3779B97F4A7C15)
        h ^= h >> np.uint64(29)
    return (h & _MASK).astype(np.int64)


def normalise(text: str) -> tuple[str, np.ndarray]:
    return filter_code(text, "submission.py", "python")


def boilerplate_hashes(texts: Iterable[str], k: int = NOISE) -> set[int]:
    out: set[int] = set()
    for text in texts:
        filtered, _ = normalise(text)
        out.update(kgram_hashes(filtered, k).tolist())
    return out


def fingerprint(text: str, boilerplate: set[int], k: int = NOISE, guarantee: int = GUARANTEE) -> Fingerprint:
    filtered, offsets = normalise(text)
    all_hashes = kgram_hashes(filtered, k)
    hashes, idx = winnow(all_hashes, guarantee - k + 1, remove_duplicates=False) if len(all_hashes) else (all_hashes, all_hashes)
    hash_idx: dict[int, list[int]] = {}
    for h, i in zip(hashes.tolist(), idx.tolist()):
        if h not in boilerplate:
            hash_idx.setdefault(h, []).append(i)
    coverage = float(get_token_coverage(hash_idx, k, len(filtered))) if hash_idx else 0.0
    return Fingerprint(k, filtered, offsets, set(hash_idx), hash_idx, coverage)


def compare(a: Fingerprint, b: Fingerprint) -> tuple[float, float, Any, Any]:
    """copydetect's exact overlap: the share of each side's code in matching passages, and the passages
    as character slices of each side's original text."""
    from copydetect.detector import compare_files
    _, (sa, sb), (slices_a, slices_b) = compare_files(a, b)
    return float(min(sa, 1.0)), float(min(sb, 1.0)), slices_a, slices_b


# ------------------------------------------------------------------ the whole class

def check_threshold(threshold: float) -> float:
    if not (0.0 <= threshold <= 1.0) or threshold != threshold:
        raise CourseError(f"--threshold {threshold:g}: must be between 0 and 1 (the share of a submission's own "
                          f"code in matching passages; default {DEFAULT_THRESHOLD:g})")
    return float(threshold)


def analyse(slug: str, students: dict[str, Path], *, stub: Path, reference: Path | None = None,
            against: Sequence[Path] = (), threshold: float = DEFAULT_THRESHOLD) -> SimilarityReport:
    """Score every pair of students, and every student against the reference and the ``against`` sources."""
    check_threshold(threshold)
    t0 = time.monotonic()
    stub_text, _, _ = read_source(stub) if stub.is_dir() else ("", [], [])
    boiler = boilerplate_hashes([stub_text])
    docs: dict[str, Document] = {}
    for student, folder in sorted(students.items()):
        docs[student] = Document(student, student, "student")
        _load(docs[student], folder, boiler)
    if reference is not None and reference.is_dir():
        docs["reference"] = Document("reference", "reference solution", "reference")
        _load(docs["reference"], reference, boiler)
    for folder in against:
        for name, path in against_sources(Path(folder)):
            key = f"against:{name}"
            docs[key] = Document(key, name, "against")
            _load(docs[key], path, boiler)
    _drop_common(docs)
    pairs = _score_pairs(docs, threshold)
    rep = SimilarityReport(slug, threshold, docs, pairs)
    rep.clusters = clusters(rep.flagged)
    rep.seconds = round(time.monotonic() - t0, 2)
    return rep


def _load(doc: Document, folder: Path, boiler: set[int]) -> None:
    if not folder.is_dir():
        doc.notes.append(f"{folder}: the submission folder is missing")
        return
    doc.text, doc.files, doc.notes = read_source(folder)
    if not doc.files:
        doc.notes.append("no code files to compare")
        return
    doc.fp = fingerprint(doc.text, boiler)
    if not doc.comparable:
        doc.notes.append("nothing beyond the stub to compare" if doc.fp.token_coverage == 0
                         else f"too little code beyond the stub to compare ({doc.fp.token_coverage:.0f} normalised "
                              f"characters, fewer than {MIN_COVERAGE})")


def _drop_common(docs: dict[str, Document]) -> None:
    """Remove the fingerprints that most of the class shares (idioms every solution writes)."""
    students = [d for d in docs.values() if d.kind == "student" and d.comparable]
    limit = max(COMMON_MIN, COMMON_SHARE * len(students))
    seen: dict[int, int] = {}
    for d in students:
        for h in d.fp.hashes:
            seen[h] = seen.get(h, 0) + 1
    common = {h for h, n in seen.items() if n > limit}
    if not common:
        return
    for d in docs.values():
        if d.fp is not None and d.fp.hashes & common:
            d.fp = _without(d.fp, common)


def _without(fp: Fingerprint, drop: set[int]) -> Fingerprint:
    hash_idx = {h: i for h, i in fp.hash_idx.items() if h not in drop}
    coverage = float(get_token_coverage(hash_idx, fp.k, len(fp.filtered_code))) if hash_idx else 0.0
    return Fingerprint(fp.k, fp.filtered_code, fp.offsets, set(hash_idx), hash_idx, coverage)


def _score_pairs(docs: dict[str, Document], threshold: float) -> list[Pair]:
    students = [d for d in docs.values() if d.kind == "student" and d.comparable]
    others = [d for d in docs.values() if d.kind != "student" and d.comparable]
    todo = [(a, b) for i, a in enumerate(students) for b in students[i + 1:]] + [(s, o) for s in students for o in others]
    pairs = []
    floor = threshold * CANDIDATE_SHARE
    for a, b in todo:
        shared = len(a.fp.hashes & b.fp.hashes)
        ea = shared / len(a.fp.hashes)
        eb = shared / len(b.fp.hashes)
        one_sided = b.kind != "student"
        estimate = ea if one_sided else max(ea, eb)
        if shared and estimate >= floor:
            sa, sb, slices_a, slices_b = compare(a.fp, b.fp)
            pairs.append(Pair(a.key, b.key, round(sa if one_sided else max(sa, sb), 4), round(sa, 4), round(sb, 4),
                              True, slices_a, slices_b))
        else:
            pairs.append(Pair(a.key, b.key, round(estimate, 4), round(ea, 4), round(eb, 4), False))
    return sorted(pairs, key=lambda p: (-p.score, p.a, p.b))


def clusters(pairs: Iterable[Pair]) -> list[list[str]]:
    """Connected groups of sources linked by pairs above the threshold (three students sharing one
    source are one group)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for p in pairs:
        parent[find(p.a)] = find(p.b)
    groups: dict[str, list[str]] = {}
    for x in list(parent):
        groups.setdefault(find(x), []).append(x)
    return sorted((sorted(g) for g in groups.values() if len(g) > 1), key=lambda g: (-len(g), g))

"""Code similarity on real files: the seeded class of 30 (tests/insight_class.py), collected."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from course import api
from course.cli import main
from course.errors import CourseError
from course.insight import similarity as sim
from course.insight import similarity_pages

import insight_class as ic

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("similarity")
    return ic.build(root), root / "earlier" / ic.EARLIER


@pytest.fixture(scope="module")
def rep(built, tmp_path_factory):
    course_dir, earlier = built
    course = api.load_course(course_dir / "course.yml")
    return api.similarity(course, ic.SLUG, against=[earlier], out=tmp_path_factory.mktemp("pages"))


def test_finds_the_three_copies_and_no_independent_pair(rep):
    flagged = {(p.a, p.b) for p in rep.flagged}
    assert flagged == ic.COPIES
    renamed = next(p for p in rep.flagged if (p.a, p.b) == ("s03", "s21"))
    assert renamed.exact and renamed.share_a > 0.9 and renamed.share_b > 0.85   # through renaming and reordering
    independent = [p for p in rep.pairs if p.a in ic.INDEPENDENT and p.b in ic.INDEPENDENT]
    assert len(independent) == 20 * 19 // 2
    assert max(p.score for p in independent) < sim.DEFAULT_THRESHOLD
    assert sorted(map(sorted, rep.clusters)) == sorted(map(sorted, ic.COPIES))


def test_the_stub_never_counts(rep):
    docs = rep.documents
    assert not docs["s24"].comparable and not docs["s25"].comparable     # two identical untouched stubs
    assert "nothing beyond the stub to compare" in docs["s24"].notes
    assert not any({"s24", "s25"} & {p.a, p.b} for p in rep.pairs)
    assert docs["s27"].comparable   # two functions of its own: compared, and like no one
    assert all(p.score < 0.2 for p in rep.pairs if "s27" in (p.a, p.b))


def test_bad_files_are_skipped_or_capped_with_a_note(rep):
    notes = dict((who, []) for who, _ in rep.notes)
    for who, note in rep.notes:
        notes[who].append(note)
    assert notes["s05"] == ["skipped notes.bin: a binary file"] and rep.documents["s05"].comparable
    assert notes["s28"] == ["skipped wordstats.py: a binary file", "no code files to compare"]
    assert notes["s29"][0].startswith("skipped wordstats.py: not UTF-8 text")
    assert notes["s26"][0].startswith("capped wordstats.py: ") and len(rep.documents["s26"].text) < sim.MAX_CHARS + 200
    assert "s30" not in rep.documents   # handed in nothing for this assignment


def test_pages_say_it_is_evidence_and_highlight_matches(rep):
    index = rep.written[0].read_text()
    assert sim.VERDICT_NOTE in index and "id='verdict'" in index
    assert len(rep.written) == 1 + len(rep.flagged)
    for page in rep.written[1:]:
        text = page.read_text()
        assert text.count("<mark>") >= 2 and sim.VERDICT_NOTE in text
    for who in ("s05", "s26", "s28", "s29"):
        assert who in index


def test_three_students_sharing_one_source_are_one_group(tmp_path):
    stub = ic.FIXTURE / "assignments" / ic.SLUG
    source = ic.fill(ic.stub_text(), ic.design_point(1, 1))
    folders = {}
    for who in ("ann", "bea", "cal"):
        (tmp_path / who).mkdir()
        (tmp_path / who / "wordstats.py").write_text(source if who != "cal" else ic.disguise(source))
        folders[who] = tmp_path / who
    (tmp_path / "dan").mkdir()
    (tmp_path / "dan" / "wordstats.py").write_text(ic.fill(ic.stub_text(), ic.design_point(3, 2)))
    folders["dan"] = tmp_path / "dan"
    rep = sim.analyse(ic.SLUG, folders, stub=stub)
    assert rep.clusters == [["ann", "bea", "cal"]]
    similarity_pages.write(rep, tmp_path / "out")
    assert "<li>ann, bea, cal</li>" in (tmp_path / "out" / "index.html").read_text()


def test_file_contents_are_escaped(tmp_path):
    stub = ic.FIXTURE / "assignments" / ic.SLUG
    hostile = ic.fill(ic.stub_text(), ic.design_point(0, 0)) + '\nX = "</pre><script>alert(1)</script>"\n'
    for who in ("<b>eve</b>", "fay"):
        (tmp_path / "in" / who).mkdir(parents=True)
        (tmp_path / "in" / who / "wordstats.py").write_text(hostile)
    rep = sim.analyse(ic.SLUG, {p.name: p for p in (tmp_path / "in").iterdir()}, stub=stub)
    written = similarity_pages.write(rep, tmp_path / "out")
    assert len(written) == 2
    for page in written:
        text = page.read_text()
        assert "<script>" not in text and "<b>eve</b>" not in text
    assert "&lt;/pre&gt;&lt;script&gt;" in written[1].read_text()


def test_scores_do_not_depend_on_the_interpreter_hash_seed():
    code = "from course.insight.similarity import kgram_hashes; print(kgram_hashes('def f(V):' * 9, 25).tolist())"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert len(outs) == 1


def test_cli_similarity_and_its_bad_input(built, tmp_path):
    course_dir, earlier = built
    args = ["similarity", ic.SLUG, "--course", str(course_dir / "course.yml")]
    result = CliRunner().invoke(main, [*args, "--against", str(earlier), "--out", str(tmp_path)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = re.sub(r"\s+", " ", result.output)
    assert "the reference solution" in out and f"{ic.EARLIER}/e2 (--against)" in out and "never a verdict" in out
    assert (tmp_path / "index.html").is_file()
    for bad in ("1.5", "-0.1"):
        result = CliRunner().invoke(main, [*args, "--threshold", bad])
        assert result.exit_code == 2 and f"--threshold {float(bad):g}: must be between 0 and 1" in result.output
    result = CliRunner().invoke(main, [*args, "--against", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "not a folder" in result.output
    with pytest.raises(CourseError):
        sim.check_threshold(float("nan"))
    result = CliRunner().invoke(main, [*args, "--threshold", "0.3", "--out", str(tmp_path / "low")],
                                catch_exceptions=False)
    assert result.exit_code == 0
    assert len(list((tmp_path / "low").glob("pair-*.html"))) > 3   # a lower threshold lists more


def test_a_course_without_submissions(toy, tmp_path):
    course = api.load_course(toy / "course.yml")
    rep = api.similarity(course, "vecops", out=tmp_path)
    assert rep.pairs == [] and "None." in rep.written[0].read_text()
    shutil.rmtree(tmp_path)


def test_notebooks_count_by_their_code_cells_and_caps_hold_for_wide_characters(tmp_path):
    import json
    cells = [{"cell_type": "code", "source": ["x = 1\n", "y = 2\n"]}, {"cell_type": "markdown", "source": "prose"}]
    (tmp_path / "a_work.ipynb").write_text(json.dumps({"cells": cells}))
    (tmp_path / "wide.py").write_text("é" * (sim.MAX_CHARS + 10))
    (tmp_path / "model.pt").write_bytes(b"\0" * 64)
    text, files, notes = sim.read_source(tmp_path)
    assert files == ["a_work.ipynb", "wide.py"]
    assert "x = 1\ny = 2" in text and "prose" not in text
    assert any(n.startswith("capped wide.py") for n in notes) and "skipped model.pt: a binary file" in notes
    assert text.count("é") < sim.MAX_CHARS


def test_against_a_folder_of_code_is_one_source_and_a_folder_of_folders_many(tmp_path):
    (tmp_path / "repo" / "src").mkdir(parents=True)
    (tmp_path / "repo" / "wordstats.py").write_text("x = 1\n")
    (tmp_path / "term" / "a").mkdir(parents=True)
    (tmp_path / "term" / "b").mkdir()
    assert sim.against_sources(tmp_path / "repo") == [("repo", tmp_path / "repo")]
    assert sim.against_sources(tmp_path / "term") == [("term/a", tmp_path / "term" / "a"),
                                                      ("term/b", tmp_path / "term" / "b")]
    with pytest.raises(CourseError, match="not a folder"):
        sim.against_sources(tmp_path / "missing")

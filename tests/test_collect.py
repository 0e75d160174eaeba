from __future__ import annotations

import datetime as dt
import io
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from course import api, collect, safefiles
from course.errors import CollectError
from course.gradebook import Gradebook


def _zip(entries: dict[str, bytes], symlinks: dict[str, str] = {}) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        for name, target in symlinks.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, target)
    return buf.getvalue()


def test_folder_of_student_folders(toy, tmp_path):
    src = tmp_path / "class"
    (src / "ann").mkdir(parents=True)
    (src / "ann" / "vecops.py").write_text("x = 1\n")
    (src / "ben" / "assignments" / "vecops").mkdir(parents=True)   # the student bundle's layout
    (src / "ben" / "assignments" / "vecops" / "vecops.py").write_text("x = 2\n")
    course = api.load_course(toy / "course.yml")
    rep = api.collect(course, src, "vecops", submitted_at="2026-10-01T12:00:00+00:00")
    assert [(i.student, i.status, i.attempt) for i in rep.items] == [("ann", "collected", 1), ("ben", "collected", 1)]
    assert (toy / "submitted" / "ben" / "vecops" / "1" / "vecops.py").read_text() == "x = 2\n"
    again = api.collect(course, src, "vecops")
    assert [i.status for i in again.items] == ["unchanged", "unchanged"]
    (src / "ann" / "vecops.py").write_text("x = 3\n")
    no_time = api.collect(course, src, "vecops")                    # changed, and a folder says no time
    assert no_time.items[0].status == "error" and "no trustworthy submission time" in no_time.items[0].message
    third = api.collect(course, src, "vecops", submitted_at="2026-10-01T13:00:00+00:00")
    assert [(i.student, i.status, i.attempt) for i in third.items][0] == ("ann", "collected", 2)
    assert (toy / "submitted" / "ann" / "vecops" / "1" / "vecops.py").read_text() == "x = 1\n"  # never overwritten
    with Gradebook(course.paths.gradebook) as gb:
        late = {s.student: s.late_by for s in gb.submissions(latest_only=False) if s.attempt == 1}
        sources = {s.submitted_at_source for s in gb.submissions(latest_only=False)}
    assert late == {"ann": 0.0, "ben": 0.0}
    assert sources == {"instructor-flag"}


def test_late_by_comes_from_the_due_date(toy, tmp_path):
    src = tmp_path / "ann"
    src.mkdir()
    (src / "vecops.py").write_text("x = 1\n")
    course = api.load_course(toy / "course.yml")
    api.collect(course, src, "vecops", student="ann", submitted_at="2026-10-02T01:59:00+00:00")
    with Gradebook(course.paths.gradebook) as gb:
        assert gb.submissions()[0].late_by == 2 * 3600


def test_bulk_zip_with_folders_and_inner_zips(toy, tmp_path):
    inner = _zip({"vecops.py": b"x = 'cy'\n"})
    outer = _zip({"ann/vecops.py": b"x = 'ann'\n", "ann/__pycache__/junk.pyc": b"\0", "cy.zip": inner})
    path = tmp_path / "bulk.zip"
    path.write_bytes(outer)
    course = api.load_course(toy / "course.yml")
    rep = api.collect(course, path, "vecops", submitted_at="2026-10-01T12:00:00+00:00")
    assert sorted((i.student, i.status) for i in rep.items) == [("ann", "collected"), ("cy", "collected")]
    assert not (toy / "submitted" / "ann" / "vecops" / "1" / "__pycache__").exists()


@pytest.mark.parametrize("entries, symlinks, fragment", [
    ({"../../evil.py": b"x"}, {}, "unsafe path '../../evil.py'"),
    ({"/etc/evil.py": b"x"}, {}, "unsafe absolute path"),
])
def test_unsafe_archives_are_refused(tmp_path, entries, symlinks, fragment):
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(CollectError, match=fragment):
        collect.extract_zip(_zip(entries, symlinks), dest, "student ann")
    assert not (tmp_path / "evil.py").exists()


def test_symlinks_in_archives_are_refused(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(CollectError, match="'shadow' is a symbolic link"):
        collect.extract_zip(_zip({"vecops.py": b"x = 1\n"}, {"shadow": "/etc/shadow"}), dest, "student ann")
    assert list(dest.iterdir()) == []


def test_symlinks_in_folders_are_not_followed(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    dest.mkdir()
    (src / "vecops.py").write_text("x = 1\n")
    os.symlink("/etc/passwd", src / "passwd")
    collect.copy_folder(src, dest, "student ann")                  # course ci: left out
    assert sorted(p.name for p in dest.iterdir()) == ["vecops.py"]
    with pytest.raises(CollectError, match="passwd is a symbolic link"):
        collect.copy_folder(src, tmp_path / "strict", "student ann", strict=True)   # collect: refused


def test_non_utf8_names_are_a_clear_error(tmp_path):
    # A name stored as Latin-1 bytes without zip's UTF-8 flag (as old archivers do).
    data = _zip({"cafX.py": b"x"}).replace(b"cafX.py", "café.py".encode("latin-1"))
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(CollectError, match="not UTF-8"):
        collect.extract_zip(data, dest, "student ann")


def test_corrupt_zip_is_reported_for_that_student_and_others_collected(toy, tmp_path):
    src = tmp_path / "class"
    src.mkdir()
    (src / "ann.zip").write_bytes(b"PK\x03\x04 this is not a zip")
    (src / "ben").mkdir()
    (src / "ben" / "vecops.py").write_text("x = 1\n")
    rep = api.collect(api.load_course(toy / "course.yml"), src, "vecops", submitted_at="2026-10-01T12:00:00+00:00")
    by = {i.student: i for i in rep.items}
    assert by["ann"].status == "error" and "not a readable zip" in by["ann"].message and "ann" in by["ann"].message
    assert by["ben"].status == "collected"


def test_size_caps(tmp_path, monkeypatch):
    monkeypatch.setattr(safefiles, "MAX_FILE_BYTES", 10)
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(CollectError, match="larger than the 10 byte limit"):
        collect.extract_zip(_zip({"big.py": b"x" * 100}), dest, "student ann")


def test_empty_submission_is_collected_with_a_note(toy, tmp_path):
    (tmp_path / "class" / "ann").mkdir(parents=True)
    rep = api.collect(api.load_course(toy / "course.yml"), tmp_path / "class", "vecops",
                      submitted_at="2026-10-01T12:00:00+00:00")
    assert rep.items[0].status == "collected" and "empty submission" in rep.items[0].message


def test_git_repository_never_uses_the_commit_time(toy, tmp_path):
    repo = tmp_path / "ann-repo"
    (repo / "assignments" / "vecops").mkdir(parents=True)
    (repo / "assignments" / "vecops" / "vecops.py").write_text("x = 'git'\n")
    env = {**os.environ, "GIT_AUTHOR_DATE": "2026-10-01T20:00:00+00:00",
           "GIT_COMMITTER_DATE": "2026-10-01T20:00:00+00:00"}
    for cmd in (["init", "-q", "-b", "main"], ["add", "-A"],
                ["-c", "user.email=a@b", "-c", "user.name=A", "commit", "-qm", "work"]):
        subprocess.run(["git", "-C", str(repo), *cmd], check=True, env=env)
    course = api.load_course(toy / "course.yml")
    before = dt.datetime.now(dt.timezone.utc)
    rep = api.collect(course, repo, "vecops", student="ann", ref="main")
    assert rep.items[0].status == "collected"
    with Gradebook(course.paths.gradebook) as gb:
        sub = gb.submissions()[0]
    # the commit says 2026-10-01 (the student sets that); the time is when the collector read it
    assert sub.submitted_at_source == "fetch-time"
    assert dt.datetime.fromisoformat(sub.submitted_at) >= before
    assert (toy / sub.path / "vecops.py").read_text() == "x = 'git'\n"


def test_bad_student_ids_are_refused(toy, tmp_path):
    (tmp_path / "class" / "-rf").mkdir(parents=True)
    (tmp_path / "class" / "-rf" / "vecops.py").write_text("x = 1\n")
    rep = api.collect(api.load_course(toy / "course.yml"), tmp_path / "class", "vecops",
                      submitted_at="2026-10-01T12:00:00+00:00")
    assert rep.items[0].status == "error" and "not a usable student id" in rep.items[0].message


def test_an_unsafe_entry_in_a_class_zip_refuses_only_its_student(toy, tmp_path):
    path = tmp_path / "class.zip"
    path.write_bytes(_zip({"ann/vecops.py": b"x = 1\n", "bo/../../evil.py": b"x", "bo/vecops.py": b"x = 2\n",
                           "/etc/evil.py": b"x", "cy/vecops.py": b"x = 3\n"}, {}))
    rep = api.collect(api.load_course(toy / "course.yml"), path, "vecops", submitted_at="2026-10-01T12:00:00+00:00")
    got = {i.student: (i.status, i.message) for i in rep.items}
    assert got["ann"][0] == got["cy"][0] == "collected"
    assert got["bo"] == ("error", f"{path}: student bo: unsafe path 'bo/../../evil.py' in the archive "
                                  "(it climbs out with '..')")
    assert got["class.zip"] == ("error", f"{path}: unsafe absolute path '/etc/evil.py' in the archive")
    assert not (toy / "submitted" / "bo").exists() and not list(tmp_path.parent.rglob("evil.py"))

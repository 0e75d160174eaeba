"""Attacks on collect, written as a student would (issue 12, section 5). Each must lose: nothing of
the student's runs or is followed, the attacker gets a recorded failure, the rest of the class is
collected, and memory stays proportional to the caps."""

from __future__ import annotations

import os
import socket
import stat
import struct
import subprocess
import tracemalloc
import unicodedata
import zipfile
from pathlib import Path

import pytest

from course import api, collect, safefiles

import lmsfixtures as F

WHEN = "2026-10-01T12:00:00+00:00"


def _honest(klass: Path) -> None:
    (klass / "zed").mkdir(parents=True, exist_ok=True)
    (klass / "zed" / "vecops.py").write_text("x = 'zed'\n")


def _collect_class(toy: Path, klass: Path) -> dict[str, collect.Collected]:
    rep = api.collect(api.load_course(toy / "course.yml"), klass, "vecops", submitted_at=WHEN)
    by = {i.student: i for i in rep.items}
    assert by["zed"].status == "collected", "the rest of the class is collected"
    return by


# ------------------------------------------------------------------ git: the student's .git is data

def _repo(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True)
    F.git(path, "init", "-q", "-b", "main")
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    F.git(path, "add", "-A")
    F.git(path, "commit", "-qm", "work")
    return path


def test_git_config_hooks_filters_and_fsmonitor_never_run(toy, tmp_path):
    marker = tmp_path / "PWNED"
    klass = tmp_path / "class"
    _honest(klass)
    repo = _repo(klass / "mal", {"vecops.py": "x = 'mal'\n", ".gitattributes": "* filter=evil diff=evil\n"})
    payload = f"sh -c 'touch {marker}'"
    with open(repo / ".git" / "config", "a") as cfg:
        cfg.write(f'[core]\n\tfsmonitor = "{payload}"\n\thooksPath = hooks-evil\n\tpager = {payload}\n'
                  f'[filter "evil"]\n\tsmudge = {payload}\n\tclean = {payload}\n\tprocess = {payload}\n'
                  f'[diff "evil"]\n\ttextconv = {payload}\n\tcommand = {payload}\n'
                  f'[uploadpack]\n\tpackObjectsHook = {payload}\n[core]\n\tsshCommand = {payload}\n')
    for hook in ("post-checkout", "pre-auto-gc", "reference-transaction", "post-index-change"):
        for folder in (repo / ".git" / "hooks", repo / "hooks-evil"):
            folder.mkdir(exist_ok=True)
            (folder / hook).write_text(f"#!/bin/sh\ntouch {marker}\n")
            (folder / hook).chmod(0o755)
    (repo / ".git" / "info").mkdir(exist_ok=True)
    (repo / ".git" / "info" / "attributes").write_text("* filter=evil\n")
    by = _collect_class(toy, klass)
    assert by["mal"].status == "collected" and by["mal"].time_source == "instructor-flag"
    stored = Path(by["mal"].path)
    assert (stored / "vecops.py").read_text() == "x = 'mal'\n"        # raw blob: no filter ran on it
    assert not marker.exists()


def test_a_gitdir_pointer_into_another_students_repository_is_refused(toy, tmp_path):
    klass = tmp_path / "class"
    _honest(klass)
    _repo(klass / "victim", {"vecops.py": "x = 'the victim's work'\n"})
    (klass / "thief").mkdir()
    (klass / "thief" / ".git").write_text(f"gitdir: {klass / 'victim' / '.git'}\n")
    by = _collect_class(toy, klass)
    assert by["thief"].status == "error" and "'gitdir:' pointer" in by["thief"].message
    assert by["victim"].status == "collected"
    assert not (toy / "submitted" / "thief").exists()


def test_alternates_or_links_out_of_the_students_folder_are_refused(toy, tmp_path):
    klass = tmp_path / "class"
    _honest(klass)
    victim = _repo(tmp_path / "elsewhere" / "victim", {"vecops.py": "x = 'victim'\n"})
    head = F.git(victim, "rev-parse", "HEAD")
    thief = klass / "thief"
    thief.mkdir()
    F.git(thief, "init", "-q", "-b", "main")
    (thief / ".git" / "objects" / "info" / "alternates").write_text(str(victim / ".git" / "objects") + "\n")
    (thief / ".git" / "refs" / "heads" / "main").write_text(head + "\n")
    linker = klass / "linker"
    linker.mkdir()
    F.git(linker, "init", "-q", "-b", "main")
    (linker / ".git" / "objects" / "pack").rmdir()
    (linker / ".git" / "objects" / "pack").symlink_to(victim / ".git" / "objects" / "pack")
    by = _collect_class(toy, klass)
    assert by["thief"].status == "error" and "alternates points outside" in by["thief"].message
    assert by["linker"].status == "error" and "not a regular file or folder" in by["linker"].message


def test_git_trees_with_links_bad_names_or_collisions_are_refused(toy, tmp_path):
    klass = tmp_path / "class"
    _honest(klass)
    link = _repo(klass / "link", {"vecops.py": "x = 1\n"})
    (link / "shadow").symlink_to("/etc/shadow")
    F.git(link, "add", "-A")
    F.git(link, "commit", "-qm", "link")
    clash = _repo(klass / "clash", {"vecops.py": "x = 1\n", "VECOPS.py": "x = 2\n"})
    raw = klass / "rawname"
    raw.mkdir()
    F.git(raw, "init", "-q", "-b", "main")
    blob = subprocess.run(["git", "-C", str(raw), "hash-object", "-w", "--stdin"], input=b"x = 1\n",
                          capture_output=True, check=True).stdout.strip()
    tree = subprocess.run(["git", "-C", str(raw), "mktree", "-z"],
                          input=b"100644 blob " + blob + b"\tcaf\xe9.py\0", capture_output=True, check=True).stdout.strip()
    commit = F.git(raw, "commit-tree", tree.decode(), "-m", "latin-1 name")
    F.git(raw, "update-ref", "refs/heads/main", commit)
    by = _collect_class(toy, klass)
    assert by["link"].status == "error" and "symbolic link in the git tree" in by["link"].message
    assert by["clash"].status == "error" and "collide" in by["clash"].message
    assert by["rawname"].status == "error" and "not UTF-8" in by["rawname"].message


# ------------------------------------------------------------------ archives: streamed, capped, checked

def _lying_zip(path: Path, name: str, size: int, declared: int) -> Path:
    """A member of ``size`` zero bytes whose headers declare ``declared`` bytes (a zip bomb that lies)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, b"\0" * size)
    data = bytearray(path.read_bytes())
    local = data.find(b"PK\x03\x04")
    struct.pack_into("<I", data, local + 22, declared)
    central = data.find(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 24, declared)
    path.write_bytes(bytes(data))
    return path


def test_a_zip_bomb_costs_memory_in_proportion_to_the_cap(toy, tmp_path, monkeypatch):
    monkeypatch.setattr(safefiles, "MAX_FILE_BYTES", 2 * 2**20)
    klass = tmp_path / "class"
    _honest(klass)
    _lying_zip(klass / "bomb.zip", "vecops.py", 300 * 2**20, declared=100)       # 300 MiB of zeros, "100 bytes"
    with zipfile.ZipFile(klass / "honest_big.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("vecops.py", b"\0" * (64 * 2**20))                            # declared honestly: refused unread
    tracemalloc.start()
    by = _collect_class(toy, klass)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # zipfile stops at the declared size and the CRC then fails; either way nothing past the cap is read
    assert by["bomb"].status == "error" and ("expands beyond" in by["bomb"].message or "corrupt" in by["bomb"].message)
    assert by["honest_big"].status == "error" and "larger than the 2097152 byte limit" in by["honest_big"].message
    assert peak < 24 * 2**20, f"collect used {peak / 2**20:.0f} MiB for a 2 MiB cap"


def test_a_bomb_inside_a_class_zip_refuses_only_its_student(toy, tmp_path, monkeypatch):
    monkeypatch.setattr(safefiles, "MAX_TOTAL_BYTES", 4 * 2**20)
    inner = _lying_zip(tmp_path / "inner.zip", "vecops.py", 200 * 2**20, declared=100)
    path = tmp_path / "class.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zed/vecops.py", "x = 'zed'\n")
        zf.writestr("nested.zip", inner.read_bytes())
        zf.writestr("mal/vecops.py", b"\0" * (200 * 2**20))
    tracemalloc.start()
    rep = api.collect(api.load_course(toy / "course.yml"), path, "vecops", submitted_at=WHEN)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    by = {i.student: i for i in rep.items}
    assert by["zed"].status == "collected"
    assert by["nested"].status == "error" and by["mal"].status == "error"
    assert peak < 24 * 2**20


def _special_member(zf: zipfile.ZipFile, name: str, mode: int, data: bytes = b"") -> None:
    info = zipfile.ZipInfo(name)
    info.external_attr = mode << 16
    info.create_system = 3
    zf.writestr(info, data)


@pytest.mark.parametrize("what, build, fragment", [
    ("fifo", lambda zf: _special_member(zf, "mal/pipe", stat.S_IFIFO | 0o644), "not a regular file or folder"),
    ("device", lambda zf: _special_member(zf, "mal/sda", stat.S_IFBLK | 0o644), "not a regular file or folder"),
    ("symlink", lambda zf: _special_member(zf, "mal/vecops.py", stat.S_IFLNK | 0o777, b"../zed/vecops.py"),
     "is a symbolic link"),
    ("case", lambda zf: (zf.writestr("mal/vecops.py", "a"), zf.writestr("mal/VecOps.py", "b")), "collide"),
    ("unicode", lambda zf: (zf.writestr("mal/" + unicodedata.normalize("NFC", "café.py"), "a"),
                            zf.writestr("mal/" + unicodedata.normalize("NFD", "café.py"), "b")), "collide"),
    ("file-and-folder", lambda zf: (zf.writestr("mal/vecops", "a"), zf.writestr("mal/vecops/x.py", "b")),
     "both a file and a folder"),
    ("duplicate", lambda zf: (zf.writestr("mal/vecops.py", "a"), zf.writestr("mal/vecops.py", "b")), "collide"),
])
def test_archive_members_that_are_not_plain_files_or_that_collide_are_refused(toy, tmp_path, what, build, fragment):
    import warnings
    path = tmp_path / "class.zip"
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w") as zf:
        warnings.simplefilter("ignore")          # zipfile warns about the duplicate name: that is the attack
        zf.writestr("zed/vecops.py", "x = 'zed'\n")
        build(zf)
    rep = api.collect(api.load_course(toy / "course.yml"), path, "vecops", submitted_at=WHEN)
    by = {i.student: i for i in rep.items}
    assert by["zed"].status == "collected"
    assert by["mal"].status == "error" and fragment in by["mal"].message, by["mal"].message
    assert not (toy / "submitted" / "mal").exists()


# ------------------------------------------------------------------ folders: nothing but files and folders

def test_a_fifo_socket_or_link_in_a_student_folder_is_refused_and_never_opened(toy, tmp_path):
    klass = tmp_path / "class"
    _honest(klass)
    for sid in ("fifo", "sock", "link", "linkdir"):
        (klass / sid).mkdir()
        (klass / sid / "vecops.py").write_text("x = 1\n")
    os.mkfifo(klass / "fifo" / "data.bin")                         # opening it would block collect forever
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(klass / "sock" / "s"))
    (klass / "link" / "notes.txt").symlink_to(klass / "zed" / "vecops.py")
    (klass / "linkdir" / "other").symlink_to(klass / "zed")
    try:
        by = _collect_class(toy, klass)
    finally:
        server.close()
    assert by["fifo"].status == "error" and "data.bin is not a regular file or folder" in by["fifo"].message
    assert by["sock"].status == "error" and "not a regular file or folder" in by["sock"].message
    assert by["link"].status == "error" and "notes.txt is a symbolic link" in by["link"].message
    assert by["linkdir"].status == "error" and "other is a symbolic link" in by["linkdir"].message


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a device needs root")
def test_a_device_node_in_a_student_folder_is_refused(toy, tmp_path):
    klass = tmp_path / "class"
    _honest(klass)
    (klass / "dev").mkdir()
    os.mknod(klass / "dev" / "zero", stat.S_IFCHR | 0o600, os.makedev(1, 5))
    by = _collect_class(toy, klass)
    assert by["dev"].status == "error" and "zero is not a regular file or folder" in by["dev"].message


def test_colliding_or_non_utf8_names_in_a_folder_are_refused(toy, tmp_path):
    klass = tmp_path / "class"
    _honest(klass)
    (klass / "clash").mkdir()
    (klass / "clash" / "vecops.py").write_text("a")
    (klass / "clash" / "VECOPS.py").write_text("b")
    (klass / "norm").mkdir()
    (klass / "norm" / unicodedata.normalize("NFC", "é.py")).write_text("a")
    (klass / "norm" / unicodedata.normalize("NFD", "é.py")).write_text("b")
    (klass / "bytes").mkdir()
    with open(os.path.join(os.fsencode(klass / "bytes"), b"caf\xe9.py"), "w") as f:
        f.write("x = 1\n")
    os.mkdir(os.path.join(os.fsencode(klass), b"\xff\xfe"))
    by = _collect_class(toy, klass)
    assert by["clash"].status == "error" and "collide" in by["clash"].message
    assert by["norm"].status == "error" and "collide" in by["norm"].message
    assert by["bytes"].status == "error" and "not UTF-8" in by["bytes"].message
    assert [i for s, i in by.items() if "\\x" in s][0].status == "error"

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from course import config
from course.errors import ConfigError, UnknownAssignment

from conftest import TOY, REPO

BASE = """
name: T
assignments:
  - slug: one
    due: 2026-10-01T23:59:00+00:00
  - slug: two
    due: 2026-10-08T23:59:00+00:00
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "course.yml"
    path.write_text(text)
    return path


def test_toy_course_loads_into_frozen_dataclasses():
    c = config.load(TOY / "course.yml")
    a = c.assignment("vecops")
    assert a.points == 10 and a.limits.call_timeout == 10 and a.limits.submission_timeout == 300
    assert a.due == dt.datetime(2026, 10, 1, 23, 59, tzinfo=dt.timezone.utc)
    assert c.late_policy.grace == 15 * 60 and c.late_policy.per == "day"
    assert c.paths.gradebook == (TOY / "gradebook.sqlite").resolve()
    with pytest.raises(Exception):
        a.points = 5  # frozen


def test_the_real_course_file_loads():
    c = config.load(REPO / "course.yml")
    assert c.slugs == ["attention", "positional_encoding", "lora", "qlora", "finetune_vs_prompt"]
    assert c.assignment("qlora").needs_gpu


@pytest.mark.parametrize("replace, message", [
    ("due: 2026-10-08T23:59:00+00:00", "course.yml: assignments[1].due: 'tomorrow' is not an ISO 8601 date"),
])
def test_error_names_file_key_and_value(tmp_path, replace, message):
    path = write(tmp_path, BASE.replace(replace, "due: tomorrow"))
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert str(err.value) == message


@pytest.mark.parametrize("text, fragment", [
    (BASE.replace("T\n", "T\nlimit: {}\n"), "limit"),
    (BASE.replace("slug: two", "slug: Two Words"), "assignments[1].slug: 'Two Words'"),
    (BASE.replace("slug: two", "slug: one"), "assignments[1].slug: 'one' appears twice"),
    (BASE.replace("due: 2026-10-01T23:59:00+00:00", "due: 2026-10-01T23:59:00"), "has no time zone"),
    (BASE + "limits: {memory: lots}\n", "limits.memory: 'lots' is not a size"),
    (BASE + "limits: {call_timeout: -3}\n", "limits.call_timeout: -3"),
    (BASE + "late_policy: {per: week}\n", "late_policy.per: 'week'"),
    ("name: T\nassignments: 3\n", "assignments: 3 must be a list"),
    ("name: [unclosed\n", "not valid YAML"),
    (BASE.replace("name: T", ""), "name: None must be the course's name"),
])
def test_malformed_course_yml_is_a_clear_error(tmp_path, text, fragment):
    with pytest.raises(ConfigError) as err:
        config.load(write(tmp_path, text))
    assert fragment in str(err.value)
    assert "course.yml" in str(err.value)


def test_sizes_and_durations(tmp_path):
    c = config.load(write(tmp_path, BASE + "limits: {memory: 512MiB, call_timeout: 2m, submission_timeout: 1h}\n"))
    lim = c.assignment("one").limits
    assert (lim.memory, lim.call_timeout, lim.submission_timeout) == (512 * 2**20, 120.0, 3600.0)


def test_unknown_slug_lists_the_known_ones():
    c = config.load(TOY / "course.yml")
    with pytest.raises(UnknownAssignment, match="unknown assignment 'nope'; known: vecops"):
        c.assignment("nope")


def test_missing_file_says_so(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        config.load(tmp_path / "course.yml")


def test_extensions_move_the_due_date(tmp_path):
    path = write(tmp_path, BASE)
    (tmp_path / "extensions.yml").write_text(
        "- {student: ann, assignment: one, due: 2026-10-03T23:59:00+00:00, reason: illness}\n")
    c = config.load(path)
    assert c.due_for("ann", "one").day == 3 and c.due_for("ben", "one").day == 1
    (tmp_path / "extensions.yml").write_text("- {student: ann, assignment: three, due: 2026-10-03T23:59:00+00:00}\n")
    with pytest.raises(ConfigError, match=r"extensions.yml: extensions\[0\].assignment: 'three'"):
        config.load(path)

"""One module per LMS: read its exports (with its own submission times) and write its grade imports.

Each reader module has ``entries(course, source, slug, roster, options, report)``, returning
:class:`course.collect.Entry` objects that :func:`course.collect.collect` materialises safely,
and ``people(path)``, the students of the LMS's roster export (for ``course roster import``).
The formats, and the documentation each rule comes from, are in docs/lms.md.
"""

from __future__ import annotations

import importlib
import re
from types import ModuleType
from typing import Sequence

from course.errors import CollectError
from course.roster import Roster, RosterError

READERS = {"canvas": "canvas", "moodle": "moodle", "gradescope": "gradescope", "github-classroom": "github_classroom"}


def reader(name: str) -> ModuleType:
    if name not in READERS:
        raise CollectError(f"--from {name!r}: use one of {', '.join(READERS)}")
    return importlib.import_module(f"course.lms.{READERS[name]}")


def map_student(roster: Roster, keys: Sequence[tuple[str, str]], fallback: str, who: str) -> tuple[str, str]:
    """(course id, note) for a student an LMS names by ``keys`` ((kind, value), most specific first).

    With a roster the student must be on it (RosterError otherwise: the caller refuses that one
    student); without one the fallback (an id derived from the LMS's data) is used as is.
    """
    if len(roster):
        tried = [(k, v) for k, v in keys if v]
        for kind, value in tried:
            found = roster.lookup(kind, value)
            if len(found) > 1:
                roster.find(kind, value, who)     # raises, naming the rows that share the key
            if found:
                return found[0].id, ""
        what = ", ".join(f"{k} {v!r}" for k, v in tried) or "no key"
        raise RosterError(f"{who}: {what} is not on the roster ({roster.file}); no submission is collected for a "
                          "student the roster does not know (course roster import, or fix the key)")
    sid = id_from(fallback)
    if not sid:
        raise CollectError(f"{who}: cannot make a student id from {fallback!r}; import a roster first")
    return sid, ""


def id_from(text: str) -> str:
    import unicodedata
    ascii_ = unicodedata.normalize("NFKD", text or "").encode("ascii", "ignore").decode("ascii")
    out = re.sub(r"[^A-Za-z0-9._@+-]+", ".", ascii_).strip(".-_+@").lower()[:100]
    return out

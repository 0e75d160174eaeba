"""What a test sees when the submission misbehaves.

* :class:`SubmissionError` (an ``Exception``): the student's code raised. It is also an instance
  of the nearest built-in exception class the student raised, so ``pytest.raises(ValueError)``
  works against a student's ``ValueError`` in both backends.
* :class:`SubmissionFailure` (a ``BaseException``, so no ``except Exception`` or
  ``pytest.raises(Exception)`` in a test swallows it): the call timed out, the worker died, or the
  reply was not acceptable data. The judge maps these to the ``timeout`` / ``error`` / ``failed``
  outcomes.
"""

from __future__ import annotations

import builtins
from typing import Any

from course import textsafe


MAX_MESSAGE = 2000
MAX_TRACEBACK = 8000
MAX_FRAMES = 20


def _text(value: Any, default: str, limit: int) -> str:
    """A field of the worker's reply: untrusted, so made a safe, capped str here (course.textsafe)."""
    return textsafe.clean(value if type(value) is str else default, limit)


class SubmissionError(Exception):
    """The student's code raised an exception (carried as data: type, message, student frames)."""

    def __init__(self, target: str, info: dict[str, Any]):
        # ``info`` came from the worker: untrusted data, so every field is typed and capped here.
        self.target = target
        self.remote_type = _text(info.get("type"), "Exception", 200)
        self.base = _text(info.get("base"), "Exception", 100)
        self.remote_message = _text(info.get("message"), "", MAX_MESSAGE)
        frames = info.get("frames")
        self.frames = [(_text(f[0], "?", 300), f[1] if type(f[1]) is int else 0, _text(f[2], "?", 200))
                       for f in (frames if type(frames) is list else [])[-MAX_FRAMES:]
                       if type(f) in (list, tuple) and len(f) == 3]
        self.remote_traceback = _text(info.get("traceback"), "", MAX_TRACEBACK)
        super().__init__(self.describe())

    @property
    def location(self) -> str | None:
        """``file.py:line`` of the innermost frame in the student's files, if any."""
        if not self.frames:
            return None
        file, line, _ = self.frames[-1]
        return f"{file}:{line}"

    def describe(self) -> str:
        short = self.remote_type.rsplit(".", 1)[-1]
        if self.base == "NotImplementedError":
            text = f"{self.target} is not implemented yet ({self.remote_message or short})"
        elif self.remote_type == "builtins.SystemExit":
            text = f"{self.target}: {self.remote_message}"
        else:
            text = f"{self.target} raised {short}: {self.remote_message}"
        return text   # the location travels separately (``location``): tests never match against it


_CLASSES: dict[str, type] = {}


def submission_error(target: str, info: dict[str, Any]) -> SubmissionError:
    """A :class:`SubmissionError` that also subclasses the student's built-in exception type."""
    base_name = _text(info.get("base"), "Exception", 100)
    base = getattr(builtins, base_name, None)
    if not (isinstance(base, type) and issubclass(base, Exception)) or issubclass(base, (AssertionError,)):
        # AssertionError stays plain: a student's assert must not pass for the test's own assert.
        return SubmissionError(target, info)
    cls = _CLASSES.get(base_name)
    if cls is None:
        try:
            cls = type(f"Submission{base_name}", (SubmissionError, base), {"__module__": __name__})
        except TypeError:  # an exception type with an incompatible layout
            return SubmissionError(target, info)
        _CLASSES[base_name] = cls
    try:
        return cls(target, info)
    except Exception:  # e.g. UnicodeDecodeError's constructor wants five arguments
        return SubmissionError(target, info)


class SubmissionFailure(BaseException):
    """The submission could not answer: the test fails whatever it expected."""

    outcome = "failed"


class SubmissionTimeout(SubmissionFailure):
    outcome = "timeout"


class WorkerCrashed(SubmissionFailure):
    outcome = "error"


class BadReply(SubmissionFailure):
    """The reply is not acceptable data (wrong type, NaN/inf, too large, malformed)."""

    outcome = "failed"

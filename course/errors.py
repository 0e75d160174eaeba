"""Domain errors. Core code raises these; only ``cli.py`` turns them into messages and exit codes.

Every error says what was wrong, with the value and where it came from (file, key, student, test).
"""

from __future__ import annotations


class CourseError(Exception):
    """Base class of every error the core raises on purpose."""

    exit_code = 2


class ConfigError(CourseError):
    """course.yml (or extensions.yml) is malformed: names the file, the key and the bad value."""


class UnknownAssignment(CourseError):
    """A slug that course.yml does not list."""


class StubError(CourseError):
    """A solution file with unbalanced or malformed solution regions."""


class ReleaseLeak(CourseError):
    """A release bundle would contain something hidden."""


class CollectError(CourseError):
    """A submission source that cannot be collected (corrupt zip, unsafe path, too large...)."""


class GradingError(CourseError):
    """Grading infrastructure failed (not a student's fault): the run can be resumed."""

    exit_code = 3


class IsolationError(GradingError):
    """Strong isolation was required but is not available on this machine."""


class ValidationFailed(CourseError):
    """``course validate`` found a problem with an assignment."""

    exit_code = 1

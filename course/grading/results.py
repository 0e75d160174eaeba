"""One test's result as plain data: what a judge reports and the gradebook records.

Kept apart from the pytest plugin so that the runner, the CLI and the reports need neither pytest
nor torch to handle results.
"""

from __future__ import annotations

from dataclasses import dataclass

OUTCOMES = ("passed", "failed", "error", "timeout", "pending", "skipped")


@dataclass
class TestResult:
    __test__ = False  # not a pytest test class

    test_id: str
    name: str
    task: str | None
    hidden: bool
    outcome: str
    points: float
    max_points: float
    message: str = ""
    detail: str = ""
    location: str | None = None
    duration: float = 0.0
    description: str = ""           # what the test checks, in words (shown instead of a parametrize id)
    diagnosis: str = ""             # the misconceptions a failure matches, in words (trusted catalogue text)
    misconceptions: str = ""        # their names, comma-separated (for the class view)


def shorten(text: str, width: int) -> str:
    """``text`` cut at a word boundary (never mid-word), keeping a trailing ``[at file:line]``."""
    if len(text) <= width:
        return text
    where = ""
    if text.endswith("]") and " [at " in text:
        text, where = text[:text.rindex(" [at ")], text[text.rindex(" [at "):]
    room = max(10, width - len(where) - 2)
    cut = text[:room]
    if " " in cut[room // 2:]:
        cut = cut[:cut.rindex(" ")]
    return cut.rstrip(" ,;:") + " …" + where

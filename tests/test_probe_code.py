"""What a worker is sent of a probes module: the one function and what it refers to, nothing else."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from course.grading.probe_code import minimal_source, probe_spec

TOY_PROBES = Path(__file__).parent / "files" / "toycourse" / "graders" / "vecops" / "probes.py"

MODULE = '''"""Module docstring: SECRET-DOC."""
from __future__ import annotations

import math
import os.path
from torch import nn as tnn, optim   # SECRET-COMMENT

LIMIT = 3
UNUSED = "SECRET-CONSTANT"
_table = {k: LIMIT * k for k in range(4)}


def _helper(x):
    """SECRET-HELPER-DOC"""
    return math.sqrt(x) + _table[1]


def _other():
    return UNUSED


class Box:
    size = LIMIT

    def grow(self):
        return _helper(self.size)


def probe(x):
    """SECRET-PROBE-DOC"""
    # SECRET-INLINE-COMMENT
    return Box().grow() + _helper(x) + len(os.path.sep)
'''


def test_only_the_function_and_its_dependencies_travel():
    source = minimal_source(MODULE, "probe")
    assert "SECRET" not in source
    assert "_other" not in source and "UNUSED" not in source and "tnn" not in source and "optim" not in source
    namespace: dict = {}
    exec(compile(source, "<probe>", "exec"), namespace)
    assert namespace["probe"](4.0) == pytest.approx((3 ** 0.5 + 3) + (2.0 + 3) + 1)


def test_an_unknown_function_is_refused():
    with pytest.raises(TypeError):
        minimal_source(MODULE, "nope")


def test_the_toy_probe_spec_carries_no_sentinel():
    spec_ = importlib.util.spec_from_file_location("probes_toy_copy", TOY_PROBES)
    module = importlib.util.module_from_spec(spec_)
    sys.modules["probes_toy_copy"] = module
    try:
        spec_.loader.exec_module(module)
        spec = probe_spec(module.accumulate)
    finally:
        del sys.modules["probes_toy_copy"]
    assert spec["function"] == "accumulate"
    assert "PROBE-SENTINEL" not in spec["source"] and "unused_probe" not in spec["source"]
    assert "def accumulate" in spec["source"]

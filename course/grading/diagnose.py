"""Misconception diagnoses: when a hidden test fails, say *which* wrong idea the output matches.

Everything here runs in the trusted process on data already returned by the student's code. A
diagnosis never changes an outcome or a point: it is computed only after the test's own check
failed, any error while computing it is swallowed, and the test fails exactly as it would have.

Authoring (see docs/authoring.md)::

    # graders/attention/misconceptions.py
    CATALOGUE = catalogue({
        "unscaled": Misconception(
            "Your scores are q·kᵀ without the 1/sqrt(head_dim) factor: look at the default scale.",
            task="1.1", bug={"old": "* scale", "new": ""}),
    })

    # in a hidden test
    with explain(out, expected, CATALOGUE, variants={"unscaled": lambda: q @ k.transpose(-2, -1)},
                 what="scores for float64 inputs"):
        torch.testing.assert_close(out, expected)

A variant is named in the diagnosis only when the student's output equals it within a tight
tolerance; generic structural facts (transposed, off by a constant factor, shifted by one
position, right values in the wrong order, wrong dtype, rows that do not sum to one) are exact
checks on the student's own output against the expected one. Texts come only from catalogues,
never from the inputs, so a diagnosis cannot carry hidden values.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

import torch

MAX_TEXT = 300
MAX_LINES = 3


@dataclass(frozen=True)
class Misconception:
    text: str                                   # one or two sentences: what is wrong and where to look
    task: str | None = None
    bug: Mapping[str, str] | None = None        # {"file"?, "old", "new"}: applied to the solution by validate


def catalogue(entries: Mapping[str, Misconception]) -> dict[str, Misconception]:
    """Check a catalogue at import (and so at authoring time): short, static texts only."""
    for name, m in entries.items():
        problems = lint(name, m)
        if problems:
            raise ValueError(f"misconception {name!r}: {'; '.join(problems)}")
    return dict(entries)


def lint(name: str, m: Misconception) -> list[str]:
    problems = []
    if not isinstance(m.text, str) or not m.text.strip():
        problems.append("its text is empty")
    elif len(m.text) > MAX_TEXT or m.text.count("\n") >= MAX_LINES:
        problems.append(f"its text is longer than {MAX_TEXT} characters or {MAX_LINES} lines")
    elif "{" in m.text or "%" in m.text:
        problems.append("its text looks like a template: texts are fixed, they never quote inputs")
    if not name.replace("_", "").isalnum():
        problems.append("names are letters, digits and underscores")
    return problems


GENERIC = catalogue({
    "transposed": Misconception("Your result is the transpose of the expected one: check the order of the "
                                "last two dimensions."),
    "constant_factor": Misconception("Your result is the expected one times a constant factor: look for a "
                                     "missing or extra scale."),
    "shifted_by_one": Misconception("Your result is the expected one shifted by one position: check where "
                                    "positions (or the mask's diagonal) start."),
    "wrong_order": Misconception("Your result holds the right values in the wrong order: check how "
                                 "dimensions are split, merged or interleaved."),
    "wrong_dtype": Misconception("Your result has the wrong dtype: keep the dtype of the inputs unless "
                                 "the docstring says otherwise."),
    "rows_do_not_sum_to_one": Misconception("Your weights' rows do not sum to 1: normalise over the last "
                                            "dimension (the keys)."),
    "nan_in_output": Misconception("Your result contains NaN: a fully masked row (or a division by zero) "
                                   "must produce zeros, not NaN."),
    "input_modified": Misconception("Your function changed its input in place: compute a new tensor "
                                    "instead of writing into the caller's."),
})


@dataclass
class Diagnosis:
    names: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    what: str = ""

    def render(self) -> str:
        return " ".join(self.texts)


# nodeid -> diagnosis of the test running now (read by the judge when it records the result)
_DIAGNOSES: dict[str, Diagnosis] = {}


def _current_test() -> str:
    return os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]


def take(nodeid: str) -> Diagnosis | None:
    return _DIAGNOSES.pop(nodeid, None)


def _tolerance(t: torch.Tensor) -> dict[str, float]:
    if t.dtype in (torch.float64, torch.complex128):
        return {"rtol": 1e-9, "atol": 1e-12}
    if t.dtype in (torch.float16, torch.bfloat16):
        return {"rtol": 1e-3, "atol": 1e-4}
    return {"rtol": 1e-5, "atol": 1e-7}


def matches(actual: Any, candidate: Any, tol: Mapping[str, float] | None = None) -> bool:
    """Tight equality of two returned values (tensors within a dtype-scaled tolerance, the rest exact)."""
    if isinstance(actual, torch.Tensor) and isinstance(candidate, torch.Tensor):
        if actual.shape != candidate.shape or actual.dtype.is_floating_point != candidate.dtype.is_floating_point:
            return False
        if not actual.dtype.is_floating_point and not actual.is_complex():
            return bool(torch.equal(actual, candidate.to(actual.dtype)))
        a, c = actual.detach().double(), candidate.detach().to(actual.device).double()
        if not bool(torch.isfinite(a).all()) or not bool(torch.isfinite(c).all()):
            return bool(torch.equal(torch.nan_to_num(a, nan=0.5), torch.nan_to_num(c, nan=0.5)))
        return bool(torch.allclose(a, c, **(tol or _tolerance(actual))))
    if type(actual) in (list, tuple) and type(candidate) in (list, tuple):
        return len(actual) == len(candidate) and all(matches(x, y) for x, y in zip(actual, candidate))
    if type(actual) is dict and type(candidate) is dict:
        return actual.keys() == candidate.keys() and all(matches(actual[k], candidate[k]) for k in actual)
    return type(actual) is type(candidate) and actual == candidate


def structural_facts(actual: Any, expected: Any) -> list[str]:
    """Exact structural relations between the student's output and the expected one."""
    if not (isinstance(actual, torch.Tensor) and isinstance(expected, torch.Tensor)):
        return []
    found = []
    if actual.dtype != expected.dtype and actual.shape == expected.shape \
            and matches(actual.to(expected.dtype), expected):
        return ["wrong_dtype"]
    if actual.is_floating_point() and bool(torch.isnan(actual).any()) and not bool(torch.isnan(expected).any()):
        found.append("nan_in_output")
    if not actual.is_floating_point() or not expected.is_floating_point() or actual.numel() < 2:
        return found
    a, e = actual.detach().double(), expected.detach().double()
    tol = _tolerance(actual)

    def same(x: torch.Tensor, y: torch.Tensor) -> bool:
        return matches(x, y, tol)
    if a.dim() >= 2 and a.shape == e.transpose(-2, -1).shape and not same(a, e) \
            and same(a, e.transpose(-2, -1)):
        found.append("transposed")
    if a.shape == e.shape and bool(torch.isfinite(a).all()) and bool(torch.isfinite(e).all()):
        nz = e.abs() > 1e-6 * max(float(e.abs().max()), 1e-30)
        if bool(nz.any()):
            ratio = a[nz] / e[nz]
            r = float(ratio.median())
            if abs(r - 1.0) > 1e-6 and abs(r) > 1e-12 and same(a, e * r):
                found.append("constant_factor")
        for dim in range(a.dim()):
            n = a.shape[dim]
            if n < 3:
                continue
            for shift in (1, -1):
                rolled = e.roll(shift, dims=dim)
                inner = slice(1, n) if shift == 1 else slice(0, n - 1)
                idx = [slice(None)] * a.dim()
                idx[dim] = inner
                if same(a[tuple(idx)], rolled[tuple(idx)]) and not same(a, e):
                    found.append("shifted_by_one")
                    break
            if "shifted_by_one" in found:
                break
        if "transposed" not in found and "shifted_by_one" not in found and not same(a, e):
            if same(a.flatten().sort().values, e.flatten().sort().values):
                found.append("wrong_order")
    return found


def rows_sum_to_one(weights: Any) -> bool:
    """Whether every row of a weights tensor sums to one (or is all zeros)."""
    if not isinstance(weights, torch.Tensor) or not weights.is_floating_point() or weights.dim() < 1:
        return True
    sums = weights.detach().double().sum(-1)
    return bool(((sums - 1).abs() < 1e-4).logical_or(sums.abs() < 1e-12).all())


def diagnose(actual: Any, expected: Any = None, catalogue_: Mapping[str, Misconception] | None = None, *,
             variants: Mapping[str, Callable[[], Any]] | None = None, generic: bool = True) -> list[str]:
    """Names of the misconceptions whose wrong answer equals ``actual`` (never raises)."""
    names: list[str] = []
    for name, make in (variants or {}).items():
        if catalogue_ is not None and name not in catalogue_:
            raise KeyError(f"variant {name!r} is not in the catalogue")
        try:
            if matches(actual, make()):
                names.append(name)
        except Exception:   # a variant that fails for these inputs simply does not match
            continue
    if generic and expected is not None and not names:
        try:
            names += structural_facts(actual, expected)
        except Exception:
            pass
    return names


@contextmanager
def explain(actual: Any, expected: Any = None, catalogue_: Mapping[str, Misconception] | None = None, *,
            variants: Mapping[str, Callable[[], Any]] | None = None, what: str = "",
            generic: bool = True) -> Iterator[None]:
    """Run a check; if it fails, attach the matching misconceptions (and ``what`` failed, in words)
    to this test's result. The failure itself propagates unchanged."""
    try:
        yield
    except Exception:
        try:
            record(diagnose(actual, expected, catalogue_, variants=variants, generic=generic), catalogue_, what)
        except Exception:
            pass
        raise


def record(names: list[str], catalogue_: Mapping[str, Misconception] | None, what: str = "") -> None:
    """Attach diagnoses by name to the running test (used by :func:`explain`, or directly)."""
    nodeid = _current_test()
    if not nodeid:
        return
    d = _DIAGNOSES.setdefault(nodeid, Diagnosis())
    for name in names:
        entry = (catalogue_ or {}).get(name) or GENERIC.get(name)
        if entry is not None and name not in d.names:
            d.names.append(name)
            d.texts.append(entry.text)
    if what and not d.what:
        d.what = what

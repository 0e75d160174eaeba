"""Did a function change its arguments in place? Decided here, in the trusted process.

The worker sends back the arguments as the student's function left them (raw data); the test's own
arguments never left this process, so they are the "before". Comparison is exact (dtype, shape,
values, NaN equal to NaN).
"""

from __future__ import annotations

import math
from typing import Any

import torch


class InputModified(AssertionError):
    """The function under test changed one of its arguments: the caller's data was corrupted."""

    def __init__(self, target: str, changed: list[str]):
        self.target = target
        self.changed = changed
        super().__init__(f"{target} modified {' and '.join(changed)} in place; a function must leave the "
                         "caller's tensors as they were (compute a new tensor: masked_fill, not masked_fill_; "
                         "x = x + y, not x += y)")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        if not isinstance(b, torch.Tensor) or a.dtype != b.dtype or a.shape != b.shape:
            return False
        a, b = a.detach().cpu(), b.detach().cpu()
        if a.is_floating_point() or a.is_complex():
            return bool(torch.equal(torch.nan_to_num(a, nan=0.0), torch.nan_to_num(b, nan=0.0))
                        and torch.equal(torch.isnan(a), torch.isnan(b)))
        return bool(torch.equal(a, b))
    if type(a) in (list, tuple):
        return type(b) is type(a) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if type(a) is dict:
        return type(b) is dict and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if type(a) is float and type(b) is float and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def changed(args: list[Any], kwargs: dict[str, Any], args_after: Any, kwargs_after: Any) -> list[str]:
    """Names of the arguments that differ after the call ('argument 1', 'mask', ...)."""
    if type(args_after) is not list or len(args_after) != len(args):
        return ["(the positional arguments)"]
    if type(kwargs_after) is not dict or kwargs_after.keys() != kwargs.keys():
        return ["(the keyword arguments)"]
    out = [f"argument {i + 1}" for i, (a, b) in enumerate(zip(args, args_after)) if not _same(a, b)]
    out += [f"argument {k!r}" for k in kwargs if not _same(kwargs[k], kwargs_after[k])]
    return out

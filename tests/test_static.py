"""Source checks made on the trusted side (course.grading.static): honest styles pass, evasions fail."""

from __future__ import annotations

from pathlib import Path

import pytest

from course.grading import static

HONEST_SOFTMAX = {
    "plain": """
import torch
def masked_softmax(scores, mask=None):
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    m = scores.amax(dim=-1, keepdim=True).clamp_min(-1e30)
    e = (scores - m).exp()
    return e / e.sum(-1, keepdim=True).clamp_min(1e-30)
""",
    "helper_in_other_module": """
from helpers import stable_exp
def masked_softmax(scores, mask=None):
    e = stable_exp(scores, mask)
    return e / e.sum(-1, keepdim=True)
""",
    "own_method_named_softmax": """
class Ops:
    def softmax(self, x):
        e = (x - x.max(-1, keepdim=True).values).exp()
        return e / e.sum(-1, keepdim=True)
    def run(self, x):
        return self.softmax(x)
def masked_softmax(scores, mask=None):
    '''Uses no torch.softmax: the docstring may say so.'''
    return Ops().run(scores)
""",
}
HELPERS = """
def stable_exp(scores, mask):
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return (scores - scores.amax(-1, keepdim=True)).exp()
"""

EVASIONS = {
    "attribute": "import torch\ndef masked_softmax(s, mask=None):\n    return torch.softmax(s, -1)\n",
    "method": "def masked_softmax(s, mask=None):\n    return s.softmax(-1)\n",
    "imported_alias": "from torch.nn.functional import softmax as sm\ndef masked_softmax(s, mask=None):\n    return sm(s, -1)\n",
    "module_alias": "import torch\n_f = torch.nn.functional.softmax\ndef masked_softmax(s, mask=None):\n    return _f(s, -1)\n",
    "getattr_literal": "import torch\ndef masked_softmax(s, mask=None):\n    return getattr(torch, 'softmax')(s, -1)\n",
    "getattr_computed": "import torch\ndef masked_softmax(s, mask=None):\n    return getattr(torch, 'soft' + 'max')(s, -1)\n",
    "aten": "import torch\ndef masked_softmax(s, mask=None):\n    return torch.ops.aten._softmax(s, -1, False)\n",
    "torch_C": "import torch\ndef masked_softmax(s, mask=None):\n    return torch._C._nn.softmax(s, -1)\n",
    "eval": "import torch\ndef masked_softmax(s, mask=None):\n    return eval('torch.soft' + 'max')(s, -1)\n",
    "module_class": "import torch\ndef masked_softmax(s, mask=None):\n    return torch.nn.Softmax(dim=-1)(s)\n",
    "helper_module": "from helpers_bad import f\ndef masked_softmax(s, mask=None):\n    return f(s)\n",
    "import_time_patch": "import torch\ntorch.Tensor.my_norm = torch.Tensor.softmax\ndef masked_softmax(s, mask=None):\n    return s.my_norm(-1)\n",
    "sys_modules": "import sys\ndef masked_softmax(s, mask=None):\n    return sys.modules['torch'].softmax(s, -1)\n",
    "importlib": "import importlib\ndef masked_softmax(s, mask=None):\n    return importlib.import_module('torch').softmax(s, -1)\n",
    "log_exp": "import torch\ndef masked_softmax(s, mask=None):\n    return torch.log_softmax(s, -1).exp()\n",
    "not_defined_here": "import torch\nmasked_softmax = lambda s, mask=None: s\n",
}


def _write(tmp_path: Path, files: dict[str, str]) -> static.SourceIndex:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return static.SourceIndex(tmp_path)


@pytest.mark.parametrize("style", sorted(HONEST_SOFTMAX))
def test_honest_softmax_styles_pass(tmp_path, style):
    index = _write(tmp_path, {"attention.py": HONEST_SOFTMAX[style], "helpers.py": HELPERS})
    assert static.forbidden_uses(index, "attention.masked_softmax", static.TORCH_SOFTMAX) == []


@pytest.mark.parametrize("style", sorted(EVASIONS))
def test_every_evasion_is_found(tmp_path, style):
    files = {"attention.py": EVASIONS[style],
             "helpers_bad.py": "import torch.nn.functional as F\ndef f(s):\n    return F.softmax(s, -1)\n"}
    index = _write(tmp_path, files)
    found = static.forbidden_uses(index, "attention.masked_softmax", static.TORCH_SOFTMAX)
    assert found, style
    assert all(f.file in files for f in found)


def test_an_unparsable_or_missing_file_proves_nothing(tmp_path):
    index = _write(tmp_path, {"attention.py": "def masked_softmax(:\n"})
    assert static.forbidden_uses(index, "attention.masked_softmax", static.TORCH_SOFTMAX)
    assert static.forbidden_uses(static.SourceIndex(tmp_path / "nowhere"), "attention.masked_softmax", ())


LOOPS_OK = [
    "def sdpa(q, k, v):\n    s = q @ k.transpose(-2, -1)\n    return s.softmax(-1) @ v\n",
    "def sdpa(q, k, v):\n    q, k, v = (t.float() for t in (q, k, v))\n    return q @ k.transpose(-2, -1) @ v\n",
    "def sdpa(q, k, v):\n    shape = [max(a, b) for a, b in zip(q.shape, k.shape)]\n    return q\n",
    "import torch.nn.functional as F\ndef sdpa(q, k, v):\n    return F.sdpa(q, k, v)\n",   # not a call to itself
]
LOOPS_BAD = [
    "def sdpa(q, k, v):\n    rows = []\n    for i in range(q.shape[-2]):\n        rows.append(q[..., i, :] @ k.T)\n    return rows\n",
    "import torch\ndef sdpa(q, k, v):\n    return torch.stack([r @ k.T for r in q.unbind(-2)], -2)\n",
    "import torch\ndef sdpa(q, k, v):\n    return torch.stack(list(map(lambda r: r @ k.T, q.unbind(-2))))\n",
    "def sdpa(q, k, v):\n    i = 0\n    while i < 3:\n        i += 1\n    return q\n",
    "def row(q, k, i):\n    return q[i] @ k.T\ndef sdpa(q, k, v, i=0):\n    return sdpa(q, k, v, i + 1) if i < len(q) else row(q, k, i)\n",
    "def helper(q):\n    return [x for x in q]\ndef sdpa(q, k, v):\n    return helper(q)\n",
]


@pytest.mark.parametrize("text", LOOPS_OK)
def test_fixed_size_iteration_is_no_loop_over_tokens(tmp_path, text):
    assert static.python_loops(_write(tmp_path, {"attention.py": text}), "attention.sdpa") == []


@pytest.mark.parametrize("text", LOOPS_BAD)
def test_loops_in_reachable_code_are_found(tmp_path, text):
    assert static.python_loops(_write(tmp_path, {"attention.py": text}), "attention.sdpa")


def test_read_source_stays_inside_the_submission(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "secret.py").write_text("x")
    (tmp_path / "sub" / "link.py").symlink_to(tmp_path / "secret.py")
    assert static.read_source(tmp_path / "sub", "../secret.py") == ""
    assert static.read_source(tmp_path / "sub", "link.py") == ""

"""Forgery of verdicts where student code runs: each attack earns no more than its honest bug.

Probes run in the worker, in the student's interpreter; the rule is that no verdict is computed
there. Each case below is a plausible bug of the attention assignment *plus* an attempt to make a
check pass anyway by subverting what runs beside it: a patched ``gradcheck``, frozen clocks, torch's
softmax reached under another name, probe frames and locals rewritten, the student's own idea of
the right answer substituted into what a probe returns. Each is graded (real graders, sandbox)
next to the same bug without the forgery, and must score no more than it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from course import api
from course.grading.runner import Job, LocalExecutor, spec_for
from course.grading.sandbox import strong_isolation_available

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = (ROOT / "solutions" / "attention" / "attention.py").read_text(encoding="utf-8")
STRONG, WHY = strong_isolation_available()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not STRONG, reason=f"needs strong isolation: {WHY}")]

SDPA_RETURN = "    weights = masked_softmax(scores, mask)\n    return weights @ v, weights\n"
SOFTMAX_BODY = '''    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    peak = scores.amax(dim=-1, keepdim=True)
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak)).detach()
    exps = torch.exp(scores - peak)
    total = exps.sum(dim=-1, keepdim=True)
    return exps / torch.where(total > 0, total, torch.ones_like(total))
'''

# A forward that is right and a backward that is wrong (zero gradients).
BAD_BACKWARD = '''

class _NoGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return torch.zeros_like(g)
'''
BAD_BACKWARD_RETURN = "    weights = masked_softmax(scores, mask)\n    out = _NoGrad.apply(weights @ v)\n    return out, weights\n"

FORGE_GRADCHECK = '''

# forgery: every gradient check in this interpreter says yes
import torch.autograd as _ag
_ag.gradcheck = lambda *a, **k: True
_ag.gradgradcheck = lambda *a, **k: True
torch.autograd.gradcheck = _ag.gradcheck
'''

FORGE_PROBE_FRAMES = '''

# forgery: rewrite what the calling probe holds, so that its gradients look like torch's own
import sys as _sys


def _torch_grads_into_probe():
    frame = _sys._getframe(2)
    while frame is not None:
        names = frame.f_locals
        for key, value in list(names.items()):
            if isinstance(value, torch.Tensor) and value.requires_grad and value.is_leaf:
                value.grad = None
        frame = frame.f_back
'''

LOOP_SDPA = '''    scores = attention_scores(q, k, scale)
    if causal:
        seq_q, seq_k = scores.shape[-2:]
        allowed = causal_mask(max(seq_q, seq_k), device=scores.device)[:seq_q, :seq_k]
        mask = allowed if mask is None else mask & allowed
    weights = masked_softmax(scores, mask)
    rows = [weights[..., i:i + 1, :] @ v for i in range(weights.shape[-2])]
    return torch.cat(rows, dim=-2), weights
'''
FORGE_CLOCKS = '''

# forgery: clocks that never move, and counters that never count
import time as _time
_time.perf_counter = lambda: 0.0
_time.perf_counter_ns = lambda: 0
_time.monotonic = lambda: 0.0
_time.time = lambda: 0.0
try:
    import torch.utils._python_dispatch as _pd
    _pd.TorchDispatchMode.__torch_dispatch__ = lambda self, func, types, args=(), kwargs=None: func(*args, **(kwargs or {}))
except Exception:
    pass
'''
FORGE_LOOP_HIDDEN = LOOP_SDPA.replace(
    "    rows = [weights[..., i:i + 1, :] @ v for i in range(weights.shape[-2])]\n    return torch.cat(rows, dim=-2), weights\n",
    "    return _rows(weights, v), weights\n") + ""
HIDE_LOOP_HELPER = '''

# forgery: the loop lives in code generated at import, which the source does not show
_rows = None
exec("def _rows(w, v):\\n    out = []\\n    i = 0\\n    while i < w.shape[-2]:\\n        out.append(w[..., i:i+1, :] @ v)\\n        i += 1\\n    return torch.cat(out, dim=-2)\\n", globals())
'''

TORCH_SOFTMAX_BODY = '''    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    out = torch.softmax(scores, dim=-1)
    return torch.nan_to_num(out, nan=0.0)
'''
ATEN_SOFTMAX_BODY = '''    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    out = _kernel(scores, -1, False)
    return torch.nan_to_num(out, nan=0.0)
'''
HIDE_ATEN = '''

# forgery: torch's softmax kernel under a name put together at import; the public names stay untouched
_kernel = getattr(getattr(getattr(torch, "o" + "ps"), "at" + "en"), "_soft" + "max")
'''


def _with(text: str, *, replace: tuple[str, str] | None = None, append: str = "", before_first_def: str = "") -> str:
    if replace is not None:
        assert replace[0] in text, replace[0][:60]
        text = text.replace(replace[0], replace[1], 1)
    if before_first_def:
        i = text.index("\n# Task 1.1")
        text = text[:i] + before_first_def + "\n" + text[i:]
    return text + append


CASES = {
    # name: (honest bug, the same bug with a forgery)
    "gradcheck_patched": (
        _with(SOLUTION, replace=(SDPA_RETURN, BAD_BACKWARD_RETURN), before_first_def=BAD_BACKWARD),
        _with(SOLUTION, replace=(SDPA_RETURN, BAD_BACKWARD_RETURN), before_first_def=BAD_BACKWARD + FORGE_GRADCHECK)),
    "probe_frames_rewritten": (
        _with(SOLUTION, replace=(SDPA_RETURN, BAD_BACKWARD_RETURN), before_first_def=BAD_BACKWARD),
        _with(SOLUTION, replace=(SDPA_RETURN, BAD_BACKWARD_RETURN.replace(
            "    return out, weights\n", "    _torch_grads_into_probe()\n    return out, weights\n")),
              before_first_def=BAD_BACKWARD + FORGE_PROBE_FRAMES)),
    "clocks_frozen": (
        _with(SOLUTION, replace=(SOLUTION[SOLUTION.index("    scores = attention_scores(q, k, scale)\n    if causal:"):
                                          SOLUTION.index("    return weights @ v, weights\n") + len("    return weights @ v, weights\n")],
                                 LOOP_SDPA)),
        _with(SOLUTION, replace=(SOLUTION[SOLUTION.index("    scores = attention_scores(q, k, scale)\n    if causal:"):
                                          SOLUTION.index("    return weights @ v, weights\n") + len("    return weights @ v, weights\n")],
                                 FORGE_LOOP_HIDDEN), append=FORGE_CLOCKS + HIDE_LOOP_HELPER)),
    "softmax_under_another_name": (
        _with(SOLUTION, replace=(SOFTMAX_BODY, TORCH_SOFTMAX_BODY)),
        _with(SOLUTION, replace=(SOFTMAX_BODY, ATEN_SOFTMAX_BODY), append=HIDE_ATEN)),
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    course = api.load_course(ROOT / "course.yml")
    spec = spec_for(course, "attention")
    root = tmp_path_factory.mktemp("verdicts")
    jobs = []
    for name, (honest, forged) in CASES.items():
        for kind, text in (("honest", honest), ("forged", forged)):
            folder = api._overlay(course, "attention", root / name / kind, True)
            (folder / "attention.py").write_text(text, encoding="utf-8")
            jobs.append(Job(f"{name}/{kind}", spec, folder))
    ex = LocalExecutor(2, require_isolation=True)
    try:
        results = {r.job.key: r for r in ex.run(jobs)}
    finally:
        ex.close()
    shutil.rmtree(root, ignore_errors=True)
    return results


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_forgery_earns_no_more_than_the_honest_bug(graded, case):
    honest, forged = graded[f"{case}/honest"], graded[f"{case}/forged"]
    assert honest.ok and forged.ok, (honest.message, forged.message)
    assert honest.points < honest.max_points, f"{case}: the honest bug is not even caught"
    passed = lambda r: {t.name for t in r.results if t.outcome == "passed"}
    assert forged.points <= honest.points + 1e-9, (
        f"{case}: the forgery earned {forged.points} against {honest.points}; it passed "
        + ", ".join(sorted(passed(forged) - passed(honest))))

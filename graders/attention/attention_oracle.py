"""The hidden tests' oracle, run in the trusted process: attention written with torch's own softmax,
and the wrong answers of the misconception catalogue computed on the same inputs.

Masks follow the assignment's convention: True = may attend. A query that may attend to nothing
gets zero weights and a zero output.
"""

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F

from course.grading.diagnose import matches

TOL = {torch.float32: dict(rtol=1e-4, atol=1e-5), torch.float64: dict(rtol=1e-7, atol=1e-9)}
GRAD_TOL = {torch.float32: dict(rtol=1e-4, atol=1e-5), torch.float64: dict(rtol=1e-6, atol=1e-8)}


def randn(rng, *shape, dtype=torch.float32):
    return torch.randn(*shape, generator=rng, dtype=dtype)


def random_mask(rng, shape, p=0.6):
    """A bool mask (True = may attend) whose first key is always allowed (no fully masked row)."""
    mask = torch.rand(*shape, generator=rng) < p
    mask[..., 0] = True
    return mask


# ------------------------------------------------------------------ the right answers

def default_scale(q):
    return 1.0 / math.sqrt(q.shape[-1])


def scores(q, k, scale=None):
    return (q @ k.transpose(-2, -1)) * (default_scale(q) if scale is None else scale)


def causal_allowed(seq_q, seq_k, align="top_left"):
    diagonal = 0 if align == "top_left" else seq_k - seq_q
    return torch.ones(seq_q, seq_k, dtype=torch.bool).tril(diagonal)


def allowed_keys(seq_q, seq_k, mask, causal, *, align="top_left", combine="and"):
    """The keys each query may attend to (None: all), from ``mask`` and ``causal``."""
    if not causal:
        return mask
    allowed = causal_allowed(seq_q, seq_k, align)
    if mask is None or combine == "causal_only":
        return allowed
    return mask | allowed if combine == "or" else mask & allowed


def masked_softmax(s, allowed=None):
    """torch's softmax of the masked scores; rows with no allowed key are zeros (and so are their gradients)."""
    if allowed is None:
        return torch.softmax(s, dim=-1)
    allowed = allowed.expand(s.shape)
    any_key = allowed.any(-1, keepdim=True)
    safe = torch.where(any_key, s.masked_fill(~allowed, float("-inf")), torch.zeros_like(s))
    return torch.softmax(safe, dim=-1) * any_key


def attention(q, k, v, mask=None, causal=False, scale=None, **knobs):
    """(output, weights) of the assignment's attention; ``knobs`` as in :func:`allowed_keys`."""
    weights = masked_softmax(scores(q, k, scale), allowed_keys(q.shape[-2], k.shape[-2], mask, causal, **knobs))
    return weights @ v, weights


def torch_sdpa(q, k, v, mask=None, causal=False, scale=None):
    """torch's own SDPA (mask and causal combined into one mask, portable across torch versions)."""
    allowed = allowed_keys(q.shape[-2], k.shape[-2], mask, causal)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scale)


# ------------------------------------------------------------------ wrong answers (misconception variants)

SCALE_VARIANTS = {
    "scale_one_over_d": lambda q: 1.0 / q.shape[-1],
    "unscaled": lambda q: 1.0,
    "scale_times_sqrt_d": lambda q: math.sqrt(q.shape[-1]),
    "scale_from_sequence_length": lambda q: 1.0 / math.sqrt(q.shape[-2]),
}


def wrong_scale(q, scale, name):
    """The scale a misconception would use (None: it would use the right one here)."""
    if scale is None:
        return SCALE_VARIANTS[name](q) if name in SCALE_VARIANTS else None
    if name == "zero_scale_taken_as_default" and scale == 0.0:
        return default_scale(q)
    if name == "scale_argument_ignored":
        return default_scale(q)
    return None


def scale_variants(q, k, scale, make, names=(*SCALE_VARIANTS, "zero_scale_taken_as_default", "scale_argument_ignored")):
    """``{name: lambda: make(wrong_scale)}`` for every scale misconception that changes this case."""
    out = {}
    for name in names:
        wrong = wrong_scale(q, scale, name)
        if wrong is not None and not math.isclose(wrong, default_scale(q) if scale is None else scale):
            out[name] = (lambda w=wrong: make(w))
    return out


def softmax_variants(s, allowed):
    """Wrong masked softmaxes of the scores ``s`` (``allowed``: True = may attend, or None)."""
    def axis_minus_two():
        filled = s if allowed is None else s.masked_fill(~allowed, float("-inf"))
        return torch.nan_to_num(torch.softmax(filled, dim=-2), nan=0.0)

    def no_max():
        filled = s if allowed is None else s.masked_fill(~allowed, float("-inf"))
        exps = torch.exp(filled)
        total = exps.sum(-1, keepdim=True)
        return exps / torch.where(total > 0, total, torch.ones_like(total))

    def global_max():
        filled = s if allowed is None else s.masked_fill(~allowed, float("-inf"))
        peak = filled.amax()
        exps = torch.exp(filled - (peak if bool(torch.isfinite(peak)) else 0.0))
        total = exps.sum(-1, keepdim=True)
        return exps / torch.where(total > 0, total, torch.ones_like(total))

    def max_without_keepdim():     # (..., seq_q) maxima broadcast along the keys: only square scores run
        filled = s if allowed is None else s.masked_fill(~allowed, float("-inf"))
        peak = filled.amax(dim=-1)
        peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
        exps = torch.exp(filled - peak)
        total = exps.sum(-1, keepdim=True)
        return exps / torch.where(total > 0, total, torch.ones_like(total))

    out = {"softmax_over_queries": axis_minus_two, "no_max_subtraction": no_max,
           "global_max_subtraction": global_max, "max_without_keepdim": max_without_keepdim}
    if allowed is not None:
        out["mask_polarity_inverted"] = lambda: masked_softmax(s, ~allowed.expand(s.shape))
        out["mask_after_softmax"] = lambda: torch.softmax(s, dim=-1) * allowed
        out["fully_masked_row_nan"] = lambda: torch.softmax(s.masked_fill(~allowed, float("-inf")), dim=-1)
        out["fully_masked_row_uniform"] = lambda: torch.softmax(s.masked_fill(~allowed, -1e9), dim=-1)
    return out


def attention_variants(q, k, v, mask, causal, scale, pick):
    """Wrong attentions on the same inputs; ``pick(output, weights)`` selects what is compared."""
    seq_q, seq_k = q.shape[-2], k.shape[-2]
    s = scores(q, k, scale)
    allowed = allowed_keys(seq_q, seq_k, mask, causal)

    def with_weights(weights):
        return pick(weights @ v, weights)

    out = {name: (lambda f=f: with_weights(f()))
           for name, f in softmax_variants(s, None if allowed is None else allowed.expand(s.shape)).items()}
    out.update(scale_variants(q, k, scale, lambda w: pick(*attention(q, k, v, mask, causal, w))))
    if causal and seq_q != seq_k:
        out["causal_bottom_right"] = lambda: pick(*attention(q, k, v, mask, causal, scale, align="bottom_right"))
    if causal and mask is not None:
        out["mask_or_causal"] = lambda: pick(*attention(q, k, v, mask, causal, scale, combine="or"))
        out["causal_drops_mask"] = lambda: pick(*attention(q, k, v, mask, causal, scale, combine="causal_only"))
    if causal:
        for name, diagonal in (("causal_mask_upper", "upper"), ("causal_mask_without_diagonal", -1),
                               ("causal_mask_blocked_polarity", "blocked")):
            out[name] = (lambda d=diagonal: pick(*_attention_with_causal(q, k, v, mask, scale, d)))
    out["weights_are_scores"] = lambda: pick(masked_softmax(s, allowed) @ v, s)
    return out


def wrong_causal_mask(n, kind):
    full = torch.ones(n, n, dtype=torch.bool)
    if kind == "upper":
        return full.triu()
    if kind == "blocked":
        return full.triu(1)
    return full.tril(kind)


def _attention_with_causal(q, k, v, mask, scale, kind):
    """Attention whose causal mask is a wrong one, cut as the solution cuts it (top left)."""
    seq_q, seq_k = q.shape[-2], k.shape[-2]
    allowed = wrong_causal_mask(max(seq_q, seq_k), kind)[:seq_q, :seq_k]
    allowed = allowed if mask is None else mask & allowed
    weights = masked_softmax(scores(q, k, scale), allowed)
    return weights @ v, weights


class Unambiguous(Mapping):
    """Misconception variants, kept only where this case tells them apart: a variant whose answer
    equals the right one, or another variant's, is dropped (a diagnosis names one wrong idea or
    none). Computed only when a diagnosis is asked for, that is when the check has failed."""

    def __init__(self, variants, expected=None):
        self._variants, self._expected, self._kept = variants, expected, None

    def _compute(self):
        if self._kept is None:
            values = {}
            for name, make in self._variants.items():
                try:
                    values[name] = make()
                except Exception:     # a variant that cannot be computed here simply does not match
                    continue
            self._kept = {}
            for name, value in values.items():
                if self._expected is not None and matches(value, self._expected):
                    continue
                if any(matches(value, other) for o, other in values.items() if o != name):
                    continue
                self._kept[name] = (lambda v=value: v)
        return self._kept

    def __getitem__(self, name):
        return self._compute()[name]

    def __iter__(self):
        return iter(self._compute())

    def __len__(self):
        return len(self._compute())


def source_facts(findings):
    """Catalogue names for static findings: a library use of attention or softmax, a Python loop, or
    code the grader cannot read (exact facts about the source, no guess)."""
    from course.grading import static
    names = []
    for f in findings:
        if f.what.endswith(" calls itself") and f.what.split()[0] in static.TORCH_ATTENTION | static.TORCH_SOFTMAX:
            continue   # `torch...scaled_dot_product_attention(...)` inside ours reads as a self-call: a library use
        if f.what.startswith(("uses ", "imports ")) and any(n in f.what for n in static.TORCH_ATTENTION):
            name = "torch_attention_used"
        elif f.what.startswith(("uses ", "imports ")) and any(n in f.what for n in static.TORCH_SOFTMAX):
            name = "torch_softmax_used"
        elif f.what.startswith(("a for loop", "a while loop", "a comprehension")) or f.what.endswith("(...)") \
                and f.what.split("(")[0] in static.LOOP_CALLS or f.what.endswith("calls itself"):
            name = "python_loop_in_attention"
        else:
            name = "code_grader_cannot_read"
        if name not in names:
            names.append(name)
    return names


def nonfinite_view(t):
    """A tensor seen as (where NaN, where +-inf, finite values with the rest zeroed): variants that
    overflow compare on this, exactly on the pattern and within tolerance on the values."""
    return (torch.isnan(t), torch.isinf(t), torch.nan_to_num(t, nan=0.0, posinf=0.0, neginf=0.0))


def close(actual, expected, what, **tol):
    """assert_close whose failure detail starts by saying what was compared."""
    torch.testing.assert_close(actual, expected, **tol, msg=lambda m: f"{what}\n{m}")

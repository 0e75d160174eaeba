"""The hidden tests' oracle, run in the trusted process: the formulas in float64, transformers'
Llama rotary, and the wrong answers of the misconception catalogue computed on the same inputs.
"""

import math
from collections.abc import Mapping

import torch
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

from course.grading.diagnose import matches

TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-7, atol=1e-9),
       torch.bfloat16: dict(rtol=2e-2, atol=2e-2)}


def randn(rng, *shape, dtype=torch.float32):
    return torch.randn(*shape, generator=rng, dtype=dtype)


# ------------------------------------------------------------------ sinusoidal table

def sinusoid(seq_len, d_model, base=10000.0, *, order="sin_cos", layout="interleaved", exponent="2i",
             start=0, precision="float64", invert=False):
    """PE[p, 2i] = sin(p / base^(2i/d)), PE[p, 2i+1] = cos(...), in float64, entry by entry; the
    keyword arguments reproduce the wrong ideas of the catalogue."""
    if precision == "float32_tutorial":              # exp(2i * -log(base) / d) in float32, the PyTorch tutorial's form
        div = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(base) / d_model))
        angle = torch.repeat_interleave((torch.arange(start, start + seq_len)[:, None] * div).double(), 2, dim=-1)
    elif precision == "float32":                     # the student's float32 angles, as they are usually written
        p = torch.arange(start, start + seq_len, dtype=torch.float32)[:, None]
        angle = (p / base ** (torch.arange(0, d_model, 2, dtype=torch.float32) / d_model)).double()
        angle = torch.repeat_interleave(angle, 2, dim=-1)
    else:
        p = torch.arange(start, start + seq_len, dtype=torch.float64)[:, None]
        column = torch.arange(d_model, dtype=torch.float64)[None, :]
        pair = torch.div(column, 2, rounding_mode="floor")
        power = {"2i": 2 * pair, "i": pair, "column": column}[exponent] / d_model
        frequency = torch.tensor(base, dtype=torch.float64) ** power
        angle = p * frequency if invert else p / frequency
    first, second = (torch.sin, torch.cos) if order == "sin_cos" else (torch.cos, torch.sin)
    if layout == "halves":
        half = angle[:, 0::2]
        return torch.cat([first(half), second(half)], dim=-1)
    is_even = torch.arange(d_model) % 2 == 0
    return torch.where(is_even, first(angle), second(angle))


SINUSOID_VARIANTS = {
    "sin_cos_swapped": dict(order="cos_sin"),
    "sin_cos_side_by_side": dict(layout="halves"),
    "exponent_without_two": dict(exponent="i"),
    "exponent_per_column": dict(exponent="column"),
    "positions_from_one": dict(start=1),
    "float32_angles": dict(precision="float32"),
    "float32_tutorial_frequencies": dict(precision="float32_tutorial"),
    "frequencies_inverted": dict(invert=True),
}


def sinusoid_variants(seq_len, d_model, base, view=lambda t: t):
    out = {name: (lambda kw=kw: view(sinusoid(seq_len, d_model, base, **kw).float()))
           for name, kw in SINUSOID_VARIANTS.items()}
    if base != 10000.0:
        out["base_ignored"] = lambda: view(sinusoid(seq_len, d_model, 10000.0).float())
    return out


# ------------------------------------------------------------------ rotary tables and rotation

def llama_cos_sin(positions, head_dim, base):
    """cos, sin of transformers' Llama rotary for these positions: each (seq, head_dim), float32."""
    config = LlamaConfig(hidden_size=head_dim * 2, num_attention_heads=2, head_dim=head_dim,
                         rope_theta=base, max_position_embeddings=4096)
    rotary = LlamaRotaryEmbedding(config)
    cos, sin = rotary(torch.zeros(1, len(positions), head_dim), positions[None].long())
    return cos[0], sin[0]


def rope_cos_sin(positions, head_dim, base=10000.0, *, pairing="half", exponent="2i", precision="float64"):
    """The rotate-half RoPE tables: angle[p, j] = p / base^(2 (j mod head_dim/2) / head_dim), in float64."""
    half = head_dim // 2
    i = torch.arange(half, dtype=torch.float64)
    power = (2 * i if exponent == "2i" else i) / head_dim
    if precision == "float32":
        inv = 1.0 / base ** (torch.arange(0, head_dim, 2).float() / head_dim)
        angle = (positions.float()[:, None] * inv[None, :]).double()
    else:
        angle = positions.double()[:, None] / torch.tensor(base, dtype=torch.float64) ** power[None, :]
    angle = torch.repeat_interleave(angle, 2, dim=-1) if pairing == "interleaved" else torch.cat([angle, angle], -1)
    return angle.cos(), angle.sin()


ROPE_TABLE_VARIANTS = {
    "rope_interleaved_tables": dict(pairing="interleaved"),
    "rope_exponent_without_two": dict(exponent="i"),
    "rope_float32_angles": dict(precision="float32"),
}


def rope_table_variants(positions, seq_len, head_dim, base, given):
    """Wrong (cos, sin) pairs, as float32, for rope_cos_sin(seq_len, head_dim, base, positions?)."""
    def pair(cos_sin):
        return tuple(t.float() for t in cos_sin)
    out = {name: (lambda kw=kw: pair(rope_cos_sin(positions, head_dim, base, **kw)))
           for name, kw in ROPE_TABLE_VARIANTS.items()}
    out["rope_returns_sin_cos"] = lambda: pair(rope_cos_sin(positions, head_dim, base))[::-1]
    if base != 10000.0:
        out["base_ignored"] = lambda: pair(rope_cos_sin(positions, head_dim, 10000.0))
    if given:
        out["rope_positions_ignored"] = lambda: pair(rope_cos_sin(torch.arange(seq_len), head_dim, base))
    else:
        out["rope_positions_from_one"] = lambda: pair(rope_cos_sin(torch.arange(1, seq_len + 1), head_dim, base))
    return out


def rotate(x, cos, sin, how="half"):
    """x * cos + rotate_half(x) * sin (Llama's layout), or a wrong rotation of the catalogue."""
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    if how == "half":
        turned = torch.cat([-x2, x1], dim=-1)
    elif how == "backwards":
        turned = torch.cat([x2, -x1], dim=-1)
    elif how == "not_swapped":
        turned = torch.cat([-x1, x2], dim=-1)
    elif how == "interleaved":
        turned = torch.stack([-x[..., 1::2], x[..., 0::2]], dim=-1).flatten(-2)
    elif how == "cos_sin_exchanged":
        return x * sin + torch.cat([-x2, x1], dim=-1) * cos
    return x * cos + turned * sin


def llama_rotate(x, cos, sin):
    """transformers' apply_rotary_pos_emb on x of shape (batch, heads, seq, head_dim), cos/sin (seq, head_dim)."""
    return apply_rotary_pos_emb(x, x, cos[None].to(x.dtype), sin[None].to(x.dtype))[0]


ROTATION_VARIANTS = {"rope_rotates_backwards": "backwards", "rope_halves_not_swapped": "not_swapped",
                     "rope_interleaved_rotation": "interleaved", "rope_cos_sin_exchanged": "cos_sin_exchanged"}


def rotation_variants(x, cos, sin):
    return {name: (lambda how=how: rotate(x, cos, sin, how)) for name, how in ROTATION_VARIANTS.items()}


def relative(q, k, offset, *, rotation="half", keys_from_zero=False, scaled=False, rotate_keys=True,
             tables=lambda positions, head_dim: rope_cos_sin(positions, head_dim)):
    """q_rot @ k_rot^T with the first token at ``offset`` (the tables made as the student's float32 ones)."""
    head_dim = q.shape[-1]
    cos_q, sin_q = (t.float() for t in tables(offset + torch.arange(q.shape[-2]), head_dim))
    k_start = 0 if keys_from_zero else offset
    cos_k, sin_k = (t.float() for t in tables(k_start + torch.arange(k.shape[-2]), head_dim))
    kr = rotate(k, cos_k, sin_k, rotation) if rotate_keys else k
    out = rotate(q, cos_q, sin_q, rotation) @ kr.transpose(-2, -1)
    return out / math.sqrt(head_dim) if scaled else out


def relative_variants(q, k, offset_a, offset_b):
    def both(**kw):
        return lambda: (relative(q, k, offset_a, **kw), relative(q, k, offset_b, **kw))
    out = {"relative_keys_from_zero": both(keys_from_zero=True), "relative_scores_scaled": both(scaled=True),
           "relative_only_queries_rotated": both(rotate_keys=False)}
    out.update({name: both(rotation=how) for name, how in ROTATION_VARIANTS.items()})
    for name, kw in ROPE_TABLE_VARIANTS.items():
        out[name] = both(tables=lambda positions, head_dim, kw=kw: rope_cos_sin(positions, head_dim, **kw))
    # indistinguishable here from rope_cos_sin_exchanged: Unambiguous then names neither
    out["rope_returns_sin_cos"] = both(tables=lambda positions, head_dim: rope_cos_sin(positions, head_dim)[::-1])
    return out


# ------------------------------------------------------------------ diagnosis helpers

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


TRANSFERS = {"aten._to_copy.default", "aten.copy_.default", "aten._copy_from.default",
             "aten._copy_from_and_resize.default", "aten.lift_fresh.default", "aten.lift_fresh_copy.default",
             "aten.index.Tensor", "aten.index_put_.default", "aten._index_put_impl_.default"}


def mixed_device_ops(ops):
    """The operations (other than transfers, and indexing, which accepts CPU indices everywhere)
    whose tensor arguments sit on more than one device: each fails on a GPU."""
    return [name for name, devices in ops if len(devices) > 1 and name not in TRANSFERS]


def close(actual, expected, what, **tol):
    """assert_close whose failure detail starts by saying what was compared."""
    torch.testing.assert_close(actual, expected, **tol, msg=lambda m: f"{what}\n{m}")

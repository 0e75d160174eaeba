"""Public tests of `positional_encoding`. Run `pytest` in the assignment folder, or `course check positional_encoding`.

Hidden tests check the same things more thoroughly (many positions and widths in float64,
transformers' Llama rotary as the oracle, error messages, the order demonstration).
"""

import math

import pytest
import torch

import positional_encoding_probes


def sinusoid(p, column, d_model, base=10000.0):
    angle = p / base ** (2 * (column // 2) / d_model)
    return math.sin(angle) if column % 2 == 0 else math.cos(angle)


def far_angles(seq_len, width, pair_of_column):
    """angle[p, c] = p / 10000^(2 * pair_of_column(c) / width), every entry in float64."""
    p = torch.arange(seq_len, dtype=torch.float64)[:, None]
    pair = pair_of_column(torch.arange(width, dtype=torch.float64))[None, :]
    return p / 10000.0 ** (2 * pair / width)


def worst_entry(table, expected, first_row=1024):
    """The largest |table - expected| over rows first_row.. (in float64), and where it is."""
    error = (table.double() - expected)[first_row:].abs()
    row, column = divmod(int(error.argmax()), error.shape[1])
    return float(error.max()), (first_row + row, column)


@pytest.mark.task("1.1")
@pytest.mark.points(2)
def test_sinusoid_small_table(submission):
    table = submission.call("positional_encoding.sinusoidal_encoding", 3, 4)
    expected = torch.tensor([[sinusoid(p, c, 4) for c in range(4)] for p in range(3)])
    # row p: [sin(p), cos(p), sin(p / 100), cos(p / 100)]
    assert table.dtype == torch.float32
    torch.testing.assert_close(table, expected)
    with pytest.raises(ValueError):
        submission.call("positional_encoding.sinusoidal_encoding", 3, 5)


@pytest.mark.task("1.1")
@pytest.mark.points(1)
def test_sinusoid_far_positions_are_precise(submission):
    # Angles near 2000 cannot be stored in float32 to better than about 1e-4 (see README, Precision).
    far = submission.call("positional_encoding.sinusoidal_encoding", 2048, 64)
    angles = far_angles(2048, 64, lambda c: torch.div(c, 2, rounding_mode="floor"))
    expected = torch.where(torch.arange(64) % 2 == 0, angles.sin(), angles.cos())
    worst, where = worst_entry(far, expected)
    assert worst < 1e-6, (f"PE[{where[0]}, {where[1]}] is off by {worst:.1e} (allowed 1e-6) in a 2048 x 64 table: "
                          "compute positions, frequencies and angles in float64, then convert to float32")


@pytest.mark.task("1.2")
@pytest.mark.points(3)
def test_sinusoidal_module_on_a_batch_of_ones(submission):
    x = torch.ones(2, 5, 6)
    out, parameters, buffers = submission.run(positional_encoding_probes.run_sinusoidal, 6, 16, x)
    expected = 1 + torch.tensor([[sinusoid(p, c, 6) for c in range(6)] for p in range(5)])
    torch.testing.assert_close(out, expected.expand(2, 5, 6))
    assert parameters == [], f"the table is a buffer, not a parameter; found parameters {parameters}"
    assert len(buffers) == 1, f"expected one buffer (the table), found {buffers}"


@pytest.mark.task("1.3")
@pytest.mark.points(3)
def test_learned_embedding_adds_its_rows(submission):
    weight = torch.arange(8 * 3, dtype=torch.float32).reshape(8, 3)
    x = torch.zeros(2, 4, 3)
    out = submission.run(positional_encoding_probes.run_learned, 8, 3, weight, x)
    torch.testing.assert_close(out, weight[:4].expand(2, 4, 3))   # position p adds row p


@pytest.mark.task("2.1")
@pytest.mark.points(2)
def test_rope_tables_small(submission):
    cos, sin = submission.call("positional_encoding.rope_cos_sin", 3, 4)
    # head_dim 4: frequencies 1 and 1/100; "rotate half" layout repeats them: [1, 1/100, 1, 1/100]
    angles = torch.tensor([[p * f for f in (1.0, 0.01, 1.0, 0.01)] for p in range(3)], dtype=torch.float64)
    assert cos.shape == (3, 4) and cos.dtype == torch.float32
    torch.testing.assert_close(cos, angles.cos().float())
    torch.testing.assert_close(sin, angles.sin().float())


@pytest.mark.task("2.1")
@pytest.mark.points(1)
def test_rope_tables_far_positions_are_precise(submission):
    cos, sin = submission.call("positional_encoding.rope_cos_sin", 2048, 64)
    angles = far_angles(2048, 64, lambda c: c % 32)      # rotate-half: column c belongs to pair c mod 32
    for name, table, expected in (("cos", cos, angles.cos()), ("sin", sin, angles.sin())):
        worst, where = worst_entry(table, expected)
        assert worst < 1e-6, (f"{name}[{where[0]}, {where[1]}] is off by {worst:.1e} (allowed 1e-6) for 2048 positions: "
                              "compute positions times frequencies in float64, then convert to float32")


@pytest.mark.task("2.2")
@pytest.mark.points(4)
def test_apply_rope_rotates_pairs(submission):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 8, generator=gen, dtype=torch.float64)
    angles = torch.rand(5, 4, generator=gen, dtype=torch.float64) * 6
    cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)
    out = submission.call("positional_encoding.apply_rope", x, cos, sin)
    # pair i = features (i, i + 4), rotated by angles[:, i] like a 2-D vector
    a, b = x[..., :4], x[..., 4:]
    expected = torch.cat([a * angles.cos() - b * angles.sin(), a * angles.sin() + b * angles.cos()], dim=-1)
    torch.testing.assert_close(out, expected)


@pytest.mark.task("2.3")
@pytest.mark.points(4)
def test_relative_scores_ignore_a_shift(submission):
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(1, 2, 4, 8, generator=gen, dtype=torch.float64)
    k = torch.randn(1, 2, 4, 8, generator=gen, dtype=torch.float64)
    score_a, score_b = submission.call("positional_encoding.relative_scores", q, k, 0, 5)
    torch.testing.assert_close(score_a, score_b, rtol=0, atol=1e-5)
    plain = q @ k.transpose(-2, -1)
    assert not torch.allclose(score_a, plain), "the scores should come from the rotated queries and keys"

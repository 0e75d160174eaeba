"""Hidden tests of part 2: rotary position embeddings (RoPE).

Oracles (pe_oracle.py): transformers' Llama rotary (``LlamaRotaryEmbedding`` for cos/sin,
``apply_rotary_pos_emb`` for the rotation), and the RoPE formula evaluated in float64 here. Llama
computes its angles in float32, so cos/sin are compared with it at atol 1e-4 on positions below
256, and with the float64 formula at atol 1e-6 at far positions.
"""

import pytest
import torch

import pe_oracle as oracle
from course.grading.diagnose import explain, record
from misconceptions import CATALOGUE
from pe_oracle import TOL, llama_cos_sin, llama_rotate, randn


def dtype_name(dtype):
    return str(dtype).replace("torch.", "")


def check_tables(cos, sin, expected_cos, expected_sin, variants, what, atol):
    """cos and sin against the expected tables, naming a misconception when one matches exactly."""
    expected = (expected_cos.float(), expected_sin.float())
    with explain((cos, sin), expected, CATALOGUE, variants=oracle.Unambiguous(variants, expected), what=what):
        torch.testing.assert_close(cos.double(), expected_cos.double(), rtol=0, atol=atol,
                                   msg=lambda m: f"cos: {what}\n" + m)
        torch.testing.assert_close(sin.double(), expected_sin.double(), rtol=0, atol=atol,
                                   msg=lambda m: f"sin: {what}\n" + m)


def check_table_format(cos, sin, seq_len, head_dim):
    if cos.dtype != torch.float32 or sin.dtype != torch.float32:
        record(["wrong_dtype"], CATALOGUE, "cos and sin: float32 tables of shape (seq, head_dim)")
    assert cos.dtype == torch.float32 and sin.dtype == torch.float32, f"cos/sin must be float32, got {cos.dtype}/{sin.dtype}"
    assert tuple(cos.shape) == (seq_len, head_dim) and tuple(sin.shape) == (seq_len, head_dim), \
        f"cos and sin must have shape {(seq_len, head_dim)}, got {tuple(cos.shape)} and {tuple(sin.shape)}"


# ------------------------------------------------------------------ 2.1 rope_cos_sin

LLAMA_CASES = [(16, 8, 10000.0, "16 positions, head_dim 8"), (200, 64, 10000.0, "200 positions, head_dim 64"),
               (33, 32, 500000.0, "base 500000, head_dim 32"), (1, 2, 10000.0, "one position, head_dim 2")]


@pytest.mark.task("2.1")
@pytest.mark.points(4)
@pytest.mark.parametrize("seq_len,head_dim,base", [c[:3] for c in LLAMA_CASES], ids=[c[3] for c in LLAMA_CASES])
def test_rope_tables_equal_llama(submission, seq_len, head_dim, base):
    cos, sin = submission.call("positional_encoding.rope_cos_sin", seq_len, head_dim, base=base)
    check_table_format(cos, sin, seq_len, head_dim)
    positions = torch.arange(seq_len)
    check_tables(cos, sin, *llama_cos_sin(positions, head_dim, base),
                 oracle.rope_table_variants(positions, seq_len, head_dim, base, given=False),
                 "tables for positions 0 .. seq - 1 against Llama's, to 1e-4", atol=1e-4)


GIVEN_CASES = [(12, 16, 10000.0, "12 positions in random order, head_dim 16"),
               (40, 128, 1000.0, "40 positions in random order, base 1000, head_dim 128")]


@pytest.mark.task("2.1")
@pytest.mark.points(3)
@pytest.mark.parametrize("seq_len,head_dim,base", [c[:3] for c in GIVEN_CASES], ids=[c[3] for c in GIVEN_CASES])
def test_rope_tables_at_given_positions(submission, rng, seq_len, head_dim, base):
    positions = torch.randperm(256, generator=rng)[:seq_len]        # distinct, non-consecutive, not sorted
    cos, sin = submission.call("positional_encoding.rope_cos_sin", seq_len, head_dim, base=base, positions=positions)
    check_table_format(cos, sin, seq_len, head_dim)
    check_tables(cos, sin, *llama_cos_sin(positions, head_dim, base),
                 oracle.rope_table_variants(positions, seq_len, head_dim, base, given=True),
                 "row t is for position positions[t] (non-consecutive positions), against Llama's, to 1e-4",
                 atol=1e-4)


FAR_CASES = [(None, 64, 10000.0, "positions 0 .. 4095 (no positions argument), head_dim 64"),
             ("given", 16, 10000.0, "32 given positions up to 20000, head_dim 16"),
             ("given", 64, 1e6, "32 given positions up to 20000, base 1e6, head_dim 64")]


@pytest.mark.task("2.1")
@pytest.mark.points(4)
@pytest.mark.parametrize("kind,head_dim,base", [c[:3] for c in FAR_CASES], ids=[c[3] for c in FAR_CASES])
def test_rope_tables_at_far_positions_equal_the_float64_formula(submission, rng, kind, head_dim, base):
    if kind is None:
        positions = torch.arange(4096)
        cos, sin = submission.call("positional_encoding.rope_cos_sin", len(positions), head_dim, base=base)
    else:
        positions = torch.cat([torch.arange(4), torch.randint(1000, 20000, (28,), generator=rng)])
        cos, sin = submission.call("positional_encoding.rope_cos_sin", len(positions), head_dim, base=base,
                                   positions=positions)
    check_table_format(cos, sin, len(positions), head_dim)
    check_tables(cos, sin, *oracle.rope_cos_sin(positions, head_dim, base),
                 oracle.rope_table_variants(positions, len(positions), head_dim, base, given=kind is not None),
                 "tables at far positions against the RoPE formula evaluated in float64, to 1e-6", atol=1e-6)


@pytest.mark.task("2.1")
@pytest.mark.points(2)
def test_rope_tables_refuse_bad_arguments(submission):
    with pytest.raises(ValueError, match=r"\b7\b"):
        submission.call("positional_encoding.rope_cos_sin", 4, 7)
    for positions in (torch.arange(5), torch.arange(4)[None]):
        try:
            submission.call("positional_encoding.rope_cos_sin", 4, 8, positions=positions)
        except ValueError:
            continue
        record(["positions_shape_not_checked"], CATALOGUE, "positions of another shape than (seq,) are refused")
        raise AssertionError(f"positions of shape {tuple(positions.shape)} for seq_len=4 should raise ValueError")


# ------------------------------------------------------------------ 2.2 apply_rope

ROTATE_CASES = [
    ((1, 1, 5, 4), torch.float32, "batch 1, one head, head_dim 4, float32"),
    ((2, 4, 9, 16), torch.float32, "batch 2 x 4 heads, float32"),
    ((3, 2, 7, 64), torch.float64, "head_dim 64, float64"),
    ((1, 8, 33, 128), torch.float32, "8 heads, head_dim 128, float32"),
    ((2, 1, 1, 2), torch.float64, "one token, head_dim 2, float64"),
    ((2, 2, 6, 16), torch.bfloat16, "bfloat16 (cos and sin converted to x's dtype)"),
]


@pytest.mark.task("2.2")
@pytest.mark.points(8)
@pytest.mark.parametrize("shape,dtype", [c[:2] for c in ROTATE_CASES], ids=[c[2] for c in ROTATE_CASES])
def test_apply_rope_equals_llama(submission, rng, shape, dtype):
    seq, head_dim = shape[-2], shape[-1]
    positions = torch.randint(0, 200, (seq,), generator=rng)
    cos, sin = llama_cos_sin(positions, head_dim, 10000.0)
    x = randn(rng, *shape, dtype=torch.float64).to(dtype)
    out = submission.call("positional_encoding.apply_rope", x, cos, sin)
    if out.dtype != dtype:
        record(["wrong_dtype"], CATALOGUE, "apply_rope keeps x's dtype (cos and sin converted to it)")
    assert out.dtype == dtype and tuple(out.shape) == shape, f"expected {dtype} of shape {shape}, got {out.dtype} {tuple(out.shape)}"
    expected = llama_rotate(x, cos, sin)
    with explain(out, expected, CATALOGUE, variants=oracle.Unambiguous(oracle.rotation_variants(x, cos, sin), expected),
                 what=f"x * cos + rotate_half(x) * sin against Llama's apply_rotary_pos_emb ({dtype_name(dtype)})"):
        oracle.close(out, expected, "apply_rope vs Llama's apply_rotary_pos_emb", **TOL[dtype])


@pytest.mark.task("2.2")
@pytest.mark.points(1)
def test_apply_rope_leaves_its_inputs_unchanged(submission, rng):
    cos, sin = llama_cos_sin(torch.arange(6), 8, 10000.0)
    x = randn(rng, 2, 3, 6, 8)
    out = submission.call_pure("positional_encoding.apply_rope", x, cos, sin)
    oracle.close(out, llama_rotate(x, cos, sin), "apply_rope (after checking the inputs came back unchanged)", **TOL[torch.float32])


@pytest.mark.task("2.2")
@pytest.mark.points(6)
def test_order_rotary_scores_depend_on_distance_only(submission, rng):
    """The same word at every position: without positions every score is equal; with the student's
    RoPE the score of query i against key j becomes a function of i - j."""
    seq, head_dim = 12, 16
    q0, k0 = randn(rng, head_dim, dtype=torch.float64), randn(rng, head_dim, dtype=torch.float64)
    q = q0.expand(1, 1, seq, head_dim).contiguous()
    k = k0.expand(1, 1, seq, head_dim).contiguous()
    plain = (q @ k.transpose(-2, -1))[0, 0]
    assert torch.allclose(plain, plain[0, 0].expand_as(plain)), "reference check: without positions all scores are equal"
    cos, sin = submission.call("positional_encoding.rope_cos_sin", seq, head_dim)
    qr = submission.call("positional_encoding.apply_rope", q, cos, sin)
    kr = submission.call("positional_encoding.apply_rope", k, cos, sin)
    scores = (qr @ kr.transpose(-2, -1))[0, 0]
    scale = float(q0.norm() * k0.norm())
    torch.testing.assert_close(scores[1:, 1:], scores[:-1, :-1], rtol=0, atol=1e-5 * scale,
                               msg=lambda m: "after RoPE, score(i, j) must equal score(i + 1, j + 1)\n" + m)
    by_distance = torch.stack([scores.diagonal(-d).mean() for d in range(seq)])
    spread = float(by_distance.max() - by_distance.min())
    assert spread > 1e-3 * scale, "after RoPE the scores must change with the distance between the tokens"


# ------------------------------------------------------------------ 2.3 relative_scores

RELATIVE_CASES = [
    (0, 7, 5, 5, torch.float64, "offsets 0 and 7, float64"),
    (3, 1000, 6, 4, torch.float64, "offsets 3 and 1000, 6 queries and 4 keys, float64"),
    (250, 12, 1, 9, torch.float64, "offsets 250 and 12, one query, float64"),
    (0, 300, 8, 8, torch.float32, "offsets 0 and 300, float32"),
]


@pytest.mark.task("2.3")
@pytest.mark.points(8)
@pytest.mark.parametrize("offset_a,offset_b,seq_q,seq_k,dtype", [c[:5] for c in RELATIVE_CASES],
                         ids=[c[5] for c in RELATIVE_CASES])
def test_relative_scores_depend_only_on_distance(submission, rng, offset_a, offset_b, seq_q, seq_k, dtype):
    head_dim = 16
    q = randn(rng, 2, 3, seq_q, head_dim, dtype=dtype)
    k = randn(rng, 2, 3, seq_k, head_dim, dtype=dtype)
    score_a, score_b = submission.call("positional_encoding.relative_scores", q, k, offset_a, offset_b)
    assert tuple(score_a.shape) == (2, 3, seq_q, seq_k) and tuple(score_b.shape) == (2, 3, seq_q, seq_k), \
        f"both score matrices must have shape {(2, 3, seq_q, seq_k)}, got {tuple(score_a.shape)} and {tuple(score_b.shape)}"
    assert score_a.dtype == dtype and score_b.dtype == dtype, f"scores must have q's dtype {dtype}"
    scale = float(q.norm(dim=-1).max() * k.norm(dim=-1).max())
    tol = 1e-5 if dtype == torch.float64 else 1e-4
    expected = (oracle.relative(q, k, offset_a), oracle.relative(q, k, offset_b))
    with explain((score_a, score_b), expected, CATALOGUE, what="raw scores q_rot @ k_rot^T of both placements",
                 variants=oracle.Unambiguous(oracle.relative_variants(q, k, offset_a, offset_b), expected)):
        torch.testing.assert_close(score_a, score_b, rtol=0, atol=tol * scale,
                                   msg=lambda m: "the two placements must give the same scores\n" + m)
        for offset, got, want in ((offset_a, score_a, expected[0]), (offset_b, score_b, expected[1])):
            torch.testing.assert_close(got, want, rtol=0, atol=tol * scale,
                                       msg=lambda m, o=offset: f"scores with the first token at position {o}\n" + m)
    plain = q @ k.transpose(-2, -1)
    assert float((score_a - plain).abs().max()) > 1e-3 * scale, \
        "the scores should be those of the rotated queries and keys, not of the raw ones"


@pytest.mark.task("2.3")
@pytest.mark.points(1)
def test_relative_scores_leave_their_inputs_unchanged(submission, rng):
    q, k = randn(rng, 1, 2, 4, 8, dtype=torch.float64), randn(rng, 1, 2, 5, 8, dtype=torch.float64)
    score_a, score_b = submission.call_pure("positional_encoding.relative_scores", q, k, 2, 9)
    oracle.close(score_a, oracle.relative(q, k, 2), "scores of placement a (after checking q and k came back unchanged)",
                 rtol=0, atol=1e-5)
    oracle.close(score_b, oracle.relative(q, k, 9), "scores of placement b (after checking q and k came back unchanged)",
                 rtol=0, atol=1e-5)

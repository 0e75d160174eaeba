"""Hidden tests of part 2: rotary position embeddings (RoPE).

Oracles: transformers' Llama rotary (``LlamaRotaryEmbedding`` for cos/sin, ``apply_rotary_pos_emb``
for the rotation), and the RoPE formula evaluated in float64 here. Llama computes its angles in
float32, so cos/sin are compared with it at atol 1e-4 on positions below 256, and with the float64
formula at atol 1e-6 everywhere.
"""

import pytest
import torch
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-7, atol=1e-9)}


def randn(rng, *shape, dtype=torch.float32):
    return torch.randn(*shape, generator=rng, dtype=dtype)


def llama_cos_sin(positions, head_dim, base):
    """cos, sin of transformers' Llama rotary for these positions: each (seq, head_dim), float32."""
    config = LlamaConfig(hidden_size=head_dim * 2, num_attention_heads=2, head_dim=head_dim,
                         rope_theta=base, max_position_embeddings=4096)
    rotary = LlamaRotaryEmbedding(config)
    cos, sin = rotary(torch.zeros(1, len(positions), head_dim), positions[None].long())
    return cos[0], sin[0]


def formula_cos_sin(positions, head_dim, base):
    """The rotate-half RoPE tables in float64: angle[p, j] = p / base^(2 (j mod head_dim/2) / head_dim)."""
    half = head_dim // 2
    pair = torch.arange(head_dim) % half
    angle = positions.double()[:, None] / torch.tensor(base, dtype=torch.float64) ** (2 * pair.double() / head_dim)
    return angle.cos(), angle.sin()


def llama_rotate(x, cos, sin):
    """transformers' apply_rotary_pos_emb on x of shape (batch, heads, seq, head_dim), cos/sin (seq, head_dim)."""
    return apply_rotary_pos_emb(x, x, cos[None].to(x.dtype), sin[None].to(x.dtype))[0]


# ------------------------------------------------------------------ 2.1 rope_cos_sin

@pytest.mark.task("2.1")
@pytest.mark.points(6)
@pytest.mark.parametrize("seq_len,head_dim,base,given", [
    (16, 8, 10000.0, False), (200, 64, 10000.0, False), (33, 32, 500000.0, False),
    (12, 16, 10000.0, True), (40, 128, 1000.0, True)])
def test_rope_tables_equal_llama(submission, rng, seq_len, head_dim, base, given):
    positions = torch.randint(0, 256, (seq_len,), generator=rng) if given else torch.arange(seq_len)
    kwargs = {"positions": positions} if given else {}
    cos, sin = submission.call("positional_encoding.rope_cos_sin", seq_len, head_dim, base=base, **kwargs)
    assert cos.dtype == torch.float32 and sin.dtype == torch.float32, f"cos/sin must be float32, got {cos.dtype}/{sin.dtype}"
    assert tuple(cos.shape) == (seq_len, head_dim) and tuple(sin.shape) == (seq_len, head_dim), \
        f"cos and sin must have shape {(seq_len, head_dim)}, got {tuple(cos.shape)} and {tuple(sin.shape)}"
    ref_cos, ref_sin = llama_cos_sin(positions, head_dim, base)
    torch.testing.assert_close(cos, ref_cos, rtol=0, atol=1e-4, msg=lambda m: "cos differs from Llama's\n" + m)
    torch.testing.assert_close(sin, ref_sin, rtol=0, atol=1e-4, msg=lambda m: "sin differs from Llama's\n" + m)


@pytest.mark.task("2.1")
@pytest.mark.points(5)
@pytest.mark.parametrize("head_dim,base", [(16, 10000.0), (64, 10000.0), (8, 1e6)])
def test_rope_tables_equal_formula_far_away(submission, rng, head_dim, base):
    positions = torch.cat([torch.arange(4), torch.randint(1000, 20000, (28,), generator=rng)])
    cos, sin = submission.call("positional_encoding.rope_cos_sin", len(positions), head_dim, base=base,
                               positions=positions)
    ref_cos, ref_sin = formula_cos_sin(positions, head_dim, base)
    torch.testing.assert_close(cos.double(), ref_cos, rtol=0, atol=1e-6,
                               msg=lambda m: "cos vs the float64 formula (are the angles computed in float64?)\n" + m)
    torch.testing.assert_close(sin.double(), ref_sin, rtol=0, atol=1e-6,
                               msg=lambda m: "sin vs the float64 formula (are the angles computed in float64?)\n" + m)


@pytest.mark.task("2.1")
@pytest.mark.points(2)
def test_rope_tables_refuse_bad_arguments(submission):
    with pytest.raises(ValueError, match=r"\b7\b"):
        submission.call("positional_encoding.rope_cos_sin", 4, 7)
    with pytest.raises(ValueError):
        submission.call("positional_encoding.rope_cos_sin", 4, 8, positions=torch.arange(5))


# ------------------------------------------------------------------ 2.2 apply_rope

@pytest.mark.task("2.2")
@pytest.mark.points(9)
@pytest.mark.parametrize("shape,dtype", [
    ((1, 1, 5, 4), torch.float32), ((2, 4, 9, 16), torch.float32), ((3, 2, 7, 64), torch.float64),
    ((1, 8, 33, 128), torch.float32), ((2, 1, 1, 2), torch.float64)])
def test_apply_rope_equals_llama(submission, rng, shape, dtype):
    seq, head_dim = shape[-2], shape[-1]
    positions = torch.randint(0, 200, (seq,), generator=rng)
    cos, sin = llama_cos_sin(positions, head_dim, 10000.0)
    x = randn(rng, *shape, dtype=dtype)
    out = submission.call("positional_encoding.apply_rope", x, cos, sin)
    assert out.dtype == dtype and tuple(out.shape) == shape, f"expected {dtype} of shape {shape}, got {out.dtype} {tuple(out.shape)}"
    torch.testing.assert_close(out, llama_rotate(x, cos, sin), **TOL[dtype])


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

@pytest.mark.task("2.3")
@pytest.mark.points(8)
@pytest.mark.parametrize("offset_a,offset_b,seq_q,seq_k,dtype", [
    (0, 7, 5, 5, torch.float64), (3, 1000, 6, 4, torch.float64), (250, 12, 1, 9, torch.float64),
    (0, 300, 8, 8, torch.float32)])
def test_relative_scores_depend_only_on_distance(submission, rng, offset_a, offset_b, seq_q, seq_k, dtype):
    head_dim = 16
    q = randn(rng, 2, 3, seq_q, head_dim, dtype=dtype)
    k = randn(rng, 2, 3, seq_k, head_dim, dtype=dtype)
    score_a, score_b = submission.call("positional_encoding.relative_scores", q, k, offset_a, offset_b)
    assert tuple(score_a.shape) == (2, 3, seq_q, seq_k) and tuple(score_b.shape) == (2, 3, seq_q, seq_k)
    assert score_a.dtype == dtype and score_b.dtype == dtype
    scale = float(q.norm(dim=-1).max() * k.norm(dim=-1).max())
    tol = 1e-5 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(score_a, score_b, rtol=0, atol=tol * scale,
                               msg=lambda m: "the two placements must give the same scores\n" + m)
    for offset, got in ((offset_a, score_a), (offset_b, score_b)):
        cos_q, sin_q = (t.float() for t in formula_cos_sin(offset + torch.arange(seq_q), head_dim, 10000.0))
        cos_k, sin_k = (t.float() for t in formula_cos_sin(offset + torch.arange(seq_k), head_dim, 10000.0))
        expected = llama_rotate(q, cos_q, sin_q) @ llama_rotate(k, cos_k, sin_k).transpose(-2, -1)
        torch.testing.assert_close(got, expected, rtol=0, atol=tol * scale,
                                   msg=lambda m, o=offset: f"scores with the first token at position {o}\n" + m)
    plain = q @ k.transpose(-2, -1)
    assert float((score_a - plain).abs().max()) > 1e-3 * scale, \
        "the scores should be those of the rotated queries and keys, not of the raw ones"

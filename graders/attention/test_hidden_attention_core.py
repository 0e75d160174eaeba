"""Hidden tests of part 1: scores, causal mask, masked softmax, scaled dot-product attention.

Oracles: ``torch.nn.functional.scaled_dot_product_attention`` for outputs, and torch's softmax of
the masked scores for weights. Tolerances: float32 rtol 1e-4 / atol 1e-5, float64 rtol 1e-7 /
atol 1e-9 unless a test says otherwise.
"""

import math

import pytest
import torch
import torch.nn.functional as F

import probes

TOL = {torch.float32: dict(rtol=1e-4, atol=1e-5), torch.float64: dict(rtol=1e-7, atol=1e-9)}


def randn(rng, *shape, dtype=torch.float32):
    return torch.randn(*shape, generator=rng, dtype=dtype)


def random_mask(rng, shape, p=0.6):
    """A bool mask (True = may attend) whose first key is always allowed (no fully-masked row)."""
    mask = torch.rand(*shape, generator=rng) < p
    mask[..., 0] = True
    return mask


def allowed_keys(seq_q, seq_k, mask, causal):
    allowed = torch.ones(seq_q, seq_k, dtype=torch.bool)
    if causal:
        allowed = allowed.tril()
    return allowed if mask is None else mask & allowed


def reference_weights(q, k, mask=None, causal=False, scale=None):
    """torch's softmax of the masked scores; rows with no allowed key are zeros."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale
    allowed = allowed_keys(q.shape[-2], k.shape[-2], mask, causal)
    weights = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
    return torch.nan_to_num(weights, nan=0.0)


def reference_output(q, k, v, mask=None, causal=False, scale=None):
    """torch's SDPA; mask and causal are combined into one mask (portable across torch versions)."""
    allowed = allowed_keys(q.shape[-2], k.shape[-2], mask, causal) if (mask is not None or causal) else None
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scale)


# ------------------------------------------------------------------ 1.1 attention_scores

SCORE_CASES = [
    # (q shape, k shape, scale, dtype)
    ((5, 8), (7, 8), None, torch.float32),
    ((2, 3, 4, 16), (2, 3, 6, 16), None, torch.float64),
    ((2, 1, 4, 16), (1, 3, 9, 16), None, torch.float32),   # leading dimensions broadcast
    ((3, 6, 5), (3, 2, 5), 0.37, torch.float64),
    ((2, 2, 4, 32), (2, 2, 4, 32), 1.0, torch.float32),
    ((1, 1), (3, 1), 2.5, torch.float64),
]


@pytest.mark.task("1.1")
@pytest.mark.points(6)
@pytest.mark.parametrize("q_shape,k_shape,scale,dtype", SCORE_CASES)
def test_scores_equal_scaled_products(submission, rng, q_shape, k_shape, scale, dtype):
    q, k = randn(rng, *q_shape, dtype=dtype), randn(rng, *k_shape, dtype=dtype)
    out = submission.call("attention.attention_scores", q, k, scale=scale)
    factor = 1.0 / math.sqrt(q_shape[-1]) if scale is None else scale
    expected = torch.einsum("...id,...jd->...ij", q, k) * factor
    assert out.dtype == dtype, f"scores should keep the inputs' dtype {dtype}, got {out.dtype}"
    assert out.shape == expected.shape, f"scores of q{q_shape}, k{k_shape}: expected shape {tuple(expected.shape)}, got {tuple(out.shape)}"
    torch.testing.assert_close(out, expected, **TOL[dtype])


# ------------------------------------------------------------------ 1.2 causal_mask

@pytest.mark.task("1.2")
@pytest.mark.points(3)
@pytest.mark.parametrize("n", [1, 2, 7, 33])
def test_causal_mask_lower_triangle(submission, n):
    mask = submission.call("attention.causal_mask", n, device="cpu")
    assert mask.dtype == torch.bool, f"the mask must be bool, got {mask.dtype}"
    rows = torch.arange(n)[:, None]
    cols = torch.arange(n)[None, :]
    assert torch.equal(mask, cols <= rows), "mask[i, j] must be True exactly when j <= i"


# ------------------------------------------------------------------ 1.3 masked_softmax

SOFTMAX_CASES = [
    # (scores shape, mask shape or None, dtype)
    ((4, 6), None, torch.float32),
    ((2, 3, 5, 7), None, torch.float64),
    ((2, 3, 5, 7), (5, 7), torch.float32),
    ((2, 3, 5, 7), (2, 1, 1, 7), torch.float64),    # padding mask, broadcast over heads and queries
    ((2, 3, 5, 7), (2, 3, 5, 7), torch.float32),
]


@pytest.mark.task("1.3")
@pytest.mark.points(4)
@pytest.mark.parametrize("shape,mask_shape,dtype", SOFTMAX_CASES)
def test_masked_softmax_equals_torch_softmax(submission, rng, shape, mask_shape, dtype):
    scores = 3 * randn(rng, *shape, dtype=dtype)
    mask = None if mask_shape is None else random_mask(rng, mask_shape)
    out = submission.call("attention.masked_softmax", scores, mask)
    masked = scores if mask is None else scores.masked_fill(~mask, float("-inf"))
    expected = torch.softmax(masked, dim=-1)
    assert out.shape == expected.shape and out.dtype == dtype
    torch.testing.assert_close(out, expected, **TOL[dtype])


@pytest.mark.task("1.3")
@pytest.mark.points(3)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_masked_softmax_extreme_scores(submission, rng, dtype):
    scores = 1e4 * randn(rng, 3, 6, 8, dtype=dtype).clamp(-1, 1)
    scores[0, 0] = torch.tensor([1e4, 1e4 - 1, 1e4 - 2, -1e4, -1e4, 0.0, 5.0, 1e4 - 0.5], dtype=dtype)
    scores[1, 1] = -1e4
    mask = random_mask(rng, (3, 6, 8))
    for m in (None, mask):
        out = submission.call("attention.masked_softmax", scores, m)
        masked = scores if m is None else scores.masked_fill(~m, float("-inf"))
        torch.testing.assert_close(out, torch.softmax(masked, dim=-1), **TOL[dtype])


@pytest.mark.task("1.3")
@pytest.mark.points(3)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_masked_softmax_fully_masked_rows_are_zero(submission, rng, dtype):
    scores = randn(rng, 2, 4, 5, dtype=dtype)
    mask = random_mask(rng, (2, 4, 5))
    mask[0, 1] = False
    mask[1, 3] = False
    # NaN in the reply is refused by default: a NaN row fails here with a clear message.
    out = submission.call("attention.masked_softmax", scores, mask)
    for b, i in ((0, 1), (1, 3)):
        assert torch.equal(out[b, i], torch.zeros(5, dtype=dtype)), f"row [{b}, {i}] allows no key: its weights must be all 0"
    keep = mask.any(-1)
    torch.testing.assert_close(out.sum(-1)[keep], torch.ones(int(keep.sum()), dtype=dtype), **TOL[dtype])
    expected = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    torch.testing.assert_close(out[keep], expected[keep], **TOL[dtype])


@pytest.mark.task("1.3")
@pytest.mark.points(2)
def test_masked_softmax_written_without_torch_softmax(submission, rng):
    scores = randn(rng, 3, 4, 6)
    mask = random_mask(rng, (4, 6))
    out = submission.run(probes.call_without_torch_shortcuts, "masked_softmax", scores, mask)
    torch.testing.assert_close(out, torch.softmax(scores.masked_fill(~mask, float("-inf")), -1), **TOL[torch.float32])


# ------------------------------------------------------------------ 1.4 scaled_dot_product_attention

SDPA_CASES = [
    # (lead dims, seq_q, seq_k, d, d_v, dtype, mask shape or None, causal, scale)
    ((), 5, 5, 8, 8, torch.float32, None, False, None),
    ((2,), 4, 9, 16, 16, torch.float64, None, False, None),
    ((2, 3), 6, 6, 8, 4, torch.float32, None, True, None),
    ((2, 3), 5, 8, 8, 8, torch.float64, None, True, None),           # causal with seq_q < seq_k
    ((2, 3), 8, 5, 8, 8, torch.float32, None, True, None),           # causal with seq_q > seq_k
    ((2, 4), 7, 7, 16, 16, torch.float32, (7, 7), False, None),
    ((3, 2), 6, 10, 8, 8, torch.float64, (3, 1, 1, 10), False, 0.5),  # padding mask + custom scale
    ((2, 2), 7, 7, 8, 8, torch.float32, (2, 2, 7, 7), True, None),    # mask and causal together
    ((1, 4), 5, 5, 32, 32, torch.float64, (5, 5), True, 0.1),
    ((4,), 3, 11, 4, 6, torch.float32, None, False, 2.0),
]


@pytest.mark.task("1.4")
@pytest.mark.points(14)
@pytest.mark.parametrize("lead,seq_q,seq_k,d,d_v,dtype,mask_shape,causal,scale", SDPA_CASES)
def test_sdpa_equals_torch(submission, rng, lead, seq_q, seq_k, d, d_v, dtype, mask_shape, causal, scale):
    q = randn(rng, *lead, seq_q, d, dtype=dtype)
    k = randn(rng, *lead, seq_k, d, dtype=dtype)
    v = randn(rng, *lead, seq_k, d_v, dtype=dtype)
    mask = None if mask_shape is None else random_mask(rng, mask_shape)
    out, weights = submission.call("attention.scaled_dot_product_attention", q, k, v,
                                   mask=mask, causal=causal, scale=scale)
    expected = reference_output(q, k, v, mask, causal, scale)
    assert out.shape == expected.shape, f"output: expected shape {tuple(expected.shape)}, got {tuple(out.shape)}"
    assert out.dtype == dtype
    torch.testing.assert_close(out, expected, **TOL[dtype])
    torch.testing.assert_close(weights, reference_weights(q, k, mask, causal, scale), **TOL[dtype])


@pytest.mark.task("1.4")
@pytest.mark.points(4)
@pytest.mark.parametrize("seq_q,seq_k", [(6, 6), (4, 7)])
def test_sdpa_weight_rows_sum_to_one_and_causal_zeros(submission, rng, seq_q, seq_k):
    q, k, v = randn(rng, 2, 3, seq_q, 8), randn(rng, 2, 3, seq_k, 8), randn(rng, 2, 3, seq_k, 8)
    _, weights = submission.call("attention.scaled_dot_product_attention", q, k, v, causal=True)
    assert weights.shape == (2, 3, seq_q, seq_k)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, seq_q), rtol=0, atol=1e-5)
    above = torch.ones(seq_q, seq_k, dtype=torch.bool).triu(1)
    assert bool((weights[..., above] == 0).all()), "causal weights above the diagonal must be exactly 0 (a future token leaks)"
    assert bool((weights[..., ~above] > 0).all()), "every allowed (past or current) key should get some weight"


@pytest.mark.task("1.4")
@pytest.mark.points(3)
def test_sdpa_query_with_no_allowed_key(submission, rng):
    q, k, v = randn(rng, 2, 5, 8), randn(rng, 2, 6, 8), randn(rng, 2, 6, 8)
    mask = random_mask(rng, (2, 5, 6))
    mask[0, 2] = False                    # nothing allowed for this query
    mask[1, 0, 0] = False                 # with causal, query 0 may only see key 0: now nothing
    out, weights = submission.call("attention.scaled_dot_product_attention", q, k, v, mask=mask, causal=True)
    for b, i in ((0, 2), (1, 0)):
        assert torch.equal(weights[b, i], torch.zeros(6)), f"weights of query [{b}, {i}] must be all 0"
        assert torch.equal(out[b, i], torch.zeros(8)), f"output of query [{b}, {i}] must be all 0"
    keep = allowed_keys(5, 6, mask, True).any(-1)
    torch.testing.assert_close(out[keep], reference_output(q, k, v, mask, True)[keep], **TOL[torch.float32])


@pytest.mark.task("1.4")
@pytest.mark.points(4)
@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["plain", "mask_and_causal", "fully_masked_row"])
def test_sdpa_gradcheck(submission, rng, kind):
    q = randn(rng, 2, 3, 4, dtype=torch.float64)
    k = randn(rng, 2, 5, 4, dtype=torch.float64)
    v = randn(rng, 2, 5, 3, dtype=torch.float64)
    mask, causal, scale = None, False, None
    if kind == "mask_and_causal":
        mask, causal, scale = random_mask(rng, (3, 5)), True, 0.7
    elif kind == "fully_masked_row":
        mask = random_mask(rng, (2, 3, 5))
        mask[1, 1] = False
    ok = submission.run(probes.sdpa_gradcheck, q, k, v, mask=mask, causal=causal, scale=scale)
    assert ok is True, "torch.autograd.gradcheck failed: the gradients of your attention disagree with finite differences"


@pytest.mark.task("1.4")
@pytest.mark.points(3)
def test_sdpa_query_finds_its_key(submission, rng):
    """The "it" -> "ball" intuition: a query built to match one key puts its weight there."""
    words = ["the", "ball", "rolled", "away", "because", "it", "was", "round"]
    d = 16
    keys = torch.linalg.qr(randn(rng, d, d, dtype=torch.float64))[0][: len(words)].float()  # orthonormal
    values = randn(rng, len(words), d)
    queries = 0.3 * randn(rng, len(words), d)
    it, ball = words.index("it"), words.index("ball")
    queries[it] = 6 * math.sqrt(d) * keys[ball]      # "it" asks for what "ball" offers
    out, weights = submission.call("attention.scaled_dot_product_attention", queries[None], keys[None], values[None])
    row = weights[0, it]
    assert int(row.argmax()) == ball, f'"it" attends most to "{words[int(row.argmax())]}", expected "ball"'
    assert float(row[ball]) > 0.9, f'"it" puts only {float(row[ball]):.3f} of its weight on "ball" (expected > 0.9)'
    distances = (values - out[0, it]).norm(dim=-1)
    assert int(distances.argmin()) == ball, 'the output of "it" should be (nearly) the value of "ball"'


@pytest.mark.task("1.4")
@pytest.mark.points(2)
def test_sdpa_written_without_torch_attention(submission, rng):
    q, k, v = randn(rng, 2, 5, 8), randn(rng, 2, 7, 8), randn(rng, 2, 7, 8)
    mask = random_mask(rng, (5, 7))
    out, _ = submission.run(probes.call_without_torch_shortcuts, "scaled_dot_product_attention", q, k, v,
                            mask=mask, causal=True)
    torch.testing.assert_close(out, reference_output(q, k, v, mask, True), **TOL[torch.float32])


SPEED_FACTOR = 5.0    # generous: a vectorised version runs at about 1x; a loop over tokens at 15-40x


@pytest.mark.task("1.4")
@pytest.mark.points(3)
@pytest.mark.timeout(120)
def test_sdpa_no_python_loop_over_tokens(submission):
    times = submission.run(probes.time_attention, (2, 4, 128, 32), 7)
    ratio = times["student"] / times["torch"]
    assert ratio <= SPEED_FACTOR, (
        f"your attention took {times['student'] * 1e3:.2f} ms against {times['torch'] * 1e3:.2f} ms for torch's "
        f"(math backend) on batch 2, heads 4, seq 128, head_dim 32: {ratio:.1f}x, more than the {SPEED_FACTOR}x "
        "allowed. Compute all queries at once with batched matrix products, without a Python loop over tokens.")

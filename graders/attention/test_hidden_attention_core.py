"""Hidden tests of part 1: scores, causal mask, masked softmax, scaled dot-product attention.

Oracles (attention_oracle.py, run here): torch's softmax of the masked scores for weights,
``torch.nn.functional.scaled_dot_product_attention`` for outputs, torch's autograd on the oracle
for gradients. Tolerances: float32 rtol 1e-4 / atol 1e-5, float64 rtol 1e-7 / atol 1e-9 (gradients
in float64: rtol 1e-6 / atol 1e-8) unless a test says otherwise. How a function is written ("no
torch softmax", "no Python loop over tokens") is read from the submission's source, here.
"""

import math

import pytest
import torch

import attention_oracle as oracle
import probes
from attention_oracle import TOL, randn, random_mask
from course.grading import static
from course.grading.diagnose import explain, record
from misconceptions import CATALOGUE


def dtype_name(dtype):
    return str(dtype).replace("torch.", "")


# ------------------------------------------------------------------ 1.1 attention_scores

SCORE_CASES = [
    # (q shape, k shape, scale, dtype, id)
    ((5, 8), (7, 8), None, torch.float32, "2-d, default scale, float32"),
    ((2, 3, 4, 16), (2, 3, 6, 16), None, torch.float64, "batch 2 x 3 heads, default scale, float64"),
    ((2, 1, 4, 16), (1, 3, 9, 16), None, torch.float32, "leading dimensions broadcast, float32"),
    ((3, 6, 5), (3, 2, 5), 0.37, torch.float64, "scale 0.37, float64"),
    ((2, 2, 4, 32), (2, 2, 4, 32), 1.0, torch.float32, "scale 1.0, float32"),
    ((1, 1), (3, 1), 2.5, torch.float64, "one query of width 1, scale 2.5"),
    ((2, 4, 6), (2, 5, 6), 0.0, torch.float64, "scale 0.0 (not the default)"),
    ((1, 1, 1, 8), (1, 1, 1, 8), None, torch.float32, "batch 1, one query, one key"),
]


SCORE_MISCONCEPTIONS = (*oracle.SCALE_VARIANTS, "zero_scale_taken_as_default")


@pytest.mark.task("1.1")
@pytest.mark.points(5)
@pytest.mark.parametrize("q_shape,k_shape,scale,dtype", [c[:4] for c in SCORE_CASES], ids=[c[4] for c in SCORE_CASES])
def test_scores_equal_scaled_products(submission, rng, q_shape, k_shape, scale, dtype):
    q, k = randn(rng, *q_shape, dtype=dtype), randn(rng, *k_shape, dtype=dtype)
    out = submission.call("attention.attention_scores", q, k, scale=scale)
    expected = torch.einsum("...id,...jd->...ij", q, k) * (oracle.default_scale(q) if scale is None else scale)
    assert out.dtype == dtype, f"scores should keep the inputs' dtype {dtype}, got {out.dtype}"
    assert out.shape == expected.shape, \
        f"scores of q{q_shape}, k{k_shape}: expected shape {tuple(expected.shape)}, got {tuple(out.shape)}"
    with explain(out, expected, CATALOGUE, what=f"scores q @ k^T * scale ({dtype_name(dtype)}, "
                 f"{'default scale' if scale is None else 'given scale'})",
                 variants=oracle.Unambiguous(oracle.scale_variants(
                     q, k, scale, lambda w: oracle.scores(q, k, w), names=SCORE_MISCONCEPTIONS), expected)):
        oracle.close(out, expected, "scores q @ k^T * scale", **TOL[dtype])


@pytest.mark.task("1.1")
@pytest.mark.points(1)
def test_scores_leave_their_inputs_unchanged(submission, rng):
    q, k = randn(rng, 2, 3, 5, 8), randn(rng, 2, 3, 6, 8)
    out = submission.call_pure("attention.attention_scores", q, k)
    oracle.close(out, oracle.scores(q, k), "scores (after checking the inputs came back unchanged)", **TOL[torch.float32])


# ------------------------------------------------------------------ 1.2 causal_mask

@pytest.mark.task("1.2")
@pytest.mark.points(3)
@pytest.mark.parametrize("n", [1, 2, 7, 33], ids=lambda n: f"{n} position{'s' if n > 1 else ''}")
def test_causal_mask_lower_triangle(submission, n):
    mask = submission.call("attention.causal_mask", n, device="cpu")
    if mask.dtype != torch.bool:
        record(["causal_mask_not_bool"], CATALOGUE, "causal mask: a bool tensor, True exactly where j <= i")
    assert mask.dtype == torch.bool, f"the mask must be bool, got {mask.dtype}"
    assert tuple(mask.shape) == (n, n), f"the mask must have shape {(n, n)}, got {tuple(mask.shape)}"
    expected = oracle.causal_allowed(n, n)
    variants = {name: (lambda kind=kind: oracle.wrong_causal_mask(n, kind)) for name, kind in (
        ("causal_mask_upper", "upper"), ("causal_mask_without_diagonal", -1), ("causal_mask_blocked_polarity", "blocked"))}
    with explain(mask, expected, CATALOGUE, variants=oracle.Unambiguous(variants, expected),
                 what="causal mask: True exactly where j <= i"):
        assert torch.equal(mask, expected), "mask[i, j] must be True exactly when j <= i"


@pytest.mark.task("1.2")
@pytest.mark.points(1)
def test_causal_mask_on_the_requested_device(submission):
    found = submission.run(probes.causal_mask_devices, 5)
    if found["meta"][0] != "meta":
        record(["causal_mask_device_ignored"], CATALOGUE, "causal_mask(n, device=...) creates the mask on that device")
    assert found["meta"] == ("meta", "torch.bool", (5, 5)), \
        f"causal_mask(5, device='meta') should be a bool (5, 5) tensor on meta, got {found['meta']}"
    assert found["none"] == ("cpu", "torch.bool", (5, 5)), \
        f"causal_mask(5) should be on the default device (cpu here), got {found['none']}"


# ------------------------------------------------------------------ 1.3 masked_softmax

SOFTMAX_CASES = [
    # (scores shape, mask shape or None, dtype, id)
    ((4, 6), None, torch.float32, "no mask, 2-d, float32"),
    ((2, 3, 5, 7), None, torch.float64, "no mask, batch 2 x 3 heads, float64"),
    ((2, 3, 5, 7), (5, 7), torch.float32, "one (seq_q, seq_k) mask for all, float32"),
    ((2, 3, 5, 7), (2, 1, 1, 7), torch.float64, "padding mask broadcast over heads and queries, float64"),
    ((2, 3, 5, 7), (2, 3, 5, 7), torch.float32, "a mask per head, float32"),
    ((1, 1, 1, 9), (1, 9), torch.float64, "one query, float64"),
]


def softmax_check(out, scores, mask, dtype, what):
    """Compare with torch's softmax of the masked scores, naming a misconception when one matches."""
    expected = oracle.masked_softmax(scores, mask)
    with explain(out, expected, CATALOGUE, what=what,
                 variants=oracle.Unambiguous(oracle.softmax_variants(scores, mask), expected)):
        oracle.close(out, expected, what, **TOL[dtype])


@pytest.mark.task("1.3")
@pytest.mark.points(4)
@pytest.mark.parametrize("shape,mask_shape,dtype", [c[:3] for c in SOFTMAX_CASES], ids=[c[3] for c in SOFTMAX_CASES])
def test_masked_softmax_equals_torch_softmax(submission, rng, shape, mask_shape, dtype):
    scores = 3 * randn(rng, *shape, dtype=dtype)
    mask = None if mask_shape is None else random_mask(rng, mask_shape)
    out = submission.call("attention.masked_softmax", scores, mask)
    assert out.shape == scores.shape and out.dtype == dtype, \
        f"weights must have the scores' shape {tuple(scores.shape)} and dtype {dtype}, got {tuple(out.shape)} {out.dtype}"
    softmax_check(out, scores, mask, dtype, f"masked softmax over the keys ({dtype_name(dtype)}, "
                  f"{'no mask' if mask is None else 'with a mask'})")


@pytest.mark.task("1.3")
@pytest.mark.points(3)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=dtype_name)
def test_masked_softmax_extreme_scores(submission, rng, dtype):
    scores = 1e4 * randn(rng, 3, 6, 8, dtype=dtype).clamp(-1, 1)
    scores[0, 0] = torch.tensor([1e4, 1e4 - 1, 1e4 - 2, -1e4, -1e4, 0.0, 5.0, 1e4 - 0.5], dtype=dtype)
    scores[1, 1] = -1e4
    scores[2, 2] = torch.tensor([-1e4, -1e4 + 1, -1e4 + 3, -1e4, -1e4, -1e4 + 2, -1e4, -1e4], dtype=dtype)
    mask = random_mask(rng, (3, 6, 8))
    for m in (None, mask):
        out = submission.allow_nonfinite().call("attention.masked_softmax", scores, m)
        expected = oracle.masked_softmax(scores, m)
        variants = {name: (lambda f=f: oracle.nonfinite_view(f()))
                    for name, f in oracle.softmax_variants(scores, m).items()}
        with explain(oracle.nonfinite_view(out), oracle.nonfinite_view(expected), CATALOGUE,
                     variants=oracle.Unambiguous(variants, oracle.nonfinite_view(expected)),
                     what=f"masked softmax of scores around +-1e4 ({dtype_name(dtype)}): finite and exact"):
            assert bool(torch.isfinite(out).all()), "scores of about +-1e4 must not produce NaN or infinity"
            oracle.close(out, expected, "masked softmax of scores around +-1e4", **TOL[dtype])


@pytest.mark.task("1.3")
@pytest.mark.points(2)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=dtype_name)
def test_masked_softmax_fully_masked_rows_are_zero(submission, rng, dtype):
    scores = randn(rng, 2, 4, 5, dtype=dtype)
    mask = random_mask(rng, (2, 4, 5))
    mask[0, 1] = False
    mask[1, 3] = False
    out = submission.allow_nonfinite().call("attention.masked_softmax", scores, mask)
    expected = oracle.masked_softmax(scores, mask)
    variants = {name: (lambda f=f: oracle.nonfinite_view(f()))
                for name, f in oracle.softmax_variants(scores, mask).items()}
    with explain(oracle.nonfinite_view(out), oracle.nonfinite_view(expected), CATALOGUE,
                 variants=oracle.Unambiguous(variants, oracle.nonfinite_view(expected)),
                 what=f"masked softmax with rows that allow no key ({dtype_name(dtype)}): those rows all zero"):
        for b, i in ((0, 1), (1, 3)):
            assert torch.equal(out[b, i], torch.zeros(5, dtype=dtype)), \
                f"row [{b}, {i}] allows no key: its weights must be all 0"
        oracle.close(out, expected, "masked softmax with fully masked rows", **TOL[dtype])


@pytest.mark.task("1.3")
@pytest.mark.points(1)
def test_masked_softmax_leaves_its_inputs_unchanged(submission, rng):
    scores = randn(rng, 2, 5, 7)
    mask = random_mask(rng, (2, 5, 7))
    out = submission.call_pure("attention.masked_softmax", scores, mask)
    oracle.close(out, oracle.masked_softmax(scores, mask), "masked softmax (after checking the inputs came back unchanged)",
                 **TOL[torch.float32])


@pytest.mark.task("1.3")
@pytest.mark.points(2)
def test_masked_softmax_written_without_torch_softmax(submission, rng):
    scores = randn(rng, 3, 4, 6)
    mask = random_mask(rng, (4, 6))
    out = submission.call("attention.masked_softmax", scores, mask)
    oracle.close(out, oracle.masked_softmax(scores, mask), "masked softmax values (checked before reading the source)",
                 **TOL[torch.float32])
    found = static.forbidden_uses(static.SourceIndex(submission.root), "attention.masked_softmax", static.TORCH_SOFTMAX)
    if found:
        record(oracle.source_facts(found), CATALOGUE, "masked_softmax written without torch's softmax (read from the source)")
    assert not found, "masked_softmax must be written without torch's softmax: " + static.describe(found)


# ------------------------------------------------------------------ 1.4 scaled_dot_product_attention

SDPA_CASES = [
    # (lead dims, seq_q, seq_k, d, d_v, dtype, mask shape or None, causal, scale, id)
    ((), 5, 5, 8, 8, torch.float32, None, False, None, "2-d, float32"),
    ((2,), 4, 9, 16, 16, torch.float64, None, False, None, "batch 2, more keys than queries, float64"),
    ((2, 3), 6, 6, 8, 4, torch.float32, None, True, None, "batch 2 x 3 heads, causal, d_v != d"),
    ((2, 3), 5, 8, 8, 8, torch.float64, None, True, None, "causal with fewer queries than keys, float64"),
    ((2, 3), 8, 5, 8, 8, torch.float32, None, True, None, "causal with more queries than keys, float32"),
    ((2, 4), 7, 7, 16, 16, torch.float32, (7, 7), False, None, "square mask, float32"),
    ((3, 2), 6, 10, 8, 8, torch.float64, (3, 1, 1, 10), False, 0.5, "padding mask, scale 0.5, float64"),
    ((2, 2), 7, 7, 8, 8, torch.float32, (2, 2, 7, 7), True, None, "mask per head and causal, float32"),
    ((1, 4), 5, 5, 32, 32, torch.float64, (5, 5), True, 0.1, "mask and causal, scale 0.1, float64"),
    ((4,), 3, 11, 4, 6, torch.float32, None, False, 2.0, "scale 2.0, float32"),
    ((2, 2), 5, 8, 8, 8, torch.float64, (5, 8), True, None, "non-square mask and causal, float64"),
    ((1, 1), 1, 6, 8, 8, torch.float32, None, False, None, "batch 1, one query"),
    ((2,), 4, 6, 8, 8, torch.float64, None, False, 0.0, "scale 0.0: uniform weights, float64"),
]


def sdpa_what(dtype, mask, causal, scale):
    parts = [dtype_name(dtype), "default scale" if scale is None else "given scale"]
    if mask is not None:
        parts.append("with a mask")
    if causal:
        parts.append("causal")
    return ", ".join(parts)


@pytest.mark.task("1.4")
@pytest.mark.points(12)
@pytest.mark.parametrize("lead,seq_q,seq_k,d,d_v,dtype,mask_shape,causal,scale",
                         [c[:9] for c in SDPA_CASES], ids=[c[9] for c in SDPA_CASES])
def test_sdpa_equals_torch(submission, rng, lead, seq_q, seq_k, d, d_v, dtype, mask_shape, causal, scale):
    q = randn(rng, *lead, seq_q, d, dtype=dtype)
    k = randn(rng, *lead, seq_k, d, dtype=dtype)
    v = randn(rng, *lead, seq_k, d_v, dtype=dtype)
    mask = None if mask_shape is None else random_mask(rng, mask_shape)
    out, weights = submission.call("attention.scaled_dot_product_attention", q, k, v,
                                   mask=mask, causal=causal, scale=scale)
    expected_out, expected_weights = oracle.attention(q, k, v, mask, causal, scale)
    assert out.shape == expected_out.shape, f"output: expected shape {tuple(expected_out.shape)}, got {tuple(out.shape)}"
    assert weights.shape == expected_weights.shape, \
        f"weights: expected shape {tuple(expected_weights.shape)}, got {tuple(weights.shape)}"
    assert out.dtype == dtype and weights.dtype == dtype, f"output and weights must be {dtype}"
    what = sdpa_what(dtype, mask, causal, scale)
    with explain(weights, expected_weights, CATALOGUE, what="attention weights (" + what + ")",
                 variants=oracle.Unambiguous(oracle.attention_variants(q, k, v, mask, causal, scale, lambda o, w: w),
                                             expected_weights)):
        oracle.close(weights, expected_weights, "attention weights", **TOL[dtype])
    with explain(out, expected_out, CATALOGUE, what="attention output (" + what + ")",
                 variants=oracle.Unambiguous(oracle.attention_variants(q, k, v, mask, causal, scale, lambda o, w: o),
                                             expected_out)):
        oracle.close(out, oracle.torch_sdpa(q, k, v, mask, causal, scale), "attention output vs torch's SDPA", **TOL[dtype])


@pytest.mark.task("1.4")
@pytest.mark.points(3)
@pytest.mark.parametrize("seq_q,seq_k", [(6, 6), (4, 7)], ids=["6 queries, 6 keys", "4 queries, 7 keys"])
def test_sdpa_weight_rows_sum_to_one_and_causal_zeros(submission, rng, seq_q, seq_k):
    q, k, v = randn(rng, 2, 3, seq_q, 8), randn(rng, 2, 3, seq_k, 8), randn(rng, 2, 3, seq_k, 8)
    _, weights = submission.call("attention.scaled_dot_product_attention", q, k, v, causal=True)
    assert weights.shape == (2, 3, seq_q, seq_k), f"weights: expected shape {(2, 3, seq_q, seq_k)}, got {tuple(weights.shape)}"
    expected = oracle.attention(q, k, v, causal=True)[1]
    variants = oracle.Unambiguous(oracle.attention_variants(q, k, v, None, True, None, lambda o, w: w), expected)
    with explain(weights, expected, CATALOGUE, variants=variants,
                 what="causal weights: rows sum to 1, exactly 0 above the diagonal, > 0 on and below it"):
        oracle.close(weights.sum(-1), torch.ones(2, 3, seq_q), "row sums of the causal weights", rtol=0, atol=1e-5)
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
    out, weights = submission.allow_nonfinite().call("attention.scaled_dot_product_attention", q, k, v,
                                                     mask=mask, causal=True)
    expected_out, expected_weights = oracle.attention(q, k, v, mask, True)
    def both(o, w):
        return oracle.nonfinite_view(o), oracle.nonfinite_view(w)
    variants = oracle.Unambiguous(oracle.attention_variants(q, k, v, mask, True, None, both),
                                  both(expected_out, expected_weights))
    with explain(both(out, weights), both(expected_out, expected_weights), CATALOGUE, variants=variants,
                 what="attention with queries that may attend to nothing: zero weights and zero output"):
        for b, i in ((0, 2), (1, 0)):
            assert torch.equal(weights[b, i], torch.zeros(6)), f"weights of query [{b}, {i}] must be all 0"
            assert torch.equal(out[b, i], torch.zeros(8)), f"output of query [{b}, {i}] must be all 0"
        oracle.close(out, expected_out, "output, including the queries that may attend to nothing", **TOL[torch.float32])
        oracle.close(weights, expected_weights, "weights, including the queries that may attend to nothing",
                     **TOL[torch.float32])


GRAD_CASES = ["no mask", "mask, causal and scale 0.7", "a fully masked row"]


@pytest.mark.task("1.4")
@pytest.mark.points(4)
@pytest.mark.parametrize("kind", GRAD_CASES)
def test_sdpa_gradients_equal_autograd_of_the_reference(submission, rng, kind):
    q = randn(rng, 2, 3, 4, dtype=torch.float64)
    k = randn(rng, 2, 5, 4, dtype=torch.float64)
    v = randn(rng, 2, 5, 3, dtype=torch.float64)
    grad_out = randn(rng, 2, 3, 3, dtype=torch.float64)
    mask, causal, scale = None, False, None
    if kind == "mask, causal and scale 0.7":
        mask, causal, scale = random_mask(rng, (3, 5)), True, 0.7
    elif kind == "a fully masked row":
        mask = random_mask(rng, (2, 3, 5))
        mask[1, 1] = False
    got = submission.run(probes.sdpa_gradients, q, k, v, grad_out, mask=mask, causal=causal, scale=scale)
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    expected_out, _ = oracle.attention(*leaves, mask=mask, causal=causal, scale=scale)
    expected_grads = torch.autograd.grad((expected_out * grad_out).sum(), leaves)
    oracle.close(got["out"], expected_out.detach(), "output of the pass whose gradients are compared", **TOL[torch.float64])
    for name, grad, expected in zip("qkv", got["grads"], expected_grads):
        assert grad is not None, f"no gradient reached {name}: the output must be differentiable in q, k and v"
        torch.testing.assert_close(grad, expected, **oracle.GRAD_TOL[torch.float64],
                                   msg=lambda m, n=name: f"gradient for {n} vs autograd of the reference\n" + m)


@pytest.mark.task("1.4")
@pytest.mark.points(2)
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
@pytest.mark.points(1)
def test_sdpa_leaves_its_inputs_unchanged(submission, rng):
    q, k, v = randn(rng, 2, 3, 5, 8), randn(rng, 2, 3, 7, 8), randn(rng, 2, 3, 7, 8)
    mask = random_mask(rng, (5, 7))
    out, _ = submission.call_pure("attention.scaled_dot_product_attention", q, k, v, mask=mask, causal=True)
    oracle.close(out, oracle.attention(q, k, v, mask, True)[0], "output (after checking the inputs came back unchanged)",
                 **TOL[torch.float32])


@pytest.mark.task("1.4")
@pytest.mark.points(1)
def test_sdpa_follows_its_inputs_device_and_strides(submission, rng):
    """Meta tensors (no values) expose a mask built on the default device; strided views expose .view."""
    found = submission.run(probes.sdpa_on_meta, (2, 3), 5, 7, 8, (5, 7), True)
    assert found == {"out": ("meta", (2, 3, 5, 8)), "weights": ("meta", (2, 3, 5, 7))}, \
        f"attention of meta inputs (causal, with a mask) should stay on meta with the right shapes, got {found}"
    q, k, v = randn(rng, 2, 3, 5, 8), randn(rng, 2, 3, 7, 8), randn(rng, 2, 3, 7, 8)
    out, weights = submission.run(probes.call_on_strided, "scaled_dot_product_attention", [q, k, v],
                                  ["transposed", "sliced", "heads"], {"causal": True})
    expected_out, expected_weights = oracle.attention(q, k, v, None, True)
    oracle.close(out, expected_out, "output for non-contiguous q, k, v views", **TOL[torch.float32])
    oracle.close(weights, expected_weights, "weights for non-contiguous q, k, v views", **TOL[torch.float32])


@pytest.mark.task("1.4")
@pytest.mark.points(2)
def test_sdpa_written_without_torch_attention(submission, rng):
    q, k, v = randn(rng, 2, 5, 8), randn(rng, 2, 7, 8), randn(rng, 2, 7, 8)
    mask = random_mask(rng, (5, 7))
    out, _ = submission.call("attention.scaled_dot_product_attention", q, k, v, mask=mask, causal=True)
    oracle.close(out, oracle.torch_sdpa(q, k, v, mask, True), "output (checked before reading the source)", **TOL[torch.float32])
    found = static.forbidden_uses(static.SourceIndex(submission.root), "attention.scaled_dot_product_attention",
                                  static.TORCH_SOFTMAX | static.TORCH_ATTENTION)
    if found:
        record(oracle.source_facts(found), CATALOGUE,
               "scaled_dot_product_attention written without torch's attention or softmax (read from the source)")
    assert not found, "scaled_dot_product_attention must not call torch's attention or softmax: " + static.describe(found)


@pytest.mark.task("1.4")
@pytest.mark.points(3)
def test_sdpa_no_python_loop_over_tokens(submission, rng):
    """Read from the source: no for/while/comprehension/map in scaled_dot_product_attention or in
    anything it calls (iterating over a literal tuple or over .shape is fine)."""
    q, k, v = randn(rng, 2, 3, 9, 8), randn(rng, 2, 3, 9, 8), randn(rng, 2, 3, 9, 8)
    out, _ = submission.call("attention.scaled_dot_product_attention", q, k, v, causal=True)
    oracle.close(out, oracle.torch_sdpa(q, k, v, None, True), "output (checked before reading the source)", **TOL[torch.float32])
    found = static.python_loops(static.SourceIndex(submission.root), "attention.scaled_dot_product_attention")
    if found:
        record(oracle.source_facts(found), CATALOGUE,
               "no Python loop in scaled_dot_product_attention or what it calls (read from the source)")
    assert not found, ("scaled_dot_product_attention (and what it calls) must compute all queries at once, "
                       "without a Python loop: " + static.describe(found))

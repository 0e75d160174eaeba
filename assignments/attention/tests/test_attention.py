"""Public tests of `attention`. Run `pytest` in the assignment folder, or `course check attention`.

Hidden tests check the same things more thoroughly (more shapes, dtypes, masks, gradients, and the
properties listed in README.md).
"""

import math

import pytest
import torch
import torch.nn.functional as F

import attention_probes


@pytest.mark.task("1.1")
@pytest.mark.points(2)
def test_scores_of_a_small_example(submission):
    q = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 2.0, 0.0, 0.0]])
    k = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 1.0, 0.0, -1.0], [2.0, 0.0, 0.0, 0.0]])
    dots = torch.tensor([[2.0, 0.0, 2.0], [2.0, 2.0, 0.0]])
    out = submission.call("attention.attention_scores", q, k)
    torch.testing.assert_close(out, dots / math.sqrt(4))    # default scale: 1 / sqrt(d)
    out = submission.call("attention.attention_scores", q, k, scale=0.1)
    torch.testing.assert_close(out, dots * 0.1)


@pytest.mark.task("1.2")
@pytest.mark.points(2)
def test_causal_mask_of_four_tokens(submission):
    mask = submission.call("attention.causal_mask", 4)
    expected = torch.tensor([[1, 0, 0, 0],
                             [1, 1, 0, 0],
                             [1, 1, 1, 0],
                             [1, 1, 1, 1]], dtype=torch.bool)
    assert mask.dtype == torch.bool, f"the mask must be bool, got {mask.dtype}"
    assert torch.equal(mask, expected)


@pytest.mark.task("1.3")
@pytest.mark.points(3)
def test_masked_softmax_basics(submission):
    scores = torch.tensor([[1.0, 2.0, 3.0], [1e4, 0.0, -1e4], [0.5, 0.5, 0.5]])
    out = submission.call("attention.masked_softmax", scores)
    torch.testing.assert_close(out, torch.softmax(scores, dim=-1))
    mask = torch.tensor([[True, False, True], [False, True, True], [False, False, False]])
    out = submission.call("attention.masked_softmax", scores, mask)
    assert torch.equal(out[~mask], torch.zeros(int((~mask).sum()))), "masked-out keys must get weight exactly 0"
    assert torch.equal(out[2], torch.zeros(3)), "a row that may attend to nothing must be all zeros, not NaN"
    torch.testing.assert_close(out[:2].sum(-1), torch.ones(2))


@pytest.mark.task("1.4")
@pytest.mark.points(3)
def test_attention_matches_torch(submission):
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 8, generator=gen) for _ in range(3))
    out, weights = submission.call("attention.scaled_dot_product_attention", q, k, v, causal=True)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=True), rtol=1e-4, atol=1e-5)
    assert weights.shape == (2, 3, 5, 5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 5))
    assert bool((weights[..., 0, 1:] == 0).all()), "with causal=True the first token may only attend to itself"


@pytest.mark.task("2.1")
@pytest.mark.points(2)
def test_split_heads_shape_and_first_head(submission):
    x = torch.arange(2 * 3 * 8, dtype=torch.float32).reshape(2, 3, 8)
    out = submission.call("attention.split_heads", x, 4)
    assert tuple(out.shape) == (2, 4, 3, 2)
    assert torch.equal(out[:, 0], x[:, :, 0:2]), "head 0 must hold the first head_dim features of every token"


@pytest.mark.task("2.2")
@pytest.mark.points(2)
def test_merge_heads_undoes_split(submission):
    x = torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(1))
    heads = x.reshape(2, 3, 4, 2).transpose(1, 2)
    assert torch.equal(submission.call("attention.merge_heads", heads), x)


@pytest.mark.task("2.3")
@pytest.mark.points(4)
def test_multihead_matches_torch(submission):
    gen = torch.Generator().manual_seed(2)
    d_model, heads = 8, 2
    reference = torch.nn.MultiheadAttention(d_model, heads, batch_first=True).eval()
    with torch.no_grad():
        reference.in_proj_bias.copy_(0.1 * torch.randn(3 * d_model, generator=gen))
    w, b = reference.in_proj_weight.detach(), reference.in_proj_bias.detach()
    weights = {"q_proj.weight": w[:d_model], "k_proj.weight": w[d_model:2 * d_model], "v_proj.weight": w[2 * d_model:],
               "q_proj.bias": b[:d_model], "k_proj.bias": b[d_model:2 * d_model], "v_proj.bias": b[2 * d_model:],
               "out_proj.weight": reference.out_proj.weight.detach(), "out_proj.bias": reference.out_proj.bias.detach()}
    x = torch.randn(2, 5, d_model, generator=gen)
    out, attn = submission.run(attention_probes.run_multihead, d_model, heads, weights, x, causal=True)
    blocked = ~torch.ones(5, 5, dtype=torch.bool).tril()          # torch's bool masks: True = blocked
    with torch.no_grad():
        expected, expected_attn = reference(x, x, x, attn_mask=blocked, average_attn_weights=False)
    torch.testing.assert_close(attn, expected_attn, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.task("2.3")
@pytest.mark.points(2)
def test_multihead_needs_divisible_heads(submission):
    names = submission.run(attention_probes.build_multihead, 8, 2)
    assert "q_proj.weight" in names and "out_proj.weight" in names, f"parameters found: {names}"
    # the message must name both numbers: a regex that finds "10" and "3" as whole numbers, in any order
    with pytest.raises(ValueError, match=r"(?s)(?=.*\b10\b)(?=.*\b3\b)"):
        submission.run(attention_probes.build_multihead, 10, 3)

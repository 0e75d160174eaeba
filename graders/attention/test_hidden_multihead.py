"""Hidden tests of part 2: split_heads, merge_heads, MultiHeadAttention.

Oracle: ``torch.nn.MultiheadAttention(batch_first=True)`` with its ``in_proj_weight`` /
``in_proj_bias`` / ``out_proj`` copied into the student's four projections. Tolerances: float32
rtol 1e-4 / atol 1e-5, float64 rtol 1e-7 / atol 1e-9.
"""

import math

import pytest
import torch

import probes

TOL = {torch.float32: dict(rtol=1e-4, atol=1e-5), torch.float64: dict(rtol=1e-7, atol=1e-9)}


def randn(rng, *shape, dtype=torch.float32):
    return torch.randn(*shape, generator=rng, dtype=dtype)


# ------------------------------------------------------------------ 2.1 / 2.2 head layout

HEAD_CASES = [(2, 5, 12, 3), (1, 1, 8, 8), (3, 4, 16, 1), (2, 7, 64, 4)]   # batch, seq, d_model, heads


@pytest.mark.task("2.1")
@pytest.mark.points(4)
@pytest.mark.parametrize("batch,seq,d_model,heads", HEAD_CASES)
def test_split_heads_gives_each_head_its_slice(submission, rng, batch, seq, d_model, heads):
    x = randn(rng, batch, seq, d_model)
    out = submission.call("attention.split_heads", x, heads)
    head_dim = d_model // heads
    assert tuple(out.shape) == (batch, heads, seq, head_dim), \
        f"split_heads of {tuple(x.shape)} into {heads} heads: expected shape {(batch, heads, seq, head_dim)}, got {tuple(out.shape)}"
    for h in range(heads):
        assert torch.equal(out[:, h], x[:, :, h * head_dim:(h + 1) * head_dim]), \
            f"head {h} must hold features {h * head_dim}..{(h + 1) * head_dim - 1} of every token"


@pytest.mark.task("2.2")
@pytest.mark.points(4)
@pytest.mark.parametrize("batch,seq,d_model,heads", HEAD_CASES)
def test_merge_heads_puts_slices_side_by_side(submission, rng, batch, seq, d_model, heads):
    head_dim = d_model // heads
    x = randn(rng, batch, heads, seq, head_dim)
    out = submission.call("attention.merge_heads", x)
    assert tuple(out.shape) == (batch, seq, d_model), f"expected shape {(batch, seq, d_model)}, got {tuple(out.shape)}"
    for h in range(heads):
        assert torch.equal(out[:, :, h * head_dim:(h + 1) * head_dim], x[:, h]), \
            f"features {h * head_dim}..{(h + 1) * head_dim - 1} of every token must come from head {h}"


# ------------------------------------------------------------------ 2.3 MultiHeadAttention

def torch_mha(rng, d_model, heads, bias, dtype):
    """A torch MultiheadAttention with rng-drawn weights, and the same weights as the student's projections."""
    mha = torch.nn.MultiheadAttention(d_model, heads, bias=bias, batch_first=True, dtype=dtype).eval()
    state = {}
    with torch.no_grad():
        mha.in_proj_weight.copy_(randn(rng, 3 * d_model, d_model, dtype=dtype) / math.sqrt(d_model))
        mha.out_proj.weight.copy_(randn(rng, d_model, d_model, dtype=dtype) / math.sqrt(d_model))
        w = mha.in_proj_weight
        state.update({"q_proj.weight": w[:d_model], "k_proj.weight": w[d_model:2 * d_model],
                      "v_proj.weight": w[2 * d_model:], "out_proj.weight": mha.out_proj.weight})
        if bias:
            mha.in_proj_bias.copy_(0.1 * randn(rng, 3 * d_model, dtype=dtype))
            mha.out_proj.bias.copy_(0.1 * randn(rng, d_model, dtype=dtype))
            b = mha.in_proj_bias
            state.update({"q_proj.bias": b[:d_model], "k_proj.bias": b[d_model:2 * d_model],
                          "v_proj.bias": b[2 * d_model:], "out_proj.bias": mha.out_proj.bias})
    return mha, {name: t.detach().clone() for name, t in state.items()}


MHA_CASES = ["plain", "no_bias", "float64", "causal", "square_mask", "padding_mask", "per_head_mask"]


@pytest.mark.task("2.3")
@pytest.mark.points(10)
@pytest.mark.parametrize("case", MHA_CASES)
def test_mha_equals_torch_multiheadattention(submission, rng, case):
    batch, seq, d_model, heads = 3, 6, 16, 4
    dtype = torch.float64 if case == "float64" else torch.float32
    bias = case != "no_bias"
    mha, state = torch_mha(rng, d_model, heads, bias, dtype)
    x = randn(rng, batch, seq, d_model, dtype=dtype)
    eye = torch.eye(seq, dtype=torch.bool)      # every query may attend to itself: no fully-masked row
    mask, causal, torch_kwargs = None, False, {}
    if case == "causal":
        causal = True
        torch_kwargs["attn_mask"] = ~torch.ones(seq, seq, dtype=torch.bool).tril()   # torch: True = blocked
    elif case == "square_mask":
        mask = (torch.rand(seq, seq, generator=rng) < 0.5) | eye
        torch_kwargs["attn_mask"] = ~mask
    elif case == "padding_mask":
        pad = torch.ones(batch, seq, dtype=torch.bool)
        pad[0, 4:] = False
        pad[2, 2:] = False
        mask = pad[:, None, None, :]
        torch_kwargs["key_padding_mask"] = ~pad
    elif case == "per_head_mask":
        mask = (torch.rand(batch, heads, seq, seq, generator=rng) < 0.5) | eye
        torch_kwargs["attn_mask"] = ~mask.reshape(batch * heads, seq, seq)
    out, weights = submission.run(probes.mha_forward, d_model, heads, bias, state, x, mask=mask, causal=causal)
    with torch.no_grad():
        expected, expected_weights = mha(x, x, x, need_weights=True, average_attn_weights=False, **torch_kwargs)
    assert tuple(out.shape) == (batch, seq, d_model), f"out: expected shape {(batch, seq, d_model)}, got {tuple(out.shape)}"
    assert tuple(weights.shape) == (batch, heads, seq, seq), \
        f"weights: expected shape {(batch, heads, seq, seq)}, got {tuple(weights.shape)}"
    torch.testing.assert_close(weights, expected_weights, **TOL[dtype])
    torch.testing.assert_close(out, expected, **TOL[dtype])


@pytest.mark.task("2.3")
@pytest.mark.points(3)
@pytest.mark.parametrize("bias", [True, False])
def test_mha_parameters_are_the_four_projections(submission, bias):
    d_model = 24
    found = submission.run(probes.mha_parameters, d_model, 6, bias)
    assert found["is_module"], "MultiHeadAttention must be a torch.nn.Module"
    expected = {f"{p}.weight": ((d_model, d_model), True) for p in ("q_proj", "k_proj", "v_proj", "out_proj")}
    if bias:
        expected.update({f"{p}.bias": ((d_model,), True) for p in ("q_proj", "k_proj", "v_proj", "out_proj")})
    assert found["parameters"] == expected, f"parameters (name: (shape, trainable)) should be {expected}, got {found['parameters']}"
    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
        assert found["children"].get(name) == "Linear", f"{name} must be an nn.Linear"


@pytest.mark.task("2.3")
@pytest.mark.points(3)
@pytest.mark.timeout(60)
@pytest.mark.parametrize("causal", [False, True])
def test_mha_gradcheck(submission, rng, causal):
    _, state = torch_mha(rng, 8, 2, True, torch.float64)
    x = randn(rng, 2, 3, 8, dtype=torch.float64)
    mask = None if causal else torch.tensor([[True, True, False], [False, True, True], [True, False, True]])
    ok = submission.run(probes.mha_gradcheck, 8, 2, state, x, mask=mask, causal=causal)
    assert ok is True, "torch.autograd.gradcheck failed: the gradients of your MultiHeadAttention disagree with finite differences"


@pytest.mark.task("2.3")
@pytest.mark.points(2)
@pytest.mark.parametrize("d_model,heads", [(10, 3), (16, 5)])
def test_mha_rejects_heads_that_do_not_divide(submission, d_model, heads):
    with pytest.raises(ValueError, match=rf"(?s)(?=.*\b{d_model}\b)(?=.*\b{heads}\b)"):
        submission.run(probes.mha_construct, d_model, heads)

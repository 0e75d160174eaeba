"""Hidden tests of part 2: split_heads, merge_heads, MultiHeadAttention.

Oracle: ``torch.nn.MultiheadAttention(batch_first=True)`` with its ``in_proj_weight`` /
``in_proj_bias`` / ``out_proj`` copied into the student's four projections, and torch's autograd on
it for gradients. Tolerances: float32 rtol 1e-4 / atol 1e-5, float64 rtol 1e-7 / atol 1e-9
(gradients in float64: rtol 1e-6 / atol 1e-8).
"""

import math
import re

import pytest
import torch

import attention_oracle as oracle
import probes
from attention_oracle import TOL, randn
from course.grading import static
from course.grading.diagnose import explain, record
from course.grading.failures import SubmissionError
from misconceptions import CATALOGUE

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "out_proj")


# ------------------------------------------------------------------ 2.1 / 2.2 head layout

HEAD_CASES = [(2, 5, 12, 3), (1, 1, 8, 8), (3, 4, 16, 1), (2, 7, 64, 4)]   # batch, seq, d_model, heads


def head_case_id(case):
    batch, seq, d_model, heads = case
    return f"batch {batch}, seq {seq}, d_model {d_model}, {heads} head{'s' if heads > 1 else ''}"


def split_reference(x, heads, layout="right"):
    batch, seq, d_model = x.shape
    if layout == "right":
        return x.reshape(batch, seq, heads, d_model // heads).transpose(1, 2)
    if layout == "no_transpose":
        return x.reshape(batch, heads, seq, d_model // heads)
    return x.reshape(batch, seq, d_model // heads, heads).permute(0, 3, 1, 2)


def merge_reference(x, layout="right"):
    batch, heads, seq, head_dim = x.shape
    if layout == "right":
        return x.transpose(1, 2).reshape(batch, seq, heads * head_dim)
    if layout == "no_transpose":
        return x.reshape(batch, seq, heads * head_dim)
    return x.permute(0, 2, 3, 1).reshape(batch, seq, heads * head_dim)


@pytest.mark.task("2.1")
@pytest.mark.points(3)
@pytest.mark.parametrize("batch,seq,d_model,heads", HEAD_CASES, ids=[head_case_id(c) for c in HEAD_CASES])
def test_split_heads_gives_each_head_its_slice(submission, rng, batch, seq, d_model, heads):
    x = randn(rng, batch, seq, d_model)
    out = submission.call("attention.split_heads", x, heads)
    head_dim = d_model // heads
    assert tuple(out.shape) == (batch, heads, seq, head_dim), \
        f"split_heads of {tuple(x.shape)} into {heads} heads: expected shape {(batch, heads, seq, head_dim)}, got {tuple(out.shape)}"
    variants = {"split_without_transpose": lambda: split_reference(x, heads, "no_transpose"),
                "split_interleaved": lambda: split_reference(x, heads, "interleaved")}
    with explain(out, split_reference(x, heads), CATALOGUE, variants=oracle.Unambiguous(variants, split_reference(x, heads)),
                 what="split_heads: head h holds features h*head_dim .. (h+1)*head_dim - 1 of every token"):
        for h in range(heads):
            assert torch.equal(out[:, h], x[:, :, h * head_dim:(h + 1) * head_dim]), \
                f"head {h} must hold features {h * head_dim}..{(h + 1) * head_dim - 1} of every token"


@pytest.mark.task("2.1")
@pytest.mark.points(1)
def test_split_heads_of_a_non_contiguous_input(submission, rng):
    """x as a transposed view (as a projection with a transposed weight can return it): .view fails on it."""
    x = randn(rng, 2, 5, 12)
    out = submission.run(probes.call_on_strided, "split_heads", [x], ["transposed"], {"n_heads": 3})
    assert torch.equal(out, split_reference(x, 3)), "split_heads of a non-contiguous x must give the same heads"


@pytest.mark.task("2.2")
@pytest.mark.points(4)
@pytest.mark.parametrize("batch,seq,d_model,heads", HEAD_CASES, ids=[head_case_id(c) for c in HEAD_CASES])
def test_merge_heads_puts_slices_side_by_side(submission, rng, batch, seq, d_model, heads):
    head_dim = d_model // heads
    x = randn(rng, batch, heads, seq, head_dim)
    out = submission.call("attention.merge_heads", x)
    assert tuple(out.shape) == (batch, seq, d_model), f"expected shape {(batch, seq, d_model)}, got {tuple(out.shape)}"
    variants = {"merge_without_transpose": lambda: merge_reference(x, "no_transpose"),
                "merge_interleaved": lambda: merge_reference(x, "interleaved")}
    with explain(out, merge_reference(x), CATALOGUE, variants=oracle.Unambiguous(variants, merge_reference(x)),
                 what="merge_heads: features h*head_dim .. (h+1)*head_dim - 1 of every token come from head h"):
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


def linear(x, state, name):
    out = x @ state[f"{name}.weight"].T
    return out + state[f"{name}.bias"] if f"{name}.bias" in state else out


def mha_reference(state, heads, x, mask=None, causal=False, *, scale=None, values="v_proj", out_proj=True,
                  average=False, split="right", merge="right"):
    """The module written here with the oracle's attention, with knobs for the misconception variants."""
    q, k, v = (split_reference(linear(x, state, name), heads, split) for name in ("q_proj", "k_proj", values))
    out, weights = oracle.attention(q, k, v, mask, causal, scale)
    merged = merge_reference(out, merge)
    return (linear(merged, state, "out_proj") if out_proj else merged), (weights.mean(1) if average else weights)


def mha_variants(state, heads, x, mask, causal, pick):
    """Wrong modules on the same inputs: the attention-level misconceptions inside the right module,
    and the module-level ones (head layout, projections, returned weights)."""
    d_model = x.shape[-1]
    q, k, v = (split_reference(linear(x, state, name), heads) for name in ("q_proj", "k_proj", "v_proj"))

    def finish(o, w):
        return pick(linear(merge_reference(o), state, "out_proj"), w)
    out = dict(oracle.attention_variants(q, k, v, mask, causal, None, finish))

    def make(**knobs):
        return lambda: pick(*mha_reference(state, heads, x, mask, causal, **knobs))
    out.update({"weights_averaged_over_heads": make(average=True), "no_output_projection": make(out_proj=False),
                "values_from_key_projection": make(values="k_proj"),
                "scale_by_d_model": make(scale=1 / math.sqrt(d_model)),
                "split_without_transpose": make(split="no_transpose"), "split_interleaved": make(split="interleaved"),
                "merge_without_transpose": make(merge="no_transpose"), "merge_interleaved": make(merge="interleaved"),
                "module_ignores_causal": lambda: pick(*mha_reference(state, heads, x, mask, False)),
                "module_ignores_mask": lambda: pick(*mha_reference(state, heads, x, None, causal))})
    return oracle.Unambiguous(out, pick(*mha_reference(state, heads, x, mask, causal)))


MHA_CASES = ["plain", "no bias", "float64", "causal", "square mask", "padding mask", "mask per head", "batch 1, one token"]


@pytest.mark.task("2.3")
@pytest.mark.points(9)
@pytest.mark.parametrize("case", MHA_CASES)
def test_mha_equals_torch_multiheadattention(submission, rng, case):
    batch, seq, d_model, heads = (1, 1, 24, 4) if case == "batch 1, one token" else (3, 6, 24, 4)
    dtype = torch.float64 if case == "float64" else torch.float32
    bias = case != "no bias"
    mha, state = torch_mha(rng, d_model, heads, bias, dtype)
    x = randn(rng, batch, seq, d_model, dtype=dtype)
    eye = torch.eye(seq, dtype=torch.bool)      # every query may attend to itself: no fully-masked row
    mask, causal, torch_kwargs = None, False, {}
    if case == "causal":
        causal = True
        torch_kwargs["attn_mask"] = ~torch.ones(seq, seq, dtype=torch.bool).tril()   # torch: True = blocked
    elif case == "square mask":
        mask = (torch.rand(seq, seq, generator=rng) < 0.5) | eye
        torch_kwargs["attn_mask"] = ~mask
    elif case == "padding mask":
        pad = torch.ones(batch, seq, dtype=torch.bool)
        pad[0, 4:] = False
        pad[2, 2:] = False
        mask = pad[:, None, None, :]
        torch_kwargs["key_padding_mask"] = ~pad
    elif case == "mask per head":
        mask = (torch.rand(batch, heads, seq, seq, generator=rng) < 0.5) | eye
        torch_kwargs["attn_mask"] = ~mask.reshape(batch * heads, seq, seq)
    found = submission.run(probes.mha_forward, d_model, heads, bias, state, x, mask=mask, causal=causal)
    out, weights = found["out"], found["weights"]
    with torch.no_grad():
        expected, expected_weights = mha(x, x, x, need_weights=True, average_attn_weights=False, **torch_kwargs)
    assert torch.equal(found["x_after"], x), "forward must leave its input x unchanged"
    assert mask is None or torch.equal(found["mask_after"], mask), "forward must leave its mask unchanged"
    assert tuple(out.shape) == (batch, seq, d_model), f"out: expected shape {(batch, seq, d_model)}, got {tuple(out.shape)}"
    with explain(weights, expected_weights, CATALOGUE, what=f"every head's attention weights ({case})",
                 variants=mha_variants(state, heads, x, mask, causal, lambda o, w: w)):
        assert tuple(weights.shape) == (batch, heads, seq, seq), \
            f"weights: expected shape {(batch, heads, seq, seq)}, got {tuple(weights.shape)}"
        oracle.close(weights, expected_weights, "every head's weights vs torch's MultiheadAttention", **TOL[dtype])
    with explain(out, expected, CATALOGUE, what=f"output of the module ({case})",
                 variants=mha_variants(state, heads, x, mask, causal, lambda o, w: o)):
        oracle.close(out, expected, "module output vs torch's MultiheadAttention", **TOL[dtype])


@pytest.mark.task("2.3")
@pytest.mark.points(3)
@pytest.mark.parametrize("bias", [True, False], ids=["bias=True", "bias=False"])
def test_mha_parameters_are_the_four_projections(submission, bias):
    d_model = 24
    found = submission.run(probes.mha_parameters, d_model, 6, bias)
    expected = {f"{p}.weight": ((d_model, d_model), True) for p in PROJECTIONS}
    if bias:
        expected.update({f"{p}.bias": ((d_model,), True) for p in PROJECTIONS})
    facts = []
    if not bias and any(name.endswith(".bias") for name in found["parameters"]):
        facts.append("bias_argument_ignored")
    if any(trainable is False for _, trainable in found["parameters"].values()):
        facts.append("projections_frozen")
    if facts:
        record(facts, CATALOGUE, "the module's parameters: the four projections, trainable, biases only with bias=True")
    assert found["parameters"] == expected, \
        f"parameters (name: (shape, trainable)) should be {expected}, got {found['parameters']}"
    for name in PROJECTIONS:
        assert found["children"].get(name) == "Linear", f"{name} must be an nn.Linear, found {found['children'].get(name)}"
    assert found["dtypes_after_to_float64"] == {name: "torch.float64" for name in expected}, \
        "module.to(torch.float64) must convert every parameter (MultiHeadAttention is an nn.Module)"


@pytest.mark.task("2.3")
@pytest.mark.points(3)
@pytest.mark.parametrize("causal", [False, True], ids=["with a mask", "causal"])
def test_mha_gradients_equal_torch_multiheadattention(submission, rng, causal):
    d_model, heads = 8, 2
    mha, state = torch_mha(rng, d_model, heads, True, torch.float64)
    x = randn(rng, 2, 3, d_model, dtype=torch.float64)
    grad_out = randn(rng, 2, 3, d_model, dtype=torch.float64)
    mask = None if causal else torch.tensor([[True, True, False], [False, True, True], [True, False, True]])
    found = submission.run(probes.mha_gradients, d_model, heads, state, x, grad_out, mask=mask, causal=causal)
    leaf = x.clone().requires_grad_(True)
    blocked = ~torch.ones(3, 3, dtype=torch.bool).tril() if causal else ~mask
    expected, _ = mha(leaf, leaf, leaf, attn_mask=blocked, need_weights=False)
    (expected * grad_out).sum().backward()
    oracle.close(found["out"], expected.detach(), "output of the pass whose gradients are compared", **TOL[torch.float64])
    tol = oracle.GRAD_TOL[torch.float64]
    if found["x_grad"] is None:
        record(["gradient_cut_in_forward"], CATALOGUE, "gradients of the module's output for its input and parameters")
    elif any(g is None for g in found["param_grads"].values()):
        record(["projections_frozen"], CATALOGUE, "gradients of the module's output for its input and parameters")
    assert found["x_grad"] is not None, "no gradient reached the input x"
    torch.testing.assert_close(found["x_grad"], leaf.grad, **tol, msg=lambda m: "gradient for x\n" + m)
    expected_grads = {"out_proj.weight": mha.out_proj.weight.grad, "out_proj.bias": mha.out_proj.bias.grad}
    for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
        expected_grads[f"{name}.weight"] = mha.in_proj_weight.grad[i * d_model:(i + 1) * d_model]
        expected_grads[f"{name}.bias"] = mha.in_proj_bias.grad[i * d_model:(i + 1) * d_model]
    got = found["param_grads"]
    assert set(got) == set(expected_grads), f"parameters {sorted(got)}, expected {sorted(expected_grads)}"
    for name, expected_grad in expected_grads.items():
        assert got[name] is not None, f"no gradient reached {name} (is it trainable, and used in forward?)"
        torch.testing.assert_close(got[name], expected_grad, **tol, msg=lambda m, n=name: f"gradient for {n}\n" + m)


@pytest.mark.task("2.3")
@pytest.mark.points(2)
@pytest.mark.parametrize("d_model,heads", [(10, 3), (16, 5)], ids=["d_model 10, 3 heads", "d_model 16, 5 heads"])
def test_mha_rejects_heads_that_do_not_divide(submission, d_model, heads):
    names_both = rf"(?s)(?=.*\b{d_model}\b)(?=.*\b{heads}\b)"
    what = "MultiHeadAttention(d_model, n_heads) raises ValueError naming both numbers when they do not divide"
    try:
        submission.run(probes.mha_construct, d_model, heads)
    except SubmissionError as error:       # the student's exception, as data: its built-in type and message
        if not isinstance(error, ValueError):
            if error.base != "NotImplementedError":     # a stub is not a wrong exception type
                record(["error_not_value_error"], CATALOGUE, what)
            raise AssertionError(f"expected a ValueError, the constructor raised {error.remote_type}") from None
        if not re.search(names_both, error.remote_message):
            record(["error_message_without_numbers"], CATALOGUE, what)
            raise AssertionError(f"the ValueError's message should name d_model={d_model} and n_heads={heads}: "
                                 f"{error.remote_message!r}") from None
        return
    raise AssertionError(f"MultiHeadAttention({d_model}, {heads}) raised nothing")


@pytest.mark.task("2.3")
@pytest.mark.points(1)
def test_mha_runs_on_its_inputs_device(submission):
    """The module moved to the meta device, on a meta input, with causal=True: nothing built on the default device."""
    found = submission.run(probes.mha_on_meta, 16, 4, 2, 5, True)
    assert found == {"out": ("meta", (2, 5, 16)), "weights": ("meta", (2, 4, 5, 5))}, \
        f"a module on meta run on a meta input should give meta results of the right shapes, got {found}"


@pytest.mark.task("2.3")
@pytest.mark.points(1)
def test_mha_written_without_torch_attention(submission, rng):
    mha, state = torch_mha(rng, 8, 2, True, torch.float32)
    x = randn(rng, 2, 4, 8)
    found = submission.run(probes.mha_forward, 8, 2, True, state, x)
    with torch.no_grad():
        expected, _ = mha(x, x, x, need_weights=False)
    oracle.close(found["out"], expected, "module output (checked before reading the source)", **TOL[torch.float32])
    found = static.forbidden_uses(static.SourceIndex(submission.root), "attention.MultiHeadAttention",
                                  static.TORCH_SOFTMAX | static.TORCH_ATTENTION)
    assert not found, "MultiHeadAttention must not use torch's attention or softmax: " + static.describe(found)

"""Hidden tests of LoRALinear: anatomy, init, device, forward (shapes, gradients, dropout, the
caller's input), delta, merge, unmerge, errors.

The oracle is peft's own LoRA layer (peft.tuners.lora.Linear) built around the same weights, in
this process. The probes only build, call and return data; every decision is made here, mostly
from behaviour: the base weight is changed through the original nn.Linear and the output read,
a backward pass is run and the gradients read, the input is read back after the forward.
"""

import math
import re

import pytest
import torch
import torch.nn.functional as F

from course.grading.diagnose import explain

import lora_oracle as oracle
from lora_oracle import explain_close, fact, one_torch_thread  # noqa: F401  (autouse fixture)
from misconceptions import CATALOGUE
import probes

# float32, one layer; the student's process and this one may round differently, and so may
# equivalent formulas (x A^T B^T versus x (B A)^T). Weights are compared more tightly than outputs.
LAYER_TOL = dict(rtol=1e-5, atol=1e-6)
OUTPUT_TOL = dict(rtol=1e-5, atol=1e-5)
DOUBLE_TOL = dict(rtol=1e-10, atol=1e-12)


def _weights(rng, in_f, out_f, bias=True, dtype=torch.float32):
    bound = 1 / math.sqrt(in_f)
    weight = (2 * torch.rand(out_f, in_f, generator=rng, dtype=torch.float64) - 1) * bound
    b = (2 * torch.rand(out_f, generator=rng, dtype=torch.float64) - 1) * bound if bias else None
    return weight.to(dtype), None if b is None else b.to(dtype)


def _adapter(rng, in_f, out_f, r, dtype=torch.float32):
    return (0.3 * torch.randn(r, in_f, generator=rng, dtype=torch.float64).to(dtype),
            0.3 * torch.randn(out_f, r, generator=rng, dtype=torch.float64).to(dtype))


def _formula(x, weight, bias, a, b, scaling):
    """base(x) + x A^T B^T * scaling, in float64, cast back: the right answer, or a catalogue
    variant with a wrong scaling."""
    xd = x.double()
    out = F.linear(xd, weight.double(), None if bias is None else bias.double())
    return (out + xd @ a.double().T @ b.double().T * scaling).to(x.dtype)


def _scaling_variants(r, alpha, make):
    """Wrong scalings of the catalogue, each turned into a wrong answer by ``make(scaling)``."""
    return {"scaling_inverted": lambda: make(r / alpha), "scaling_ignored": lambda: make(1.0)}


def _layer_id(case):
    in_f, out_f, r, alpha, bias = case
    alpha_text = "alpha default" if alpha is None else f"alpha={alpha:g}"
    return f"{in_f} to {out_f} features, r={r}, {alpha_text}, {'with' if bias else 'no'} bias"


# (in_features, out_features, r, alpha, bias): in != out so that transposing A or B fails,
# alpha != r so that a forgotten or inverted scaling shows (and r / alpha != 1 / r).
LAYERS = [(16, 24, 4, 16.0, True), (24, 10, 8, 2.0, False), (12, 12, 3, 7.5, True)]


# ------------------------------------------------------------------ task 1.1: construction

ANATOMY = [(16, 24, 4, 16.0, True), (24, 10, 8, None, True), (12, 7, 2, 0.5, False),
           (9, 5, 1, 1.0, True)]   # r=1 is the smallest valid rank


@pytest.mark.task("1.1")
@pytest.mark.points(3)
@pytest.mark.parametrize("in_f,out_f,r,alpha,bias", ANATOMY, ids=[_layer_id(c) for c in ANATOMY])
def test_layer_anatomy_and_freezing(submission, rng, in_f, out_f, r, alpha, bias):
    weight, b = _weights(rng, in_f, out_f, bias)
    new_weight, new_b = _weights(rng, in_f, out_f, bias)
    x = torch.randn(4, in_f, generator=rng)
    got = submission.run(probes.make_layer, weight, b, r, alpha, x, new_weight, new_b)
    assert tuple(got["A"].shape) == (r, in_f), f"lora_A must have shape (r, in_features) = {(r, in_f)}"
    assert tuple(got["B"].shape) == (out_f, r), f"lora_B must have shape (out_features, r) = {(out_f, r)}"
    # the test overwrote the ORIGINAL nn.Linear's weight and bias: a layer that kept that very
    # object computes with the new values (B = 0, so the output is that Linear's)
    expected = F.linear(x, new_weight, new_b)
    with explain_close(got["out_after_base_change"], {"base_copied": lambda: F.linear(x, weight, b)},
                       what="the layer keeps the nn.Linear it was given (the same object)"):
        torch.testing.assert_close(got["out_after_base_change"], expected, **OUTPUT_TOL,
                                   msg="LoRALinear.base must be the very nn.Linear passed in")
    expected_scaling = (r if alpha is None else alpha) / r
    variants = ({"alpha_defaults_to_one": lambda: 1 / r} if alpha is None
                else _scaling_variants(r, alpha, lambda s: s))
    with explain(got["scaling"], None, CATALOGUE, variants=variants, generic=False,
                 what="scaling = alpha / r, alpha defaulting to r"):
        assert got["scaling"] == pytest.approx(expected_scaling), "scaling must be alpha / r (alpha defaults to r)"
    assert got["merged"] is False, "a new layer is not merged"
    torch.testing.assert_close(got["base_weight"], weight, rtol=0, atol=0,
                               msg="building a LoRALinear must not change the base weight")
    base_params = {"weight", "bias"} if bias else {"weight"}
    assert set(got["base_requires_grad"]) == base_params, "the base layer keeps its own parameters"
    with explain(got["base_requires_grad"], None, CATALOGUE, generic=False, what="the base weight and bias frozen",
                 variants={"base_bias_trainable": lambda: {"weight": False, "bias": True}} if bias else {}):
        assert not any(got["base_requires_grad"].values()), "the base layer's weight and bias must be frozen"
    registered = set(got["requires_grad"])
    assert {"lora_A", "lora_B"} <= registered, \
        "lora_A and lora_B must be nn.Parameter attributes of the layer (registered parameters)"
    trainable = {n for n, flag in got["requires_grad"].items() if flag}
    assert trainable == {"lora_A", "lora_B"}, f"only lora_A and lora_B may be trainable, got {sorted(trainable)}"


@pytest.mark.task("1.1")
@pytest.mark.points(2)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32 base", "float64 base"])
def test_layer_init_like_peft(submission, rng, dtype):
    in_f, out_f, r = 256, 48, 16
    weight, b = _weights(rng, in_f, out_f, True, dtype)
    x = torch.randn(2, in_f, generator=rng, dtype=torch.float64).to(dtype)
    got = submission.run(probes.make_layer, weight, b, r, 8.0, x, weight, b)
    a, bb = got["A"], got["B"]
    assert a.dtype == dtype and bb.dtype == dtype, "lora_A and lora_B take the base weight's dtype"
    what = "initialisation: A kaiming-uniform, B zero"
    with explain_close(None, {}, what=what, facts={
            "init_swapped": lambda: bool(torch.count_nonzero(a) == 0 and torch.count_nonzero(bb) > 0)}):
        assert torch.count_nonzero(bb) == 0, "lora_B must start at zero"
    bound = oracle.kaiming_bound(in_f)  # kaiming_uniform_(a=sqrt(5)): U(-1/sqrt(in), 1/sqrt(in))
    peak, spread = float(a.abs().max()), float(a.double().std())
    # the bound kaiming_uniform_ has with its default a=0: sqrt(6 / in), sqrt(6) times wider
    wide = math.sqrt(6.0 / in_f)
    a_equals_zero = bool(torch.count_nonzero(a) == 0)
    facts = {"init_not_kaiming_a_sqrt5": lambda: 0.9 * wide <= peak <= wide * (1 + 1e-6),
             # the check below fails only when A is not U(±1/sqrt(in)): say so, unless it is the
             # wider range of a=0 (named above) or A is zero (init_swapped, named above)
             "init_not_uniform": lambda: not (0.9 * wide <= peak <= wide * (1 + 1e-6)) and not a_equals_zero}
    with explain_close(None, {}, facts=facts, what=what):
        assert peak <= bound * (1 + 1e-6), f"lora_A must lie within ±{bound:.4f}"
        # 4096 draws of U(-b, b): the largest |A| falls below 0.99 b with probability 0.99^4096 < 1e-17;
        # kaiming_uniform_ with another negative slope a has another bound (a=sqrt(6): 0.926 b)
        assert peak >= 0.99 * bound, "lora_A should fill its range ±1/sqrt(in_features) (uniform, a=sqrt(5))"
        # the spread of U(-b, b) is b/sqrt(3); a 4096-sample estimate is within about 1 %
        assert spread == pytest.approx(bound / math.sqrt(3), rel=0.1), \
            "lora_A should be uniform in ±1/sqrt(in_features) (kaiming_uniform_ with a=sqrt(5))"
        assert abs(float(a.double().mean())) < 0.1 * bound


@pytest.mark.task("1.1")
@pytest.mark.points(2)
def test_layer_follows_the_base_device(submission):
    # the meta device: shapes and dtypes, no memory; a layer that makes A and B on the default
    # device (or in float32) shows it here, on a grader without any accelerator
    got = submission.run(probes.on_meta, 12, 20, 4, torch.float64, (2, 3, 12))
    what = "lora_A and lora_B on the base weight's device and dtype"
    with explain_close(None, {}, what=what, facts={
            "adapters_not_on_base_device": lambda: got["A"]["device"] != "meta" or got["B"]["device"] != "meta"}):
        assert got["A"]["device"] == "meta" and got["B"]["device"] == "meta", \
            "lora_A and lora_B must be created on base.weight's device"
    assert got["A"]["dtype"] == got["B"]["dtype"] == "torch.float64", "lora_A and lora_B take base.weight's dtype"
    assert got["A"]["shape"] == [4, 12] and got["B"]["shape"] == [20, 4]
    assert "error" not in got["out"], f"the forward on the meta device raised {got['out'].get('error')}"
    assert got["out"] == {"device": "meta", "dtype": "torch.float64", "shape": [2, 3, 20]}, \
        "the output follows the input's device and dtype"


@pytest.mark.task("1.1")
@pytest.mark.points(1)
@pytest.mark.parametrize("r", [0, -3], ids=["r=0", "r=-3"])
def test_layer_rejects_bad_rank(submission, r):
    what = "r <= 0 refused with a ValueError naming r"
    try:
        submission.run(probes.construct, "linear", 8, 8, r)
    except ValueError as exc:
        # the message must name the value: the number itself, not part of a longer one
        message = getattr(exc, "remote_message", str(exc))
        assert re.search(rf"(?<![\d.]){re.escape(str(r))}(?![\d.])", message), \
            f"the ValueError's message must name the value of r ({r})"
    except Exception as exc:
        fact("rank_zero_accepted", r == 0 and isinstance(exc, ZeroDivisionError), what)
        raised = getattr(exc, "remote_type", type(exc).__name__).rsplit(".", 1)[-1]
        raise AssertionError(f"r={r} must raise ValueError, not {raised}") from None
    else:
        fact("rank_zero_accepted", r == 0, what)
        pytest.fail(f"r={r} must raise ValueError")


@pytest.mark.task("1.1")
@pytest.mark.points(1)
@pytest.mark.parametrize("kind,type_name", [("embedding", "Embedding"), ("conv", "Conv1d")],
                         ids=["Embedding base", "Conv1d base"])
def test_layer_rejects_non_linear_base(submission, kind, type_name):
    with pytest.raises(TypeError, match=type_name):
        submission.run(probes.construct, kind, 8, 8, 2)


@pytest.mark.task("1.1")
@pytest.mark.points(1)
def test_alpha_zero_is_a_value(submission, rng):
    # alpha = 0.0 is falsy but valid: scaling 0, the update switched off (and alpha = 2r gives 2)
    in_f, out_f, r = 9, 6, 3
    weight, b = _weights(rng, in_f, out_f)
    a, bb = _adapter(rng, in_f, out_f, r)
    x = torch.randn(5, in_f, generator=rng)
    got = tuple(submission.run(probes.layer_forward, weight, b, r, alpha, a, bb, [(x, False)])[0]
                for alpha in (0.0, 2.0 * r))
    expected = (_formula(x, weight, b, a, bb, 0.0), _formula(x, weight, b, a, bb, 2.0))
    with explain_close(got, {"alpha_zero_treated_as_missing": lambda: (_formula(x, weight, b, a, bb, 1.0),
                                                                       expected[1])},
                       what="alpha = 0.0 gives scaling 0"):
        torch.testing.assert_close(got[0], expected[0], **OUTPUT_TOL, msg="alpha = 0.0 means scaling = 0")
        torch.testing.assert_close(got[1], expected[1], **OUTPUT_TOL)


# ------------------------------------------------------------------ task 1.2: forward

@pytest.mark.task("1.2")
@pytest.mark.points(3)
@pytest.mark.parametrize("in_f,out_f,r,alpha,bias", LAYERS, ids=[_layer_id(c) for c in LAYERS])
def test_layer_forward_matches_peft(submission, rng, in_f, out_f, r, alpha, bias):
    weight, b = _weights(rng, in_f, out_f, bias)
    a, bb = _adapter(rng, in_f, out_f, r)
    x = torch.randn(3, 5, in_f, generator=rng)
    got = submission.run(probes.layer_forward, weight, b, r, alpha, a, bb, [(x, False)])[0]
    reference = oracle.peft_linear(weight, b, r, alpha, a, bb)
    with torch.no_grad():
        expected = reference(x)
    assert got.shape == expected.shape, f"the output has shape (..., out_features) = {tuple(expected.shape)}"
    with explain_close(got, _scaling_variants(r, alpha, lambda s: _formula(x, weight, b, a, bb, s)),
                       what="forward equals peft's LoRA layer for float32 (batch, seq, in) inputs"):
        torch.testing.assert_close(got, expected, **OUTPUT_TOL)


# (leading dimensions before in_features, non-contiguous view, dtype)
SHAPES = [((), False, torch.float32), ((7,), False, torch.float32), ((1, 1), False, torch.float32),
          ((2, 3, 4), False, torch.float32), ((5, 8), True, torch.float32), ((3, 4), False, torch.float64)]
SHAPE_IDS = ["one vector (in,)", "a matrix (n, in)", "batch 1, seq 1", "4-d input (2, 3, 4, in)",
             "non-contiguous (batch, seq, in)", "float64 (batch, seq, in)"]


@pytest.mark.task("1.2")
@pytest.mark.points(3)
@pytest.mark.parametrize("lead,strided,dtype", SHAPES, ids=SHAPE_IDS)
def test_layer_forward_any_leading_shape(submission, rng, lead, strided, dtype):
    in_f, out_f, r, alpha = 10, 6, 3, 6.0
    weight, b = _weights(rng, in_f, out_f, True, dtype)
    a, bb = _adapter(rng, in_f, out_f, r, dtype)
    x = torch.randn(*lead, in_f, generator=rng, dtype=torch.float64).to(dtype)
    what = "the forward for inputs of any leading shape"
    try:
        got = submission.run(probes.layer_forward, weight, b, r, alpha, a, bb, [(x, strided)])[0]
    except Exception as exc:
        message = getattr(exc, "remote_message", "")
        fact("view_on_non_contiguous", strided and isinstance(exc, RuntimeError) and "view size" in message, what)
        fact("forward_fixed_rank", len(lead) != 2 and isinstance(exc, ValueError) and "unpack" in message, what)
        raise
    reference = oracle.peft_linear(weight, b, r, alpha, a, bb)
    with torch.no_grad():
        expected = reference(x)
    assert got.dtype == dtype, "the output keeps the input's dtype"
    assert tuple(got.shape) == (*lead, out_f), f"the output has shape (..., out_features) = {(*lead, out_f)}"
    torch.testing.assert_close(got, expected, **(DOUBLE_TOL if dtype == torch.float64 else OUTPUT_TOL))


@pytest.mark.task("1.2")
@pytest.mark.points(3)
@pytest.mark.parametrize("bias", [True, False], ids=["with bias", "no bias"])
def test_layer_gradients_reach_only_the_adapters(submission, rng, bias):
    in_f, out_f, r, alpha = 14, 9, 4, 10.0
    weight, b = _weights(rng, in_f, out_f, bias)
    a, bb = _adapter(rng, in_f, out_f, r)
    x = torch.randn(3, 4, in_f, generator=rng)
    grad_out = torch.randn(3, 4, out_f, generator=rng)
    got = submission.run(probes.layer_backward, weight, b, r, alpha, a, bb, x, grad_out)
    reference = oracle.peft_linear(weight, b, r, alpha, a, bb).train()
    (reference(x) * grad_out).sum().backward()
    what = "gradients of (output * g).sum(): A and B get peft's, the base layer none"
    grads = got["grads"]
    with explain_close(None, {}, what=what, facts={
            "adapters_detached": lambda: grads.get("lora_A") is None and grads.get("lora_B") is None}):
        assert grads.get("lora_A") is not None and grads.get("lora_B") is not None, \
            "lora_A and lora_B must receive gradients through the forward"
    with explain_close(None, {}, what=what, facts={
            "base_bias_trainable": lambda: got["base_grads"].get("weight") is None
            and got["base_grads"].get("bias") is not None}):
        assert all(g is None for g in got["base_grads"].values()), \
            "the frozen base weight and bias must get no gradient"
    torch.testing.assert_close(grads["lora_A"], reference.lora_A["default"].weight.grad, **OUTPUT_TOL,
                               msg="the gradient of lora_A differs from peft's")
    torch.testing.assert_close(grads["lora_B"], reference.lora_B["default"].weight.grad, **OUTPUT_TOL,
                               msg="the gradient of lora_B differs from peft's")


def _in_place(x_after, x):
    return any(not torch.equal(t, x) for t in x_after)


@pytest.mark.task("1.2")
@pytest.mark.points(3)
def test_layer_dropout_only_on_lora_branch(submission, rng):
    in_f, out_f, r, alpha, p = 6, 20, 6, 12.0, 0.5
    weight, b = _weights(rng, in_f, out_f)
    a, bb = _adapter(rng, in_f, out_f, r)
    x = torch.randn(4, 16, in_f, generator=rng)
    got = submission.run(probes.dropout_outputs, weight, b, r, alpha, p, a, bb, x, oracle.seed_from(rng))
    what = "dropout, in train mode, on the input of the LoRA branch only"
    fact("input_overwritten_by_dropout", _in_place(got["x_after"], x), what)
    assert not _in_place(got["x_after"], x), "the forward must not change its input x"
    base = F.linear(x, weight, b)
    # B = 0 at init: even in train mode with dropout, the output is the base layer's
    with explain_close(None, {}, what=what, facts={
            "dropout_on_base_path": lambda: not oracle.close(got["train_at_init"], base)}):
        torch.testing.assert_close(got["train_at_init"], base, **OUTPUT_TOL,
                                   msg="with B = 0 the train-mode output must equal the base layer's "
                                       "(is dropout applied to the base path?)")
    # eval: no dropout at all, and the result is peft's
    torch.testing.assert_close(got["eval"], got["no_dropout"], **OUTPUT_TOL,
                               msg="in eval mode dropout must do nothing")
    with torch.no_grad():
        expected = oracle.peft_linear(weight, b, r, alpha, a, bb, dropout=p)(x)
    torch.testing.assert_close(got["eval"], expected, **OUTPUT_TOL)
    assert not torch.allclose(got["train"], got["eval"], rtol=1e-5, atol=1e-5), \
        "in train mode, dropout must change the LoRA branch"
    # train: the LoRA branch is (m * x / (1 - p)) @ A^T @ B^T * scaling for a 0/1 mask m on x.
    # A^T B^T (in x out) has full row rank here, so the dropped input can be solved for.
    scaling = alpha / r
    m = (a.T.double() @ bb.T.double()) * scaling
    branch = (got["train"] - base).double()
    z = torch.linalg.lstsq(m.T, branch.reshape(-1, out_f).T).solution.T.reshape(x.shape)
    kept = x.double() / (1 - p)
    dropped = z.abs() < 1e-3
    survived = (z - kept).abs() < 1e-3 * (1 + kept.abs())

    def masked(value, full):  # every element 0 or full / (1 - p)
        keep = full / (1 - p)
        return bool(((value.abs() < 1e-3 * (1 + keep.abs())) | ((value - keep).abs() < 1e-3 * (1 + keep.abs()))).all())

    def on_hidden():  # dropout on x A^T: solve branch = h B^T * scaling for h (B^T has full row rank)
        h = torch.linalg.lstsq((bb.T.double() * scaling).T, branch.reshape(-1, out_f).T).solution.T
        return masked(h, x.double().reshape(-1, in_f) @ a.T.double())

    def on_output():  # dropout on the branch's output, element by element
        return masked(branch, x.double() @ m)
    with explain_close(None, {}, what=what, facts={"dropout_on_hidden": on_hidden,
                                                   "dropout_on_branch_output": on_output}):
        assert bool((dropped | survived).all()), \
            "in train mode the LoRA branch must see dropout(x): each input element zeroed or scaled by 1/(1-p)"
    assert 0.25 < float(dropped.double().mean()) < 0.75, f"about {p:.0%} of the inputs should be dropped"


@pytest.mark.task("1.2")
@pytest.mark.points(2)
def test_layer_forward_leaves_its_input_alone(submission, rng):
    in_f, out_f, r = 8, 5, 2
    weight, b = _weights(rng, in_f, out_f)
    a, bb = _adapter(rng, in_f, out_f, r)
    x = torch.randn(3, 7, in_f, generator=rng)
    after = submission.run(probes.forward_inputs_after, weight, b, r, 4.0, 0.4, a, bb, x, oracle.seed_from(rng))
    fact("input_overwritten_by_dropout", _in_place(after, x), "the caller's input x after the forward")
    for t, when in zip(after, ("a train-mode forward without autograd", "a train-mode forward with autograd",
                               "an eval-mode forward")):
        assert torch.equal(t, x), f"x changed during {when}: the forward must not write into its input"


# ------------------------------------------------------------------ task 1.3: delta_weight

@pytest.mark.task("1.3")
@pytest.mark.points(3)
@pytest.mark.parametrize("in_f,out_f,r,alpha,bias", LAYERS, ids=[_layer_id(c) for c in LAYERS])
def test_delta_weight_matches_peft(submission, rng, in_f, out_f, r, alpha, bias):
    weight, b = _weights(rng, in_f, out_f, bias)
    a, bb = _adapter(rng, in_f, out_f, r)
    got = submission.run(probes.delta_weight, weight, b, r, alpha, a, bb)
    expected = oracle.peft_linear(weight, b, r, alpha, a, bb).get_delta_weight("default").detach()
    with explain_close(got, {"delta_transposed": lambda: expected.T}, what="delta_weight = B @ A * scaling"):
        assert tuple(got.shape) == (out_f, in_f), "delta_weight has the base weight's shape (out, in)"
    with explain_close(got, _scaling_variants(r, alpha, lambda s: (bb.double() @ a.double() * s).float()),
                       what="delta_weight = B @ A * scaling"):
        torch.testing.assert_close(got, expected, **LAYER_TOL)


# ------------------------------------------------------------------ tasks 1.4, 1.5: merge, unmerge

def _frozen(flags):
    return not any(flags.values())


@pytest.mark.task("1.4")
@pytest.mark.points(4)
@pytest.mark.parametrize("in_f,out_f,r,alpha,bias", LAYERS[:2], ids=[_layer_id(c) for c in LAYERS[:2]])
def test_merge_keeps_forward_and_is_idempotent(submission, rng, in_f, out_f, r, alpha, bias):
    weight, b = _weights(rng, in_f, out_f, bias)
    a, bb = _adapter(rng, in_f, out_f, r)
    x = torch.randn(2, 7, in_f, generator=rng)
    before, merged, again = submission.run(probes.merge_twice, weight, b, r, alpha, a, bb, x)
    reference = oracle.peft_linear(weight, b, r, alpha, a, bb)
    with torch.no_grad():
        expected_out = reference(x)
        delta = reference.get_delta_weight("default").detach().clone()
        reference.merge()
        expected_weight = reference.base_layer.weight.detach().clone()
    what = "merge(): W + B @ A * scaling, once, the base still frozen"
    assert before["merged"] is False
    fact("base_bias_trainable", before["base_requires_grad"] == {"weight": False, "bias": True}, what)
    assert _frozen(before["base_requires_grad"]), "the base weight and bias must be frozen before merging"
    fact("merge_flag_not_set", merged["merged"] is False, what)
    assert merged["merged"] is True, "merge() must set merged"
    fact("merge_makes_base_trainable", not _frozen(merged["base_requires_grad"]), what)
    assert _frozen(merged["base_requires_grad"]), "after merge() the base weight and bias must still be frozen"
    with explain_close(merged["weight"], _scaling_variants(r, alpha, lambda s: weight + (bb @ a) * s), what=what):
        torch.testing.assert_close(merged["weight"], expected_weight, **LAYER_TOL,
                                   msg="after merge(), base.weight must be W + B @ A * scaling")
    with explain_close(merged["out"], {"merged_still_adds_branch": lambda: F.linear(x, weight + 2 * delta, b)},
                       what=what):
        torch.testing.assert_close(merged["out"], expected_out, **OUTPUT_TOL,
                                   msg="the forward of a merged layer must not change (is the delta added twice?)")
    assert again["merged"] is True
    with explain_close(again["weight"], {"merge_not_idempotent": lambda: weight + 2 * delta}, what=what):
        torch.testing.assert_close(again["weight"], merged["weight"], rtol=0, atol=0,
                                   msg="merging a merged layer must do nothing")
    torch.testing.assert_close(again["out"], merged["out"], rtol=0, atol=0)


@pytest.mark.task("1.5")
@pytest.mark.points(3)
@pytest.mark.parametrize("in_f,out_f,r,alpha,bias", LAYERS[:2], ids=[_layer_id(c) for c in LAYERS[:2]])
def test_unmerge_restores_base(submission, rng, in_f, out_f, r, alpha, bias):
    weight, b = _weights(rng, in_f, out_f, bias)
    a, bb = _adapter(rng, in_f, out_f, r)
    x = torch.randn(2, 7, in_f, generator=rng)
    reference = oracle.peft_linear(weight, b, r, alpha, a, bb)
    with torch.no_grad():
        expected_out = reference(x)
        delta = reference.get_delta_weight("default").detach().clone()
        reference.merge()
        merged_weight = reference.base_layer.weight.detach().clone()
    once, twice = submission.run(probes.unmerge_twice, merged_weight, b, r, alpha, a, bb, x)
    what = "unmerge(): W back, once"
    fact("unmerge_flag_not_cleared", once["merged"] is True, what)
    assert once["merged"] is False, "unmerge() must clear merged"
    variants = {"unmerge_adds": lambda: merged_weight + delta,
                **_scaling_variants(r, alpha, lambda s: merged_weight - (bb @ a) * s)}
    with explain_close(once["weight"], variants, what=what):
        torch.testing.assert_close(once["weight"], weight, **LAYER_TOL,
                                   msg="unmerge() must subtract B @ A * scaling from base.weight")
    torch.testing.assert_close(once["out"], expected_out, **OUTPUT_TOL)
    assert _frozen(once["base_requires_grad"]), "after unmerge() the base weight and bias must still be frozen"
    with explain_close(twice["weight"], {"unmerge_unguarded": lambda: weight - delta}, what=what):
        torch.testing.assert_close(twice["weight"], once["weight"], rtol=0, atol=0,
                                   msg="unmerging a layer that is not merged must do nothing")
    assert twice["merged"] is False

"""Hidden tests of LoRALinear: anatomy, init, forward, dropout, delta, merge, unmerge, errors.

The oracle is peft's own LoRA layer (peft.tuners.lora.Linear) built around the same weights.
"""

import math

import pytest
import torch
import torch.nn.functional as F

import lora_oracle as oracle
from lora_oracle import one_torch_thread  # noqa: F401  (autouse fixture)
import probes

# float32, one layer; the student's process and this one may round differently, and so may
# equivalent formulas (x A^T B^T versus x (B A)^T). Weights are compared more tightly than outputs.
LAYER_TOL = dict(rtol=1e-5, atol=1e-6)
OUTPUT_TOL = dict(rtol=1e-5, atol=1e-5)


def _weights(rng, in_f, out_f, bias=True):
    bound = 1 / math.sqrt(in_f)
    weight = (2 * torch.rand(out_f, in_f, generator=rng) - 1) * bound
    b = (2 * torch.rand(out_f, generator=rng) - 1) * bound if bias else None
    return weight, b


def _adapter(rng, in_f, out_f, r):
    return 0.3 * torch.randn(r, in_f, generator=rng), 0.3 * torch.randn(out_f, r, generator=rng)


# (in_features, out_features, r, alpha, bias): in != out so that transposing A or B fails,
# alpha != r so that a forgotten or inverted scaling shows.
LAYERS = [(16, 24, 4, 16.0, True), (24, 10, 8, 2.0, False), (12, 12, 3, 7.5, True)]


@pytest.mark.task("1.1")
@pytest.mark.points(5)
@pytest.mark.parametrize("in_f,out_f,r,alpha,bias", [(16, 24, 4, 16.0, True), (24, 10, 8, None, True),
                                                     (12, 7, 2, 0.5, False)])
def test_layer_anatomy_and_freezing(submission, in_f, out_f, r, alpha, bias):
    got = submission.run(probes.make_layer, in_f, out_f, r, alpha, bias)
    assert got["base_is_same"], "LoRALinear.base must be the very nn.Linear passed in"
    assert got["base_weight_unchanged"], "building a LoRALinear must not change the base weight"
    assert got["A_is_parameter"] and got["B_is_parameter"], "lora_A and lora_B must be nn.Parameter"
    assert tuple(got["A"].shape) == (r, in_f), f"lora_A must have shape (r, in_features) = {(r, in_f)}"
    assert tuple(got["B"].shape) == (out_f, r), f"lora_B must have shape (out_features, r) = {(out_f, r)}"
    expected_scaling = (r if alpha is None else alpha) / r
    assert got["scaling"] == pytest.approx(expected_scaling), "scaling must be alpha / r (alpha defaults to r)"
    assert got["merged"] is False
    base_params = {"weight", "bias"} if bias else {"weight"}
    assert set(got["base_requires_grad"]) == base_params
    assert not any(got["base_requires_grad"].values()), "the base layer's weight and bias must be frozen"
    trainable = {n for n, flag in got["requires_grad"].items() if flag}
    assert trainable == {"lora_A", "lora_B"}, f"only lora_A and lora_B may be trainable, got {sorted(trainable)}"


@pytest.mark.task("1.1")
@pytest.mark.points(3)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_layer_init_like_peft(submission, dtype):
    in_f, out_f, r = 256, 48, 16
    got = submission.run(probes.make_layer, in_f, out_f, r, 8.0, True, dtype)
    a, b = got["A"], got["B"]
    assert a.dtype == dtype and b.dtype == dtype, "lora_A and lora_B take the base weight's dtype"
    assert torch.count_nonzero(b) == 0, "lora_B must start at zero"
    bound = oracle.kaiming_bound(in_f)  # kaiming_uniform_(a=sqrt(5)): U(-1/sqrt(in), 1/sqrt(in))
    assert float(a.abs().max()) <= bound * (1 + 1e-6), f"lora_A must lie within ±{bound:.4f}"
    assert float(a.abs().max()) >= 0.9 * bound, "lora_A should fill its range (uniform)"
    # the spread of U(-b, b) is b/sqrt(3); a 4096-sample estimate is within a few percent
    assert float(a.double().std()) == pytest.approx(bound / math.sqrt(3), rel=0.1), \
        "lora_A should be uniform in ±1/sqrt(in_features) (kaiming_uniform_ with a=sqrt(5))"
    assert abs(float(a.double().mean())) < 0.1 * bound


@pytest.mark.task("1.1")
@pytest.mark.points(2)
@pytest.mark.parametrize("r", [0, -3])
def test_layer_rejects_bad_rank(submission, r):
    with pytest.raises(ValueError, match=str(r)):
        submission.run(probes.make_layer, 8, 8, r)


@pytest.mark.task("1.1")
@pytest.mark.points(2)
@pytest.mark.parametrize("kind,type_name", [("embedding", "Embedding"), ("conv", "Conv1d")])
def test_layer_rejects_non_linear_base(submission, kind, type_name):
    with pytest.raises(TypeError, match=type_name):
        submission.run(probes.make_layer, 8, 8, 2, None, True, torch.float32, kind)


@pytest.mark.task("1.2")
@pytest.mark.points(6)
@pytest.mark.parametrize("in_f,out_f,r,alpha,bias", LAYERS)
def test_layer_forward_matches_peft(submission, rng, in_f, out_f, r, alpha, bias):
    weight, b = _weights(rng, in_f, out_f, bias)
    a, bb = _adapter(rng, in_f, out_f, r)
    x = torch.randn(3, 5, in_f, generator=rng)
    got = submission.run(probes.layer_forward, weight, b, r, alpha, a, bb, x)
    reference = oracle.peft_linear(weight, b, r, alpha, a, bb)
    with torch.no_grad():
        expected = reference(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, **OUTPUT_TOL)


@pytest.mark.task("1.2")
@pytest.mark.points(5)
def test_layer_dropout_only_on_lora_branch(submission, rng):
    in_f, out_f, r, alpha, p = 6, 20, 6, 12.0, 0.5
    weight, b = _weights(rng, in_f, out_f)
    a, bb = _adapter(rng, in_f, out_f, r)
    x = torch.randn(4, 16, in_f, generator=rng)
    got = submission.run(probes.dropout_outputs, weight, b, r, alpha, p, a, bb, x, oracle.seed_from(rng))
    base = F.linear(x, weight, b)
    # B = 0 at init: even in train mode with dropout, the output is the base layer's
    torch.testing.assert_close(got["train_at_init"], base, **OUTPUT_TOL,
                               msg="with B = 0 the train-mode output must equal the base layer's "
                                   "(is dropout applied to the base path?)")
    # eval: no dropout at all, and the result is peft's
    torch.testing.assert_close(got["eval"], got["no_dropout"], **OUTPUT_TOL)
    with torch.no_grad():
        expected = oracle.peft_linear(weight, b, r, alpha, a, bb, dropout=p)(x)
    torch.testing.assert_close(got["eval"], expected, **OUTPUT_TOL)
    assert not torch.allclose(got["train"], got["eval"], rtol=1e-5, atol=1e-5), \
        "in train mode, dropout must change the LoRA branch"
    # train: the LoRA branch is (m * x / (1 - p)) @ A^T @ B^T * scaling for a 0/1 mask m on x.
    # A^T B^T (in x out) has full row rank here, so the dropped input can be solved for.
    m = (a.T.double() @ bb.T.double()) * (alpha / r)
    branch = (got["train"] - base).double()
    z = torch.linalg.lstsq(m.T, branch.reshape(-1, out_f).T).solution.T.reshape(x.shape)
    kept = x.double() / (1 - p)
    dropped = z.abs() < 1e-3
    survived = (z - kept).abs() < 1e-3 * (1 + kept.abs())
    assert bool((dropped | survived).all()), \
        "in train mode the LoRA branch must see dropout(x): each input element zeroed or scaled by 1/(1-p)"
    assert 0.25 < float(dropped.double().mean()) < 0.75, f"about {p:.0%} of the inputs should be dropped"


@pytest.mark.task("1.3")
@pytest.mark.points(3)
@pytest.mark.parametrize("in_f,out_f,r,alpha,bias", LAYERS)
def test_delta_weight_matches_peft(submission, rng, in_f, out_f, r, alpha, bias):
    weight, b = _weights(rng, in_f, out_f, bias)
    a, bb = _adapter(rng, in_f, out_f, r)
    got = submission.run(probes.delta_weight, weight, b, r, alpha, a, bb)
    expected = oracle.peft_linear(weight, b, r, alpha, a, bb).get_delta_weight("default").detach()
    assert tuple(got.shape) == (out_f, in_f), "delta_weight has the base weight's shape (out, in)"
    torch.testing.assert_close(got, expected, **LAYER_TOL)


@pytest.mark.task("1.4")
@pytest.mark.points(4)
@pytest.mark.parametrize("in_f,out_f,r,alpha,bias", LAYERS[:2])
def test_merge_keeps_forward_and_is_idempotent(submission, rng, in_f, out_f, r, alpha, bias):
    weight, b = _weights(rng, in_f, out_f, bias)
    a, bb = _adapter(rng, in_f, out_f, r)
    x = torch.randn(2, 7, in_f, generator=rng)
    before, merged, again = submission.run(probes.merge_twice, weight, b, r, alpha, a, bb, x)
    reference = oracle.peft_linear(weight, b, r, alpha, a, bb)
    with torch.no_grad():
        expected_out = reference(x)
        reference.merge()
        expected_weight = reference.base_layer.weight.detach().clone()
    assert before["merged"] is False and merged["merged"] is True
    torch.testing.assert_close(merged["weight"], expected_weight, **LAYER_TOL,
                               msg="after merge(), base.weight must be W + B @ A * scaling")
    torch.testing.assert_close(merged["out"], expected_out, **OUTPUT_TOL,
                               msg="the forward of a merged layer must not change (is the delta added twice?)")
    assert again["merged"] is True
    torch.testing.assert_close(again["weight"], merged["weight"], rtol=0, atol=0,
                               msg="merging a merged layer must do nothing")
    torch.testing.assert_close(again["out"], merged["out"], rtol=0, atol=0)


@pytest.mark.task("1.5")
@pytest.mark.points(3)
@pytest.mark.parametrize("in_f,out_f,r,alpha,bias", LAYERS[:2])
def test_unmerge_restores_base(submission, rng, in_f, out_f, r, alpha, bias):
    weight, b = _weights(rng, in_f, out_f, bias)
    a, bb = _adapter(rng, in_f, out_f, r)
    x = torch.randn(2, 7, in_f, generator=rng)
    reference = oracle.peft_linear(weight, b, r, alpha, a, bb)
    with torch.no_grad():
        expected_out = reference(x)
        reference.merge()
        merged_weight = reference.base_layer.weight.detach().clone()
    once, twice = submission.run(probes.unmerge_twice, merged_weight, b, r, alpha, a, bb, x)
    assert once["merged"] is False, "unmerge() must clear merged"
    torch.testing.assert_close(once["weight"], weight, **LAYER_TOL,
                               msg="unmerge() must subtract B @ A * scaling from base.weight")
    torch.testing.assert_close(once["out"], expected_out, **OUTPUT_TOL)
    torch.testing.assert_close(twice["weight"], once["weight"], rtol=0, atol=0,
                               msg="unmerging a layer that is not merged must do nothing")
    assert twice["merged"] is False

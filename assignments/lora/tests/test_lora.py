"""Public tests of the lora assignment. Run them with `pytest` in this folder's parent, or
`course check lora` (add `--task 1.2` for one task). Initially every test fails with
NotImplementedError. The hidden tests check the same things more thoroughly, against peft."""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load as load_safetensors

import lora_probes as probes


def _linear(rng, in_f, out_f):
    return torch.randn(out_f, in_f, generator=rng) / in_f**0.5, 0.1 * torch.randn(out_f, generator=rng)


def _adapter(rng, in_f, out_f, r):
    return 0.5 * torch.randn(r, in_f, generator=rng), 0.5 * torch.randn(out_f, r, generator=rng)


# ------------------------------------------------------------------ task 1: one LoRA layer

@pytest.mark.task("1.1")
@pytest.mark.points(2)
def test_layer_shapes_zero_b_and_frozen_base(submission):
    facts = submission.run(probes.layer_facts, 6, 5, 2)
    assert tuple(facts["A"].shape) == (2, 6), "lora_A is (r, in_features)"
    assert tuple(facts["B"].shape) == (5, 2), "lora_B is (out_features, r)"
    assert torch.count_nonzero(facts["B"]) == 0, "lora_B starts at zero"
    assert torch.count_nonzero(facts["A"]) > 0, "lora_A starts random (kaiming_uniform_)"
    assert facts["scaling"] == 1.0, "alpha defaults to r, so scaling defaults to 1"
    assert facts["merged"] is False
    assert not facts["base_weight_requires_grad"] and not facts["base_bias_requires_grad"], "freeze the base"
    assert facts["A_requires_grad"] and facts["B_requires_grad"], "A and B are trainable"


@pytest.mark.task("1.1")
@pytest.mark.points(1)
def test_layer_rank_must_be_positive(submission):
    with pytest.raises(ValueError):
        submission.run(probes.layer_facts, 6, 5, 0)


@pytest.mark.task("1.2")
@pytest.mark.points(2)
def test_fresh_layer_computes_the_base_output(submission, rng):
    weight, bias = _linear(rng, 6, 5)
    x = torch.randn(2, 3, 6, generator=rng)
    out = submission.run(probes.forward, weight, bias, 2, 8.0, None, None, x)
    torch.testing.assert_close(out, F.linear(x, weight, bias))


@pytest.mark.task("1.2")
@pytest.mark.points(2)
def test_forward_adds_the_scaled_low_rank_update(submission, rng):
    r, alpha = 2, 8.0
    weight, bias = _linear(rng, 6, 5)
    a, b = _adapter(rng, 6, 5, r)
    x = torch.randn(2, 3, 6, generator=rng)
    out = submission.run(probes.forward, weight, bias, r, alpha, a, b, x)
    expected = F.linear(x, weight, bias) + x @ a.T @ b.T * (alpha / r)
    torch.testing.assert_close(out, expected)


@pytest.mark.task("1.3")
@pytest.mark.points(1)
def test_delta_weight_is_scaled_b_times_a(submission, rng):
    r, alpha = 3, 6.0
    weight, bias = _linear(rng, 4, 7)
    a, b = _adapter(rng, 4, 7, r)
    got = submission.run(probes.delta, weight, bias, r, alpha, a, b)
    torch.testing.assert_close(got, b @ a * (alpha / r))


@pytest.mark.task("1.4")
@pytest.mark.points(2)
def test_merge_keeps_the_output(submission, rng):
    r, alpha = 2, 4.0
    weight, bias = _linear(rng, 6, 5)
    a, b = _adapter(rng, 6, 5, r)
    x = torch.randn(4, 6, generator=rng)
    before, merged, _ = submission.run(probes.merge_unmerge, weight, bias, r, alpha, a, b, x)
    assert merged["merged"] is True
    torch.testing.assert_close(merged["weight"], weight + b @ a * (alpha / r))
    torch.testing.assert_close(merged["out"], before["out"], rtol=1e-5, atol=1e-5)


@pytest.mark.task("1.5")
@pytest.mark.points(1)
def test_unmerge_gives_the_weight_back(submission, rng):
    r, alpha = 2, 4.0
    weight, bias = _linear(rng, 6, 5)
    a, b = _adapter(rng, 6, 5, r)
    x = torch.randn(4, 6, generator=rng)
    before, _, unmerged = submission.run(probes.merge_unmerge, weight, bias, r, alpha, a, b, x)
    assert unmerged["merged"] is False
    torch.testing.assert_close(unmerged["weight"], weight)
    torch.testing.assert_close(unmerged["out"], before["out"], rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ task 2: a whole model

@pytest.mark.task("2.1")
@pytest.mark.points(2)
def test_inject_replaces_targets_and_freezes_the_rest(submission):
    got = submission.run(probes.inject_tiny_net, 0, ["up_proj", "down_proj"], 2)
    assert got["names"] == ["block.down_proj", "block.up_proj"], "the replaced names, sorted"
    assert got["trainable"] == ["block.down_proj.lora_A", "block.down_proj.lora_B",
                                "block.up_proj.lora_A", "block.up_proj.lora_B"]


@pytest.mark.task("2.2")
@pytest.mark.points(1)
def test_count_parameters_of_tiny_net(submission):
    got = submission.run(probes.inject_tiny_net, 0, ["head"], 2)
    # TinyNet: Embedding(10, 8), Linear(8, 16), Linear(16, 8), Linear(8, 3); r = 2 on head
    base = 10 * 8 + (8 * 16 + 16) + (16 * 8 + 8) + (8 * 3 + 3)
    adapter = 2 * 8 + 3 * 2  # A (r, in) + B (out, r)
    assert tuple(got["counts"]) == (adapter, base + adapter)


@pytest.mark.task("2.3")
@pytest.mark.points(1)
def test_lora_parameter_count_by_hand(submission):
    config = dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=4)
    got = submission.run(probes.parameter_count, config, 8, ["q_proj", "v_proj"])
    # per layer, q_proj and v_proj are each (64 -> 64): A is 8 x 64, B is 64 x 8
    assert got == 3 * 2 * (8 * 64 + 64 * 8)


# ------------------------------------------------------------------ task 3: the adapter

@pytest.mark.task("3.1")
@pytest.mark.points(1)
def test_state_dict_uses_peft_names(submission):
    got = submission.run(probes.adapter_of_tiny_net, 0, ["up_proj"], 4, 8.0)
    assert sorted(got["state"]) == ["base_model.model.block.up_proj.lora_A.weight",
                                    "base_model.model.block.up_proj.lora_B.weight"]
    assert tuple(got["state"]["base_model.model.block.up_proj.lora_A.weight"].shape) == (4, 8)


@pytest.mark.task("3.2")
@pytest.mark.points(1)
def test_save_adapter_writes_peft_files(submission):
    got = submission.run(probes.adapter_of_tiny_net, 0, ["up_proj", "head"], 4, 8.0)
    files = got["files"]
    assert {"adapter_model.safetensors", "adapter_config.json"} <= set(files)
    config = json.loads(files["adapter_config.json"])
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 8.0
    assert sorted(config["target_modules"]) == ["head", "up_proj"]
    saved = load_safetensors(files["adapter_model.safetensors"])
    assert sorted(saved) == sorted(got["state"])
    for key, value in got["state"].items():
        torch.testing.assert_close(saved[key], value)


@pytest.mark.task("3.3")
@pytest.mark.points(1)
def test_merge_lora_leaves_plain_linears(submission, rng):
    tokens = torch.randint(0, 10, (2, 5), generator=rng)
    got = submission.run(probes.merged_tiny_net, 0, ["up_proj", "down_proj"], 2, tokens)
    assert got["types"] == ["Linear", "Linear"]
    torch.testing.assert_close(got["after"], got["before"], rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ task 4: training

@pytest.mark.task("4.1")
@pytest.mark.points(2)
def test_train_lora_lowers_the_loss(submission, rng):
    config = dict(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=4)
    ids = torch.randint(0, 50, (4, 12), generator=rng)
    batches = [{"input_ids": ids, "labels": ids}]
    got = submission.run(probes.train_tiny_llama, config, 0, ["q_proj", "v_proj"], 4, batches, 10, 1e-2)
    losses = got["losses"]
    assert len(losses) == 10
    assert losses[-1] < losses[0], f"the loss should fall: {losses}"
    torch.testing.assert_close(got["base_weight_after"], got["base_weight_before"], rtol=0, atol=0,
                               msg="train_lora must not change the frozen base weights")

"""Hidden tests of injection into a whole model and of parameter counting, held to peft.

The student's model and peft's are built from the same config dict and the same random base
weights (a tiny Llama with biases); the same A/B values go into both.
"""

import pytest
import torch

import lora_oracle as oracle
from lora_oracle import one_torch_thread  # noqa: F401  (autouse fixture)
import probes

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.mark.task("2.1")
@pytest.mark.points(4)
@pytest.mark.parametrize("targets", [["q_proj", "v_proj"],
                                     ["self_attn.o_proj", "down_proj", "lm_head"],
                                     ["model.layers.1.mlp.up_proj", "k_proj"]])
def test_inject_targets_and_freezes_like_peft(submission, rng, targets):
    config, state = oracle.tiny_state(rng)
    got = submission.run(probes.inject, config, state, targets, 4, 8.0)
    expected = oracle.peft_targets(oracle.peft_model(config, state, targets, 4, 8.0))
    assert got["names"] == expected, "inject_lora must replace exactly the Linear layers peft targets, sorted"
    assert got["lora_layers"] == expected, "every returned name must now be a LoRALinear"
    lora_params = {f"{n}.lora_A" for n in expected} | {f"{n}.lora_B" for n in expected}
    assert set(got["trainable"]) == lora_params, \
        f"only the adapters may be trainable; also trainable: {sorted(set(got['trainable']) - lora_params)[:5]}"
    # every base parameter (embeddings, norms, weights and biases) is still there, frozen
    base_names = set()
    for key in state:
        layer, _, leaf = key.rpartition(".")
        base_names.add(f"{layer}.base.{leaf}" if layer in expected else key)
    assert set(got["frozen"]) == base_names


@pytest.mark.task("2.1")
@pytest.mark.points(3)
@pytest.mark.parametrize("targets", [["proj"], ["mlp"]])
def test_inject_without_match_lists_linears(submission, rng, targets):
    config, state = oracle.tiny_state(rng, num_hidden_layers=1)
    with pytest.raises(ValueError):  # peft agrees that nothing matches
        oracle.peft_model(config, state, targets, 2, 2.0)
    with pytest.raises(ValueError) as caught:
        submission.run(probes.inject, config, state, targets, 2)
    message = str(caught.value)
    missing = [n for n in oracle.linear_names(config) if n not in message]
    assert not missing, f"the error must list the model's Linear layers; missing {missing[:3]}"


@pytest.mark.task("2.1")
@pytest.mark.points(8)
@pytest.mark.parametrize("targets,r,alpha", [(["q_proj", "v_proj"], 4, 16.0),
                                             (ALL_LINEAR, 2, 3.0),
                                             (["lm_head", "o_proj"], 8, 4.0)])
def test_logits_match_peft(submission, rng, targets, r, alpha):
    config, state = oracle.tiny_state(rng)
    reference = oracle.peft_model(config, state, targets, r, alpha)
    names = oracle.peft_targets(reference)
    adapters = oracle.random_adapters(rng, oracle.linear_shapes(config, names), r)
    oracle.set_peft_adapters(reference, adapters)
    input_ids = torch.randint(0, config["vocab_size"], (2, 12), generator=rng)
    got = submission.run(probes.logits, config, state, targets, r, alpha, adapters, input_ids)
    with torch.no_grad():
        expected = reference(input_ids=input_ids).logits
        base = oracle.tiny_model(config, state)(input_ids=input_ids).logits
    assert got["names"] == names
    assert not torch.allclose(expected, base, atol=1e-3), "test inputs too weak"  # the adapters matter
    torch.testing.assert_close(got["logits"], expected, **oracle.LOGITS_TOL)


@pytest.mark.task("2.2")
@pytest.mark.points(3)
@pytest.mark.parametrize("tied", [False, True])
def test_count_parameters_matches_peft(submission, rng, tied):
    config, state = oracle.tiny_state(rng, tie_word_embeddings=tied)
    targets, r = ["q_proj", "v_proj", "down_proj"], 4
    got = submission.run(probes.counts, config, state, targets, r, 4.0)
    total = sum(p.numel() for p in oracle.tiny_model(config, state).parameters())
    assert tuple(got["before"]) == (total, total), "(trainable, total) of the untouched model"
    reference = oracle.peft_model(config, state, targets, r, 4.0)
    assert tuple(got["after"]) == tuple(reference.get_nb_trainable_parameters())


@pytest.mark.task("2.3")
@pytest.mark.points(5)
@pytest.mark.parametrize("r,targets", [(8, ["q_proj", "v_proj"]),
                                       (16, ["q_proj", "k_proj", "v_proj", "o_proj"]),
                                       (4, ["gate_proj", "up_proj", "down_proj"]),
                                       (64, ["lm_head"])])
def test_lora_parameter_count_llama2_7b(submission, r, targets):
    got = submission.run(probes.parameter_count, oracle.LLAMA2_7B, r, targets)
    assert got == oracle.peft_trainable_count(oracle.LLAMA2_7B, r, targets)

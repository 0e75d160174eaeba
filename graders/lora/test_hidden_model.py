"""Hidden tests of injection into a whole model and of parameter counting, held to peft.

The student's model and peft's are built from the same config dict and the same random base
weights (a tiny Llama with biases); the same A/B values go into both. The probes return names,
type names, requires_grad flags, counts and logits; every decision is made here.
"""

import pytest
import torch

from course.grading.diagnose import explain

import lora_oracle as oracle
from lora_oracle import explain_close, one_torch_thread  # noqa: F401  (autouse fixture)
from misconceptions import CATALOGUE
import probes

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA_TYPE = "lora.LoRALinear"


def _targets_id(targets):
    return "targets " + ", ".join(targets) if targets != ALL_LINEAR else "every linear layer of the blocks"


INJECT = [["q_proj", "v_proj"], ["self_attn.o_proj", "down_proj", "lm_head"], ["model.layers.1.mlp.up_proj", "k_proj"]]


@pytest.mark.task("2.1")
@pytest.mark.points(3)
@pytest.mark.parametrize("targets", INJECT, ids=[_targets_id(t) for t in INJECT])
def test_inject_targets_and_freezes_like_peft(submission, rng, targets):
    config, state = oracle.tiny_state(rng)
    got = submission.run(probes.inject, config, state, targets, 4, 8.0)
    expected = oracle.peft_targets(oracle.peft_model(config, state, targets, 4, 8.0))
    linears = oracle.linear_names(config)

    def rule(name):
        return lambda: oracle.match_rule(name, linears, targets)
    with explain(got["names"], None, CATALOGUE, generic=False, what="the layers inject_lora replaces (peft's rule)",
                 variants={"targets_by_substring": rule("substring"), "targets_by_last_part": rule("last_part"),
                           "targets_endswith_without_dot": rule("endswith"),
                           "names_not_sorted": lambda: [n for n in linears if n in expected]}):
        assert got["names"] == expected, "inject_lora must replace exactly the Linear layers peft targets, sorted"
    lora_layers = sorted(n for n, t in got["types"].items() if t == LORA_TYPE)
    assert lora_layers == expected, "every returned name must now be a LoRALinear (and no other layer)"
    lora_params = sorted([f"{n}.lora_A" for n in expected] + [f"{n}.lora_B" for n in expected])
    trainable = sorted(n for n, flag in got["requires_grad"].items() if flag)
    with explain(trainable, None, CATALOGUE, generic=False, what="only the new lora_A and lora_B trainable",
                 variants={"rest_not_frozen": lambda: sorted(n for n in got["requires_grad"]  # LoRALinear froze its base
                                                             if not any(n.startswith(f"{m}.base.") for m in expected)),
                           "adapters_frozen_too": lambda: []}):
        assert trainable == lora_params, \
            f"only the adapters may be trainable; also trainable: {sorted(set(trainable) - set(lora_params))[:5]}"
    # every base parameter (embeddings, norms, weights and biases) is still there, frozen
    base_names = set()
    for key in state:
        layer, _, leaf = key.rpartition(".")
        base_names.add(f"{layer}.base.{leaf}" if layer in expected else key)
    frozen = {n for n, flag in got["requires_grad"].items() if not flag}
    assert frozen == base_names


def _outcome(got):
    return got["names"] if "names" in got else ("raises", got.get("error"))


# target lists where peft's rule (equal, or ends with "." + target) differs from the plausible
# wrong ones: by substring, by the last name part, by endswith without the dot
RULE_CASES = [["attn.q_proj", "v_proj"], ["mlp"], ["model.layers.0.self_attn.o_proj", "lm_head"], ["0.mlp.gate_proj"]]


@pytest.mark.task("2.1")
@pytest.mark.points(3)
def test_inject_matches_targets_by_whole_name_parts(submission, rng):
    config, state = oracle.tiny_state(rng, num_hidden_layers=1)
    got = [_outcome(g) for g in submission.run(probes.inject_each, config, state, RULE_CASES, 2)]
    linears = oracle.linear_names(config)
    expected = []
    for targets in RULE_CASES:
        try:
            expected.append(oracle.peft_targets(oracle.peft_model(config, state, targets, 2, 2.0)))
        except ValueError:  # peft agrees that nothing matches
            expected.append(("raises", "ValueError"))

    def rule(name, order=sorted):
        def outcomes():
            out = []
            for targets in RULE_CASES:
                names = order(oracle.match_rule(name, linears, targets))
                out.append(names if names else ("raises", "ValueError"))
            return out
        return outcomes
    with explain(got, None, CATALOGUE, generic=False, what="target matching: a name equal to a target or "
                 "ending with '.' + target",
                 variants={"targets_by_substring": rule("substring"), "targets_by_last_part": rule("last_part"),
                           "targets_endswith_without_dot": rule("endswith"),
                           "names_not_sorted": rule("peft", lambda names: [n for n in linears if n in names])}):
        for targets, mine, theirs in zip(RULE_CASES, got, expected):
            assert mine == theirs, f"target_modules={targets}: expected {theirs}, got {mine}"


@pytest.mark.task("2.1")
@pytest.mark.points(2)
@pytest.mark.parametrize("targets", [["proj"], ["mlp"]], ids=["targets proj", "targets mlp"])
def test_inject_without_match_lists_linears(submission, rng, targets):
    config, state = oracle.tiny_state(rng, num_hidden_layers=1)
    with pytest.raises(ValueError):  # peft agrees that nothing matches
        oracle.peft_model(config, state, targets, 2, 2.0)
    with pytest.raises(ValueError) as caught:
        submission.run(probes.inject, config, state, targets, 2)
    message = str(caught.value)
    missing = [n for n in oracle.linear_names(config) if n not in message]
    assert not missing, f"the error must list the model's Linear layers; missing {missing[:3]}"


LOGITS = [(["q_proj", "v_proj"], 4, 16.0), (ALL_LINEAR, 2, 3.0), (["lm_head", "o_proj"], 8, 4.0)]


@pytest.mark.task("2.1")
@pytest.mark.points(5)
@pytest.mark.parametrize("targets,r,alpha", LOGITS, ids=[f"{_targets_id(t)}, r={r}, alpha={a:g}" for t, r, a in LOGITS])
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
    with explain(got["names"], None, CATALOGUE, generic=False, what="the names inject_lora returns",
                 variants={"names_not_sorted": lambda: [n for n in oracle.linear_names(config) if n in names]}):
        assert got["names"] == names, "inject_lora returns the replaced names, sorted"
    assert not torch.allclose(expected, base, atol=1e-3), "test inputs too weak"  # the adapters matter

    def with_scaling(scaling):
        def logits():
            twin = oracle.peft_model(config, state, targets, r, oracle.with_scaling(r, scaling))
            oracle.set_peft_adapters(twin, adapters)
            with torch.no_grad():
                return twin(input_ids=input_ids).logits
        return logits
    with explain_close(got["logits"], {"scaling_inverted": with_scaling(r / alpha), "scaling_ignored": with_scaling(1.0)},
                       what="logits of the adapted tiny Llama equal peft's"):
        torch.testing.assert_close(got["logits"], expected, **oracle.LOGITS_TOL)


@pytest.mark.task("2.1")
@pytest.mark.points(2)
def test_inject_gives_every_layer_its_dropout(submission, rng):
    targets, r, alpha, p = ["q_proj", "v_proj", "down_proj"], 4, 8.0, 0.5
    config, state = oracle.tiny_state(rng)
    reference = oracle.peft_model(config, state, targets, r, alpha, dropout=p)
    names = oracle.peft_targets(reference)
    adapters = oracle.random_adapters(rng, oracle.linear_shapes(config, names), r, scale=0.5)
    oracle.set_peft_adapters(reference, adapters)
    input_ids = torch.randint(0, config["vocab_size"], (2, 12), generator=rng)
    got = submission.run(probes.logits, config, state, targets, r, alpha, adapters, input_ids, p,
                         oracle.seed_from(rng))
    with torch.no_grad():
        expected = reference(input_ids=input_ids).logits
    torch.testing.assert_close(got["logits"], expected, **oracle.LOGITS_TOL,
                               msg="in eval mode the dropout of the LoRA layers does nothing")
    first, second = got["train"]
    # train mode: every forward draws new dropout masks, so two forwards differ, and differ from eval
    oracle.fact("dropout_not_passed_on", oracle.close(first, got["logits"]) and oracle.close(second, got["logits"]),
                "the dropout of every LoRA layer acts in train mode")
    assert not torch.allclose(first, got["logits"], rtol=1e-4, atol=1e-4), \
        "in train mode the LoRA layers' dropout must act: is dropout passed on to every LoRALinear?"
    assert not torch.allclose(first, second, rtol=1e-4, atol=1e-4), \
        "two train-mode forwards must draw different dropout masks"


@pytest.mark.task("2.2")
@pytest.mark.points(3)
@pytest.mark.parametrize("tied", [False, True], ids=["separate embeddings and head", "tied embeddings and head"])
def test_count_parameters_matches_peft(submission, rng, tied):
    config, state = oracle.tiny_state(rng, tie_word_embeddings=tied)
    targets, r = ["q_proj", "v_proj", "down_proj"], 4
    got = submission.run(probes.counts, config, state, targets, r, 4.0)
    total = sum(p.numel() for p in oracle.tiny_model(config, state).parameters())
    tied_numel = config["vocab_size"] * config["hidden_size"] if tied else 0
    what = "(trainable, total) parameter counts"
    with explain(list(got["before"]), None, CATALOGUE, generic=False, what=what,
                 variants={"tied_weights_counted_twice": lambda: [total + tied_numel] * 2} if tied else {}):
        assert tuple(got["before"]) == (total, total), "(trainable, total) of the untouched model"
    reference = oracle.peft_model(config, state, targets, r, 4.0)
    expected = tuple(reference.get_nb_trainable_parameters())
    with explain(list(got["after"]), None, CATALOGUE, generic=False, what=what,
                 variants={"counts_swapped": lambda: [expected[1], expected[0]]}):
        assert tuple(got["after"]) == expected


PARAMETER_COUNTS = [(8, ["q_proj", "v_proj"]), (16, ["q_proj", "k_proj", "v_proj", "o_proj"]),
                    (4, ["gate_proj", "up_proj", "down_proj"]), (64, ["lm_head"])]


@pytest.mark.task("2.3")
@pytest.mark.points(3)
@pytest.mark.parametrize("r,targets", PARAMETER_COUNTS,
                         ids=[f"Llama-2-7B shape, r={r}, {_targets_id(t)}" for r, t in PARAMETER_COUNTS])
def test_lora_parameter_count_llama2_7b(submission, r, targets):
    small = dict(oracle.TINY, num_hidden_layers=1)
    got = submission.run(probes.parameter_count_and_pair, oracle.LLAMA2_7B, r, targets, small)
    trainable, total, a_only = oracle.peft_counts(oracle.LLAMA2_7B, r, targets)
    # a count_parameters that returns (total, trainable) makes a correct lora_parameter_count
    # return the total: then the misconception is the order of the pair, named by the 2.2 tests
    small_trainable, small_total, _ = oracle.peft_counts(small, r, targets)
    swapped_pair = got["pair"] == [small_total, small_trainable]
    variants = {"parameter_count_A_only": lambda: a_only}
    if not swapped_pair:
        variants["parameter_count_total"] = lambda: total
    with explain(got["count"], None, CATALOGUE, generic=False, what="the trainable parameters LoRA adds (peft's count)",
                 variants=variants):
        assert got["count"] == trainable

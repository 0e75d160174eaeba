"""Hidden tests of the adapter as a file and as weights: state dict names (and copies), save/load
through peft in both directions, merge_lora, and the training loop (frozen base, AdamW, dropout
on in training)."""

import json

import pytest
import torch
import torch.nn.functional as F
from peft import PeftModel
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file

from course.grading.diagnose import explain

import lora_oracle as oracle
from lora_oracle import explain_close, fact, one_torch_thread  # noqa: F401  (autouse fixture)
from misconceptions import CATALOGUE
import probes

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LINEAR_TYPE = "torch.nn.modules.linear.Linear"
LORA_TYPE = "lora.LoRALinear"


def _setup(rng, targets, r, alpha, **overrides):
    """A tiny Llama, its peft twin with random adapters, the adapters, and input ids."""
    config, state = oracle.tiny_state(rng, **overrides)
    reference = oracle.peft_model(config, state, targets, r, alpha)
    names = oracle.peft_targets(reference)
    adapters = oracle.random_adapters(rng, oracle.linear_shapes(config, names), r)
    oracle.set_peft_adapters(reference, adapters)
    input_ids = torch.randint(0, config["vocab_size"], (2, 10), generator=rng)
    return config, state, reference, adapters, input_ids


def _logits(model, input_ids):
    with torch.no_grad():
        return model(input_ids=input_ids).logits


def _targets_id(targets):
    return "targets " + ", ".join(targets)


STATE_TARGETS = [["q_proj", "v_proj"], ["down_proj", "lm_head"]]


@pytest.mark.task("3.1")
@pytest.mark.points(3)
@pytest.mark.parametrize("targets", STATE_TARGETS, ids=[_targets_id(t) for t in STATE_TARGETS])
def test_lora_state_dict_named_like_peft(submission, rng, targets):
    config, state, reference, adapters, _ = _setup(rng, targets, 4, 8.0)
    got = submission.run(probes.adapter_state, config, state, targets, 4, 8.0, adapters, 0.0)["state"]
    expected = get_peft_model_state_dict(reference, save_embedding_layers=False)  # adapters only
    prefix = oracle.PEFT_PREFIX
    extra, missing = set(got) - set(expected), set(expected) - set(got)  # the student's keys that are not peft's
    with explain_close(None, {}, what="the keys of lora_state_dict (peft's names)", facts={
            "state_dict_without_prefix": lambda: bool(extra) and {prefix + k for k in extra} == missing,
            "state_dict_without_weight_suffix": lambda: bool(extra) and {k + ".weight" for k in extra} == missing}):
        assert sorted(got) == sorted(expected), \
            f"keys must be peft's (e.g. {sorted(expected)[0]!r}); got e.g. {sorted(got)[:1]}"
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=0, msg=f"{key} holds the wrong tensor")


@pytest.mark.task("3.1")
@pytest.mark.points(2)
def test_lora_state_dict_holds_copies(submission, rng):
    # the probe takes the state dict, then adds 1 in place to every live lora_A and lora_B: a
    # state dict of copies keeps the values it was taken with
    targets, r, alpha, bump = ["q_proj", "up_proj"], 4, 8.0, 1.0
    config, state, _, adapters, _ = _setup(rng, targets, r, alpha)
    got = submission.run(probes.adapter_state, config, state, targets, r, alpha, adapters, bump)
    for name, (a, b) in adapters.items():  # the live adapters did move (the probe's change happened)
        torch.testing.assert_close(got["live"][name][0], a + bump, rtol=0, atol=0)
        torch.testing.assert_close(got["live"][name][1], b + bump, rtol=0, atol=0)
    expected = {f"{oracle.PEFT_PREFIX}{n}.lora_{w}.weight": t for n, (a, b) in adapters.items()
                for w, t in (("A", a), ("B", b))}
    assert sorted(got["state"]) == sorted(expected), "keys must be peft's"
    with explain(got["state"], None, CATALOGUE, generic=False, what="lora_state_dict returns copies",
                 variants={"state_dict_shares_storage": lambda: {k: v + bump for k, v in expected.items()}}):
        for key, value in expected.items():
            torch.testing.assert_close(got["state"][key], value, rtol=0, atol=0,
                                       msg=f"{key} changed with the live adapter: return copies (detach().clone())")


@pytest.mark.task("3.1")
@pytest.mark.points(3)
def test_peft_saved_adapter_loads_by_name(submission, rng, tmp_path):
    targets, r, alpha = ["q_proj", "k_proj", "up_proj"], 4, 12.0
    config, state, reference, _, input_ids = _setup(rng, targets, r, alpha)
    reference.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "adapter_model.safetensors")
    got = submission.run(probes.load_by_name, config, state, targets, r, alpha, tensors, input_ids)
    assert got["keys"] == sorted(tensors), "lora_state_dict's names must be those of peft's saved file"
    torch.testing.assert_close(got["logits"], _logits(reference, input_ids), **oracle.LOGITS_TOL)


SAVE = [(["q_proj", "v_proj"], 4, 16.0), (["o_proj", "up_proj", "lm_head"], 2, 5.0)]


@pytest.mark.task("3.2")
@pytest.mark.points(4)
@pytest.mark.parametrize("targets,r,alpha", SAVE, ids=[f"{_targets_id(t)}, r={r}, alpha={a:g}" for t, r, a in SAVE])
def test_save_adapter_loads_in_peft(submission, rng, tmp_path, targets, r, alpha):
    config, state, reference, adapters, input_ids = _setup(rng, targets, r, alpha)
    got = submission.run(probes.saved_adapter, config, state, targets, r, alpha, adapters, input_ids,
                         "tiny-llama")
    assert {"adapter_model.safetensors", "adapter_config.json"} <= set(got["files"])
    folder = tmp_path / "adapter"
    folder.mkdir()
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        (folder / name).write_bytes(got["files"][name])
    meta = json.loads(got["files"]["adapter_config.json"])
    assert meta.get("peft_type") == "LORA"
    fact("config_alpha_is_r", meta.get("lora_alpha") == r, "adapter_config.json describes the adapter")
    assert meta.get("r") == r and meta.get("lora_alpha") == alpha
    assert sorted(meta.get("target_modules") or []) == sorted(targets)
    fact("config_without_base_model", meta.get("base_model_name_or_path") is None,
         "adapter_config.json describes the adapter")
    assert meta.get("base_model_name_or_path") == "tiny-llama"
    # the adapters saved here have no dropout; the config describes them as they are (a missing key
    # is peft's default, which says the same)
    assert meta.get("lora_dropout", 0.0) == 0.0, \
        f"adapter_config.json: lora_dropout must be the layers' dropout (0.0 here), got {meta.get('lora_dropout')!r}"
    assert meta.get("fan_in_fan_out", False) is False, \
        "adapter_config.json: fan_in_fan_out must be false (nn.Linear stores its weight as (out, in))"
    loaded = PeftModel.from_pretrained(oracle.tiny_model(config, state), folder).eval()
    for name, (a, b) in adapters.items():  # every tensor arrived, under its own name
        layer = loaded.base_model.model.get_submodule(name)
        torch.testing.assert_close(layer.lora_A["default"].weight.detach(), a, rtol=0, atol=0)
        torch.testing.assert_close(layer.lora_B["default"].weight.detach(), b, rtol=0, atol=0)
    torch.testing.assert_close(_logits(loaded, input_ids), got["logits"], **oracle.LOGITS_TOL)
    torch.testing.assert_close(got["logits"], _logits(reference, input_ids), **oracle.LOGITS_TOL)


@pytest.mark.task("3.3")
@pytest.mark.points(4)
@pytest.mark.parametrize("premerge", [False, True], ids=["adapters not merged yet", "every layer merged already"])
def test_merge_lora_matches_peft(submission, rng, premerge):
    targets, r, alpha = ["q_proj", "v_proj", "o_proj", "up_proj"], 4, 8.0
    config, state, reference, adapters, input_ids = _setup(rng, targets, r, alpha)
    shapes = oracle.linear_shapes(config, list(adapters))
    layer_inputs = {n: torch.randn(3, in_f, generator=rng) for n, (_, in_f) in shapes.items()}
    got = submission.run(probes.merged_model, config, state, targets, r, alpha, adapters, input_ids, premerge,
                         layer_inputs)
    expected_logits = _logits(reference, input_ids)
    deltas = {n: reference.base_model.model.get_submodule(n).get_delta_weight("default").detach().clone()
              for n in adapters}
    merged = reference.merge_and_unload()
    what = "merge_lora: plain frozen nn.Linear layers holding W + B @ A * scaling, merged once"
    for name, layer in got["premerged"].items():  # the layers' own merge(), twice: merged once
        fact("merge_flag_not_set", layer["merged"] is False, what)
        assert layer["merged"] is True, f"{name}: merge() must set merged"
        fact("merge_not_idempotent", oracle.close(layer["weight"], state[f"{name}.weight"] + 2 * deltas[name]), what)
        torch.testing.assert_close(layer["weight"], merged.get_submodule(name).weight.detach(), rtol=1e-5, atol=1e-6,
                                   msg=f"{name}: merge() twice must merge once")
        fact("merge_makes_base_trainable", any(layer["requires_grad"].values()), what)
        assert not any(layer["requires_grad"].values()), f"{name}: after merge() the base must stay frozen"
    left = sorted(n for n, t in got["types"].items() if t == LORA_TYPE)
    fact("merge_lora_keeps_wrappers", bool(left), what)
    assert left == [], "merge_lora must leave no LoRALinear behind"
    for name, layer in got["layers"].items():
        assert layer["type"] == LINEAR_TYPE, f"{name} must be a plain nn.Linear after merge_lora"
        fact("merge_lora_drops_bias", layer["bias"] is None, what)
        assert layer["keys"] == ["bias", "weight"], f"{name}: a plain nn.Linear holds weight and bias only"
        twice = state[f"{name}.weight"] + 2 * deltas[name]
        with explain_close(layer["weight"], {"merge_lora_merges_twice": lambda twice=twice: twice} if premerge else {},
                           what=what):
            torch.testing.assert_close(layer["weight"], merged.get_submodule(name).weight.detach(),
                                       rtol=1e-5, atol=1e-6, msg=f"{name}: the merged weight is W + B @ A * scaling "
                                                                 "(merged once)")
        torch.testing.assert_close(layer["bias"], state[f"{name}.bias"], rtol=0, atol=0,
                                   msg=f"{name}: the bias must be kept")
        torch.testing.assert_close(layer["out"], F.linear(layer_inputs[name], layer["weight"], layer["bias"]),
                                   rtol=1e-5, atol=1e-5, msg=f"{name} must compute x @ weight.T + bias")
    # with the layers merged by their own merge() first (and found frozen), a trainable merged
    # layer after merge_lora is merge_lora's doing
    trainable_layers = sorted(f"{n}.{p}" for n, layer in got["layers"].items()
                              for p, flag in layer["requires_grad"].items() if flag)
    fact("merge_lora_trainable", bool(premerge and trainable_layers), what)
    assert trainable_layers == [], f"the layers merge_lora puts back must stay frozen: {trainable_layers[:4]}"
    trainable = sorted(n for n, flag in got["requires_grad"].items() if flag)
    fact("rest_not_frozen", bool(trainable), what)
    assert trainable == [], f"after merge_lora every parameter stays frozen, as in peft; trainable: {trainable[:4]}"
    torch.testing.assert_close(got["before"], expected_logits, **oracle.LOGITS_TOL)
    torch.testing.assert_close(got["after"], expected_logits, **oracle.LOGITS_TOL)


def _task(rng, config, n_batches=2, batch=4, seq=16):
    out = []
    for _ in range(n_batches):
        ids = torch.randint(0, config["vocab_size"], (batch, seq), generator=rng)
        out.append({"input_ids": ids, "labels": ids.clone()})
    return out


TRAIN = dict(targets=ALL_LINEAR, r=4, alpha=8.0, steps=12, lr=2e-2)


@pytest.mark.task("4.1")
@pytest.mark.points(3)
def test_train_lora_moves_only_adapters(submission, rng):
    t = TRAIN
    config, state = oracle.tiny_state(rng)
    batches = _task(rng, config)
    got = submission.run(probes.trained, config, state, t["targets"], t["r"], t["alpha"], batches, t["steps"], t["lr"])
    names = got["names"]
    losses = got["losses"]
    fact("wrong_number_of_steps", len(losses) != t["steps"], "one optimiser step and one loss per step")
    assert len(losses) == t["steps"], "one loss per step"
    base = oracle.tiny_model(config, state)
    with torch.no_grad():
        first = base(**batches[0]).loss.item()
    assert losses[0] == pytest.approx(first, rel=1e-5), \
        "the first loss is the base model's loss on batches[0] (B = 0), recorded before the step"
    # only that it falls: how fast depends on the scaling, which test_train_lora_follows_adamw grades
    # (a 10% bar here failed a wrong scaling on some seeds only, so its grade changed between runs)
    assert losses[-1] < 0.98 * losses[0], f"the loss should fall: {losses[0]:.3f} -> {losses[-1]:.3f}"
    changed_base = []
    for key, value in state.items():
        layer, _, leaf = key.rpartition(".")
        student_key = f"{layer}.base.{leaf}" if layer in names else key
        if not torch.equal(got["after"][student_key], value):
            changed_base.append(key)
    assert not changed_base, f"base weights changed during training: {changed_base[:4]}"
    for name in names:
        a0, b0 = got["start"][name]
        assert not torch.equal(got["after"][f"{name}.lora_A"], a0), f"{name}.lora_A did not train"
        assert not torch.equal(got["after"][f"{name}.lora_B"], b0), f"{name}.lora_B did not train"


@pytest.mark.task("4.1")
@pytest.mark.points(3)
def test_train_lora_follows_adamw(submission, rng):
    t = TRAIN
    config, state = oracle.tiny_state(rng)
    batches = _task(rng, config, n_batches=3)
    got = submission.run(probes.trained, config, state, t["targets"], t["r"], t["alpha"], batches, t["steps"], t["lr"])
    fact("wrong_number_of_steps", len(got["losses"]) != t["steps"], "one optimiser step and one loss per step")
    # the same run with peft's model and torch's AdamW, from the student's initial adapters
    args = (config, state, t["targets"], t["r"], t["alpha"], got["start"], batches, t["steps"], t["lr"])
    expected, reference = oracle.peft_train(*args)
    keys = [f"{n}.lora_{w}" for n in got["names"] for w in "AB"]

    def adapters(model):
        return {k: getattr(model.base_model.model.get_submodule(k.rsplit(".", 1)[0]), k.rsplit(".", 1)[1])
                ["default"].weight.detach() for k in keys}

    def wrong(**how):  # a catalogue variant: the losses and adapters of a wrong training loop
        def run():
            losses, model = oracle.peft_train(*args, **how)
            return oracle.losses_tensor(losses), adapters(model)
        return run
    mine = (oracle.losses_tensor(got["losses"]), {k: got["after"].get(k) for k in keys})
    with explain_close(mine, {"gradients_accumulate": wrong(zero_grad=False), "loss_after_step": wrong(loss_after_step=True),
                              "always_first_batch": wrong(first_batch_only=True), "adam_not_adamw": wrong(adam=True),
                              "learning_rate_ignored": wrong(default_lr=True)},
                       what="the losses and adapters of AdamW over the adapters, one batch per step in turn"):
        assert got["losses"] == pytest.approx(expected, rel=1e-4)
        for key, value in adapters(reference).items():
            torch.testing.assert_close(got["after"][key], value, rtol=1e-3, atol=1e-4, msg=f"{key} after training")


@pytest.mark.task("4.1")
@pytest.mark.points(3)
def test_train_lora_trains_with_dropout_on(submission, rng):
    # the model arrives in eval mode, its LoRA layers with dropout 0.5: train_lora must switch
    # train mode on, so its losses leave the no-dropout trajectory (AdamW on peft's model)
    t, p = dict(TRAIN, steps=6), 0.5  # the losses leave the no-dropout path by 3 % and more within 6 steps
    config, state = oracle.tiny_state(rng)
    batches = _task(rng, config, n_batches=2)
    got = submission.run(probes.trained, config, state, t["targets"], t["r"], t["alpha"], batches, t["steps"],
                         t["lr"], p, oracle.seed_from(rng))
    losses = got["losses"]
    fact("wrong_number_of_steps", len(losses) != t["steps"], "one optimiser step and one loss per step")
    assert len(losses) == t["steps"], "one loss per step"
    base = oracle.tiny_model(config, state)
    with torch.no_grad():
        first = base(**batches[0]).loss.item()
    assert losses[0] == pytest.approx(first, rel=1e-5), "with B = 0 the first loss is the base model's, dropout or not"
    assert losses[-1] < losses[0], f"the loss should fall: {losses[0]:.3f} -> {losses[-1]:.3f}"
    first_train, second_train = got["train_logits"]
    fact("dropout_not_passed_on", oracle.close(first_train, second_train), "train_lora trains in train mode (dropout on)")
    assert not torch.allclose(first_train, second_train, rtol=1e-4, atol=1e-4), \
        "the LoRA layers must hold the dropout inject_lora was given"
    without, _ = oracle.peft_train(config, state, t["targets"], t["r"], t["alpha"], got["start"], batches,
                                   t["steps"], t["lr"])
    followed = losses == pytest.approx(without, rel=1e-4)
    fact("train_mode_not_set", followed, "train_lora trains in train mode (dropout on)")
    assert not followed, "the losses are those of training without dropout: call model.train() in train_lora"

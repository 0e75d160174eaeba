"""Hidden tests of part B (finetuning.py): SFT examples (MiniLM's WordPiece and SmolLM2's BPE
tokenizer), LoRA training and greedy decoding on a tiny random LlamaForCausalLM (MiniLM's
vocabulary, eos = [SEP]). The probes return what the student's code produced and the trained
tensors; the model is rebuilt here, on our own copy of the base weights, to judge the training."""

import json

import pytest
import torch

import fvp_oracle as oracle
import probes
from course.grading.diagnose import explain, record
from misconceptions import CATALOGUE

FIELDS = ("flight_number", "departure_time", "gate")
IGNORE = oracle.IGNORE


def _pair(row, space=False):
    prompt = "Email:\n" + row["email"] + ("\nJSON: " if space else "\nJSON:")
    return prompt, json.dumps({k: row["answer"][k] for k in FIELDS})


def _rows(rng, n):
    rows = oracle.load_jsonl("flights_hidden.jsonl")
    return [rows[i] for i in torch.randperm(len(rows), generator=rng)[:n].tolist()]


def _seed(rng):
    return int(torch.randint(0, 2**31 - 1, (1,), generator=rng))


def _sft_variants(prompt, answer, tok, max_len):
    def ref(**flags):
        return lambda: oracle.sft_reference(prompt, answer, tok, max_len, **flags)
    return {"loss_on_prompt": ref(mask_prompt=False), "eos_masked_as_padding": ref(eos_masked_as_pad=True),
            "left_padding": ref(left=True), "joint_tokenization": ref(joint=True), "missing_eos": ref(with_eos=False),
            "padding_in_labels": ref(pad_labels=True)}


def _compare_sft(got, expected, variants, what):
    assert isinstance(got, dict) and set(got) >= {"input_ids", "attention_mask", "labels"}, \
        "a dict with input_ids, attention_mask and labels"
    max_len = int(expected["input_ids"].shape[0])
    for key in ("input_ids", "attention_mask", "labels"):
        assert isinstance(got[key], torch.Tensor) and got[key].dtype == torch.int64 \
            and tuple(got[key].shape) == (max_len,), f"{key}: a ({max_len},) int64 tensor"
    got3 = {k: got[k] for k in ("input_ids", "attention_mask", "labels")}
    with explain(got3, expected, CATALOGUE, variants=variants, what=what, generic=False):
        assert torch.equal(got["input_ids"], expected["input_ids"]), "input_ids: prompt, answer, eos, then right padding"
        assert torch.equal(got["attention_mask"], expected["attention_mask"])
        assert torch.equal(got["labels"], expected["labels"]), "labels: -100 on the prompt and the padding"


# ------------------------------------------------------------------ 2.1

SFT_CASES = {
    "MiniLM, the example fills max_len exactly": ("minilm", 0, False),
    "MiniLM, 9 padding positions": ("minilm", 9, False),
    "SmolLM2 BPE (pad = eos), a prompt ending in a space, 5 padding positions": ("bpe", 5, True),
}


@pytest.mark.task("2.1")
@pytest.mark.points(4)
@pytest.mark.parametrize("case", list(SFT_CASES), ids=list(SFT_CASES))
def test_hidden_sft_labels_cover_the_answer_only(submission, rng, case):
    kind, slack, space = SFT_CASES[case]
    spec = oracle.smollm2_spec() if kind == "bpe" else oracle.MINILM_SEP
    tok = oracle.make(spec)
    prompt, answer = _pair(_rows(rng, 1)[0], space)
    max_len = len(oracle.ids(prompt, tok)) + len(oracle.ids(answer, tok)) + 1 + slack
    got = submission.run(probes.sft_example, prompt, answer, max_len, spec)
    expected = oracle.sft_reference(prompt, answer, tok, max_len)
    _compare_sft(got, expected, _sft_variants(prompt, answer, tok, max_len),
                 what=f"the SFT example's ids, mask and labels ({case})")


@pytest.mark.task("2.1")
@pytest.mark.points(2)
def test_hidden_sft_eos_padding_and_overflow(submission, rng):
    prompt, answer = _pair(_rows(rng, 1)[0])
    tok = oracle.make(oracle.MINILM_SEP_NO_PAD)
    used = len(oracle.ids(prompt, tok)) + len(oracle.ids(answer, tok)) + 1
    got = submission.run(probes.sft_example, prompt, answer, used + 3, oracle.MINILM_SEP_NO_PAD)
    expected = oracle.sft_reference(prompt, answer, tok, used + 3)     # padded with eos, labels -100 there
    _compare_sft(got, expected, _sft_variants(prompt, answer, tok, used + 3),
                 what="an SFT example for a tokenizer without a pad token (pad with eos)")
    with pytest.raises(ValueError):
        submission.run(probes.sft_example, prompt, answer, used - 1, oracle.MINILM_SEP)
    with pytest.raises(ValueError):
        submission.run(probes.sft_example, prompt, answer, used + 3, oracle.MINILM)   # BERT's tokenizer has no eos


# ------------------------------------------------------------------ 2.2

PAIRS = [("Email: Flight AU481 departs 10:45 from gate B12.\nGate:", "b12"),
         ("Email: Cobalt Jet CJ-77 leaves at 9:05 PM from gate C3.\nGate:", "c3"),
         ("Email: FLT DN 2210 | DEP 0640H | GATE F21\nGate:", "f21")]
R, ALPHA = 8, 16
TRAIN_SEED = 417          # fixed: a training run's outcome must not depend on the grading run's seed
PROBE_IDS = oracle.ids(PAIRS[0][0], oracle.tokenizer("[SEP]"))


@oracle.once
def _trained(submission):
    """Two runs of 30 steps with the same arguments (reproducibility), shared by three tests."""
    return submission.run(probes.lora_training, oracle.TINY_LLAMA, TRAIN_SEED, PAIRS, 30, R, ALPHA, 1e-2, 3,
                          PROBE_IDS, [11, 12])   # torch's global state differs before the two runs


def _one_run(out, runs):
    assert isinstance(out, list) and len(out) == runs, "the probe's runs"
    return out


@pytest.mark.task("2.2")
@pytest.mark.points(4)
@pytest.mark.timeout(120)
def test_hidden_lora_batches_and_initialisation_follow_the_spec(submission):
    # lr = 0: the adapters keep their initial values, so every step's loss is the loss of the base
    # model on that step's batch, and the adapters show how they were initialised
    steps, batch_size = 5, 2
    run = _one_run(submission.run(probes.lora_training, oracle.TINY_LLAMA, TRAIN_SEED, PAIRS, steps, R, ALPHA, 0.0,
                                  batch_size, PROBE_IDS, [5]), 1)[0]
    tok = oracle.tokenizer("[SEP]")
    base = oracle.tiny_llama(TRAIN_SEED)
    order = oracle.batches(len(PAIRS), steps, batch_size, TRAIN_SEED)
    expected = torch.tensor([oracle.batch_loss(base, PAIRS, tok, idx) for idx in order])
    losses = run["losses"]
    assert isinstance(losses, list) and len(losses) == steps and all(type(x) is float for x in losses), \
        f"one float loss per step ({steps} steps)"

    def order_of(make_order):
        return lambda: torch.tensor([oracle.batch_loss(base, PAIRS, tok, idx) for idx in make_order()])
    with explain(torch.tensor(losses), expected, CATALOGUE, what="each step's loss, on the batches of the seeded order",
                 variants={"batches_not_in_seeded_order": order_of(lambda: [[(2 * s + j) % 3 for j in range(2)]
                                                                             for s in range(steps)]),
                           "loss_on_prompt": lambda: torch.tensor([oracle.batch_loss(base, PAIRS, tok, idx, mask_prompt=False)
                                                                   for idx in order])}):
        torch.testing.assert_close(torch.tensor(losses), expected, rtol=1e-4, atol=1e-5)
    initial = dict(oracle.initial_lora(TRAIN_SEED, R, ALPHA).named_parameters())
    params = run["params"]
    adapters = sorted(n for n in initial if "lora_" in n)
    assert all(n in params for n in adapters), "the adapters are missing, or not where peft puts them"
    for name in adapters:
        if "lora_B" in name:
            assert torch.equal(params[name], torch.zeros_like(params[name])), "at lr=0 the adapters may not change"
    if not all(torch.allclose(params[n], initial[n], rtol=0, atol=1e-6) for n in adapters):
        record(["adapters_not_seeded"], CATALOGUE, "the adapters' initial values")
        raise AssertionError("the adapters' initial values: seed torch with seed right before get_peft_model")


@pytest.mark.task("2.2")
@pytest.mark.points(3)
@pytest.mark.timeout(180)
def test_hidden_lora_trains_only_the_adapters(submission):
    run = _one_run(_trained(submission), 2)[0]
    base = dict(oracle.tiny_llama(TRAIN_SEED).named_parameters())
    reference = oracle.initial_lora(TRAIN_SEED, R, ALPHA)
    params = run["params"]
    for name, p in reference.named_parameters():
        if "lora_" in name:
            continue
        original = name.replace(".base_layer", "")
        assert name in params, "a pretrained weight is missing (or not where peft puts it)"
        assert torch.equal(params[name], base[original]), "the pretrained weights must not change"
    expected_trainable = sorted(n for n, p in reference.named_parameters() if p.requires_grad)
    assert sorted(run["trainable"]) == expected_trainable, \
        "trainable: exactly the LoRA adapters on q_proj, k_proj, v_proj and o_proj of every layer"
    untrained = [n for n in expected_trainable if "lora_B" in n and float(params[n].abs().max()) == 0.0]
    assert not untrained, "every adapter should have trained (its lora_B moved from zero)"
    layers = run["layers"]
    assert len(layers) == 4 * oracle.TINY_LLAMA["num_hidden_layers"]
    with explain([[v["r"], v["scaling"]] for v in layers.values()], None, CATALOGUE,
                 variants={"wrong_lora_scaling": lambda: [[R, 1.0]] * len(layers)},
                 what="the adapters' rank and scaling"):
        assert all(v["r"] == R and v["scaling"] == ALPHA / R for v in layers.values()), "r and lora_alpha as given"
    assert all(v["dropout"] == 0.0 for v in layers.values()), "lora_dropout=0.0"
    assert run["task_types"] == {"default": "CAUSAL_LM"}, \
        "one LoraConfig with task_type=\"CAUSAL_LM\" (a causal-LM PEFT model), as the docstring specifies"
    with explain(run["training"], [], CATALOGUE, variants={"left_in_train_mode": lambda: run["training"] or None},
                 what="the model's mode after training"):
        assert run["training"] == [], "leave the model in eval mode"


@pytest.mark.task("2.2")
@pytest.mark.points(3)
@pytest.mark.timeout(180)
def test_hidden_lora_learns_the_answers(submission):
    run = _one_run(_trained(submission), 2)[0]
    tok = oracle.tokenizer("[SEP]")
    losses = run["losses"]
    assert isinstance(losses, list) and len(losses) == 30 and all(type(x) is float for x in losses), \
        "one float loss per step (30 steps)"
    reference = torch.tensor(oracle.reference_training(TRAIN_SEED, PAIRS, 5, R, ALPHA, 1e-2, 3, tok))
    with explain(torch.tensor(losses[:5]), reference, CATALOGUE, what="the first steps' losses of the specified run",
                 variants={"grads_accumulate": lambda: torch.tensor(oracle.reference_training(
                     TRAIN_SEED, PAIRS, 5, R, ALPHA, 1e-2, 3, tok, zero_grad=False))}):
        torch.testing.assert_close(torch.tensor(losses[:5]), reference, rtol=2e-3, atol=1e-4)
    model, unknown, missing = oracle.rebuild_lora(TRAIN_SEED, R, ALPHA, run["params"])
    assert not unknown and not missing, "the trained model's parameters are not where peft puts them"
    with torch.no_grad():
        own_logits = model(input_ids=torch.tensor([PROBE_IDS])).logits[0]
    torch.testing.assert_close(run["logits"], own_logits, rtol=1e-4, atol=1e-4,
                               msg="the trained model's outputs differ from its own adapters under the given r and alpha")
    before = oracle.answer_loss(oracle.tiny_llama(TRAIN_SEED), tok, PAIRS)
    after = oracle.answer_loss(model, tok, PAIRS)
    assert after < 0.3 * before, "the answers' loss (measured here on the trained adapters) should fall"
    expected = [tok.decode(oracle.ids(a, tok), skip_special_tokens=True).strip() for _, a in PAIRS]
    assert [oracle.hf_greedy(model, tok, p, 6) for p, _ in PAIRS] == expected, \
        "after training, greedy decoding (here, on the trained adapters) should give the answers"


@pytest.mark.task("2.2")
@pytest.mark.points(2)
@pytest.mark.timeout(180)
def test_hidden_lora_is_reproducible(submission):
    first, second = _one_run(_trained(submission), 2)
    assert first["losses"] == second["losses"], "the same seed must give the same losses, whatever torch's state before"
    assert set(first["params"]) == set(second["params"])
    assert all(torch.equal(v, second["params"][n]) for n, v in first["params"].items()), \
        "the same seed must give the same adapters, whatever torch's state before"


# ------------------------------------------------------------------ 2.3

@pytest.mark.task("2.3")
@pytest.mark.points(2)
@pytest.mark.parametrize("max_new_tokens", [1, 12], ids=["one new token", "twelve new tokens"])
def test_hidden_generate_answer_is_greedy(submission, rng, max_new_tokens):
    seed = _seed(rng) % 1000
    prompt = _pair(_rows(rng, 1)[0])[0]
    got = submission.run(probes.greedy, oracle.TINY_LLAMA, seed, prompt, max_new_tokens)
    model, tok = oracle.tiny_llama(seed), oracle.tokenizer("[SEP]")
    with explain(got, None, CATALOGUE, what="greedy decoding on a random tiny Llama", variants={
            "generate_template_mismatch": lambda: oracle.hf_greedy(model, tok, prompt, max_new_tokens, special=True)}):
        assert got == oracle.hf_greedy(model, tok, prompt, max_new_tokens)


@pytest.mark.task("2.3")
@pytest.mark.points(1)
def test_hidden_generate_answer_stops_at_eos(submission):
    seed, position = 321, 3
    prompt = "Email: FLT DN 2210 | DEP 0640H | GATE F21\nGate:"
    tok = oracle.tokenizer("[SEP]")
    state = oracle.lm_head_with_eos_after(seed, tok, prompt, position)   # eos is the 4th new token
    model = oracle.tiny_llama(seed)
    with torch.no_grad():
        model.lm_head.weight.copy_(state["lm_head.weight"])
    got = submission.run(probes.greedy, oracle.TINY_LLAMA, seed, prompt, 10, state)
    expected = oracle.hf_greedy(model, tok, prompt, 10)

    def ignoring_eos():
        p = torch.tensor([oracle.ids(prompt, tok)])
        out = model.generate(p, attention_mask=torch.ones_like(p), max_new_tokens=10, do_sample=False,
                             eos_token_id=None, pad_token_id=tok.pad_token_id)
        return tok.decode(out[0, p.shape[1]:].tolist(), skip_special_tokens=True).strip()
    with explain(got, expected, CATALOGUE, what="greedy decoding that meets eos after three tokens", variants={
            "generate_keeps_eos": lambda: oracle.hf_greedy(model, tok, prompt, 10, skip=False),
            "generate_ignores_eos": ignoring_eos}):
        assert got == expected

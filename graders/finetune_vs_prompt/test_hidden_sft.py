"""Hidden tests of part B (finetuning.py): SFT examples, LoRA training and greedy decoding,
on a tiny random LlamaForCausalLM with the real MiniLM tokenizer (eos = [SEP])."""

import json

import pytest
import torch

import fvp_oracle as oracle
import probes

FIELDS = ("flight_number", "departure_time", "gate")
IGNORE = -100


def _pair(row):
    prompt = "Email:\n" + row["email"] + "\nJSON:"
    return prompt, json.dumps({k: row["answer"][k] for k in FIELDS})


def _rows(rng, n):
    rows = oracle.load_jsonl("flights_hidden.jsonl")
    return [rows[i] for i in torch.randperm(len(rows), generator=rng)[:n].tolist()]


def _seed(rng):
    return int(torch.randint(0, 2**31 - 1, (1,), generator=rng))


# ------------------------------------------------------------------ 2.1

@pytest.mark.task("2.1")
@pytest.mark.points(4)
@pytest.mark.parametrize("slack", [0, 9])
def test_hidden_sft_labels_cover_the_answer_only(submission, rng, slack):
    prompt, answer = _pair(_rows(rng, 1)[0])
    tok = oracle.tokenizer("[SEP]")
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    a = tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    max_len = len(p) + len(a) + slack
    got = submission.run(probes.sft_example, prompt, answer, max_len)
    assert set(got) >= {"input_ids", "attention_mask", "labels"}
    for key in ("input_ids", "attention_mask", "labels"):
        assert got[key].dtype == torch.int64 and tuple(got[key].shape) == (max_len,), key
    expected_ids = torch.tensor(p + a + [tok.pad_token_id] * slack)
    expected_labels = torch.tensor([IGNORE] * len(p) + a + [IGNORE] * slack)
    assert torch.equal(got["input_ids"], expected_ids), "input_ids: prompt, answer, eos, then right padding"
    assert torch.equal(got["attention_mask"], torch.tensor([1] * (len(p) + len(a)) + [0] * slack))
    assert not bool((got["labels"][:len(p)] != IGNORE).any()), "the prompt tokens must not be trained on (-100)"
    assert torch.equal(got["labels"], expected_labels)


@pytest.mark.task("2.1")
@pytest.mark.points(2)
def test_hidden_sft_eos_padding_and_overflow(submission, rng):
    prompt, answer = _pair(_rows(rng, 1)[0])
    tok = oracle.tokenizer("[SEP]")
    used = len(tok(prompt, add_special_tokens=False)["input_ids"]) + len(tok(answer, add_special_tokens=False)["input_ids"]) + 1
    got = submission.run(probes.sft_example, prompt, answer, used + 3, "[SEP]", False)
    assert got["input_ids"][-3:].tolist() == [tok.eos_token_id] * 3, "without a pad token, pad with eos"
    assert got["labels"][-3:].tolist() == [IGNORE] * 3
    with pytest.raises(ValueError):
        submission.run(probes.sft_example, prompt, answer, used - 1)
    with pytest.raises(ValueError):
        submission.run(probes.sft_example_without_eos, prompt, answer, used + 3)


# ------------------------------------------------------------------ 2.2

PAIRS = [("Email: Flight AU481 departs 10:45 from gate B12.\nGate:", "b12"),
         ("Email: Cobalt Jet CJ-77 leaves at 9:05 PM from gate C3.\nGate:", "c3"),
         ("Email: FLT DN 2210 | DEP 0640H | GATE F21\nGate:", "f21")]


def _train(submission, rng, steps=30):
    seed = _seed(rng) % 1000
    return submission.run(probes.lora_training, oracle.TINY_LLAMA, seed, PAIRS, steps, 8, 16, 1e-2, 3, 6)


@pytest.mark.task("2.2")
@pytest.mark.points(4)
@pytest.mark.timeout(120)
def test_hidden_lora_lowers_the_answer_loss(submission, rng):
    out = _train(submission, rng)
    losses = out["losses"]
    assert len(losses) == 30, f"one loss per step: expected 30, got {len(losses)}"
    assert all(isinstance(x, float) for x in losses)
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, "the training loss should fall"
    # measured by the grader on the answers (eos included) given their prompts
    assert out["loss_after"] < 0.3 * out["loss_before"], (out["loss_before"], out["loss_after"])


@pytest.mark.task("2.2")
@pytest.mark.points(4)
@pytest.mark.timeout(120)
def test_hidden_lora_changes_only_the_adapters(submission, rng):
    out = _train(submission, rng)
    assert not out["missing_base"], f"pretrained weights disappeared: {out['missing_base'][:5]}"
    changed = {k: v for k, v in out["base_diff"].items() if v != 0.0}
    assert not changed, f"pretrained weights changed: {sorted(changed)[:5]}"
    assert out["trainable"] and all("lora_" in n for n in out["trainable"]), out["trainable"][:5]
    for layer in range(oracle.TINY_LLAMA["num_hidden_layers"]):
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            names = [n for n in out["lora_norms"] if f"layers.{layer}.self_attn.{proj}.lora_B" in n]
            assert names, f"no LoRA adapter on layer {layer} {proj}"
            assert any(out["lora_norms"][n] > 0 for n in names), f"the adapter of layer {layer} {proj} never trained"
    assert not any(".mlp." in n for n in out["lora_norms"]), "adapters belong on the attention projections only"


@pytest.mark.task("2.2")
@pytest.mark.points(4)
@pytest.mark.timeout(120)
def test_hidden_lora_memorises_the_answers(submission, rng):
    out = _train(submission, rng)
    tok = oracle.tokenizer("[SEP]")
    expected = [tok.decode(tok(a, add_special_tokens=False)["input_ids"], skip_special_tokens=True).strip()
                for _, a in PAIRS]
    assert out["answers"] == expected


# ------------------------------------------------------------------ 2.3

@pytest.mark.task("2.3")
@pytest.mark.points(3)
@pytest.mark.parametrize("max_new_tokens", [1, 12])
def test_hidden_generate_answer_is_greedy(submission, rng, max_new_tokens):
    seed = _seed(rng) % 1000
    prompt = _pair(_rows(rng, 1)[0])[0]
    got = submission.run(probes.greedy, oracle.TINY_LLAMA, seed, prompt, max_new_tokens)
    assert got == oracle.hf_greedy(seed, prompt, max_new_tokens)

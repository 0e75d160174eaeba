"""Part B: fine-tuning a causal language model with LoRA (supervised fine-tuning, SFT).

Fine-tuning puts the skill in the weights: after training on (prompt, answer) pairs the model
answers from a bare prompt, with no examples to send on every call. We train LoRA adapters
(peft) on the attention projections and leave the pretrained weights frozen.

Shapes: ``batch`` examples, ``seq`` = ``max_len`` tokens, ``vocab`` the tokenizer's vocabulary.
"""

from __future__ import annotations

import torch
from torch import Tensor

IGNORE_INDEX = -100  # label value that torch's cross-entropy (and transformers' loss) skip
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]  # the attention projections of Llama-style models


# Task 2.1
def build_sft_example(prompt: str, answer: str, tokenizer, max_len: int) -> dict[str, Tensor]:
    """One training example whose loss covers the answer only.

    Tokenize ``prompt`` and ``answer`` separately, without special tokens
    (``add_special_tokens=False``), and append the tokenizer's ``eos_token_id`` to the answer so
    the model learns where to stop. Then pad on the right to ``max_len`` with ``pad_token_id``
    (or ``eos_token_id`` when the tokenizer has no pad token).

    Returns:
        ``{"input_ids", "attention_mask", "labels"}``, each a ``(max_len,)`` int64 tensor:
        ``attention_mask`` is 1 on prompt and answer tokens and 0 on padding; ``labels`` equals
        ``input_ids`` on the answer tokens (eos included) and is ``-100`` on the prompt tokens
        and on the padding, so that the loss is computed on the answer only.

    Raises:
        ValueError: when the tokenizer has no eos token, or when prompt, answer and eos need
            more than ``max_len`` tokens (never truncate an answer: the model would learn a
            wrong one).
    """
    # BEGIN SOLUTION
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no eos token: the model could not learn to stop")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [eos]
    used = len(prompt_ids) + len(answer_ids)
    if used > max_len:
        raise ValueError(f"prompt ({len(prompt_ids)} tokens) and answer with eos ({len(answer_ids)} tokens) "
                         f"need {used} tokens, more than max_len={max_len}")
    padding = max_len - used
    input_ids = prompt_ids + answer_ids + [pad] * padding
    attention_mask = [1] * used + [0] * padding
    labels = [IGNORE_INDEX] * len(prompt_ids) + answer_ids + [IGNORE_INDEX] * padding
    return {"input_ids": torch.tensor(input_ids, dtype=torch.long),
            "attention_mask": torch.tensor(attention_mask, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long)}
    # END SOLUTION


# Task 2.2
def finetune_lora(model, tokenizer, pairs: list[tuple[str, str]], *, steps: int, r: int = 8, alpha: int = 16,
                  lr: float = 1e-3, batch_size: int = 4, seed: int = 0) -> list[float]:
    """Train LoRA adapters on ``pairs`` of (prompt, answer) for ``steps`` optimiser steps.

    * Seed torch with ``seed`` first, right before wrapping (peft draws the adapters' initial
      values from torch's global generator).
    * Wrap ``model`` with peft: ``get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha,
      lora_dropout=0.0, target_modules=LORA_TARGETS, task_type="CAUSAL_LM"))``. peft injects the
      adapters into ``model`` in place and freezes its weights, so the caller's ``model`` is the
      fine-tuned one afterwards.
    * Build every pair with :func:`build_sft_example`, ``max_len`` = the longest pair's length.
    * The order: one ``torch.Generator().manual_seed(seed)``; an order is
      ``torch.randperm(len(pairs), generator=g)``, and a new one is drawn whenever the current
      one runs out. Each step takes the next ``min(batch_size, len(pairs))`` indices (a batch may
      end one order and begin the next), computes the causal-LM loss
      (``model(input_ids=..., attention_mask=..., labels=...).loss``) and takes an AdamW step at
      learning rate ``lr`` over the trainable (LoRA) parameters only.
    * The result depends on the arguments only, not on torch's random state before the call.
    * Leave the model in eval mode.

    Returns:
        The loss of every step (``steps`` floats), in order.
    """
    # BEGIN SOLUTION
    from peft import LoraConfig, get_peft_model
    torch.manual_seed(seed)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=LORA_TARGETS, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"])
               + len(tokenizer(a, add_special_tokens=False)["input_ids"]) + 1 for p, a in pairs]
    examples = [build_sft_example(p, a, tokenizer, max(lengths)) for p, a in pairs]
    data = {key: torch.stack([ex[key] for ex in examples]) for key in examples[0]}
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    order: list[int] = []
    losses = []
    peft_model.train()
    for _ in range(steps):
        batch = []
        while len(batch) < min(batch_size, len(examples)):
            if not order:
                order = torch.randperm(len(examples), generator=gen).tolist()
            batch.append(order.pop(0))
        idx = torch.tensor(batch)
        loss = peft_model(input_ids=data["input_ids"][idx], attention_mask=data["attention_mask"][idx],
                          labels=data["labels"][idx]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    peft_model.eval()
    return losses
    # END SOLUTION


# Task 2.3
@torch.no_grad()
def generate_answer(model, tokenizer, prompt: str, max_new_tokens: int = 32) -> str:
    """Greedy decoding: the model's most likely continuation of ``prompt``, as text.

    Tokenize the prompt as :func:`build_sft_example` does (no special tokens). Then, up to
    ``max_new_tokens`` times, run the model on the sequence so far, append the most likely next
    token (argmax of the last position's logits), and stop after the eos token. Return the new
    tokens only, decoded with ``skip_special_tokens=True`` and stripped of surrounding
    whitespace. (You may use a KV cache, or ``model.generate`` with ``do_sample=False``: the
    result must be the same.)
    """
    # BEGIN SOLUTION
    model.eval()
    ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]], dtype=torch.long)
    new: list[int] = []
    for _ in range(max_new_tokens):
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, -1]
        token = int(logits.argmax())
        new.append(token)
        if token == tokenizer.eos_token_id:
            break
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return tokenizer.decode(new, skip_special_tokens=True).strip()
    # END SOLUTION

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
    raise NotImplementedError("Task 2.1: build_sft_example")


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
    raise NotImplementedError("Task 2.2: finetune_lora")


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
    raise NotImplementedError("Task 2.3: generate_answer")

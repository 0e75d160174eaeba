"""Alternative correct finetuning.py: tensors filled by slicing, a generator of batch indices,
and transformers' generate for greedy decoding."""

from __future__ import annotations

import torch

IGNORE_INDEX = -100
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def build_sft_example(prompt, answer, tokenizer, max_len):
    if tokenizer.eos_token_id is None:
        raise ValueError("no eos token")
    eos = tokenizer.eos_token_id
    pad = eos if tokenizer.pad_token_id is None else tokenizer.pad_token_id
    p = tokenizer.encode(prompt, add_special_tokens=False)
    a = tokenizer.encode(answer, add_special_tokens=False) + [eos]
    n = len(p) + len(a)
    if n > max_len:
        raise ValueError(f"{n} tokens do not fit in max_len={max_len}")
    input_ids = torch.full((max_len,), pad, dtype=torch.long)
    input_ids[:n] = torch.tensor(p + a)
    attention_mask = torch.zeros(max_len, dtype=torch.long)
    attention_mask[:n] = 1
    labels = torch.full((max_len,), IGNORE_INDEX, dtype=torch.long)
    labels[len(p):n] = torch.tensor(a)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def _batches(n, batch_size, seed):
    gen = torch.Generator()
    gen.manual_seed(seed)
    size = min(batch_size, n)
    pending = []
    while True:
        while len(pending) < size:
            pending += torch.randperm(n, generator=gen).tolist()
        yield pending[:size]
        pending = pending[size:]


def finetune_lora(model, tokenizer, pairs, *, steps, r=8, alpha=16, lr=1e-3, batch_size=4, seed=0):
    from peft import LoraConfig, get_peft_model
    torch.manual_seed(seed)
    model = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0,
                                             target_modules=list(LORA_TARGETS), task_type="CAUSAL_LM"))
    max_len = max(len(tokenizer.encode(p, add_special_tokens=False)) + len(tokenizer.encode(a, add_special_tokens=False))
                  + 1 for p, a in pairs)
    rows = [build_sft_example(p, a, tokenizer, max_len) for p, a in pairs]
    optim = torch.optim.AdamW((p for p in model.parameters() if p.requires_grad), lr=lr)
    model.train()
    losses = []
    batches = _batches(len(rows), batch_size, seed)
    for _step in range(steps):
        idx = next(batches)
        batch = {k: torch.stack([rows[i][k] for i in idx]) for k in ("input_ids", "attention_mask", "labels")}
        optim.zero_grad(set_to_none=True)
        out = model(**batch)
        out.loss.backward()
        optim.step()
        losses.append(out.loss.detach().item())
    model.eval()
    return losses


@torch.no_grad()
def generate_answer(model, tokenizer, prompt, max_new_tokens=32):
    model.eval()
    ids = torch.tensor([tokenizer.encode(prompt, add_special_tokens=False)])
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                         do_sample=False, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()

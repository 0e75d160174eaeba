"""Alternative correct finetuning.py: each batch padded only to its own longest example (the loss
ignores padding), greedy decoding with a KV cache."""

import torch

IGNORE_INDEX = -100
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def build_sft_example(prompt, answer, tokenizer, max_len):
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise ValueError("tokenizer without eos token")
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = eos_id
    prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
    answer_ids = tokenizer(answer, add_special_tokens=False).input_ids
    answer_ids = answer_ids + [eos_id]
    length = len(prompt_ids) + len(answer_ids)
    if length > max_len:
        raise ValueError(f"example needs {length} > {max_len} tokens")
    rest = max_len - length
    ids = torch.tensor(prompt_ids + answer_ids + [pad_id] * rest)
    mask = torch.cat([torch.ones(length, dtype=torch.long), torch.zeros(rest, dtype=torch.long)])
    labels = ids.clone()
    labels[:len(prompt_ids)] = IGNORE_INDEX
    labels[length:] = IGNORE_INDEX
    return {"input_ids": ids.long(), "attention_mask": mask, "labels": labels.long()}


def finetune_lora(model, tokenizer, pairs, *, steps, r=8, alpha=16, lr=1e-3, batch_size=4, seed=0):
    import peft
    torch.manual_seed(seed)
    cfg = peft.LoraConfig(task_type="CAUSAL_LM", r=r, lora_alpha=alpha, lora_dropout=0.0,
                          target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    wrapped = peft.get_peft_model(model, cfg)
    sizes = [len(tokenizer(p, add_special_tokens=False).input_ids) + len(tokenizer(a, add_special_tokens=False).input_ids) + 1
             for p, a in pairs]
    examples = [build_sft_example(p, a, tokenizer, max(sizes)) for p, a in pairs]
    trainable = [p for p in wrapped.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=lr)
    generator = torch.Generator().manual_seed(seed)
    queue = []
    history = []
    k = min(batch_size, len(examples))
    wrapped.train()
    for _ in range(steps):
        picked = []
        for _ in range(k):
            if not queue:
                queue = torch.randperm(len(examples), generator=generator).tolist()
            picked.append(queue.pop(0))
        width = max(int(examples[i]["attention_mask"].sum()) for i in picked)
        batch = {key: torch.stack([examples[i][key][:width] for i in picked])
                 for key in ("input_ids", "attention_mask", "labels")}
        loss = wrapped(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    wrapped.eval()
    return history


@torch.no_grad()
def generate_answer(model, tokenizer, prompt, max_new_tokens=32):
    model.eval()
    ids = torch.tensor([tokenizer(prompt, add_special_tokens=False).input_ids])
    out = model(input_ids=ids, use_cache=True)
    past = out.past_key_values
    logits = out.logits[0, -1]
    produced = []
    for step in range(max_new_tokens):
        nxt = int(torch.argmax(logits))
        produced.append(nxt)
        if nxt == tokenizer.eos_token_id or step == max_new_tokens - 1:
            break
        out = model(input_ids=torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
        past = out.past_key_values
        logits = out.logits[0, -1]
    return tokenizer.decode(produced, skip_special_tokens=True).strip()

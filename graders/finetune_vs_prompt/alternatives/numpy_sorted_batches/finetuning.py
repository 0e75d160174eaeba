"""Alternative correct finetuning.py: the optimiser over the adapters found by name, plain
recomputation for greedy decoding."""

import torch

IGNORE_INDEX = -100
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def _ids(tokenizer, text):
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def build_sft_example(prompt, answer, tokenizer, max_len):
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no eos token")
    pad = eos if tokenizer.pad_token_id is None else tokenizer.pad_token_id
    p, a = _ids(tokenizer, prompt), _ids(tokenizer, answer) + [eos]
    free = max_len - len(p) - len(a)
    if free < 0:
        raise ValueError(f"{len(p) + len(a)} tokens > max_len {max_len}")
    return {
        "input_ids": torch.tensor(p + a + [pad] * free, dtype=torch.int64),
        "attention_mask": torch.tensor([1] * (len(p) + len(a)) + [0] * free, dtype=torch.int64),
        "labels": torch.tensor([IGNORE_INDEX] * len(p) + a + [IGNORE_INDEX] * free, dtype=torch.int64),
    }


def finetune_lora(model, tokenizer, pairs, *, steps, r=8, alpha=16, lr=1e-3, batch_size=4, seed=0):
    from peft import LoraConfig, get_peft_model
    torch.manual_seed(seed)
    get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=LORA_TARGETS,
                                     task_type="CAUSAL_LM"))
    longest = max(len(_ids(tokenizer, p)) + len(_ids(tokenizer, a)) + 1 for p, a in pairs)
    data = [build_sft_example(p, a, tokenizer, longest) for p, a in pairs]
    ids = torch.stack([d["input_ids"] for d in data])
    mask = torch.stack([d["attention_mask"] for d in data])
    labels = torch.stack([d["labels"] for d in data])
    adapters = [p for n, p in model.named_parameters() if "lora_" in n]
    optimizer = torch.optim.AdamW(adapters, lr=lr)
    rng = torch.Generator().manual_seed(seed)
    stream = torch.empty(0, dtype=torch.long)
    size = min(batch_size, len(data))
    losses = []
    model.train()
    for _ in range(steps):
        while stream.numel() < size:
            stream = torch.cat([stream, torch.randperm(len(data), generator=rng)])
        idx, stream = stream[:size], stream[size:]
        optimizer.zero_grad()
        loss = model(input_ids=ids[idx], attention_mask=mask[idx], labels=labels[idx]).loss
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return losses


def generate_answer(model, tokenizer, prompt, max_new_tokens=32):
    was = model.training
    model.eval()
    seq = _ids(tokenizer, prompt)
    start = len(seq)
    with torch.no_grad():
        while len(seq) - start < max_new_tokens:
            nxt = model(input_ids=torch.tensor([seq])).logits[0, -1].argmax().item()
            seq.append(nxt)
            if nxt == tokenizer.eos_token_id:
                break
    model.train(was)
    return tokenizer.decode(seq[start:], skip_special_tokens=True).strip()

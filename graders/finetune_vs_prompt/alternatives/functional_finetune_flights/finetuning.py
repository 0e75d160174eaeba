"""Alternative correct finetuning.py: one padded matrix built with pad_sequence, an index stream
from itertools, decoding that keeps the whole sequence."""

import itertools

import torch
from torch.nn.utils.rnn import pad_sequence

IGNORE_INDEX = -100
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def _tok(tokenizer, text):
    return tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][0]


def build_sft_example(prompt, answer, tokenizer, max_len):
    if tokenizer.eos_token_id is None:
        raise ValueError("no eos token: the model could not learn to stop")
    pad = tokenizer.eos_token_id if tokenizer.pad_token_id is None else tokenizer.pad_token_id
    p = _tok(tokenizer, prompt).long()
    a = torch.cat([_tok(tokenizer, answer).long(), torch.tensor([tokenizer.eos_token_id])])
    used = p.numel() + a.numel()
    if used > max_len:
        raise ValueError(f"{used} tokens, max_len={max_len}")
    pad_n = max_len - used
    ids = torch.nn.functional.pad(torch.cat([p, a]), (0, pad_n), value=pad)
    mask = torch.nn.functional.pad(torch.ones(used, dtype=torch.long), (0, pad_n), value=0)
    labels = torch.nn.functional.pad(torch.cat([torch.full_like(p, IGNORE_INDEX), a]), (0, pad_n), value=IGNORE_INDEX)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _stream(n, seed):
    g = torch.Generator().manual_seed(seed)
    return itertools.chain.from_iterable(torch.randperm(n, generator=g).tolist() for _ in itertools.count())


def finetune_lora(model, tokenizer, pairs, *, steps, r=8, alpha=16, lr=1e-3, batch_size=4, seed=0):
    from peft import LoraConfig, get_peft_model
    torch.manual_seed(seed)
    model = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, target_modules=LORA_TARGETS,
                                             lora_dropout=0.0, task_type="CAUSAL_LM"))
    max_len = max(_tok(tokenizer, p).numel() + _tok(tokenizer, a).numel() + 1 for p, a in pairs)
    examples = [build_sft_example(p, a, tokenizer, max_len) for p, a in pairs]
    tensors = {k: pad_sequence([e[k] for e in examples], batch_first=True) for k in examples[0]}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    stream = _stream(len(examples), seed)
    size = min(batch_size, len(examples))

    def step(_):
        idx = torch.tensor(list(itertools.islice(stream, size)))
        opt.zero_grad()
        loss = model(**{k: v[idx] for k, v in tensors.items()}).loss
        loss.backward()
        opt.step()
        return loss.item()
    model.train()
    losses = list(map(step, range(steps)))
    model.eval()
    return losses


@torch.inference_mode()
def generate_answer(model, tokenizer, prompt, max_new_tokens=32):
    model.eval()
    seq = _tok(tokenizer, prompt)[None]
    n_prompt = seq.shape[1]
    for _ in range(max_new_tokens):
        nxt = model(input_ids=seq).logits[:, -1].argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], dim=1)
        if int(nxt) == tokenizer.eos_token_id:
            break
    return tokenizer.decode(seq[0, n_prompt:].tolist(), skip_special_tokens=True).strip()

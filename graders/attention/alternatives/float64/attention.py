"""Alternative correct attention: every intermediate in float64, cast back to the input's dtype."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def attention_scores(q: Tensor, k: Tensor, scale: float | None = None) -> Tensor:
    if scale is None:
        scale = q.shape[-1] ** -0.5
    return (torch.matmul(q.double(), k.double().transpose(-1, -2)) * scale).to(q.dtype)


def causal_mask(seq_len: int, device: torch.device | str | None = None) -> Tensor:
    return torch.tril(torch.ones((seq_len, seq_len), dtype=torch.bool, device=device))


def masked_softmax(scores: Tensor, mask: Tensor | None = None) -> Tensor:
    s = scores.double()
    if mask is not None:
        s = s.masked_fill(mask.logical_not(), -math.inf)
    row_max = s.amax(-1, keepdim=True)
    row_max = torch.where(row_max.isinf(), torch.zeros_like(row_max), row_max)
    e = torch.exp(s - row_max)
    total = e.sum(-1, keepdim=True)
    w = e / torch.where(total == 0, torch.ones_like(total), total)
    return w.to(scores.dtype)


def scaled_dot_product_attention(q, k, v, mask=None, causal=False, scale=None):
    scores = attention_scores(q, k, scale)
    if causal:
        n_q, n_k = scores.shape[-2], scores.shape[-1]
        keep = torch.ones(n_q, n_k, dtype=torch.bool, device=q.device).tril()
        mask = keep if mask is None else (mask & keep)
    w = masked_softmax(scores, mask)
    out = torch.matmul(w.double(), v.double()).to(v.dtype)
    return out, w


def split_heads(x: Tensor, n_heads: int) -> Tensor:
    return x.unflatten(-1, (n_heads, -1)).transpose(-3, -2)


def merge_heads(x: Tensor) -> Tensor:
    return x.transpose(-3, -2).flatten(-2)


class MultiHeadAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, bias: bool = True):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"cannot split d_model={d_model} into n_heads={n_heads} equal heads")
        self.n_heads = n_heads
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            self.add_module(name, nn.Linear(d_model, d_model, bias=bias))

    def forward(self, x, mask=None, causal=False):
        q = split_heads(self.q_proj(x), self.n_heads)
        k = split_heads(self.k_proj(x), self.n_heads)
        v = split_heads(self.v_proj(x), self.n_heads)
        out, w = scaled_dot_product_attention(q, k, v, mask, causal)
        return self.out_proj(merge_heads(out)), w

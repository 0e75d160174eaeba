"""Alternative correct attention: the causal mask from numpy, torch.baddbmm-free plain matmuls,
masks applied additively (0 / -inf) before a hand-written softmax."""

import math

import numpy as np
import torch
from torch import nn


def attention_scores(q, k, scale=None):
    if scale is None:
        scale = 1 / math.sqrt(k.shape[-1])
    return scale * torch.matmul(q, k.transpose(-2, -1))


def causal_mask(seq_len, device=None):
    return torch.from_numpy(np.tril(np.ones((seq_len, seq_len), dtype=np.bool_))).to(device)


def masked_softmax(scores, mask=None):
    if mask is not None:
        bias = torch.zeros(mask.shape, dtype=scores.dtype, device=scores.device).masked_fill(~mask, float("-inf"))
        scores = scores + bias
    top = torch.max(scores, dim=-1, keepdim=True)[0]
    top = torch.where(top == float("-inf"), torch.zeros_like(top), top).detach()
    num = torch.exp(scores - top)
    den = torch.sum(num, dim=-1, keepdim=True)
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(num))


def scaled_dot_product_attention(q, k, v, mask=None, causal=False, scale=None):
    scores = attention_scores(q, k, scale)
    if causal:
        size = max(scores.shape[-2], scores.shape[-1])
        tri = causal_mask(size, device=scores.device)[: scores.shape[-2], : scores.shape[-1]]
        mask = tri if mask is None else (tri & mask)
    weights = masked_softmax(scores, mask)
    return torch.matmul(weights, v), weights


def split_heads(x, n_heads):
    b, t, c = x.size()
    return x.view(b, t, n_heads, c // n_heads).transpose(1, 2)


def merge_heads(x):
    b, h, t, d = x.size()
    return x.transpose(1, 2).contiguous().view(b, t, h * d)


class MultiHeadAttention(nn.Module):
    def __init__(self, d_model, n_heads, bias=True):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"n_heads ({n_heads}) must divide d_model ({d_model})")
        self.n_heads = n_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def forward(self, x, mask=None, causal=False):
        heads = [split_heads(layer(x), self.n_heads) for layer in (self.q_proj, self.k_proj, self.v_proj)]
        out, weights = scaled_dot_product_attention(*heads, mask=mask, causal=causal)
        return self.out_proj(merge_heads(out)), weights

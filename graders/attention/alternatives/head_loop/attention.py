"""Alternative correct attention: the module loops over its heads, each slicing the projections."""

import math

import torch
import torch.nn.functional as F
from torch import nn


def attention_scores(q, k, scale=None):
    d = q.shape[-1]
    s = q @ k.mT
    return s / math.sqrt(d) if scale is None else s * scale


def causal_mask(seq_len, device=None):
    return torch.ones(seq_len, seq_len, device=device).tril().bool()


def masked_softmax(scores, mask=None):
    if mask is None:
        mask = torch.ones_like(scores, dtype=torch.bool)
    mask = mask.expand(scores.shape)
    hidden = scores.masked_fill(~mask, float("-inf"))
    top = hidden.amax(-1, keepdim=True).nan_to_num(0.0, 0.0, 0.0).detach()
    e = torch.exp(hidden - top)
    denom = e.sum(-1, keepdim=True)
    return e / (denom + (denom == 0))


def scaled_dot_product_attention(q, k, v, mask=None, causal=False, scale=None):
    scores = attention_scores(q, k, scale)
    if causal:
        big = causal_mask(max(scores.shape[-2:]), device=scores.device)
        c = big[: scores.shape[-2], : scores.shape[-1]]
        mask = c if mask is None else mask * c
    weights = masked_softmax(scores, mask)
    return weights @ v, weights


def split_heads(x, n_heads):
    return torch.stack(x.chunk(n_heads, dim=-1), dim=1)


def merge_heads(x):
    return torch.cat(x.unbind(dim=1), dim=-1)


def _head_mask(mask, h):
    """Head h's part of a mask that broadcasts to (batch, heads, seq, seq)."""
    if mask is None or mask.dim() < 3:
        return mask
    m = mask if mask.dim() == 4 else mask[None]
    return m[:, h if m.shape[1] > 1 else 0]


class MultiHeadAttention(nn.Module):
    def __init__(self, d_model, n_heads, bias=True):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"{d_model=} is not a multiple of {n_heads=}")
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.q_proj = nn.Linear(d_model, d_model, bias)
        self.k_proj = nn.Linear(d_model, d_model, bias)
        self.v_proj = nn.Linear(d_model, d_model, bias)
        self.out_proj = nn.Linear(d_model, d_model, bias)

    def _head(self, proj, x, h):
        rows = slice(h * self.head_dim, (h + 1) * self.head_dim)
        bias = None if proj.bias is None else proj.bias[rows]
        return F.linear(x, proj.weight[rows], bias)

    def forward(self, x, mask=None, causal=False):
        outs, weights = [], []
        for h in range(self.n_heads):
            o, w = scaled_dot_product_attention(self._head(self.q_proj, x, h), self._head(self.k_proj, x, h),
                                                self._head(self.v_proj, x, h), mask=_head_mask(mask, h),
                                                causal=causal)
            outs.append(o)
            weights.append(w)
        return self.out_proj(torch.cat(outs, dim=-1)), torch.stack(weights, dim=1)

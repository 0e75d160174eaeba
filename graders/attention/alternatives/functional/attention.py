"""Alternative correct attention, functional style: logsumexp-normalised weights, F.linear on the
module's parameters, masks as index comparisons."""

import math

import torch
import torch.nn.functional as F
from torch import nn


def attention_scores(q, k, scale=None):
    return torch.matmul(q, k.transpose(-1, -2)).mul(1 / math.sqrt(q.shape[-1]) if scale is None else scale)


def causal_mask(seq_len, device=None):
    rows = torch.arange(seq_len, device=device).unsqueeze(1)
    cols = torch.arange(seq_len, device=device).unsqueeze(0)
    return cols.le(rows)


def masked_softmax(scores, mask=None):
    filled = scores if mask is None else scores.masked_fill(mask.logical_not(), float("-inf"))
    top = filled.amax(dim=-1, keepdim=True)
    empty = torch.isneginf(top)
    shifted = filled - torch.where(empty, torch.zeros_like(top), top).detach()
    lse = torch.logsumexp(shifted, dim=-1, keepdim=True)
    weights = torch.exp(shifted - torch.where(empty, torch.zeros_like(lse), lse))
    return weights.masked_fill(empty, 0.0)


def scaled_dot_product_attention(q, k, v, mask=None, causal=False, scale=None):
    scores = attention_scores(q, k, scale=scale)
    allowed = mask
    if causal:
        n_q, n_k = scores.shape[-2:]
        tri = torch.arange(n_k, device=scores.device)[None, :] <= torch.arange(n_q, device=scores.device)[:, None]
        allowed = tri if allowed is None else allowed.logical_and(tri)
    weights = masked_softmax(scores, allowed)
    return torch.matmul(weights, v), weights


def split_heads(x, n_heads):
    batch, seq, width = x.shape
    return x.reshape(batch, seq, n_heads, width // n_heads).permute(0, 2, 1, 3)


def merge_heads(x):
    batch, heads, seq, head_dim = x.shape
    return x.permute(0, 2, 1, 3).reshape(batch, seq, heads * head_dim)


class MultiHeadAttention(nn.Module):
    def __init__(self, d_model, n_heads, bias=True):
        super().__init__()
        if d_model % n_heads:
            raise ValueError("d_model=%d cannot be split into n_heads=%d heads" % (d_model, n_heads))
        self.n_heads = n_heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d_model, d_model, bias=bias)
                                                                for _ in range(4))

    def forward(self, x, mask=None, causal=False):
        def project(layer):
            return split_heads(F.linear(x, layer.weight, layer.bias), self.n_heads)
        out, weights = scaled_dot_product_attention(project(self.q_proj), project(self.k_proj),
                                                    project(self.v_proj), mask=mask, causal=causal)
        return F.linear(merge_heads(out), self.out_proj.weight, self.out_proj.bias), weights

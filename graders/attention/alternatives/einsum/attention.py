"""Alternative correct attention: einsum everywhere, masks combined with torch.where."""

import math

import torch
from torch import Tensor, nn


def attention_scores(q: Tensor, k: Tensor, scale: float | None = None) -> Tensor:
    scale = 1.0 / math.sqrt(q.size(-1)) if scale is None else scale
    return torch.einsum("...qd,...kd->...qk", q, k) * scale


def causal_mask(seq_len: int, device=None) -> Tensor:
    idx = torch.arange(seq_len, device=device)
    return idx[None, :] <= idx[:, None]


def masked_softmax(scores: Tensor, mask: Tensor | None = None) -> Tensor:
    neg = torch.tensor(float("-inf"), dtype=scores.dtype, device=scores.device)
    s = scores if mask is None else torch.where(mask, scores, neg)
    m = s.max(dim=-1, keepdim=True).values
    m = torch.nan_to_num(m, neginf=0.0).detach()
    e = (s - m).exp()
    z = e.sum(-1, keepdim=True)
    return torch.where(z == 0, torch.zeros_like(e), e / z.clamp_min(torch.finfo(e.dtype).tiny))


def scaled_dot_product_attention(q, k, v, mask=None, causal=False, scale=None):
    s = attention_scores(q, k, scale)
    if causal:
        i = torch.arange(s.size(-2), device=s.device)[:, None]
        j = torch.arange(s.size(-1), device=s.device)[None, :]
        c = j <= i
        mask = c if mask is None else torch.logical_and(mask, c)
    w = masked_softmax(s, mask)
    return torch.einsum("...qk,...kd->...qd", w, v), w


def split_heads(x: Tensor, n_heads: int) -> Tensor:
    b, s, d = x.shape
    return torch.einsum("bshd->bhsd", x.reshape(b, s, n_heads, d // n_heads))


def merge_heads(x: Tensor) -> Tensor:
    b, h, s, hd = x.shape
    return torch.einsum("bhsd->bshd", x).reshape(b, s, h * hd)


class MultiHeadAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, bias: bool = True):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"n_heads={n_heads} does not divide d_model={d_model}")
        self.n_heads = n_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def forward(self, x, mask=None, causal=False):
        q, k, v = (split_heads(p(x), self.n_heads) for p in (self.q_proj, self.k_proj, self.v_proj))
        out, w = scaled_dot_product_attention(q, k, v, mask=mask, causal=causal)
        return self.out_proj(merge_heads(out)), w

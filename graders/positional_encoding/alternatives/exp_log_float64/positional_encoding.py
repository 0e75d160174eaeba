"""Alternative correct positional encodings: the tutorial's exp(-log(base) * 2i / d) frequencies,
kept in float64; rotate-half written with unbind/stack of the two halves."""

import math

import torch
from torch import nn


def sinusoidal_encoding(seq_len, d_model, base=10000.0):
    if d_model % 2 != 0:
        raise ValueError(f"d_model={d_model} must be even")
    position = torch.arange(0, seq_len, dtype=torch.float64).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float64) * (-math.log(base) / d_model))
    pe = torch.zeros(seq_len, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term)
    return pe.float()


class SinusoidalPositionalEncoding(nn.Module):
    def __init__(self, d_model, max_len=2048, base=10000.0):
        super().__init__()
        self.register_buffer("pe", sinusoidal_encoding(max_len, d_model, base))

    def forward(self, x):
        if x.size(1) > self.pe.size(0):
            raise ValueError(f"seq={x.size(1)} is longer than max_len={self.pe.size(0)}")
        return x + self.pe.unsqueeze(0)[:, : x.size(1)]


class LearnedPositionalEmbedding(nn.Module):
    def __init__(self, max_len, d_model):
        super().__init__()
        self.embedding = nn.Embedding(max_len, d_model)

    def forward(self, x):
        seq_len = x.size(1)
        if seq_len > self.embedding.weight.shape[0]:
            raise ValueError(f"seq={seq_len} is longer than max_len={self.embedding.weight.shape[0]}")
        return x + self.embedding(torch.arange(seq_len).to(x.device))


def rope_cos_sin(seq_len, head_dim, base=10000.0, positions=None):
    if head_dim % 2 != 0:
        raise ValueError(f"head_dim={head_dim} must be even")
    if positions is None:
        positions = torch.arange(seq_len)
    if positions.dim() != 1 or positions.numel() != seq_len:
        raise ValueError(f"positions must be 1-d with {seq_len} entries, got shape {tuple(positions.shape)}")
    inv_freq = torch.exp(torch.arange(0, head_dim, 2, dtype=torch.float64) * (-math.log(base) / head_dim))
    freqs = positions.double().unsqueeze(-1) * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().float(), emb.sin().float()


def apply_rope(x, cos, sin):
    halves = x.unflatten(-1, (2, -1))
    x1, x2 = halves.unbind(-2)
    rotated = torch.stack((-x2, x1), dim=-2).flatten(-2)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


def relative_scores(q, k, offset_a, offset_b):
    results = []
    for start in (offset_a, offset_b):
        rq = apply_rope(q, *rope_cos_sin(q.size(-2), q.size(-1), positions=start + torch.arange(q.size(-2))))
        rk = apply_rope(k, *rope_cos_sin(k.size(-2), k.size(-1), positions=start + torch.arange(k.size(-2))))
        results.append(rq @ rk.transpose(-2, -1))
    return results[0], results[1]

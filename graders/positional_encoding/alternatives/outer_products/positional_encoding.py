"""Alternative correct positional encodings: torch.outer for the angles, index arithmetic for the
interleaving, functional helpers shared by the modules."""

import math

import torch
import torch.nn.functional as F
from torch import nn


def _inverse_frequencies(width, base):
    return torch.tensor(base, dtype=torch.float64) ** (-(torch.arange(0, width, 2, dtype=torch.float64) / width))


def sinusoidal_encoding(seq_len, d_model, base=10000.0):
    if d_model % 2 == 1:
        raise ValueError("d_model must be even (got %d)" % d_model)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float64), _inverse_frequencies(d_model, base))
    columns = torch.arange(d_model)
    pair = angles[:, columns // 2]
    table = torch.where(columns % 2 == 0, pair.sin(), pair.cos())
    return table.float()


class SinusoidalPositionalEncoding(nn.Module):
    def __init__(self, d_model, max_len=2048, base=10000.0):
        super().__init__()
        self.max_len = max_len
        self.register_buffer("encoding", sinusoidal_encoding(max_len, d_model, base))

    def forward(self, x):
        length = x.size(-2)
        if length > self.max_len:
            raise ValueError("length %d > max_len %d" % (length, self.max_len))
        return torch.add(x, self.encoding.narrow(0, 0, length))


class LearnedPositionalEmbedding(nn.Module):
    def __init__(self, max_len, d_model):
        super().__init__()
        self.max_len = max_len
        self.embedding = nn.Embedding(max_len, d_model)

    def forward(self, x):
        batch, length, _ = x.shape
        if length > self.max_len:
            raise ValueError("length %d > max_len %d" % (length, self.max_len))
        ids = torch.arange(length, device=x.device).unsqueeze(0).expand(batch, length)
        return x + F.embedding(ids, self.embedding.weight)


def rope_cos_sin(seq_len, head_dim, base=10000.0, positions=None):
    if head_dim % 2:
        raise ValueError("head_dim must be even (got %d)" % head_dim)
    if positions is not None and positions.shape != torch.Size([seq_len]):
        raise ValueError("positions must have shape (%d,), got %s" % (seq_len, tuple(positions.shape)))
    pos = torch.arange(seq_len, dtype=torch.float64) if positions is None else positions.to(torch.float64)
    angles = torch.outer(pos, _inverse_frequencies(head_dim, base)).repeat(1, 2)
    return torch.cos(angles).to(torch.float32), torch.sin(angles).to(torch.float32)


def _rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([x[..., half:].neg(), x[..., :half]], dim=-1)


def apply_rope(x, cos, sin):
    return torch.addcmul(x * cos.type_as(x), _rotate_half(x), sin.type_as(x))


def relative_scores(q, k, offset_a, offset_b):
    def scores(offset):
        def rotate(t):
            n = t.shape[-2]
            return apply_rope(t, *rope_cos_sin(n, t.shape[-1], positions=torch.arange(n) + offset))
        return torch.einsum("bhqd,bhkd->bhqk", rotate(q), rotate(k))
    return scores(offset_a), scores(offset_b)

"""Alternative correct positional encodings: rotary as multiplication by complex unit numbers
(torch.polar), the sinusoid interleaved with torch.stack."""

import torch
from torch import nn


def sinusoidal_encoding(seq_len, d_model, base=10000.0):
    if d_model % 2:
        raise ValueError(f"odd d_model={d_model}: sines and cosines come in pairs")
    pos = torch.arange(seq_len, dtype=torch.float64).unsqueeze(1)
    freq = torch.pow(torch.tensor(float(base), dtype=torch.float64),
                     -torch.arange(d_model // 2, dtype=torch.float64) * 2 / d_model)
    angle = pos * freq
    return torch.stack([angle.sin(), angle.cos()], dim=-1).reshape(seq_len, d_model).to(torch.float32)


class SinusoidalPositionalEncoding(nn.Module):
    def __init__(self, d_model, max_len=2048, base=10000.0):
        super().__init__()
        self.register_buffer("table", sinusoidal_encoding(max_len, d_model, base), persistent=True)

    def forward(self, x):
        n = x.size(1)
        if n > self.table.size(0):
            raise ValueError(f"cannot encode {n} positions with a table of max_len={self.table.size(0)}")
        return x + self.table[:n].unsqueeze(0)


class LearnedPositionalEmbedding(nn.Module):
    def __init__(self, max_len, d_model):
        super().__init__()
        self.embedding = nn.Embedding(max_len, d_model)

    def forward(self, x):
        n = x.shape[1]
        if n > self.embedding.num_embeddings:
            raise ValueError(f"{n} tokens but max_len={self.embedding.num_embeddings}")
        idx = torch.arange(n, device=x.device)
        return x + self.embedding(idx)[None]


def _angles(seq_len, head_dim, base, positions):
    if head_dim % 2:
        raise ValueError(f"head_dim={head_dim} is odd")
    if positions is None:
        positions = torch.arange(seq_len)
    if positions.shape != (seq_len,):
        raise ValueError(f"expected positions of shape ({seq_len},), got {tuple(positions.shape)}")
    inv = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    return positions.double()[:, None] * inv


def rope_cos_sin(seq_len, head_dim, base=10000.0, positions=None):
    z = torch.polar(torch.ones(seq_len, head_dim // 2, dtype=torch.float64), _angles(seq_len, head_dim, base, positions))
    z = torch.cat([z, z], dim=-1)
    return z.real.float(), z.imag.float()


def apply_rope(x, cos, sin):
    half = x.shape[-1] // 2
    z = torch.complex(x[..., :half].double(), x[..., half:].double())
    # cos and sin are converted to x's dtype first (the spec): the rotation uses those rounded values
    turn = torch.complex(cos[..., :half].to(x.dtype).double(), sin[..., :half].to(x.dtype).double())
    out = z * turn
    return torch.cat([out.real, out.imag], dim=-1).to(x.dtype)


def relative_scores(q, k, offset_a, offset_b):
    def placed(offset):
        tq = rope_cos_sin(q.shape[-2], q.shape[-1], positions=torch.arange(q.shape[-2]) + offset)
        tk = rope_cos_sin(k.shape[-2], k.shape[-1], positions=torch.arange(k.shape[-2]) + offset)
        return torch.matmul(apply_rope(q, *tq), apply_rope(k, *tk).transpose(-1, -2))
    return placed(offset_a), placed(offset_b)

"""Alternative correct positional encodings: every table computed with numpy in float64."""

import numpy as np
import torch
from torch import nn


def sinusoidal_encoding(seq_len, d_model, base=10000.0):
    if d_model % 2 != 0:
        raise ValueError(f"sinusoidal encodings need an even width, not d_model={d_model}")
    p = np.arange(seq_len, dtype=np.float64)[:, None]
    i = np.arange(d_model // 2, dtype=np.float64)[None, :]
    angle = p / np.power(base, 2.0 * i / d_model)
    pe = np.zeros((seq_len, d_model), dtype=np.float64)
    pe[:, 0::2] = np.sin(angle)
    pe[:, 1::2] = np.cos(angle)
    return torch.from_numpy(pe.astype(np.float32))


class SinusoidalPositionalEncoding(nn.Module):
    def __init__(self, d_model, max_len=2048, base=10000.0):
        super().__init__()
        self.max_len = max_len
        self.register_buffer("pe", sinusoidal_encoding(max_len, d_model, base))

    def forward(self, x):
        if x.shape[1] > self.max_len:
            raise ValueError(f"sequence of length {x.shape[1]} exceeds max_len {self.max_len}")
        return x + self.pe[: x.shape[1]]


class LearnedPositionalEmbedding(nn.Module):
    def __init__(self, max_len, d_model):
        super().__init__()
        self.max_len = max_len
        self.embedding = nn.Embedding(max_len, d_model)

    def forward(self, x):
        seq = x.shape[1]
        if seq > self.max_len:
            raise ValueError(f"sequence of length {seq} exceeds max_len {self.max_len}")
        return x + self.embedding.weight[:seq]


def rope_cos_sin(seq_len, head_dim, base=10000.0, positions=None):
    if head_dim % 2 != 0:
        raise ValueError(f"rotary embeddings need an even head_dim, not {head_dim}")
    if positions is None:
        pos = np.arange(seq_len, dtype=np.float64)
    else:
        if tuple(positions.shape) != (seq_len,):
            raise ValueError(f"positions has shape {tuple(positions.shape)}, expected ({seq_len},)")
        pos = positions.detach().cpu().numpy().astype(np.float64)
    inv_freq = 1.0 / np.power(base, np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    angles = np.concatenate([np.outer(pos, inv_freq)] * 2, axis=1)
    return torch.from_numpy(np.cos(angles).astype(np.float32)), torch.from_numpy(np.sin(angles).astype(np.float32))


def apply_rope(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    c, s = cos.to(x.dtype), sin.to(x.dtype)
    return x * c + torch.cat((-x2, x1), dim=-1) * s


def relative_scores(q, k, offset_a, offset_b):
    head_dim = q.shape[-1]
    out = []
    for offset in (offset_a, offset_b):
        qr = apply_rope(q, *rope_cos_sin(q.shape[-2], head_dim, positions=torch.arange(offset, offset + q.shape[-2])))
        kr = apply_rope(k, *rope_cos_sin(k.shape[-2], head_dim, positions=torch.arange(offset, offset + k.shape[-2])))
        out.append(qr @ kr.mT)
    return tuple(out)

"""Helpers for the public tests: they build your module next to your code and return plain data."""

import torch


def run_multihead(d_model, n_heads, weights, x, mask=None, causal=False):
    """Your MultiHeadAttention with the given projection weights (a dict like {"q_proj.weight": ...}), run on x."""
    import attention
    module = attention.MultiHeadAttention(d_model, n_heads).to(x.dtype)
    with torch.no_grad():
        for name, value in weights.items():
            layer, _, attr = name.partition(".")
            getattr(getattr(module, layer), attr).copy_(value)
        return module(x, mask=mask, causal=causal)


def build_multihead(d_model, n_heads):
    """Build your MultiHeadAttention and return the names of its parameters."""
    import attention
    return sorted(name for name, _ in attention.MultiHeadAttention(d_model, n_heads).named_parameters())

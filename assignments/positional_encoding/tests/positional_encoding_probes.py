"""Helpers for the public tests: they build your modules next to your code and return plain data."""

import torch


def run_sinusoidal(d_model, max_len, x):
    """forward(x) of your SinusoidalPositionalEncoding, and the names of its parameters and buffers."""
    import positional_encoding
    module = positional_encoding.SinusoidalPositionalEncoding(d_model, max_len=max_len)
    with torch.no_grad():
        out = module(x)
    return out, [name for name, _ in module.named_parameters()], [name for name, _ in module.named_buffers()]


def run_learned(max_len, d_model, weight, x):
    """forward(x) of your LearnedPositionalEmbedding with `weight` copied into its embedding."""
    import positional_encoding
    module = positional_encoding.LearnedPositionalEmbedding(max_len, d_model)
    with torch.no_grad():
        module.embedding.weight.copy_(weight)
        return module(x)

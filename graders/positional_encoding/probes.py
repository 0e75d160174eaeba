"""Probes for `positional_encoding`: they run next to the student's code and return data only.

No expected values and no asserts here: the tests in this folder decide.
"""

import torch


def _describe(module):
    return {
        "is_module": isinstance(module, torch.nn.Module),
        "parameters": {name: (tuple(p.shape), bool(p.requires_grad)) for name, p in module.named_parameters()},
        "buffers": {name: (tuple(b.shape), b.dtype) for name, b in module.named_buffers()},
        "state_dict": sorted(module.state_dict().keys()),
    }


def sinusoidal_module(d_model, max_len, base, x=None):
    """The student's SinusoidalPositionalEncoding: its parameters and buffers, and forward(x) if x is given."""
    import positional_encoding
    module = positional_encoding.SinusoidalPositionalEncoding(d_model, max_len=max_len, base=base)
    info = _describe(module)
    if x is not None:
        with torch.no_grad():
            info["out"] = module(x)
    return info


def sinusoidal_forward(d_model, max_len, x):
    """forward(x) of the student's SinusoidalPositionalEncoding (default base)."""
    import positional_encoding
    module = positional_encoding.SinusoidalPositionalEncoding(d_model, max_len=max_len)
    with torch.no_grad():
        return module(x)


def learned_module(max_len, d_model, weight=None, x=None, grad_out=None):
    """The student's LearnedPositionalEmbedding: structure, and with ``weight`` loaded into
    ``embedding``, forward(x) and the gradient of ``(out * grad_out).sum()`` for the embedding table."""
    import positional_encoding
    module = positional_encoding.LearnedPositionalEmbedding(max_len, d_model)
    info = _describe(module)
    embedding = getattr(module, "embedding", None)
    info["embedding_type"] = type(embedding).__name__
    info["embedding_shape"] = tuple(embedding.weight.shape) if isinstance(embedding, torch.nn.Embedding) else None
    if x is not None:
        with torch.no_grad():
            module.embedding.weight.copy_(weight)
        out = module(x)
        (out * grad_out).sum().backward()
        info["out"] = out.detach()
        info["grad"] = module.embedding.weight.grad
    return info


def learned_forward(max_len, d_model, x):
    """forward(x) of the student's LearnedPositionalEmbedding (for the length error)."""
    import positional_encoding
    module = positional_encoding.LearnedPositionalEmbedding(max_len, d_model)
    with torch.no_grad():
        return module(x)

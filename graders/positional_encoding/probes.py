"""Probes for `positional_encoding`: they run next to the student's code and return raw data only.

No expected values, comparisons or verdicts here: what a probe returns is the student's output
(tensors, names, shapes, dtypes, device names) for inputs the test chose; the tests in this folder
decide, against their own oracle.
"""

import torch


def _describe(module):
    """Raw facts about a module: its parameters and buffers (shape, dtype, trainable), its
    state_dict keys, and where its buffers and parameters are after ``.to(torch.float64)`` and
    after ``.to("meta")`` (what an nn.Module's own methods do with them)."""
    info = {
        "parameters": {name: (tuple(p.shape), bool(p.requires_grad)) for name, p in module.named_parameters()},
        "buffers": {name: (tuple(b.shape), str(b.dtype)) for name, b in module.named_buffers()},
        "state_dict": sorted(module.state_dict().keys()),
    }
    module = module.to(torch.float64)
    info["dtypes_after_to_float64"] = {name: str(t.dtype) for name, t in
                                       [*module.named_parameters(), *module.named_buffers()]}
    module = module.to("meta")
    info["devices_after_to_meta"] = {name: str(t.device) for name, t in
                                     [*module.named_parameters(), *module.named_buffers()]}
    return info


def sinusoidal_module(d_model, max_len, base, x=None):
    """The student's SinusoidalPositionalEncoding: forward(x) if x is given, then its structure."""
    import positional_encoding
    module = positional_encoding.SinusoidalPositionalEncoding(d_model, max_len=max_len, base=base)
    info = {}
    if x is not None:
        with torch.no_grad():
            info["out"] = module(x)
    info.update(_describe(module))
    return info


def sinusoidal_forward(d_model, max_len, x):
    """forward(x) of the student's SinusoidalPositionalEncoding (default base), and x afterwards."""
    import positional_encoding
    module = positional_encoding.SinusoidalPositionalEncoding(d_model, max_len=max_len)
    with torch.no_grad():
        out = module(x)
    return {"out": out, "x_after": x}


def sinusoidal_on_meta(d_model, max_len, batch, seq):
    """The module moved to the meta device, run on a meta input: device and shape of the result."""
    import positional_encoding
    module = positional_encoding.SinusoidalPositionalEncoding(d_model, max_len=max_len).to("meta")
    with torch.no_grad():
        out = module(torch.empty(batch, seq, d_model, device="meta"))
    return str(out.device), tuple(out.shape)


def learned_module(max_len, d_model, weight=None, x=None, grad_out=None):
    """The student's LearnedPositionalEmbedding: with ``weight`` loaded into ``embedding``,
    forward(x), x afterwards and the gradient of ``(out * grad_out).sum()`` for the table; then
    its structure."""
    import positional_encoding
    module = positional_encoding.LearnedPositionalEmbedding(max_len, d_model)
    embedding = getattr(module, "embedding", None)
    info = {"embedding_type": type(embedding).__name__,
            "embedding_shape": tuple(getattr(getattr(embedding, "weight", None), "shape", ()))}
    if x is not None:
        with torch.no_grad():
            module.embedding.weight.copy_(weight)
        out = module(x)
        if out.requires_grad:           # otherwise nothing reached the table: its grad stays None
            (out * grad_out).sum().backward()
        grad = module.embedding.weight.grad
        info["out"] = out.detach().clone()
        info["x_after"] = x
        info["grad"] = None if grad is None else grad.detach().clone()   # before .to() below converts it
    info.update(_describe(module))
    return info


def learned_forward(max_len, d_model, x):
    """forward(x) of the student's LearnedPositionalEmbedding (for the length error)."""
    import positional_encoding
    module = positional_encoding.LearnedPositionalEmbedding(max_len, d_model)
    with torch.no_grad():
        return module(x)


def learned_on_meta(max_len, d_model, batch, seq):
    """The module moved to the meta device, run on a meta input, with every aten operation logged
    as (name, devices of its tensor arguments): raw data for the test to read."""
    import positional_encoding
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    class Log(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            devices = sorted({str(t.device) for t in tree_leaves((args, kwargs))
                              if isinstance(t, torch.Tensor) and t.dim() > 0})
            self.ops.append((str(func), devices))
            return func(*args, **kwargs)

    module = positional_encoding.LearnedPositionalEmbedding(max_len, d_model).to("meta")
    x = torch.empty(batch, seq, d_model, device="meta")
    with torch.no_grad(), Log() as log:
        out = module(x)
    return {"out": (str(out.device), tuple(out.shape)), "ops": log.ops}

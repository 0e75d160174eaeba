"""Probes for `attention`: they run next to the student's code and return data only.

No expected values and no asserts here: the tests in this folder decide.
"""

import time

import torch


def _build_mha(d_model, n_heads, bias, state, dtype):
    import attention
    module = attention.MultiHeadAttention(d_model, n_heads, bias=bias).to(dtype)
    with torch.no_grad():
        for name, value in state.items():
            layer, _, attr = name.partition(".")
            getattr(getattr(module, layer), attr).copy_(value)
    return module


def mha_forward(d_model, n_heads, bias, state, x, mask=None, causal=False):
    """The student's MultiHeadAttention with the given projection weights, run on ``x``."""
    module = _build_mha(d_model, n_heads, bias, state, x.dtype)
    with torch.no_grad():
        out, weights = module(x, mask=mask, causal=causal)
    return out, weights


def mha_parameters(d_model, n_heads, bias):
    """Name -> (shape, requires_grad) of every parameter, and the names of the submodules."""
    import attention
    module = attention.MultiHeadAttention(d_model, n_heads, bias=bias)
    params = {name: (tuple(p.shape), bool(p.requires_grad)) for name, p in module.named_parameters()}
    linears = {name: type(m).__name__ for name, m in module.named_children()}
    return {"parameters": params, "children": linears, "is_module": isinstance(module, torch.nn.Module)}


def mha_construct(d_model, n_heads):
    """Build the module and drop it (for the constructor's errors)."""
    import attention
    attention.MultiHeadAttention(d_model, n_heads)
    return None


def sdpa_gradcheck(q, k, v, mask=None, causal=False, scale=None):
    """torch.autograd.gradcheck of the student's attention output with respect to q, k and v."""
    import attention
    inputs = tuple(t.detach().clone().requires_grad_(True) for t in (q, k, v))

    def fn(q_, k_, v_):
        return attention.scaled_dot_product_attention(q_, k_, v_, mask=mask, causal=causal, scale=scale)[0]

    return bool(torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, raise_exception=False))


def mha_gradcheck(d_model, n_heads, state, x, mask=None, causal=False):
    """gradcheck of the student's MultiHeadAttention (float64) with respect to its input."""
    module = _build_mha(d_model, n_heads, True, state, torch.float64)
    x = x.detach().clone().to(torch.float64).requires_grad_(True)

    def fn(x_):
        return module(x_, mask=mask, causal=causal)[0]

    return bool(torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-5, raise_exception=False))


def call_without_torch_shortcuts(function, *args, **kwargs):
    """``attention.<function>(*args, **kwargs)`` while torch's own attention and softmax raise if called."""
    import attention
    import torch.nn.functional as F

    def refuse(*_args, **_kwargs):
        raise RuntimeError("this task must not call torch's built-in attention or softmax "
                           "(F.scaled_dot_product_attention, nn.MultiheadAttention, softmax)")

    owners = [(F, "scaled_dot_product_attention"), (torch.nn.MultiheadAttention, "forward"),
              (torch, "softmax"), (F, "softmax"), (torch.Tensor, "softmax"), (torch.special, "softmax")]
    missing = object()
    saved = [(owner, name, vars(owner).get(name, missing)) for owner, name in owners]
    for owner, name, _ in saved:
        setattr(owner, name, refuse)
    try:
        return getattr(attention, function)(*args, **kwargs)
    finally:
        for owner, name, original in saved:
            if original is missing:  # inherited (Tensor.softmax): drop the override
                delattr(owner, name)
            else:
                setattr(owner, name, original)


def time_attention(shape, repeats, causal=False):
    """Best wall time (seconds) of the student's attention and of torch's math-backend SDPA, same inputs.

    The two are timed alternately in this process, so they share the machine's load.
    """
    import attention
    import torch.nn.functional as F
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(*shape, generator=gen) for _ in range(3))
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # older torch: its CPU SDPA is the math backend anyway
        sdpa_kernel = None

    def reference():
        if sdpa_kernel is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        with sdpa_kernel(SDPBackend.MATH):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

    def student():
        return attention.scaled_dot_product_attention(q, k, v, causal=causal)

    best = {"student": float("inf"), "torch": float("inf")}
    with torch.no_grad():
        reference(), student()  # warm-up
        for _ in range(repeats):
            for name, fn in (("torch", reference), ("student", student)):
                start = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - start)
    return best

"""Probes for `attention`: they run next to the student's code and return raw data only.

No expected values, comparisons or verdicts here: everything a probe returns is the student's
output (tensors, shapes, names, device names) for inputs the test chose; the tests in this folder
decide, against their own oracle.
"""

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
    """The student's MultiHeadAttention with the given projection weights, run on ``x``; also
    ``x`` and ``mask`` as the forward pass left them."""
    module = _build_mha(d_model, n_heads, bias, state, x.dtype)
    with torch.no_grad():
        out, weights = module(x, mask=mask, causal=causal)
    return {"out": out, "weights": weights, "x_after": x, "mask_after": mask}


def mha_gradients(d_model, n_heads, state, x, grad_out, mask=None, causal=False):
    """Gradients of ``(out * grad_out).sum()`` for the input and every parameter of the student's
    MultiHeadAttention (float64), as autograd computed them in the student's code."""
    module = _build_mha(d_model, n_heads, True, state, torch.float64)
    x = x.detach().clone().requires_grad_(True)
    out, _ = module(x, mask=mask, causal=causal)
    (out * grad_out).sum().backward()
    return {"out": out.detach(), "x_grad": x.grad,
            "param_grads": {name: p.grad for name, p in module.named_parameters()}}


def mha_parameters(d_model, n_heads, bias):
    """Name -> (shape, requires_grad) of every parameter, each child's class name, and the
    parameters' dtypes after ``module.to(torch.float64)`` (what an nn.Module does)."""
    import attention
    module = attention.MultiHeadAttention(d_model, n_heads, bias=bias)
    params = {name: (tuple(p.shape), bool(p.requires_grad)) for name, p in module.named_parameters()}
    children = {name: type(m).__name__ for name, m in module.named_children()}
    module = module.to(torch.float64)
    dtypes = {name: str(p.dtype) for name, p in module.named_parameters()}
    return {"parameters": params, "children": children, "dtypes_after_to_float64": dtypes}


def mha_construct(d_model, n_heads):
    """Build the module and drop it (for the constructor's errors)."""
    import attention
    attention.MultiHeadAttention(d_model, n_heads)
    return None


def mha_on_meta(d_model, n_heads, batch, seq, causal):
    """The student's module moved to the ``meta`` device and run on a meta input: the devices and
    shapes of what comes out (meta tensors carry no values, so nothing else can be returned)."""
    import attention
    module = attention.MultiHeadAttention(d_model, n_heads).to("meta")
    x = torch.empty(batch, seq, d_model, device="meta")
    with torch.no_grad():
        out, weights = module(x, causal=causal)
    return {"out": (str(out.device), tuple(out.shape)), "weights": (str(weights.device), tuple(weights.shape))}


def sdpa_gradients(q, k, v, grad_out, mask=None, causal=False, scale=None):
    """The student's attention on copies of q, k, v that require grad: the output and autograd's
    gradients of ``(output * grad_out).sum()`` for q, k and v (None where none reached them)."""
    import attention
    leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
    out, _ = attention.scaled_dot_product_attention(*leaves, mask=mask, causal=causal, scale=scale)
    (out * grad_out).sum().backward()
    return {"out": out.detach(), "grads": [t.grad for t in leaves]}


def sdpa_on_meta(lead, seq_q, seq_k, d, mask_shape, causal):
    """The student's attention on ``meta`` tensors: devices and shapes of the output and weights."""
    import attention
    q = torch.empty(*lead, seq_q, d, device="meta")
    k = torch.empty(*lead, seq_k, d, device="meta")
    v = torch.empty(*lead, seq_k, d, device="meta")
    mask = None if mask_shape is None else torch.ones(*mask_shape, dtype=torch.bool, device="meta")
    out, weights = attention.scaled_dot_product_attention(q, k, v, mask=mask, causal=causal)
    return {"out": (str(out.device), tuple(out.shape)), "weights": (str(weights.device), tuple(weights.shape))}


def causal_mask_devices(seq_len):
    """Device, dtype and shape of ``causal_mask(seq_len, device=...)`` for ``"meta"`` and for ``None``."""
    import attention
    found = {}
    for name, device in (("meta", "meta"), ("none", None)):
        mask = attention.causal_mask(seq_len, device=device)
        found[name] = (str(mask.device), str(mask.dtype), tuple(mask.shape))
    return found


def call_on_strided(function, tensors, strides_from, kwargs):
    """``attention.<function>`` on non-contiguous views: each tensor is rebuilt as a view of a
    larger buffer (the test's values, other strides), as slices and transposes make them."""
    import attention
    views = []
    for t, how in zip(tensors, strides_from):
        if how == "transposed":      # the same values, stored column-major in the last two axes
            views.append(t.transpose(-2, -1).contiguous().transpose(-2, -1))
        elif how == "heads":         # (batch, heads, seq, d) cut from a (batch, seq, heads, d) buffer, as split_heads does
            views.append(t.transpose(1, 2).contiguous().transpose(1, 2))
        elif how == "sliced":        # every other element of a buffer twice as wide
            wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)
            wide[..., ::2] = t
            views.append(wide[..., ::2])
        else:
            views.append(t)
    return getattr(attention, function)(*views, **kwargs)

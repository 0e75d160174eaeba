"""Self-attention: from one query against its keys to many heads at once.

Dimension names, used the same way in every docstring:

* ``batch``: sequences processed together;
* ``heads``: attention heads;
* ``seq``: tokens in a sequence (``seq_q`` for queries and ``seq_k`` for keys and values when
  they may differ);
* ``d_model``: the width of a token's vector;
* ``head_dim``: the width each head works in, ``d_model // heads``;
* ``...``: any number of leading dimensions (for example ``batch, heads``).

Masks follow PyTorch's convention for boolean masks: ``True`` means "may attend".

Off limits in this file: ``torch.nn.functional.scaled_dot_product_attention``,
``torch.nn.MultiheadAttention`` and ``torch.softmax`` / ``Tensor.softmax`` /
``torch.nn.functional.softmax``. They are the oracles the tests compare you with.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


# Task 1.1
def attention_scores(q: Tensor, k: Tensor, scale: float | None = None) -> Tensor:
    """How well each query matches each key: ``q @ k^T * scale``.

    Args:
        q: queries, shape ``(..., seq_q, d)``.
        k: keys, shape ``(..., seq_k, d)``; the leading dimensions broadcast with ``q``'s.
        scale: the factor applied to every dot product; ``None`` means ``1 / sqrt(d)``, which
            keeps the scores of random unit-variance vectors at unit variance whatever ``d``.

    Returns:
        Scores of shape ``(..., seq_q, seq_k)``: entry ``[..., i, j]`` is
        ``scale * (q[..., i, :] . k[..., j, :])``.
    """
    # BEGIN SOLUTION
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    return (q @ k.transpose(-2, -1)) * scale
    # END SOLUTION


# Task 1.2
def causal_mask(seq_len: int, device: torch.device | str | None = None) -> Tensor:
    """The mask of a decoder: each position may attend to itself and to earlier positions.

    Args:
        seq_len: the number of positions ``seq``.
        device: where to create the mask (``None``: the default device).

    Returns:
        A bool tensor of shape ``(seq, seq)``; ``mask[i, j]`` is ``True`` exactly when ``j <= i``.
    """
    # BEGIN SOLUTION
    return torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).tril()
    # END SOLUTION


# Task 1.3
def masked_softmax(scores: Tensor, mask: Tensor | None = None) -> Tensor:
    """Softmax over the last axis (the keys), ignoring the keys a query may not attend to.

    Write it yourself with ``torch.exp`` (no softmax from torch): subtract each row's maximum
    before exponentiating, so that scores of about +-1e4 in float32 neither overflow nor turn
    into NaN.

    Args:
        scores: shape ``(..., seq_q, seq_k)``.
        mask: ``None`` (every key allowed) or a bool tensor that broadcasts to ``scores``;
            ``True`` means "may attend". A masked-out key gets weight exactly 0.

    Returns:
        Weights of the shape and dtype of ``scores``. Each row sums to 1, except a row whose mask
        allows no key at all: that row is all zeros (never NaN).
    """
    # BEGIN SOLUTION
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    peak = scores.amax(dim=-1, keepdim=True)
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak)).detach()
    exps = torch.exp(scores - peak)
    total = exps.sum(dim=-1, keepdim=True)
    return exps / torch.where(total > 0, total, torch.ones_like(total))
    # END SOLUTION


# Task 1.4
def scaled_dot_product_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None,
                                 causal: bool = False, scale: float | None = None) -> tuple[Tensor, Tensor]:
    """Attention: every query takes a weighted average of the values, weighted by how well it matches each key.

    The output equals ``torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask,
    is_causal=causal, scale=scale)``; unlike torch, this version also returns the weights. Use the
    three functions above, and no Python loop: one batched matrix product does all queries at once.
    The grader reads your source: this function and everything it calls contain no ``for`` or
    ``while`` loop, comprehension or ``map`` over the data (a literal tuple or ``.shape`` is fine).

    Args:
        q: queries, shape ``(..., seq_q, d)``.
        k: keys, shape ``(..., seq_k, d)``.
        v: values, shape ``(..., seq_k, d_v)``.
        mask: ``None`` or a bool tensor broadcastable to ``(..., seq_q, seq_k)``; ``True`` = may attend.
        causal: if ``True``, query ``i`` may also only attend to keys ``j <= i`` (aligned at the
            top left when ``seq_q != seq_k``, as torch does). ``mask`` and ``causal`` may both be
            given: a key is allowed when both allow it.
        scale: as in :func:`attention_scores`.

    Returns:
        ``(output, weights)``: ``output`` of shape ``(..., seq_q, d_v)`` and the attention
        ``weights`` of shape ``(..., seq_q, seq_k)``. A query that may attend to nothing gets
        all-zero weights and an all-zero output.
    """
    # BEGIN SOLUTION
    scores = attention_scores(q, k, scale)
    if causal:
        seq_q, seq_k = scores.shape[-2:]
        allowed = causal_mask(max(seq_q, seq_k), device=scores.device)[:seq_q, :seq_k]
        mask = allowed if mask is None else mask & allowed
    weights = masked_softmax(scores, mask)
    return weights @ v, weights
    # END SOLUTION


# Task 2.1
def split_heads(x: Tensor, n_heads: int) -> Tensor:
    """Cut every token's vector into ``n_heads`` consecutive slices, one per head.

    Head ``h`` gets features ``h * head_dim`` to ``(h + 1) * head_dim - 1`` of every token (the
    layout ``torch.nn.MultiheadAttention`` uses).

    Args:
        x: shape ``(batch, seq, d_model)``.
        n_heads: ``heads``; divides ``d_model``.

    Returns:
        Shape ``(batch, heads, seq, head_dim)``.
    """
    # BEGIN SOLUTION
    batch, seq, d_model = x.shape
    return x.reshape(batch, seq, n_heads, d_model // n_heads).transpose(1, 2)
    # END SOLUTION


# Task 2.2
def merge_heads(x: Tensor) -> Tensor:
    """The inverse of :func:`split_heads`: put the heads' slices back side by side.

    Args:
        x: shape ``(batch, heads, seq, head_dim)``.

    Returns:
        Shape ``(batch, seq, d_model)`` with ``d_model = heads * head_dim``;
        ``merge_heads(split_heads(x, n)) == x``.
    """
    # BEGIN SOLUTION
    batch, heads, seq, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, seq, heads * head_dim)
    # END SOLUTION


# Task 2.3
class MultiHeadAttention(nn.Module):
    """Multi-head self-attention: ``heads`` attentions side by side, each in its own ``head_dim`` slice.

    Submodules (their names are part of the specification):

    * ``q_proj``, ``k_proj``, ``v_proj``: ``nn.Linear(d_model, d_model, bias=bias)`` making the
      queries, keys and values of every head at once;
    * ``out_proj``: ``nn.Linear(d_model, d_model, bias=bias)`` mixing the merged heads.

    No other parameters. With these four layers copied from a ``torch.nn.MultiheadAttention``
    (``batch_first=True``), both compute the same thing.
    """

    def __init__(self, d_model: int, n_heads: int, bias: bool = True):
        """Raises ``ValueError`` when ``n_heads`` does not divide ``d_model``; the message names
        both numbers, e.g. ``"d_model=10 is not divisible by n_heads=3"``."""
        super().__init__()
        # BEGIN SOLUTION
        if d_model % n_heads != 0:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.d_model = d_model
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        # END SOLUTION

    def forward(self, x: Tensor, mask: Tensor | None = None, causal: bool = False) -> tuple[Tensor, Tensor]:
        """Self-attention over ``x``.

        Args:
            x: shape ``(batch, seq, d_model)``.
            mask: ``None`` or a bool tensor broadcastable to ``(batch, heads, seq, seq)``;
                ``True`` = may attend. For example ``(seq, seq)``, or ``(batch, 1, 1, seq)`` to
                hide padding tokens.
            causal: as in :func:`scaled_dot_product_attention`.

        Returns:
            ``(out, weights)``: ``out`` of shape ``(batch, seq, d_model)`` (after ``out_proj``)
            and every head's attention weights, shape ``(batch, heads, seq, seq)``.
        """
        # BEGIN SOLUTION
        q = split_heads(self.q_proj(x), self.n_heads)
        k = split_heads(self.k_proj(x), self.n_heads)
        v = split_heads(self.v_proj(x), self.n_heads)
        out, weights = scaled_dot_product_attention(q, k, v, mask=mask, causal=causal)
        return self.out_proj(merge_heads(out)), weights
        # END SOLUTION

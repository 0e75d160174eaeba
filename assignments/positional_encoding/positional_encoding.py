"""Positional encodings: how a transformer learns where each token is.

Dimension names, used the same way in every docstring:

* ``batch``: sequences processed together;
* ``heads``: attention heads;
* ``seq``: tokens in a sequence (positions ``0 .. seq - 1`` unless said otherwise);
* ``d_model``: the width of a token's vector;
* ``head_dim``: the width of one head's queries and keys (rotary encodings work per head).

Precision: compute angles (position times frequency) in float64 and convert only the final sines
and cosines to float32. float32 numbers near 2000 are about 0.00012 apart, so a float32 angle near
2000 (and the rounded frequency it came from) can be off by about 1e-4, and so can its sine.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


# Task 1.1
def sinusoidal_encoding(seq_len: int, d_model: int, base: float = 10000.0) -> Tensor:
    """The sinusoidal position table of "Attention Is All You Need".

    For position ``p`` and pair index ``i`` (``0 <= i < d_model / 2``)::

        PE[p, 2i]     = sin(p / base ** (2i / d_model))
        PE[p, 2i + 1] = cos(p / base ** (2i / d_model))

    Even columns hold sines, odd columns hold cosines, and both columns of pair ``i`` use the
    same frequency. Low ``i`` turns fast; high ``i`` turns slowly.

    Args:
        seq_len: the number of positions ``seq``.
        d_model: the width; must be even.
        base: sets the slowest wavelength (``2 * pi * base``).

    Returns:
        A float32 tensor of shape ``(seq, d_model)``.

    Raises:
        ValueError: if ``d_model`` is odd (the message names it).
    """
    raise NotImplementedError("Task 1.1: sinusoidal_encoding")


# Task 1.2
class SinusoidalPositionalEncoding(nn.Module):
    """Adds the sinusoidal table to a batch of token embeddings.

    The table for ``max_len`` positions is computed once in the constructor and stored as a
    **buffer** (``self.register_buffer``), not a parameter: it moves with ``.to(device)`` and is
    saved in the ``state_dict``, but an optimiser never changes it. The module has no parameters.
    """

    def __init__(self, d_model: int, max_len: int = 2048, base: float = 10000.0):
        super().__init__()
        raise NotImplementedError("Task 1.2: SinusoidalPositionalEncoding.__init__")

    def forward(self, x: Tensor) -> Tensor:
        """``x + PE[:seq]``, the table broadcast over the batch.

        Args:
            x: shape ``(batch, seq, d_model)``.

        Returns:
            Shape ``(batch, seq, d_model)``; float32 for float32 input.

        Raises:
            ValueError: if ``seq > max_len``; the message names both lengths.
        """
        raise NotImplementedError("Task 1.2: SinusoidalPositionalEncoding.forward")


# Task 1.3
class LearnedPositionalEmbedding(nn.Module):
    """A trainable vector per position (as in BERT and GPT-2), added to the token embeddings.

    The vectors live in an ``nn.Embedding(max_len, d_model)`` stored as the attribute
    ``embedding``, which is the module's only parameter. Position ``p`` uses row ``p``.
    """

    def __init__(self, max_len: int, d_model: int):
        super().__init__()
        raise NotImplementedError("Task 1.3: LearnedPositionalEmbedding.__init__")

    def forward(self, x: Tensor) -> Tensor:
        """``x + embedding(positions)`` for positions ``0 .. seq - 1``.

        Args:
            x: shape ``(batch, seq, d_model)``.

        Returns:
            Shape ``(batch, seq, d_model)``.

        Raises:
            ValueError: if ``seq > max_len``; the message names both lengths.
        """
        raise NotImplementedError("Task 1.3: LearnedPositionalEmbedding.forward")


# Task 2.1
def rope_cos_sin(seq_len: int, head_dim: int, base: float = 10000.0,
                 positions: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The cosines and sines of rotary position embeddings (RoPE), in the "rotate half" layout.

    Feature pair ``i`` (``0 <= i < head_dim / 2``) turns at frequency
    ``inv_freq[i] = 1 / base ** (2i / head_dim)``. Position ``p`` rotates that pair by the angle
    ``p * inv_freq[i]``. In the layout of Hugging Face's Llama, pair ``i`` is made of features
    ``i`` and ``i + head_dim / 2``, so both halves of a row carry the same angles::

        angles[p] = [p * inv_freq[0], ..., p * inv_freq[h - 1], p * inv_freq[0], ..., p * inv_freq[h - 1]]

    where ``h = head_dim / 2``, and ``cos = cos(angles)``, ``sin = sin(angles)``.

    Args:
        seq_len: the number of positions ``seq``.
        head_dim: the width of a head; must be even.
        base: the RoPE "theta" (10000 in Llama 2, larger in later models).
        positions: optional integer tensor of shape ``(seq,)``, the positions to use instead of
            ``0 .. seq - 1`` (for example, the positions of newly generated tokens).

    Returns:
        ``(cos, sin)``, both float32 of shape ``(seq, head_dim)``. Compute the angles in float64.

    Raises:
        ValueError: if ``head_dim`` is odd, or ``positions`` does not have shape ``(seq,)``.
    """
    raise NotImplementedError("Task 2.1: rope_cos_sin")


# Task 2.2
def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate each feature pair of ``x`` by its position's angle.

    With ``x1, x2`` the first and second halves of the last axis, the rotation of pair
    ``(x1[i], x2[i])`` by angle ``a`` is::

        x * cos + rotate_half(x) * sin,    rotate_half(x) = concat(-x2, x1)

    This equals ``transformers.models.llama.modeling_llama.apply_rotary_pos_emb`` given the same
    ``cos`` and ``sin``.

    Args:
        x: queries or keys, shape ``(batch, heads, seq, head_dim)``.
        cos: shape ``(seq, head_dim)``, from :func:`rope_cos_sin`.
        sin: shape ``(seq, head_dim)``, from :func:`rope_cos_sin`.

    Returns:
        The rotated tensor, shape and dtype of ``x`` (``cos`` and ``sin`` are converted to ``x``'s dtype).
    """
    raise NotImplementedError("Task 2.2: apply_rope")


# Task 2.3
def relative_scores(q: Tensor, k: Tensor, offset_a: int, offset_b: int) -> tuple[Tensor, Tensor]:
    """After RoPE, a query-key score depends only on how far apart the two tokens are.

    Place the same queries and keys at two different absolute positions and compare their scores:

    * placement a: token ``t`` of ``q`` and of ``k`` sits at position ``offset_a + t``;
    * placement b: token ``t`` sits at position ``offset_b + t``.

    For each placement, rotate ``q`` and ``k`` with :func:`rope_cos_sin` (``base`` 10000, with
    the ``positions`` argument) and :func:`apply_rope`, then take the raw scores
    ``q_rot @ k_rot^T`` (no scale, no softmax). Every pair of tokens is the same distance apart in
    both placements, so the two score matrices are equal up to rounding, however far apart
    ``offset_a`` and ``offset_b`` are.

    Args:
        q: queries, shape ``(batch, heads, seq_q, head_dim)``.
        k: keys, shape ``(batch, heads, seq_k, head_dim)``.
        offset_a: the position of the first token in placement a.
        offset_b: the position of the first token in placement b.

    Returns:
        ``(score_a, score_b)``, each of shape ``(batch, heads, seq_q, seq_k)`` and of ``q``'s dtype.
    """
    raise NotImplementedError("Task 2.3: relative_scores")

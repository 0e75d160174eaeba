"""What students get wrong in positional encodings, and how each wrong idea shows in the output.

Each entry: a fixed sentence (never a value from the inputs), the task, and the bug that
``course validate`` applies to the solution to prove the hidden tests catch it and name it. The
hidden tests compute each wrong answer with their own oracle on the same inputs (``variants=``).
"""

from course.grading.diagnose import Misconception, catalogue

_SIN_COS = "table[:, 0::2] = torch.sin(angles)\n    table[:, 1::2] = torch.cos(angles)"
_INV_FREQ = "inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)"
_ROTATED = "rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)"
_SCORES = "scores.append(apply_rope(q, cos_q, sin_q) @ apply_rope(k, cos_k, sin_k).transpose(-2, -1))"

CATALOGUE = catalogue({
    # ---- the sinusoidal table (1.1, 1.2)
    "sin_cos_swapped": Misconception(
        "Your table has cosines in the even columns and sines in the odd ones: PE[p, 2i] is the sine, "
        "PE[p, 2i + 1] the cosine.",
        task="1.1", bug={"old": _SIN_COS,
                         "new": "table[:, 0::2] = torch.cos(angles)\n    table[:, 1::2] = torch.sin(angles)"}),
    "sin_cos_side_by_side": Misconception(
        "Your table puts all the sines first and all the cosines after them: sines and cosines alternate, "
        "column 2i the sine and column 2i + 1 the cosine of the same angle.",
        task="1.1", bug={"old": _SIN_COS, "new": "table[:, :d_model // 2] = torch.sin(angles)\n"
                                                  "    table[:, d_model // 2:] = torch.cos(angles)"}),
    "exponent_without_two": Misconception(
        "Your frequencies use base ** (i / d_model): the exponent is 2i / d_model for pair i (the column "
        "index of the pair's sine).",
        task="1.1", bug={"old": "exponents = torch.arange(0, d_model, 2, dtype=torch.float64) / d_model",
                         "new": "exponents = torch.arange(0, d_model // 2, dtype=torch.float64) / d_model"}),
    "exponent_per_column": Misconception(
        "Your cosine columns use their own column index in the exponent: both columns of pair i share the "
        "frequency base ** (2i / d_model).",
        task="1.1", bug={"old": _SIN_COS,
                         "new": "table[:, 0::2] = torch.sin(angles)\n    table[:, 1::2] = torch.cos(positions / base ** "
                                "(torch.arange(1, d_model, 2, dtype=torch.float64) / d_model))"}),
    "frequencies_inverted": Misconception(
        "Your angles multiply the position by base ** (2i / d_model): divide by it, so that high pairs "
        "turn slowly.",
        task="1.1", bug={"old": "angles = positions / base ** exponents", "new": "angles = positions * base ** exponents"}),
    "positions_from_one": Misconception(
        "Your table starts at position 1: the first row is position 0 (sines 0, cosines 1).",
        task="1.1", bug={"old": "positions = torch.arange(seq_len, dtype=torch.float64)[:, None]",
                         "new": "positions = torch.arange(1, seq_len + 1, dtype=torch.float64)[:, None]"}),
    "float32_angles": Misconception(
        "Your angles are computed in float32: far positions lose about 1e-4. Make positions and "
        "frequencies float64, and convert only the final sines and cosines to float32.",
        task="1.1", bug={"old": "positions = torch.arange(seq_len, dtype=torch.float64)[:, None]\n    exponents = "
                                "torch.arange(0, d_model, 2, dtype=torch.float64) / d_model",
                         "new": "positions = torch.arange(seq_len, dtype=torch.float32)[:, None]\n    exponents = "
                                "torch.arange(0, d_model, 2, dtype=torch.float32) / d_model"}),
    "float32_tutorial_frequencies": Misconception(
        "Your frequencies exp(2i * -log(base) / d_model) are computed in float32, as in the PyTorch "
        "tutorial: far positions lose about 1e-4. Compute them, and the angles, in float64.",
        task="1.1", bug={"old": "angles = positions / base ** exponents",
                         "new": "angles = torch.arange(seq_len)[:, None] * torch.exp(torch.arange(0, d_model, 2).float() "
                                "* (-torch.log(torch.tensor(float(base), dtype=torch.float64)).item() / d_model))"}),
    "odd_width_accepted": Misconception(
        "An odd width is accepted: sines and cosines come in pairs, so raise ValueError naming the width.",
        task="1.1", bug={"old": "if d_model % 2 != 0:\n        raise ValueError(f\"d_model must be even for sinusoidal "
                                "encodings, got d_model={d_model}\")",
                         "new": "if d_model % 2 != 0:\n        d_model = d_model + 1"}),
    "base_ignored": Misconception(
        "Your table ignores the base argument and always uses 10000: use the base you are given.",
        task="1.1", bug={"old": "angles = positions / base ** exponents", "new": "angles = positions / 10000.0 ** exponents"}),
    "table_not_a_buffer": Misconception(
        "Your table is a plain attribute, not a registered buffer: module.to(...) does not move it and the "
        "state_dict does not save it. Use self.register_buffer.",
        task="1.2", bug={"old": "self.register_buffer(\"pe\", sinusoidal_encoding(max_len, d_model, base))",
                         "new": "self.pe = sinusoidal_encoding(max_len, d_model, base)"}),
    "table_is_a_parameter": Misconception(
        "Your table is a parameter, so an optimiser would change it: the sinusoids are fixed, store them "
        "with self.register_buffer.",
        task="1.2", bug={"old": "self.register_buffer(\"pe\", sinusoidal_encoding(max_len, d_model, base))",
                         "new": "self.pe = nn.Parameter(sinusoidal_encoding(max_len, d_model, base))"}),
    "buffer_not_persistent": Misconception(
        "Your table buffer is not saved in the state_dict (persistent=False): register it as a persistent "
        "buffer.",
        task="1.2", bug={"old": "self.register_buffer(\"pe\", sinusoidal_encoding(max_len, d_model, base))",
                         "new": "self.register_buffer(\"pe\", sinusoidal_encoding(max_len, d_model, base), "
                                "persistent=False)"}),
    "max_len_off_by_one": Misconception(
        "A sequence exactly max_len long is refused: only seq > max_len is an error.",
        task="1.2", bug={"old": "        if seq > self.max_len:\n            raise ValueError(f\"sequence length {seq} is "
                                "longer than max_len={self.max_len}\")\n        return x + self.pe[:seq]",
                         "new": "        if seq >= self.max_len:\n            raise ValueError(f\"sequence length {seq} is "
                                "longer than max_len={self.max_len}\")\n        return x + self.pe[:seq]"}),
    "length_error_not_value_error": Misconception(
        "A sequence longer than max_len fails with another exception: check the length yourself and raise "
        "ValueError naming both lengths.",
        task="1.2", bug={"old": "        if seq > self.max_len:\n            raise ValueError(f\"sequence length {seq} is "
                                "longer than max_len={self.max_len}\")\n        return x + self.pe[:seq]",
                         "new": "        return x + self.pe[:seq]"}),
    # ---- learned positions (1.3)
    "embedding_not_nn_embedding": Misconception(
        "Your attribute embedding is not an nn.Embedding: use nn.Embedding(max_len, d_model), whose weight is "
        "the table.",
        task="1.3", bug={"old": "self.embedding = nn.Embedding(max_len, d_model)",
                         "new": "self.embedding = nn.Parameter(torch.randn(max_len, d_model))"}),
    "embedding_not_trained": Misconception(
        "No gradient reaches embedding.weight: keep it trainable and add embedding(positions) to x without "
        "detaching.",
        task="1.3", bug={"old": "return x + self.embedding(positions)",
                         "new": "return x + self.embedding(positions).detach()"}),
    "positions_on_default_device": Misconception(
        "Your positions are made on the default device while the module and x may be elsewhere: "
        "torch.arange(seq, device=x.device).",
        task="1.3", bug={"old": "positions = torch.arange(seq, device=x.device)", "new": "positions = torch.arange(seq)"}),
    "learned_positions_from_one": Misconception(
        "Your module adds rows 1, 2, ...: position p uses row p of the embedding, starting with row 0.",
        task="1.3", bug={"old": "positions = torch.arange(seq, device=x.device)",
                         "new": "positions = torch.arange(1, seq + 1, device=x.device).clamp(max=self.max_len - 1)"}),
    # ---- rotary tables (2.1)
    "rope_interleaved_tables": Misconception(
        "Your cos/sin repeat each angle twice side by side (pairs 2i, 2i + 1): in the rotate-half layout the "
        "first and second halves of a row carry the same angles.",
        task="2.1", bug={"old": "angles = torch.cat([angles, angles], dim=-1)",
                         "new": "angles = torch.repeat_interleave(angles, 2, dim=-1)"}),
    "rope_exponent_without_two": Misconception(
        "Your rotary frequencies use base ** (i / head_dim): inv_freq[i] is 1 / base ** (2i / head_dim).",
        task="2.1", bug={"old": _INV_FREQ,
                         "new": "inv_freq = 1.0 / base ** (torch.arange(0, head_dim // 2, dtype=torch.float64) / head_dim)"}),
    "rope_float32_angles": Misconception(
        "Your rotary angles are computed in float32 (as Llama does): at far positions they lose about 1e-3. "
        "Compute positions times frequencies in float64.",
        task="2.1", bug={"old": _INV_FREQ + "\n    angles = positions.to(torch.float64)[:, None] * inv_freq[None, :]",
                         "new": "inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2).float() / head_dim)\n"
                                "    angles = positions.float()[:, None] * inv_freq[None, :]"}),
    "rope_returns_sin_cos": Misconception(
        "rope_cos_sin returns (sin, cos): the cosines come first.",
        task="2.1", bug={"old": "return angles.cos().float(), angles.sin().float()",
                         "new": "return angles.sin().float(), angles.cos().float()"}),
    "rope_positions_ignored": Misconception(
        "rope_cos_sin ignores its positions argument: with positions given, row t is for position "
        "positions[t], not t.",
        task="2.1", bug={"old": "angles = positions.to(torch.float64)[:, None] * inv_freq[None, :]",
                         "new": "angles = torch.arange(seq_len, dtype=torch.float64)[:, None] * inv_freq[None, :]"}),
    "rope_positions_from_one": Misconception(
        "Your rotary tables start at position 1: without positions, row t is position t, starting at 0 "
        "(cos 1, sin 0).",
        task="2.1", bug={"old": "positions = torch.arange(seq_len)\n    elif",
                         "new": "positions = torch.arange(1, seq_len + 1)\n    elif"}),
    "positions_shape_not_checked": Misconception(
        "positions of the wrong shape are accepted: raise ValueError unless positions has shape (seq,).",
        task="2.1", bug={"old": "    elif tuple(positions.shape) != (seq_len,):\n        raise ValueError(f\"positions must "
                                "have shape ({seq_len},), got {tuple(positions.shape)}\")\n", "new": ""}),
    # ---- the rotation (2.2)
    "rope_rotates_backwards": Misconception(
        "Your rotation turns the other way: rotate_half(x) is concat(-x2, x1), the minus sign on the "
        "second half.",
        task="2.2", bug={"old": _ROTATED, "new": "rotated = torch.cat([x[..., half:], -x[..., :half]], dim=-1)"}),
    "rope_halves_not_swapped": Misconception(
        "Your rotate_half keeps the halves in place: it swaps them, concat(-x2, x1).",
        task="2.2", bug={"old": _ROTATED, "new": "rotated = torch.cat([-x[..., :half], x[..., half:]], dim=-1)"}),
    "rope_interleaved_rotation": Misconception(
        "Your rotation pairs neighbouring features (2i, 2i + 1): in Llama's layout pair i is features i and "
        "i + head_dim / 2.",
        task="2.2", bug={"old": _ROTATED,
                         "new": "rotated = torch.stack([-x[..., 1::2], x[..., 0::2]], dim=-1).flatten(-2)"}),
    "rope_cos_sin_exchanged": Misconception(
        "Your rotation multiplies x by sin and rotate_half(x) by cos: it is x * cos + rotate_half(x) * sin.",
        task="2.2", bug={"old": "return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)",
                         "new": "return x * sin.to(x.dtype) + rotated * cos.to(x.dtype)"}),
    # ---- relative scores (2.3)
    "relative_keys_from_zero": Misconception(
        "Your keys always start at position 0: in each placement, queries and keys both start at the offset.",
        task="2.3", bug={"old": "cos_k, sin_k = rope_cos_sin(k.shape[-2], head_dim, positions=offset + torch.arange(k.shape[-2]))",
                         "new": "cos_k, sin_k = rope_cos_sin(k.shape[-2], head_dim)"}),
    "relative_scores_scaled": Misconception(
        "Your scores are divided by sqrt(head_dim): relative_scores returns the raw q_rot @ k_rot^T.",
        task="2.3", bug={"old": _SCORES, "new": _SCORES[:-1] + " / head_dim ** 0.5)"}),
    "relative_only_queries_rotated": Misconception(
        "Your scores rotate the queries only: rotate the keys too, each at its own position.",
        task="2.3", bug={"old": _SCORES, "new": "scores.append(apply_rope(q, cos_q, sin_q) @ k.transpose(-2, -1))"}),
})

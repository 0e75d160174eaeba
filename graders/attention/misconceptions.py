"""What students get wrong in self-attention, and how each wrong idea shows in the output.

Each entry: a fixed sentence (never a value from the inputs), the task, and the bug that
``course validate`` applies to the solution to prove the hidden tests catch it and name it. The
hidden tests compute each wrong answer with their own oracle on the same inputs (``variants=``).
"""

from course.grading.diagnose import Misconception, catalogue

CATALOGUE = catalogue({
    # ---- scale (1.1)
    "scale_one_over_d": Misconception(
        "Your scores are divided by d, not by sqrt(d): the default scale is 1 / sqrt(d), the square root "
        "of the query width.",
        task="1.1", bug={"old": "scale = 1.0 / math.sqrt(q.shape[-1])", "new": "scale = 1.0 / q.shape[-1]"}),
    "unscaled": Misconception(
        "Your scores are the raw dot products: with scale=None they must be multiplied by 1 / sqrt(d).",
        task="1.1", bug={"old": "scale = 1.0 / math.sqrt(q.shape[-1])", "new": "scale = 1.0"}),
    "scale_times_sqrt_d": Misconception(
        "Your scores are multiplied by sqrt(d) instead of divided by it: the default scale is 1 / sqrt(d).",
        task="1.1", bug={"old": "scale = 1.0 / math.sqrt(q.shape[-1])", "new": "scale = math.sqrt(q.shape[-1])"}),
    "scale_from_sequence_length": Misconception(
        "Your default scale uses the number of queries, not their width: d is the last dimension of q.",
        task="1.1", bug={"old": "scale = 1.0 / math.sqrt(q.shape[-1])", "new": "scale = 1.0 / math.sqrt(q.shape[-2])"}),
    "zero_scale_taken_as_default": Misconception(
        "scale=0.0 was replaced by the default 1 / sqrt(d): test `scale is None`, not `not scale` (0.0 is a "
        "valid scale).",
        task="1.1", bug={"old": "if scale is None:\n        scale = 1.0 / math.sqrt(q.shape[-1])",
                         "new": "if not scale:\n        scale = 1.0 / math.sqrt(q.shape[-1])"}),
    # ---- the causal mask (1.2, 1.4)
    "causal_mask_upper": Misconception(
        "Your causal mask lets each position see the future instead of the past: mask[i, j] is True when "
        "j <= i (the lower triangle).",
        task="1.2", bug={"old": "device=device).tril()", "new": "device=device).triu()"}),
    "causal_mask_without_diagonal": Misconception(
        "Your causal mask hides the diagonal: a position may always attend to itself (j <= i, not j < i).",
        task="1.2", bug={"old": "device=device).tril()", "new": "device=device).tril(-1)"}),
    "causal_mask_blocked_polarity": Misconception(
        "Your causal mask marks the blocked positions: here True means \"may attend\" (PyTorch's bool-mask "
        "convention), so the past and the diagonal are True.",
        task="1.2", bug={"old": "device=device).tril()", "new": "device=device).triu(1)"}),
    "causal_bottom_right": Misconception(
        "With more keys than queries (or fewer), your causal mask is aligned at the bottom right: here, as in "
        "torch, query i may attend to keys j <= i (top left).",
        task="1.4", bug={"old": "allowed = causal_mask(max(seq_q, seq_k), device=scores.device)[:seq_q, :seq_k]",
                         "new": "allowed = torch.ones(seq_q, seq_k, dtype=torch.bool, device=scores.device)"
                                ".tril(seq_k - seq_q)"}),
    "mask_or_causal": Misconception(
        "With both a mask and causal=True you allow a key that either one allows: a key is allowed only when "
        "both allow it (and, not or).",
        task="1.4", bug={"old": "mask = allowed if mask is None else mask & allowed",
                         "new": "mask = allowed if mask is None else mask | allowed"}),
    "causal_drops_mask": Misconception(
        "With causal=True your attention ignores the mask it was given: combine the two (a key must be allowed "
        "by both).",
        task="1.4", bug={"old": "mask = allowed if mask is None else mask & allowed", "new": "mask = allowed"}),
    # ---- the softmax (1.3)
    "mask_polarity_inverted": Misconception(
        "Your softmax hides the keys the mask allows: True in the mask means \"may attend\", so fill where the "
        "mask is False.",
        task="1.3", bug={"old": "scores = scores.masked_fill(~mask, float(\"-inf\"))",
                         "new": "scores = scores.masked_fill(mask, float(\"-inf\"))"}),
    "softmax_over_queries": Misconception(
        "Your weights are normalised over the queries (dim -2): each query's row over the keys (dim -1) must "
        "sum to 1.",
        task="1.3", bug={"old": "peak = scores.amax(dim=-1, keepdim=True)\n    peak = torch.where(torch.isfinite(peak), "
                                "peak, torch.zeros_like(peak)).detach()\n    exps = torch.exp(scores - peak)\n    total = "
                                "exps.sum(dim=-1, keepdim=True)",
                         "new": "peak = scores.amax(dim=-2, keepdim=True)\n    peak = torch.where(torch.isfinite(peak), "
                                "peak, torch.zeros_like(peak)).detach()\n    exps = torch.exp(scores - peak)\n    total = "
                                "exps.sum(dim=-2, keepdim=True)"}),
    "mask_after_softmax": Misconception(
        "Your weights are a softmax over all keys with the masked ones zeroed afterwards: mask before the "
        "softmax, so that the allowed weights sum to 1.",
        task="1.3", bug={"old": "    if mask is not None:\n        scores = scores.masked_fill(~mask, float(\"-inf\"))\n"
                                "    peak = scores.amax(dim=-1, keepdim=True)\n    peak = torch.where(torch.isfinite(peak), "
                                "peak, torch.zeros_like(peak)).detach()\n    exps = torch.exp(scores - peak)\n    total = "
                                "exps.sum(dim=-1, keepdim=True)\n    return exps / torch.where(total > 0, total, "
                                "torch.ones_like(total))",
                         "new": "    peak = scores.amax(dim=-1, keepdim=True).detach()\n    exps = torch.exp(scores - peak)\n"
                                "    weights = exps / exps.sum(dim=-1, keepdim=True)\n    return weights if mask is None "
                                "else weights * mask"}),
    "no_max_subtraction": Misconception(
        "Your softmax overflows for large scores: subtract each row's maximum before torch.exp (it changes "
        "nothing mathematically).",
        task="1.3", bug={"old": "exps = torch.exp(scores - peak)", "new": "exps = torch.exp(scores)"}),
    "global_max_subtraction": Misconception(
        "Your softmax subtracts one maximum for the whole tensor: rows far below it underflow to 0. Subtract "
        "each row's own maximum (amax over dim -1, keepdim=True).",
        task="1.3", bug={"old": "peak = scores.amax(dim=-1, keepdim=True)", "new": "peak = scores.amax()"}),
    "fully_masked_row_nan": Misconception(
        "A row whose mask allows no key comes out as NaN (0 / 0): such a row must be all zeros.",
        task="1.3", bug={"old": "return exps / torch.where(total > 0, total, torch.ones_like(total))",
                         "new": "return exps / total"}),
    "fully_masked_row_uniform": Misconception(
        "A row whose mask allows no key comes out uniform: filling with a large negative number instead of "
        "-inf gives every key the same weight. Such a row must be all zeros.",
        task="1.3", bug={"old": "scores = scores.masked_fill(~mask, float(\"-inf\"))",
                         "new": "scores = scores.masked_fill(~mask, -1e9)"}),
    # ---- attention (1.4)
    "weights_are_scores": Misconception(
        "The weights your attention returns are the scores before the softmax: return the softmax weights, "
        "whose rows sum to 1.",
        task="1.4", bug={"old": "return weights @ v, weights", "new": "return weights @ v, scores"}),
    "scale_argument_ignored": Misconception(
        "Your attention ignores its scale argument and always uses 1 / sqrt(d): pass scale on to the scores.",
        task="1.4", bug={"old": "scores = attention_scores(q, k, scale)", "new": "scores = attention_scores(q, k)"}),
    # ---- heads (2.1, 2.2, 2.3)
    "split_without_transpose": Misconception(
        "split_heads reshapes straight to (batch, heads, seq, head_dim): that mixes tokens. Reshape to "
        "(batch, seq, heads, head_dim) first, then swap the seq and heads axes.",
        task="2.1", bug={"old": "return x.reshape(batch, seq, n_heads, d_model // n_heads).transpose(1, 2)",
                         "new": "return x.reshape(batch, n_heads, seq, d_model // n_heads)"}),
    "split_interleaved": Misconception(
        "split_heads gives head h the features h, h + heads, h + 2 * heads...: each head gets one consecutive "
        "slice of head_dim features.",
        task="2.1", bug={"old": "return x.reshape(batch, seq, n_heads, d_model // n_heads).transpose(1, 2)",
                         "new": "return x.reshape(batch, seq, d_model // n_heads, n_heads).permute(0, 3, 1, 2)"}),
    "merge_without_transpose": Misconception(
        "merge_heads reshapes (batch, heads, seq, head_dim) straight to (batch, seq, d_model): swap the heads "
        "and seq axes back first.",
        task="2.2", bug={"old": "return x.transpose(1, 2).reshape(batch, seq, heads * head_dim)",
                         "new": "return x.reshape(batch, seq, heads * head_dim)"}),
    "merge_interleaved": Misconception(
        "merge_heads interleaves the heads' features: put each head's head_dim features side by side, head 0 "
        "first.",
        task="2.2", bug={"old": "return x.transpose(1, 2).reshape(batch, seq, heads * head_dim)",
                         "new": "return x.permute(0, 2, 3, 1).reshape(batch, seq, heads * head_dim)"}),
    "weights_averaged_over_heads": Misconception(
        "Your module returns the heads' weights averaged (torch's default average_attn_weights=True): return "
        "every head's weights, shape (batch, heads, seq, seq).",
        task="2.3", bug={"old": "return self.out_proj(merge_heads(out)), weights",
                         "new": "return self.out_proj(merge_heads(out)), weights.mean(dim=1)"}),
    "no_output_projection": Misconception(
        "Your module returns the merged heads without out_proj: the output is out_proj(merge_heads(...)).",
        task="2.3", bug={"old": "return self.out_proj(merge_heads(out)), weights",
                         "new": "return merge_heads(out), weights"}),
    "values_from_key_projection": Misconception(
        "Your module makes the values with k_proj: the values come from v_proj.",
        task="2.3", bug={"old": "v = split_heads(self.v_proj(x), self.n_heads)",
                         "new": "v = split_heads(self.k_proj(x), self.n_heads)"}),
    "scale_by_d_model": Misconception(
        "Your heads scale their scores by 1 / sqrt(d_model): each head works in head_dim features, so the "
        "default 1 / sqrt(head_dim) is right.",
        task="2.3", bug={"old": "out, weights = scaled_dot_product_attention(q, k, v, mask=mask, causal=causal)",
                         "new": "out, weights = scaled_dot_product_attention(q, k, v, mask=mask, causal=causal, "
                                "scale=1.0 / math.sqrt(self.d_model))"}),
    "max_without_keepdim": Misconception(
        "Your softmax subtracts maxima taken without keepdim=True: they broadcast along the keys, so row i "
        "gets the maxima of other rows. Use amax(dim=-1, keepdim=True).",
        task="1.3", bug={"old": "peak = scores.amax(dim=-1, keepdim=True)", "new": "peak = scores.amax(dim=-1)"}),
    # ---- facts read from the returned data or from the source
    "causal_mask_not_bool": Misconception(
        "Your causal mask is not a bool tensor: build it with dtype=torch.bool (True = may attend).",
        task="1.2", bug={"old": "torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).tril()",
                         "new": "torch.ones(seq_len, seq_len, device=device).tril()"}),
    "causal_mask_device_ignored": Misconception(
        "causal_mask ignores its device argument: create the mask with device=device.",
        task="1.2", bug={"old": "torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).tril()",
                         "new": "torch.ones(seq_len, seq_len, dtype=torch.bool).tril()"}),
    "torch_softmax_used": Misconception(
        "Your code calls torch's softmax: write masked_softmax yourself with torch.exp and the max trick.",
        task="1.3", bug={"old": "    exps = torch.exp(scores - peak)\n    total = exps.sum(dim=-1, keepdim=True)\n"
                                "    return exps / torch.where(total > 0, total, torch.ones_like(total))",
                         "new": "    weights = torch.softmax(scores, dim=-1)\n    return torch.nan_to_num(weights, nan=0.0)"}),
    "code_grader_cannot_read": Misconception(
        "Your code reaches functions by names the grader cannot read from the source (eval, exec, getattr "
        "with a computed name, torch.ops, torch._C...): call them by their plain names.",
        task="1.3", bug={"old": "exps = torch.exp(scores - peak)", "new": "exps = getattr(torch, \"e\" + \"xp\")(scores - peak)"}),
    "torch_attention_used": Misconception(
        "Your code calls torch's own attention (scaled_dot_product_attention or MultiheadAttention): "
        "compute it from your three functions.",
        task="1.4", bug={"old": "    weights = masked_softmax(scores, mask)\n    return weights @ v, weights",
                         "new": "    weights = masked_softmax(scores, mask)\n    out = torch.nn.functional."
                                "scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)\n"
                                "    return torch.nan_to_num(out, nan=0.0), weights"}),
    "python_loop_in_attention": Misconception(
        "scaled_dot_product_attention (or a function it calls) loops in Python: one batched matrix "
        "product handles all queries at once.",
        task="1.4", bug={"old": "    weights = masked_softmax(scores, mask)\n    return weights @ v, weights",
                         "new": "    weights = masked_softmax(scores, mask)\n    rows = [weights[..., i:i + 1, :] @ v "
                                "for i in range(weights.shape[-2])]\n    return torch.cat(rows, dim=-2), weights"}),
    "module_ignores_causal": Misconception(
        "Your module does not pass causal on to the attention: with causal=True each token must not see "
        "later ones.",
        task="2.3", bug={"old": "out, weights = scaled_dot_product_attention(q, k, v, mask=mask, causal=causal)",
                         "new": "out, weights = scaled_dot_product_attention(q, k, v, mask=mask)"}),
    "module_ignores_mask": Misconception(
        "Your module does not pass its mask on to the attention.",
        task="2.3", bug={"old": "out, weights = scaled_dot_product_attention(q, k, v, mask=mask, causal=causal)",
                         "new": "out, weights = scaled_dot_product_attention(q, k, v, causal=causal)"}),
    "bias_argument_ignored": Misconception(
        "Your projections have biases when bias=False: pass bias=bias to every nn.Linear.",
        task="2.3", bug={"old": "self.q_proj = nn.Linear(d_model, d_model, bias=bias)",
                         "new": "self.q_proj = nn.Linear(d_model, d_model)"}),
    "projections_frozen": Misconception(
        "Your projections are not trainable (requires_grad is False): leave the nn.Linear parameters as "
        "they are created.",
        task="2.3", bug={"old": "self.out_proj = nn.Linear(d_model, d_model, bias=bias)\n        # END SOLUTION",
                         "new": "self.out_proj = nn.Linear(d_model, d_model, bias=bias)\n        for p in "
                                "self.parameters():\n            p.requires_grad_(False)\n        # END SOLUTION"}),
    "gradient_cut_in_forward": Misconception(
        "No gradient reaches the module's input: something in forward detaches the computation (detach, "
        "torch.no_grad, .data, numpy).",
        task="2.3", bug={"old": "return self.out_proj(merge_heads(out)), weights",
                         "new": "return self.out_proj(merge_heads(out.detach())), weights"}),
    "error_not_value_error": Misconception(
        "When n_heads does not divide d_model, raise ValueError (not assert, not another exception).",
        task="2.3", bug={"old": "if d_model % n_heads != 0:\n            raise ValueError(f\"d_model={d_model} is not "
                                "divisible by n_heads={n_heads}\")",
                         "new": "assert d_model % n_heads == 0, f\"d_model={d_model} is not divisible by "
                                "n_heads={n_heads}\""}),
    "error_message_without_numbers": Misconception(
        "Your ValueError does not name both numbers: say which d_model and which n_heads do not fit.",
        task="2.3", bug={"old": "raise ValueError(f\"d_model={d_model} is not divisible by n_heads={n_heads}\")",
                         "new": "raise ValueError(\"n_heads must divide d_model\")"}),
})

SOURCE_FACTS = ("torch_softmax_used", "torch_attention_used", "python_loop_in_attention", "code_grader_cannot_read")

"""What students get wrong in QLoRA, in words: the hidden tests name an entry when a failing
output matches it (course.grading.diagnose). Texts are fixed: they never quote an input.

Each entry's ``bug`` is a replacement in solutions/qlora/qlora.py that produces exactly that
misconception (course validate applies it and checks that the grade drops and that this entry,
and no other, is named).
"""

from course.grading.diagnose import Misconception, catalogue

CATALOGUE = catalogue({
    # ---- 1.1 the code book
    "code_book_symmetric": Misconception(
        "Your code book is symmetric. NF4 is asymmetric: 8 positive levels (quantiles of 9 points, "
        "the last dropped), 7 negative ones (of 8 points) and an exact zero.",
        task="1.1",
        bug={"old": "negative = -torch.special.ndtri(torch.linspace(NF4_OFFSET, 0.5, 8)[:-1].double())\n"
                    "    values = torch.cat([positive, negative, torch.zeros(1, dtype=torch.float64)]).float()",
             "new": "negative = -torch.special.ndtri(torch.linspace(NF4_OFFSET, 0.5, 9)[:-1].double())\n"
                    "    values = torch.cat([positive, negative]).float()"}),
    "code_book_rounded_late": Misconception(
        "Your levels are right to about 1e-7 but not bit-identical: round the quantiles to float32 "
        "before dividing by the largest one (bitsandbytes' order of operations).",
        task="1.1",
        bug={"old": "values = torch.cat([positive, negative, torch.zeros(1, dtype=torch.float64)]).float()\n"
                    "    values = values.sort().values\n    return values / values.max()",
             "new": "values = torch.cat([positive, negative, torch.zeros(1, dtype=torch.float64)])\n"
                    "    values = values.sort().values\n    return (values / values.max()).float()"}),
    "code_book_positive_points": Misconception(
        "Your positive levels come from 8 evenly spaced probabilities ending at 0.5, which adds a second "
        "zero: take 9 points from offset to 0.5 and drop the last.",
        task="1.1", bug={"old": "positive = torch.special.ndtri(torch.linspace(NF4_OFFSET, 0.5, 9)[:-1].double())",
                         "new": "positive = torch.special.ndtri(torch.linspace(NF4_OFFSET, 0.5, 8).double())"}),
    # ---- 1.2 quantisation
    "nibble_order": Misconception(
        "Your two codes per byte are in the wrong order: the first element of each pair goes into the "
        "high nibble (code[2i] << 4 | code[2i+1]).",
        task="1.2", bug={"old": "packed = (idx[0::2] << 4) | idx[1::2]", "new": "packed = idx[0::2] | (idx[1::2] << 4)"}),
    "absmax_without_abs": Misconception(
        "Your block scale is the block's largest value, not its largest absolute value: a block whose "
        "biggest entry is negative gets the wrong absmax. Take abs() before the max.",
        task="1.2", bug={"old": "absmax = blocks.abs().amax(dim=1)", "new": "absmax = blocks.amax(dim=1).abs()"}),
    "absmax_per_tensor": Misconception(
        "Your absmax is one value for the whole tensor. QLoRA keeps one absmax per block of blocksize "
        "consecutive elements, so an outlier only affects its own block.",
        task="1.2", bug={"old": "absmax = blocks.abs().amax(dim=1)",
                         "new": "absmax = blocks.abs().amax().expand(blocks.shape[0]).contiguous()"}),
    "divides_by_absmax": Misconception(
        "You divide by absmax; bitsandbytes multiplies by 1 / absmax, and the two differ in the last bit "
        "next to a midpoint, which changes codes.",
        task="1.2", bug={"old": "scaled = (blocks * (1.0 / absmax.clamp(min=1e-38)).unsqueeze(1)).clamp(-1, 1)",
                         "new": "scaled = (blocks / absmax.clamp(min=1e-38).unsqueeze(1)).clamp(-1, 1)"}),
    "midpoint_ties_up": Misconception(
        "A value exactly on the midpoint between two levels must take the lower code; yours takes the "
        "upper one (torch.bucketize's default, right=False, does it right).",
        task="1.2", bug={"old": "idx = torch.bucketize(scaled.reshape(-1), midpoints).to(torch.uint8)",
                         "new": "idx = torch.bucketize(scaled.reshape(-1), midpoints, right=True).to(torch.uint8)"}),
    "rounds_down_to_level": Misconception(
        "You give each value the level just below it instead of the nearest one: compare with the "
        "midpoints between neighbouring levels, not with the levels themselves.",
        task="1.2", bug={"old": "idx = torch.bucketize(scaled.reshape(-1), midpoints).to(torch.uint8)",
                         "new": "idx = torch.bucketize(scaled.reshape(-1), code[1:-1], right=True).to(torch.uint8)"}),
    "zero_block_unguarded": Misconception(
        "An all-zero block breaks your quantisation (0 times 1 / 0): guard absmax (clamp it to a tiny "
        "positive value) so that a zero block scales to zeros.",
        task="1.2", bug={"old": "scaled = (blocks * (1.0 / absmax.clamp(min=1e-38)).unsqueeze(1)).clamp(-1, 1)",
                         "new": "scaled = (blocks * (1.0 / absmax).unsqueeze(1)).clamp(-1, 1)"}),
    # ---- 1.3 dequantisation
    "unpack_low_nibble_first": Misconception(
        "You unpack the low nibble first: the high nibble (byte >> 4) holds the first element of each pair.",
        task="1.3", bug={"old": "idx = torch.stack([packed >> 4, packed & 0x0F], dim=1).reshape(-1).long()",
                         "new": "idx = torch.stack([packed & 0x0F, packed >> 4], dim=1).reshape(-1).long()"}),
    "dequantize_in_target_dtype": Misconception(
        "You multiply in the target dtype: multiply levels and absmax in float32 and cast the result to "
        "dtype last (that is what makes the values bit-identical to bitsandbytes').",
        task="1.3", bug={"old": "values = code[idx].reshape(-1, blocksize) * absmax.float().unsqueeze(1)\n"
                                "    return values.reshape(tuple(shape)).to(dtype)",
                         "new": "values = code.to(dtype)[idx].reshape(-1, blocksize) * absmax.to(dtype).unsqueeze(1)\n"
                                "    return values.reshape(tuple(shape))"}),
    "absmax_tiled": Misconception(
        "Your constants scale the wrong elements: each block's absmax multiplies its blocksize "
        "consecutive elements (repeat_interleave, or a (blocks, blocksize) view), not every blocks-th one.",
        task="1.3", bug={"old": "values = code[idx].reshape(-1, blocksize) * absmax.float().unsqueeze(1)",
                         "new": "values = code[idx] * absmax.float().repeat(blocksize)"}),
    # ---- 2.1 double quantisation
    "dq_not_centred": Misconception(
        "Your double quantisation scales the constants without subtracting their mean first: centre them "
        "(c = absmax - offset) so that the 8-bit steps cover only their spread.",
        task="2.1", bug={"old": "centred = absmax - offset", "new": "centred = absmax"}),
    "dq_offset_not_added": Misconception(
        "The constants are rebuilt without the offset: (q - 128) / 127 * scale + offset, in "
        "double_dequantize and with the layer's stored absmax_offset.",
        task="2.1", bug={"old": "return (steps * scales.float().unsqueeze(1)).reshape(-1)[:n] + offset",
                         "new": "return (steps * scales.float().unsqueeze(1)).reshape(-1)[:n]"}),
    "dq_truncates": Misconception(
        "You truncate to an 8-bit step instead of rounding to the nearest one (torch.round), which "
        "doubles the error bound.",
        task="2.1", bug={"old": "q = torch.round(blocks / scales.clamp(min=1e-38).unsqueeze(1) * 127) + 128",
                         "new": "q = torch.trunc(blocks / scales.clamp(min=1e-38).unsqueeze(1) * 127) + 128"}),
    "dq_one_scale": Misconception(
        "You use one scale for all the constants: each block of 256 constants has its own scale, its "
        "largest |c|.",
        task="2.1", bug={"old": "scales = blocks.abs().amax(dim=1)",
                         "new": "scales = blocks.abs().amax().expand(blocks.shape[0]).contiguous()"}),
    "dq_scale_128": Misconception(
        "You scale by 128 instead of 127: the largest constant becomes 256, which wraps around to 0 in uint8.",
        task="2.1", bug={"old": "q = torch.round(blocks / scales.clamp(min=1e-38).unsqueeze(1) * 127) + 128",
                         "new": "q = torch.round(blocks / scales.clamp(min=1e-38).unsqueeze(1) * 128) + 128"}),
    "dq_zero_scale_unguarded": Misconception(
        "A block of equal constants has scale 0 and your code divides 0 by 0: guard the scale so that "
        "such a block stores q = 128.",
        task="2.1", bug={"old": "q = torch.round(blocks / scales.clamp(min=1e-38).unsqueeze(1) * 127) + 128",
                         "new": "q = torch.round(blocks / scales.unsqueeze(1) * 127) + 128"}),
    "dq_offset_median": Misconception(
        "Your offset is the median of the constants: the docstring's offset is their mean.",
        task="2.1", bug={"old": "offset = float(absmax.mean())", "new": "offset = float(absmax.median())"}),
    # ---- 2.2
    "bits_without_scales": Misconception(
        "Your bit count forgets the float32 scales of the double quantisation: one per dq_blocksize "
        "blocks, so 32 / (blocksize * dq_blocksize) bits per weight.",
        task="2.2", bug={"old": "return 4 + 8 / blocksize + 32 / (blocksize * dq_blocksize)",
                         "new": "return 4 + 8 / blocksize"}),
    "bits_scales_per_block": Misconception(
        "Your bit count charges a float32 scale to every block: there is one scale per dq_blocksize "
        "blocks, 32 / (blocksize * dq_blocksize) bits per weight.",
        task="2.2", bug={"old": "return 4 + 8 / blocksize + 32 / (blocksize * dq_blocksize)",
                         "new": "return 4 + 8 / blocksize + 32 / dq_blocksize"}),
    # ---- 3.1 from_linear, memory_bytes
    "bias_not_in_compute_dtype": Misconception(
        "Your bias keeps the linear layer's dtype: store it in compute_dtype, like the output.",
        task="3.1", bug={"old": "layer.bias = linear.bias.detach().to(compute_dtype).clone()",
                         "new": "layer.bias = linear.bias.detach().clone()"}),
    "memory_counts_elements": Misconception(
        "memory_bytes counts elements: bytes are numel() * element_size() for each buffer.",
        task="3.1", bug={"old": "return sum(b.numel() * b.element_size() for b in self.buffers())",
                         "new": "return sum(b.numel() for b in self.buffers())"}),
    "memory_without_bias": Misconception(
        "memory_bytes leaves the bias out: it counts every buffer the layer stores.",
        task="3.1", bug={"old": "return sum(b.numel() * b.element_size() for b in self.buffers())",
                         "new": "return sum(b.numel() * b.element_size() for name, b in self.named_buffers() if name != 'bias')"}),
    "float_weight_kept": Misconception(
        "Your layer keeps a float copy of the weight: a Linear4bit stores only the codes and constants "
        "(that is where the memory saving comes from).",
        task="3.1", bug={"old": "        layer.packed = packed\n",
                         "new": "        layer.packed = packed\n        layer.register_buffer('weight', weight.clone())\n"}),
    "bias_dropped": Misconception(
        "Your forward pass leaves out the bias: pass it to F.linear.",
        task="3.2", bug={"old": "out = F.linear(x.to(self.compute_dtype), self.dequantized_weight(), self.bias)",
                         "new": "out = F.linear(x.to(self.compute_dtype), self.dequantized_weight())"}),
    # ---- 3.2
    "weight_in_default_dtype": Misconception(
        "Your dequantised weight comes out in the default bfloat16 rather than the layer's own compute_dtype.",
        task="3.2", bug={"old": "return dequantize_nf4(self.packed, absmax, (self.out_features, self.in_features), "
                                "self.blocksize,\n                              self.compute_dtype)",
                         "new": "return dequantize_nf4(self.packed, absmax, (self.out_features, self.in_features), "
                                "self.blocksize)"}),
    # ---- 3.3 QLoRALinear
    "scaling_inverted": Misconception(
        "Your LoRA update is scaled by r / alpha: the scaling is alpha / r.",
        task="3.3", bug={"old": "self.scaling = alpha / r", "new": "self.scaling = r / alpha"}),
    "scaling_on_base_too": Misconception(
        "You scale the base's output too: only the low-rank update is multiplied by alpha / r.",
        task="3.3", bug={"old": "return self.base(x) + (self.lora_B(self.lora_A(h)) * self.scaling).to(x.dtype)",
                         "new": "return ((self.base(x) + self.lora_B(self.lora_A(h)).to(x.dtype)) * self.scaling)"}),
    "lora_init_swapped": Misconception(
        "Your A starts at zero and B random: it is the other way round (A Kaiming-uniform, B zero), so "
        "that a new layer computes exactly its base and A still gets gradients.",
        task="3.3", bug={"old": "nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))\n"
                                "        nn.init.zeros_(self.lora_B.weight)",
                         "new": "nn.init.zeros_(self.lora_A.weight)\n"
                                "        nn.init.kaiming_uniform_(self.lora_B.weight, a=math.sqrt(5))"}),
    "kaiming_without_a": Misconception(
        "Your A is Kaiming-uniform with the default a = 0, a bound of sqrt(6 / in): peft uses "
        "a = sqrt(5), which gives 1 / sqrt(in).",
        task="3.3", bug={"old": "nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))",
                         "new": "nn.init.kaiming_uniform_(self.lora_A.weight)"}),
    "lora_not_in_compute_dtype": Misconception(
        "Your A and B are float32 whatever the base: create them in the base's compute_dtype (and on its device).",
        task="3.3", bug={"old": "self.lora_A = nn.Linear(base.in_features, r, bias=False, device=device, dtype=dtype)\n"
                                "        self.lora_B = nn.Linear(r, base.out_features, bias=False, device=device, dtype=dtype)",
                         "new": "self.lora_A = nn.Linear(base.in_features, r, bias=False, device=device)\n"
                                "        self.lora_B = nn.Linear(r, base.out_features, bias=False, device=device)"}),
    "lora_with_bias": Misconception(
        "Your LoRA matrices have biases: A and B are bias-free linear maps (nn.Linear(..., bias=False)).",
        task="3.3", bug={"old": "self.lora_A = nn.Linear(base.in_features, r, bias=False, device=device, dtype=dtype)",
                         "new": "self.lora_A = nn.Linear(base.in_features, r, bias=True, device=device, dtype=dtype)"}),
    # ---- 3.4 quantize_model
    "skip_by_substring": Misconception(
        "Your skip list matches parts of words: a layer is skipped only when one of its dot-separated "
        "name parts equals an entry (\"up\" skips no up_proj).",
        task="3.4", bug={"old": "if isinstance(module, nn.Linear) and not set(name.split(\".\")) & set(skip)]",
                         "new": "if isinstance(module, nn.Linear) and not any(s in name for s in skip)]"}),
    "skip_by_full_name": Misconception(
        "Your skip list is compared with whole layer names: an entry skips every layer that has it as "
        "one of its dot-separated name parts (\"mlp\" skips all MLP projections).",
        task="3.4", bug={"old": "if isinstance(module, nn.Linear) and not set(name.split(\".\")) & set(skip)]",
                         "new": "if isinstance(module, nn.Linear) and name not in skip]"}),
    "empty_skip_ignored": Misconception(
        "An empty skip list is a valid choice (quantise every linear layer, the head too); yours falls "
        "back to the default. Test for None, not for falsiness.",
        task="3.4", bug={"old": "alpha = r if alpha is None else alpha\n    targets",
                         "new": "alpha = r if alpha is None else alpha\n    skip = skip or (\"lm_head\",)\n    targets"}),
    "default_compute_dtype": Misconception(
        "Your replaced layers compute in the default bfloat16: each one must use its own weight's dtype "
        "as compute_dtype.",
        task="3.4", bug={"old": "new: nn.Module = Linear4bit.from_linear(linear, compute_dtype=linear.weight.dtype)",
                         "new": "new: nn.Module = Linear4bit.from_linear(linear)"}),
    "freezes_without_r": Misconception(
        "You freeze the model even without r: only with LoRA (r given) is everything but A and B frozen.",
        task="3.4", bug={"old": "    if r is not None:\n        for p in model.parameters():",
                         "new": "    if True:\n        for p in model.parameters():"}),
    "alpha_default_not_r": Misconception(
        "Without alpha, the scaling must be 1 (alpha defaults to r); yours is not.",
        task="3.4", bug={"old": "alpha = r if alpha is None else alpha\n    targets",
                         "new": "alpha = 2 * r if alpha is None and r is not None else alpha\n    targets"}),
    "not_frozen_with_r": Misconception(
        "With r given, the rest of the model must be frozen (requires_grad = False), so that only A and B train.",
        task="3.4", bug={"old": "        for p in model.parameters():\n            p.requires_grad_(False)\n",
                         "new": "        pass\n"}),
    "adapter_bytes_elements": Misconception(
        "adapter_bytes counts elements: bytes are numel() * element_size() of A and B.",
        task="3.4", bug={"old": "report[\"adapter_bytes\"] += sum(p.numel() * p.element_size() for p in new.parameters())",
                         "new": "report[\"adapter_bytes\"] += sum(p.numel() for p in new.parameters())"}),
    # ---- 4.1 load_for_training
    "course_backend_float32": Misconception(
        "Your course backend loads the model in float32: the spec loads it in bfloat16, and the 4-bit "
        "layers and LoRA matrices follow the weights' dtype.",
        task="4.1", bug={"old": "model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).to(device)\n"
                                "        model, _ = quantize_model(model, r=r, alpha=alpha)",
                         "new": "model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device)\n"
                                "        model, _ = quantize_model(model, r=r, alpha=alpha)"}),
    "no_gradient_checkpointing": Misconception(
        "Your course backend does not enable gradient checkpointing: the layers' forward passes are not "
        "recomputed in the backward pass (model.gradient_checkpointing_enable()).",
        task="4.1", bug={"old": "model, _ = quantize_model(model, r=r, alpha=alpha)\n"
                                "        model.gradient_checkpointing_enable(**checkpointing)",
                         "new": "model, _ = quantize_model(model, r=r, alpha=alpha)"}),
    "course_backend_alpha_dropped": Misconception(
        "Your course backend does not pass alpha on: the adapter trains with scaling 1, not alpha / r, "
        "and behaves differently once peft loads it.",
        task="4.1", bug={"old": "model, _ = quantize_model(model, r=r, alpha=alpha)",
                         "new": "model, _ = quantize_model(model, r=r)"}),
    # ---- 4.2 save_adapter
    "adapter_keys_without_prefix": Misconception(
        "peft looks for keys named base_model.model.<layer>.lora_A.weight: your file's keys lack the "
        "base_model.model. prefix, so peft keeps its own initial A and B.",
        task="4.2", bug={"old": "tensors[f\"base_model.model.{name}.{part}.weight\"] = weight",
                         "new": "tensors[f\"{name}.{part}.weight\"] = weight"}),
    "target_modules_full_names": Misconception(
        "target_modules should list the adapted layers' last names (q_proj, ...), not their full names.",
        task="4.2", bug={"old": "targets.add(name.rsplit(\".\", 1)[-1])", "new": "targets.add(name)"}),
    "adapter_alpha_is_r": Misconception(
        "Your adapter_config.json gives lora_alpha = r: save the alpha the adapter was trained with.",
        task="4.2", bug={"old": "config = LoraConfig(r=r, lora_alpha=alpha, target_modules=sorted(targets)",
                         "new": "config = LoraConfig(r=r, lora_alpha=r, target_modules=sorted(targets)"}),
    "adapter_a_b_swapped": Misconception(
        "Your file holds B under lora_A's key and A under lora_B's: A is (r, in), B is (out, r).",
        task="4.2", bug={"old": "for part in (\"lora_A\", \"lora_B\"):\n                weight = getattr(module, part).weight",
                         "new": "for part in (\"lora_A\", \"lora_B\"):\n                weight = getattr(module, "
                                "\"lora_B\" if part == \"lora_A\" else \"lora_A\").weight"}),
    "adapter_b_untrained": Misconception(
        "The B matrices in your file are all zeros: save the trained matrices, not their initial values.",
        task="4.2", bug={"old": "weight = getattr(module, part).weight.detach().cpu().contiguous().clone()",
                         "new": "weight = getattr(module, part).weight.detach().cpu().contiguous().clone()\n"
                                "                weight = torch.zeros_like(weight) if part == \"lora_B\" else weight"}),
})

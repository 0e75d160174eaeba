"""What students get wrong about LoRA, in words: the catalogue the hidden tests diagnose from.

Each entry is named in a failed test's feedback only when the student's returned data equals the
wrong answer the oracle computes for that misconception on the same inputs (a tight match), or
when an exact fact about the returned data says so (a flag, a name, a zero). Each ``bug`` is that
misconception written into the solution: ``course validate`` checks that it loses points and is
diagnosed with its own name and no other.
"""

from course.grading.diagnose import Misconception, catalogue

CATALOGUE = catalogue({
    # ---- task 1.1: scaling, initialisation, freezing, the base object
    "scaling_inverted": Misconception(
        "Your update is scaled by r / alpha: the factor is scaling = alpha / r (doubling the rank with "
        "alpha fixed halves it).",
        task="1.1", bug={"old": "self.scaling = self.alpha / r", "new": "self.scaling = r / self.alpha"}),
    "scaling_ignored": Misconception(
        "Your update B A is not scaled: multiply it by scaling = alpha / r, in the forward and in "
        "delta_weight.",
        task="1.1", bug={"old": "self.scaling = self.alpha / r", "new": "self.scaling = 1.0"}),
    "alpha_defaults_to_one": Misconception(
        "Without alpha your scaling is 1 / r: alpha defaults to r, so the default scaling is 1.",
        task="1.1", bug={"old": "self.alpha = float(r if alpha is None else alpha)",
                         "new": "self.alpha = float(1 if alpha is None else alpha)"}),
    "alpha_zero_treated_as_missing": Misconception(
        "alpha = 0.0 is treated as if alpha were not given: test `alpha is None`, not the truth of "
        "alpha (0.0 is a valid value: it switches the update off).",
        task="1.1", bug={"old": "self.alpha = float(r if alpha is None else alpha)",
                         "new": "self.alpha = float(alpha or r)"}),
    "init_swapped": Misconception(
        "Your lora_A starts at zero and lora_B random: it is the other way round (A random, B zero), "
        "so that a fresh layer computes the base output and B gets a gradient at the first step.",
        task="1.1", bug={"old": "self.lora_A = nn.Parameter(torch.empty(r, base.in_features, **factory))\n"
                                "        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, **factory))\n"
                                "        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))",
                         "new": "self.lora_A = nn.Parameter(torch.zeros(r, base.in_features, **factory))\n"
                                "        self.lora_B = nn.Parameter(torch.empty(base.out_features, r, **factory))\n"
                                "        nn.init.kaiming_uniform_(self.lora_B, a=math.sqrt(5))"}),
    "init_not_kaiming_a_sqrt5": Misconception(
        "Your lora_A is not uniform in ±1/sqrt(in_features): initialise it with "
        "nn.init.kaiming_uniform_(A, a=math.sqrt(5)), as peft (and nn.Linear) do.",
        task="1.1", bug={"old": "nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))",
                         "new": "nn.init.kaiming_uniform_(self.lora_A)"}),
    "base_bias_trainable": Misconception(
        "The base layer's bias is still trainable: freeze every parameter of base, weight and bias "
        "(base.requires_grad_(False) does both).",
        task="1.1", bug={"old": "for p in base.parameters():\n            p.requires_grad_(False)\n        self.r = r",
                         "new": "base.weight.requires_grad_(False)\n        self.r = r"}),
    "base_copied": Misconception(
        "Your layer computes with a copy of the base layer: keep the very nn.Linear you were given "
        "(self.base = base), so that it shares its weights with the model instead of duplicating them.",
        task="1.1", bug={"old": "self.base = base", "new": "self.base = __import__('copy').deepcopy(base)"}),
    "adapters_not_on_base_device": Misconception(
        "lora_A and lora_B are not created on base.weight's device: pass device= (and dtype=) of the "
        "base weight when you make them.",
        task="1.1", bug={"old": 'factory = {"device": base.weight.device, "dtype": base.weight.dtype}',
                         "new": 'factory = {"dtype": base.weight.dtype}'}),
        "init_not_uniform": Misconception(
        "Your lora_A is not drawn uniformly from ±1/sqrt(in_features): check its distribution and range, "
        "and use nn.init.kaiming_uniform_(A, a=math.sqrt(5)).",
        task="1.1", bug={"old": "nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))",
                         "new": "nn.init.normal_(self.lora_A)"}),
    "rank_zero_accepted": Misconception(
        "r = 0 is accepted: refuse every r <= 0 with a ValueError that names the value (a rank of 0 "
        "has no update, and alpha / r divides by zero).",
        task="1.1", bug={"old": "or r <= 0:", "new": "or r < 0:"}),
# ---- task 1.2: the forward
    "adapters_detached": Misconception(
        "No gradient reaches lora_A and lora_B: the forward must use the parameters themselves "
        "(no .detach(), .data or torch.no_grad() on the LoRA branch).",
        task="1.2", bug={"old": "return out + (self.dropout(x) @ self.lora_A.T @ self.lora_B.T) * self.scaling",
                         "new": "return out + (self.dropout(x) @ self.lora_A.detach().T @ self.lora_B.detach().T)"
                                " * self.scaling"}),
    "input_overwritten_by_dropout": Misconception(
        "Your forward overwrites the caller's input (an in-place dropout, or an in-place operation on "
        "x): compute new tensors, the rest of the model still reads x.",
        task="1.2", bug={"old": "self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()",
                         "new": "self.dropout = nn.Dropout(dropout, inplace=True) if dropout > 0 else nn.Identity()"}),
    "dropout_on_base_path": Misconception(
        "Dropout reaches the frozen path: apply it only to the input of the LoRA branch; base(x) always "
        "sees x itself.",
        task="1.2", bug={"old": "out = self.base(x)", "new": "x = self.dropout(x)\n        out = self.base(x)"}),
    "dropout_on_hidden": Misconception(
        "Your dropout acts on x Aᵀ (the rank-r activations): it belongs on the branch's input, "
        "dropout(x) Aᵀ Bᵀ.",
        task="1.2", bug={"old": "(self.dropout(x) @ self.lora_A.T @ self.lora_B.T)",
                         "new": "(self.dropout(x @ self.lora_A.T) @ self.lora_B.T)"}),
    "dropout_on_branch_output": Misconception(
        "Your dropout acts on the branch's output: it belongs on the branch's input, dropout(x) Aᵀ Bᵀ.",
        task="1.2", bug={"old": "(self.dropout(x) @ self.lora_A.T @ self.lora_B.T)",
                         "new": "self.dropout(x @ self.lora_A.T @ self.lora_B.T)"}),
    "view_on_non_contiguous": Misconception(
        "Your forward reshapes with .view, which fails on a non-contiguous input (a transposed or "
        "sliced x): use .reshape, or let matmul work on the last dimension directly.",
        task="1.2", bug={"old": "return out + (self.dropout(x) @ self.lora_A.T @ self.lora_B.T) * self.scaling",
                         "new": "h = self.dropout(x).view(-1, x.shape[-1]) @ self.lora_A.T @ self.lora_B.T\n"
                                "        return out + h.view(*x.shape[:-1], -1) * self.scaling"}),
    "forward_fixed_rank": Misconception(
        "Your forward assumes a fixed number of input dimensions (like b, s, _ = x.shape): it must work "
        "for any leading shape (..., in), a single vector included.",
        task="1.2", bug={"old": "return out + (self.dropout(x) @ self.lora_A.T @ self.lora_B.T) * self.scaling",
                         "new": "b, s, _ = x.shape\n        return out + (self.dropout(x).reshape(b * s, -1) @ "
                                "self.lora_A.T @ self.lora_B.T).reshape(b, s, -1) * self.scaling"}),
    "merged_still_adds_branch": Misconception(
        "A merged layer still adds its LoRA branch, so the update counts twice: while merged, the "
        "forward is base(x) alone.",
        task="1.2", bug={"old": "        if self.merged:\n            return out\n", "new": ""}),
    # ---- task 1.3: delta_weight
    "delta_transposed": Misconception(
        "Your delta_weight is transposed, (in, out): it is B @ A, of shape (out, in) like base.weight.",
        task="1.3", bug={"old": "return (self.lora_B @ self.lora_A) * self.scaling",
                         "new": "return (self.lora_A.T @ self.lora_B.T) * self.scaling"}),
    # ---- tasks 1.4, 1.5: merge and unmerge
    "merge_not_idempotent": Misconception(
        "A second merge() adds the update again: merge must do nothing when the layer is merged already.",
        task="1.4", bug={"old": "        if self.merged:\n            return\n        with torch.no_grad():",
                         "new": "        with torch.no_grad():"}),
    "merge_flag_not_set": Misconception(
        "merge() changes the weight but does not set merged = True, so the forward still adds the branch "
        "(and a second merge adds the update again).",
        task="1.4", bug={"old": "self.base.weight += self.delta_weight()\n        self.merged = True",
                         "new": "self.base.weight += self.delta_weight()"}),
    "merge_makes_base_trainable": Misconception(
        "After merge() the base weight is trainable again: add the update in place under "
        "torch.no_grad() (a new nn.Parameter has requires_grad=True).",
        task="1.4", bug={"old": "        with torch.no_grad():\n            self.base.weight += self.delta_weight()",
                         "new": "        with torch.no_grad():\n            self.base.weight = "
                                "nn.Parameter(self.base.weight + self.delta_weight())"}),
    "unmerge_adds": Misconception(
        "unmerge() adds the update instead of subtracting it.",
        task="1.5", bug={"old": "self.base.weight -= self.delta_weight()", "new": "self.base.weight += self.delta_weight()"}),
    "unmerge_unguarded": Misconception(
        "unmerge() on a layer that is not merged subtracts the update anyway: it must do nothing unless "
        "the layer is merged.",
        task="1.5", bug={"old": "        if not self.merged:\n            return\n", "new": ""}),
    "unmerge_flag_not_cleared": Misconception(
        "unmerge() restores the weight but leaves merged = True, so the forward skips the branch: "
        "clear the flag.",
        task="1.5", bug={"old": "self.base.weight -= self.delta_weight()\n        self.merged = False",
                         "new": "self.base.weight -= self.delta_weight()"}),
    # ---- task 2.1: target matching and freezing
    "targets_by_substring": Misconception(
        "Your targets match anywhere inside a name: peft's rule is a name equal to the target or "
        "ending with '.' + target (the _matches helper).",
        task="2.1", bug={"old": "names = sorted(name for name in linears if _matches(name, target_modules))",
                         "new": "names = sorted(name for name in linears if any(t in name for t in target_modules))"}),
    "targets_by_last_part": Misconception(
        "Your targets are compared with the last part of a name only: a target may also be a longer "
        "path ('self_attn.o_proj') or a full name.",
        task="2.1", bug={"old": "names = sorted(name for name in linears if _matches(name, target_modules))",
                         "new": "names = sorted(name for name in linears if name.rsplit('.', 1)[-1] in target_modules)"}),
    "targets_endswith_without_dot": Misconception(
        "Your targets are matched with name.endswith(target), so 'proj' matches 'q_proj': a target must "
        "end at a dot (name == t or name.endswith('.' + t)).",
        task="2.1", bug={"old": "names = sorted(name for name in linears if _matches(name, target_modules))",
                         "new": "names = sorted(name for name in linears if any(name.endswith(t) for t in target_modules))"}),
    "rest_not_frozen": Misconception(
        "Parameters you did not adapt are still trainable: inject_lora freezes every parameter that is "
        "not a new lora_A or lora_B (embeddings, norms, biases, untargeted layers).",
        task="2.1", bug={"old": "    for p in model.parameters():\n        p.requires_grad_(False)\n    for name in names:",
                         "new": "    for name in names:"}),
    "adapters_frozen_too": Misconception(
        "Your adapters end up frozen too: freeze the model before you insert the LoRA layers (or leave "
        "lora_A and lora_B out).",
        task="2.1", bug={"old": "        setattr(parent, child, LoRALinear(getattr(parent, child), r, alpha, dropout))\n"
                                "    return names",
                         "new": "        setattr(parent, child, LoRALinear(getattr(parent, child), r, alpha, dropout))\n"
                                "    for p in model.parameters():\n        p.requires_grad_(False)\n    return names"}),
    "names_not_sorted": Misconception(
        "inject_lora returns the replaced names in the model's order: return them sorted.",
        task="2.1", bug={"old": "names = sorted(name for name in linears if _matches(name, target_modules))",
                         "new": "names = [name for name in linears if _matches(name, target_modules)]"}),
    "dropout_not_passed_on": Misconception(
        "The LoRA layers inject_lora makes have no dropout: pass the dropout probability on to every "
        "LoRALinear.",
        task="2.1", bug={"old": "LoRALinear(getattr(parent, child), r, alpha, dropout)",
                         "new": "LoRALinear(getattr(parent, child), r, alpha)"}),
    # ---- task 2.2: counting
    "tied_weights_counted_twice": Misconception(
        "Tied weights are counted twice: a parameter shared by two modules counts once "
        "(model.parameters() skips duplicates).",
        task="2.2", bug={"old": "params = list(model.parameters())",
                         "new": "params = [p for _, p in model.named_parameters(remove_duplicate=False)]"}),
    "counts_swapped": Misconception(
        "count_parameters returns (total, trainable): the order is (trainable, total).",
        task="2.2", bug={"old": "return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)",
                         "new": "return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)"}),
    "parameter_count_total": Misconception(
        "lora_parameter_count returns every parameter of the adapted model: it counts only the "
        "trainable ones, those of the adapters.",
        task="2.3", bug={"old": "return count_parameters(model)[0]", "new": "return count_parameters(model)[1]"}),
    "parameter_count_A_only": Misconception(
        "Your LoRA count holds A alone (r · in per layer): B adds out · r, so a layer trains r · (in + out).",
        task="2.3", bug={"old": "return count_parameters(model)[0]",
                         "new": "return sum(m.lora_A.numel() for m in model.modules() if isinstance(m, LoRALinear))"}),
    # ---- task 3.1: the state dict
    "state_dict_without_prefix": Misconception(
        "Your adapter keys lack the 'base_model.model.' prefix that peft's wrappers add: peft names a "
        "layer's A base_model.model.<path>.lora_A.weight.",
        task="3.1", bug={"old": 'out[f"{PEFT_PREFIX}{name}.lora_A.weight"] = module.lora_A.detach().clone()\n'
                                '            out[f"{PEFT_PREFIX}{name}.lora_B.weight"] = module.lora_B.detach().clone()',
                         "new": 'out[f"{name}.lora_A.weight"] = module.lora_A.detach().clone()\n'
                                '            out[f"{name}.lora_B.weight"] = module.lora_B.detach().clone()'}),
    "state_dict_shares_storage": Misconception(
        "Your state dict's tensors share memory with the live adapters (detach() alone is a view): "
        "return copies, or the values you saved change when training goes on.",
        task="3.1", bug={"old": 'out[f"{PEFT_PREFIX}{name}.lora_A.weight"] = module.lora_A.detach().clone()\n'
                                '            out[f"{PEFT_PREFIX}{name}.lora_B.weight"] = module.lora_B.detach().clone()',
                         "new": 'out[f"{PEFT_PREFIX}{name}.lora_A.weight"] = module.lora_A.detach()\n'
                                '            out[f"{PEFT_PREFIX}{name}.lora_B.weight"] = module.lora_B.detach()'}),
    "state_dict_without_weight_suffix": Misconception(
        "Your adapter keys end in lora_A / lora_B: peft's end in lora_A.weight / lora_B.weight (they "
        "are the weights of small nn.Linear layers in peft).",
        task="3.1", bug={"old": 'out[f"{PEFT_PREFIX}{name}.lora_A.weight"] = module.lora_A.detach().clone()\n'
                                '            out[f"{PEFT_PREFIX}{name}.lora_B.weight"] = module.lora_B.detach().clone()',
                         "new": 'out[f"{PEFT_PREFIX}{name}.lora_A"] = module.lora_A.detach().clone()\n'
                                '            out[f"{PEFT_PREFIX}{name}.lora_B"] = module.lora_B.detach().clone()'}),
    # ---- task 3.2: the files
    "config_alpha_is_r": Misconception(
        "Your adapter_config.json gives lora_alpha = r: write the alpha the adapter was made with (peft "
        "computes the scaling from it).",
        task="3.2", bug={"old": "\"lora_alpha\": alpha,\n        \"target_modules\": list(target_modules),",
                         "new": "\"lora_alpha\": r,\n        \"target_modules\": list(target_modules),"}),
    "config_without_base_model": Misconception(
        "Your adapter_config.json has no base_model_name_or_path: write the one you were given (peft "
        "records which model the adapter belongs to).",
        task="3.2", bug={"old": '"base_model_name_or_path": base_model_name_or_path,',
                         "new": '"base_model_name_or_path": None,'}),
    # ---- task 3.3: merge_lora
    "merge_lora_merges_twice": Misconception(
        "merge_lora adds the update again to layers that were merged already: let each layer's merge() "
        "do it (it does nothing when merged).",
        task="3.3", bug={"old": "            module.merge()\n            parent_name, _, child = name.rpartition(\".\")",
                         "new": "            with torch.no_grad():\n                module.base.weight += module.delta_weight()\n"
                                "            parent_name, _, child = name.rpartition(\".\")"}),
    "merge_lora_trainable": Misconception(
        "The layers merge_lora puts back are trainable: a new nn.Linear has requires_grad=True; put back "
        "the frozen base layer itself (or freeze the new one).",
        task="3.3", bug={"old": "            setattr(model.get_submodule(parent_name), child, module.base)",
                         "new": "            plain = nn.Linear(module.base.in_features, module.base.out_features, "
                                "dtype=module.base.weight.dtype)\n"
                                "            plain.load_state_dict(module.base.state_dict())\n"
                                "            setattr(model.get_submodule(parent_name), child, plain)"}),
    "merge_lora_drops_bias": Misconception(
        "The layers merge_lora puts back have no bias: keep the base layer's bias (putting back the "
        "merged base layer itself does).",
        task="3.3", bug={"old": "            setattr(model.get_submodule(parent_name), child, module.base)",
                         "new": "            plain = nn.Linear(module.base.in_features, module.base.out_features, bias=False)\n"
                                "            plain.weight.data = module.base.weight.data.clone()\n"
                                "            setattr(model.get_submodule(parent_name), child, plain)"}),
    "merge_lora_keeps_wrappers": Misconception(
        "merge_lora leaves LoRALinear layers in the model: replace each by its merged base nn.Linear.",
        task="3.3", bug={"old": "            setattr(model.get_submodule(parent_name), child, module.base)",
                         "new": "            pass"}),
    # ---- task 4.1: training
    "train_mode_not_set": Misconception(
        "Your training ran with dropout off: call model.train() before the loop (the model may arrive "
        "in eval mode).",
        task="4.1", bug={"old": "    model.train()\n    losses = []", "new": "    losses = []"}),
    "gradients_accumulate": Misconception(
        "Your gradients accumulate across steps: clear them every step (optimizer.zero_grad()).",
        task="4.1", bug={"old": "        optimizer.zero_grad(set_to_none=True)\n", "new": ""}),
    "loss_after_step": Misconception(
        "Your losses are measured after the optimiser step: record loss.item() of the forward that the "
        "step's backward used.",
        task="4.1", bug={"old": "        losses.append(loss.item())",
                         "new": "        with torch.no_grad():\n            losses.append(model(**batch).loss.item())"}),
    "always_first_batch": Misconception(
        "Every step uses the same batch: step i uses batch number i modulo len(batches), in turn.",
        task="4.1", bug={"old": "batch = batches[step % len(batches)]", "new": "batch = batches[0]"}),
    "adam_not_adamw": Misconception(
        "Your optimiser is Adam, not AdamW: AdamW's decoupled weight decay (0.01 by default) changes "
        "every step.",
        task="4.1", bug={"old": "optimizer = torch.optim.AdamW(", "new": "optimizer = torch.optim.Adam("}),
    "learning_rate_ignored": Misconception(
        "Your training does not use lr: pass lr=lr to AdamW.",
        task="4.1", bug={"old": "if p.requires_grad], lr=lr)", "new": "if p.requires_grad])"}),
    "wrong_number_of_steps": Misconception(
        "train_lora does not take the number of steps asked for: one forward, backward and optimiser "
        "step per step, and one loss for each.",
        task="4.1", bug={"old": "for step in range(steps):", "new": "for step in range(steps - 1):"}),
})

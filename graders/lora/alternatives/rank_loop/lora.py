"""A correct LoRA that sums the update one rank-one term at a time (a loop over r), merges with
a loop too, and counts parameters by walking modules (tied weights once, by identity)."""

import json
import math
import os

import torch
from torch import Tensor, nn

PEFT_PREFIX = "base_model.model."


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, r: int, alpha: float | None = None, dropout: float = 0.0):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"cannot wrap {type(base).__name__}: only nn.Linear")
        if r <= 0:
            raise ValueError(f"r must be > 0 (got r={r})")
        self.base = base
        for param in self.base.parameters():
            param.requires_grad = False
        self.r = r
        self.scaling = (alpha if alpha is not None else r) / r
        self.lora_A = nn.Parameter(torch.zeros(r, base.in_features, dtype=base.weight.dtype, device=base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, dtype=base.weight.dtype, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.merged = False

    def forward(self, x: Tensor) -> Tensor:
        out = self.base(x)
        if self.merged:
            return out
        h = self.dropout(x) @ self.lora_A.T          # (..., r)
        update = 0
        for k in range(self.r):                      # sum of r rank-one terms
            update = update + h[..., k:k + 1] * self.lora_B[:, k]
        return out + self.scaling * update

    def delta_weight(self) -> Tensor:
        delta = torch.zeros_like(self.base.weight)
        for k in range(self.r):
            delta = delta + torch.outer(self.lora_B[:, k], self.lora_A[k])
        return delta * self.scaling

    def merge(self) -> None:
        if self.merged:
            return
        with torch.no_grad():
            self.base.weight += self.delta_weight()
        self.merged = True

    def unmerge(self) -> None:
        if not self.merged:
            return
        with torch.no_grad():
            self.base.weight -= self.delta_weight()
        self.merged = False


def _matches(name: str, target_modules: list[str]) -> bool:
    return any(name == t or name.endswith("." + t) for t in target_modules)


def inject_lora(model, target_modules, r, alpha=None, dropout=0.0):
    targets = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and _matches(n, target_modules)]
    if len(targets) == 0:
        all_linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        raise ValueError(f"target_modules={target_modules} matched nothing. nn.Linear layers: {', '.join(all_linear)}")
    for param in model.parameters():
        param.requires_grad = False
    for n in targets:
        parent_name, _, attr = n.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, attr, LoRALinear(getattr(parent, attr), r, alpha=alpha, dropout=dropout))
    return sorted(targets)


def count_parameters(model):
    seen = set()
    trainable = total = 0
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            total += p.numel()
            trainable += p.numel() if p.requires_grad else 0
    return trainable, total


def lora_parameter_count(config, r, target_modules):
    from transformers import AutoModelForCausalLM
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    inject_lora(model, target_modules, r)
    return count_parameters(model)[0]


def lora_state_dict(model):
    result = {}
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            result[f"base_model.model.{name}.lora_A.weight"] = module.lora_A.detach().clone()
            result[f"base_model.model.{name}.lora_B.weight"] = module.lora_B.detach().clone()
    return result


def save_adapter(model, path, *, r, alpha, target_modules, base_model_name_or_path=None):
    import safetensors.torch
    os.makedirs(path, exist_ok=True)
    safetensors.torch.save_file(lora_state_dict(model), os.path.join(path, "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "r": r, "lora_alpha": alpha, "target_modules": list(target_modules),
              "base_model_name_or_path": base_model_name_or_path, "task_type": "CAUSAL_LM"}
    with open(os.path.join(path, "adapter_config.json"), "w") as f:
        json.dump(config, f)


def merge_lora(model):
    if isinstance(model, LoRALinear):
        model.merge()
        return model.base
    for name in [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        layer = getattr(parent, attr)
        layer.merge()
        setattr(parent, attr, layer.base)
    return model


def train_lora(model, batches, steps, lr):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    losses = []
    for step in range(steps):
        optimizer.zero_grad()
        loss = model(**batches[step % len(batches)]).loss
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    return losses

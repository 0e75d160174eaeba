"""A correct LoRA in a functional style: F.linear and F.dropout, recursion over children for
injection, counting by hand on the meta model, merge_lora building fresh (frozen) nn.Linear layers."""

import json
import math
import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
PEFT_PREFIX = "base_model.model."


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, r: int, alpha: float | None = None, dropout: float = 0.0):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"expected nn.Linear, got {type(base).__name__}")
        if not isinstance(r, int) or r <= 0:
            raise ValueError(f"rank must be positive, got {r}")
        base.weight.requires_grad = False
        if base.bias is not None:
            base.bias.requires_grad = False
        self.base = base
        self.r = r
        self.scaling = (r if alpha is None else alpha) / r
        self.p = float(dropout)
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty((r, w.shape[1]), dtype=w.dtype, device=w.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_B = nn.Parameter(torch.zeros((w.shape[0], r), dtype=w.dtype, device=w.device))
        self.merged = False

    def forward(self, x: Tensor) -> Tensor:
        y = F.linear(x, self.base.weight, self.base.bias)
        if self.merged:
            return y
        h = F.dropout(x, self.p, self.training)
        return y + F.linear(F.linear(h, self.lora_A), self.lora_B) * self.scaling

    def delta_weight(self) -> Tensor:
        return self.scaling * torch.mm(self.lora_B, self.lora_A)

    def merge(self) -> None:
        if not self.merged:
            self.base.weight.data.add_(self.delta_weight().detach())
            self.merged = True

    def unmerge(self) -> None:
        if self.merged:
            self.base.weight.data.sub_(self.delta_weight().detach())
            self.merged = False


def _matches(name: str, target_modules: list[str]) -> bool:
    return any(name == t or name.endswith("." + t) for t in target_modules)


def _replace(module: nn.Module, prefix: str, targets, make, found: list[str]) -> None:
    for child_name, child in list(module.named_children()):
        full = f"{prefix}{child_name}"
        if isinstance(child, nn.Linear) and _matches(full, targets):
            setattr(module, child_name, make(child))
            found.append(full)
        else:
            _replace(child, full + ".", targets, make, found)


def inject_lora(model, target_modules, r, alpha=None, dropout=0.0):
    model.requires_grad_(False)
    found: list[str] = []
    _replace(model, "", list(target_modules), lambda lin: LoRALinear(lin, r, alpha, dropout), found)
    if not found:
        names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        raise ValueError(f"target_modules {target_modules} match no nn.Linear; there are: {names}")
    return sorted(found)


def count_parameters(model):
    seen = {}
    for p in model.parameters():
        seen[id(p)] = p
    trainable = sum(p.numel() for p in seen.values() if p.requires_grad)
    return trainable, sum(p.numel() for p in seen.values())


def lora_parameter_count(config, r, target_modules):
    from transformers import AutoModelForCausalLM
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    total = 0
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and _matches(name, target_modules):
            total += r * (m.in_features + m.out_features)
    return total


def lora_state_dict(model):
    out = {}
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("lora_A", "lora_B"):
            out[PEFT_PREFIX + name + ".weight"] = p.detach().clone()
    return out


def save_adapter(model, path, *, r, alpha, target_modules, base_model_name_or_path=None):
    from safetensors.torch import save_file
    os.makedirs(path, exist_ok=True)
    save_file(lora_state_dict(model), os.path.join(path, ADAPTER_WEIGHTS))
    with open(os.path.join(path, ADAPTER_CONFIG), "w") as f:
        json.dump({"peft_type": "LORA", "r": r, "lora_alpha": alpha, "target_modules": list(target_modules),
                   "base_model_name_or_path": base_model_name_or_path}, f)


def _plain(layer: LoRALinear) -> nn.Linear:
    base = layer.base
    weight = base.weight.detach() if layer.merged else (base.weight + layer.delta_weight()).detach()
    lin = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None,
                    device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        lin.weight.copy_(weight)
        if base.bias is not None:
            lin.bias.copy_(base.bias)
    return lin.requires_grad_(False)


def merge_lora(model):
    if isinstance(model, LoRALinear):
        return _plain(model)
    for name, module in list(model.named_modules()):
        if isinstance(module, LoRALinear):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, _plain(module))
    return model


def train_lora(model, batches, steps, lr):
    model.train()
    opt = torch.optim.AdamW((p for p in model.parameters() if p.requires_grad), lr=lr)
    losses = []
    for i in range(steps):
        opt.zero_grad()
        loss = model(**batches[i % len(batches)]).loss
        losses.append(float(loss.detach()))
        loss.backward()
        opt.step()
    return losses

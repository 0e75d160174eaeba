"""A correct LoRA written with einsum: the branch and delta_weight as einsum contractions, the
state dict filtered from model.state_dict(), the model walked with named_modules()."""

import json
import math
import os

import torch
from torch import Tensor, nn

PEFT_PREFIX = "base_model.model."


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, r: int, alpha: float | None = None, dropout: float = 0.0):
        super().__init__()
        if type(base) is not nn.Linear and not isinstance(base, nn.Linear):
            raise TypeError(f"base must be an nn.Linear, not a {type(base).__name__}")
        if r <= 0:
            raise ValueError(f"r={r}: the rank must be positive")
        self.base = base
        self.base.requires_grad_(False)
        self.alpha = r if alpha is None else alpha
        self.r = r
        self.scaling = self.alpha / self.r
        self.lora_A = nn.Parameter(base.weight.new_empty(r, base.in_features))
        self.lora_B = nn.Parameter(base.weight.new_zeros(base.out_features, r))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.drop = nn.Dropout(p=dropout)
        self.merged = False

    def forward(self, x: Tensor) -> Tensor:
        if self.merged:
            return self.base(x)
        branch = torch.einsum("...i,ri,or->...o", self.drop(x), self.lora_A, self.lora_B)
        return self.base(x) + self.scaling * branch

    def delta_weight(self) -> Tensor:
        return torch.einsum("or,ri->oi", self.lora_B, self.lora_A) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        if self.merged:
            return
        self.base.weight.copy_(self.base.weight + self.delta_weight())
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if not self.merged:
            return
        self.base.weight.copy_(self.base.weight - self.delta_weight())
        self.merged = False


def _matches(name: str, target_modules: list[str]) -> bool:
    return any(name == t or name.endswith("." + t) for t in target_modules)


def inject_lora(model, target_modules, r, alpha=None, dropout=0.0):
    everything = dict(model.named_modules())
    linear = [n for n, m in everything.items() if isinstance(m, nn.Linear)]
    chosen = [n for n in linear if _matches(n, target_modules)]
    if not chosen:
        raise ValueError("nothing matches " + repr(target_modules) + "; nn.Linear layers: " + " ".join(linear))
    for p in model.parameters():
        p.requires_grad = False
    for n in chosen:
        if "." in n:
            parent_name, child = n.rsplit(".", 1)
            parent = everything[parent_name]
        else:
            parent, child = model, n
        parent._modules[child] = LoRALinear(everything[n], r, alpha, dropout)
    chosen.sort()
    return chosen


def count_parameters(model):
    trainable = total = 0
    for p in model.parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return (trainable, total)


def lora_parameter_count(config, r, target_modules):
    from transformers import AutoModelForCausalLM
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    inject_lora(model, target_modules, r)
    trainable, _ = count_parameters(model)
    return trainable


def lora_state_dict(model):
    sd = model.state_dict()
    return {PEFT_PREFIX + k + ".weight": v.detach().clone() for k, v in sd.items()
            if k.endswith(".lora_A") or k.endswith(".lora_B")}


def save_adapter(model, path, *, r, alpha, target_modules, base_model_name_or_path=None):
    from safetensors.torch import save_file
    path = str(path)
    if not os.path.isdir(path):
        os.makedirs(path)
    save_file({k: v.contiguous() for k, v in lora_state_dict(model).items()}, os.path.join(path, "adapter_model.safetensors"))
    cfg = dict(peft_type="LORA", r=r, lora_alpha=alpha, target_modules=sorted(target_modules),
               lora_dropout=0.0, bias="none", base_model_name_or_path=base_model_name_or_path)
    with open(os.path.join(path, "adapter_config.json"), "w", encoding="utf-8") as f:
        f.write(json.dumps(cfg))


def merge_lora(model):
    if isinstance(model, LoRALinear):
        model.merge()
        return model.base
    names = [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    for n in names:
        layer = model.get_submodule(n)
        layer.merge()
        parent_name, _, child = n.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, layer.base)
    return model


def train_lora(model, batches, steps, lr):
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    model.train()
    history = []
    step = 0
    while step < steps:
        out = model(**batches[step % len(batches)])
        for p in params:
            p.grad = None
        out.loss.backward()
        history.append(out.loss.item())
        optimizer.step()
        step += 1
    return history

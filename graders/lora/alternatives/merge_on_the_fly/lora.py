"""A correct LoRA whose forward folds the update into the weight on the fly (one matmul),
except in train mode with dropout, where the branch is computed apart with a hand-made mask."""

import json
import math
import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PEFT_PREFIX = "base_model.model."


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, r: int, alpha: float | None = None, dropout: float = 0.0):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError("LoRALinear needs an nn.Linear, got " + type(base).__name__)
        if r < 1:
            raise ValueError("r must be at least 1, got " + str(r))
        for p in base.parameters():
            p.requires_grad_(False)
        self.base = base
        self.scaling = float(alpha if alpha is not None else r) / r
        self.p = dropout
        out_f, in_f = base.weight.shape
        A = torch.empty(r, in_f, device=base.weight.device, dtype=base.weight.dtype)
        nn.init.kaiming_uniform_(A, a=math.sqrt(5))
        self.lora_A = nn.Parameter(A)
        self.lora_B = nn.Parameter(torch.zeros(out_f, r, device=base.weight.device, dtype=base.weight.dtype))
        self.merged = False

    def forward(self, x: Tensor) -> Tensor:
        if self.merged:
            return self.base(x)
        if self.training and self.p > 0:
            keep = (torch.rand_like(x) >= self.p).to(x.dtype) / (1 - self.p)
            return self.base(x) + ((x * keep) @ self.lora_A.t() @ self.lora_B.t()) * self.scaling
        return F.linear(x, self.base.weight + self.delta_weight(), self.base.bias)

    def delta_weight(self) -> Tensor:
        return self.lora_B.matmul(self.lora_A).mul(self.scaling)

    def merge(self) -> None:
        if self.merged:
            return
        with torch.no_grad():
            self.base.weight.add_(self.delta_weight())
        self.merged = True

    def unmerge(self) -> None:
        if self.merged:
            with torch.no_grad():
                self.base.weight.sub_(self.delta_weight())
            self.merged = False


def _matches(name: str, target_modules: list[str]) -> bool:
    return any(name == t or name.endswith("." + t) for t in target_modules)


def inject_lora(model, target_modules, r, alpha=None, dropout=0.0):
    for p in model.parameters():
        p.requires_grad_(False)
    replaced = []
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and _matches(name, target_modules):
            parent_name, _, child = name.rpartition(".")
            model.get_submodule(parent_name).add_module(child, LoRALinear(module, r, alpha, dropout))
            replaced.append(name)
    if not replaced:
        linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        raise ValueError(f"no match for {target_modules}; nn.Linear layers: {linears}")
    return sorted(replaced)


def count_parameters(model):
    params = list(model.parameters())
    return (sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params))


def lora_parameter_count(config, r, target_modules):
    import transformers
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    inject_lora(model, target_modules, r)
    return count_parameters(model)[0]


def lora_state_dict(model):
    sd = {}
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            for which in ("lora_A", "lora_B"):
                sd[f"{PEFT_PREFIX}{name}.{which}.weight"] = getattr(module, which).detach().clone()
    return sd


def save_adapter(model, path, *, r, alpha, target_modules, base_model_name_or_path=None):
    from safetensors.torch import save_file
    os.makedirs(path, exist_ok=True)
    save_file(lora_state_dict(model), os.path.join(path, "adapter_model.safetensors"))
    with open(os.path.join(path, "adapter_config.json"), "w") as f:
        json.dump({"peft_type": "LORA", "r": r, "lora_alpha": alpha, "target_modules": target_modules,
                   "base_model_name_or_path": base_model_name_or_path, "lora_dropout": 0.0, "bias": "none"}, f)


def merge_lora(model):
    if isinstance(model, LoRALinear):
        model.merge()
        return model.base
    for name, module in list(model.named_modules()):
        if isinstance(module, LoRALinear):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            model.get_submodule(parent_name).add_module(child, module.base)
    return model


def train_lora(model, batches, steps, lr):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    losses = []
    for i in range(steps):
        opt.zero_grad(set_to_none=False)
        loss = model(**batches[i % len(batches)]).loss
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses

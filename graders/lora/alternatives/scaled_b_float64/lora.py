"""A correct LoRA with another parametrisation of the scale and float64 intermediates: scaling
is a property of alpha and r, applied to B (x Aᵀ (s B)ᵀ), the branch computed in float64;
targets matched by comparing name parts; gradients cleared by hand."""

import json
import math

import torch
from torch import Tensor, nn

PEFT_PREFIX = "base_model.model."


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, r: int, alpha: float | None = None, dropout: float = 0.0):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"{type(base).__name__} is not an nn.Linear")
        if r <= 0:
            raise ValueError(f"bad rank {r}")
        self.base = base
        base.requires_grad_(False)
        self.r, self.alpha = r, alpha
        like = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, **like))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, **like))
        with torch.no_grad():
            bound = 1.0 / math.sqrt(base.in_features)   # what kaiming_uniform_(a=sqrt(5)) draws
            self.lora_A.uniform_(-bound, bound)
        self.dropout = nn.Dropout(dropout)
        self.merged = False

    @property
    def scaling(self) -> float:
        return (self.r if self.alpha is None else self.alpha) / self.r

    def forward(self, x: Tensor) -> Tensor:
        result = self.base(x)
        if not self.merged:
            h = self.dropout(x).double() @ self.lora_A.double().T
            result = result + (h @ (self.scaling * self.lora_B.double()).T).to(result.dtype)
        return result

    def delta_weight(self) -> Tensor:
        return ((self.scaling * self.lora_B.double()) @ self.lora_A.double()).to(self.lora_A.dtype)

    def merge(self) -> None:
        if not self.merged:
            self.base.weight.data = self.base.weight.data + self.delta_weight().detach()
            self.merged = True

    def unmerge(self) -> None:
        if self.merged:
            self.base.weight.data = self.base.weight.data - self.delta_weight().detach()
            self.merged = False


def _matches(name: str, target_modules: list[str]) -> bool:
    return any(name == t or name.endswith("." + t) for t in target_modules)


def _by_parts(name: str, targets) -> bool:
    parts = name.split(".")
    for t in targets:
        want = t.split(".")
        if len(want) <= len(parts) and parts[len(parts) - len(want):] == want:
            return True
    return False


def inject_lora(model, target_modules, r, alpha=None, dropout=0.0):
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    hits = [(n, m) for n, m in linears if _by_parts(n, target_modules)]
    if not hits:
        raise ValueError("none of %r is an nn.Linear of this model: %s" % (target_modules, [n for n, _ in linears]))
    model.requires_grad_(False)
    for n, m in hits:
        *path, leaf = n.split(".")
        parent = model
        for part in path:
            parent = getattr(parent, part)
        setattr(parent, leaf, LoRALinear(m, r, alpha, dropout))
    return sorted(n for n, _ in hits)


def count_parameters(model):
    counts = [0, 0]
    for p in model.parameters():
        counts[1] += p.numel()
        counts[0] += p.numel() * int(p.requires_grad)
    return tuple(counts)


def lora_parameter_count(config, r, target_modules):
    from transformers import AutoModelForCausalLM
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    inject_lora(model, target_modules, r)
    return count_parameters(model)[0]


def lora_state_dict(model):
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, LoRALinear):
            out[PEFT_PREFIX + name + ".lora_A.weight"] = m.lora_A.data.clone()
            out[PEFT_PREFIX + name + ".lora_B.weight"] = m.lora_B.data.clone()
    return out


def save_adapter(model, path, *, r, alpha, target_modules, base_model_name_or_path=None):
    from pathlib import Path
    from safetensors.torch import save_file
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(lora_state_dict(model), str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": r, "lora_alpha": alpha, "target_modules": list(target_modules),
        "base_model_name_or_path": base_model_name_or_path}, indent=1))


def merge_lora(model):
    if isinstance(model, LoRALinear):
        model.merge()
        return model.base
    for name, m in [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)]:
        m.merge()
        *path, leaf = name.split(".")
        parent = model
        for part in path:
            parent = getattr(parent, part)
        setattr(parent, leaf, m.base)
    return model


def train_lora(model, batches, steps, lr):
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=lr)
    model.train()
    losses = []
    for i in range(steps):
        for p in trainable:
            p.grad = None
        batch = batches[i % len(batches)]
        loss = model(**batch).loss
        losses.append(loss.item())
        loss.backward()
        opt.step()
    return losses

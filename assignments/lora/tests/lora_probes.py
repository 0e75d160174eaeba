"""Probes of the public tests: they build your objects next to your code and return data only.

When the course grades your work, your code runs in a separate, sandboxed process and only data
(tensors, numbers, strings, lists and dicts of them) comes back to the tests. A test that needs
an object (a LoRALinear, a model after inject_lora) therefore asks one of these functions to
build it and report on it: ``submission.run(lora_probes.layer_facts, 6, 5, 2)``. With plain
``pytest`` they simply run in the test's process, so you can debug them with pdb.
"""

import os
import tempfile

import torch
from torch import nn


class TinyNet(nn.Module):
    """A toy model: an up/down projection block with a residual, and a head."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.block = nn.ModuleDict({"up_proj": nn.Linear(8, 16), "down_proj": nn.Linear(16, 8)})
        self.head = nn.Linear(8, 3)

    def forward(self, tokens):
        h = self.embed(tokens)
        h = h + self.block["down_proj"](torch.relu(self.block["up_proj"](h)))
        return self.head(h)


def _tiny_net(seed):
    torch.manual_seed(seed)
    return TinyNet().eval()


def _layer(weight, bias, r, alpha):
    import lora
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        lin.weight.copy_(weight)
        if bias is not None:
            lin.bias.copy_(bias)
    return lora.LoRALinear(lin, r, alpha)


def _set_adapter(layer, a, b):
    with torch.no_grad():
        layer.lora_A.copy_(a)
        layer.lora_B.copy_(b)


def layer_facts(in_features, out_features, r, alpha=None):
    """Shapes, values and flags of a fresh LoRALinear (or the error its constructor raises)."""
    import lora
    base = nn.Linear(in_features, out_features)
    layer = lora.LoRALinear(base, r) if alpha is None else lora.LoRALinear(base, r, alpha)
    return {
        "A": layer.lora_A.detach().clone(),
        "B": layer.lora_B.detach().clone(),
        "scaling": float(layer.scaling),
        "merged": bool(layer.merged),
        "base_weight_requires_grad": layer.base.weight.requires_grad,
        "base_bias_requires_grad": layer.base.bias.requires_grad,
        "A_requires_grad": layer.lora_A.requires_grad,
        "B_requires_grad": layer.lora_B.requires_grad,
    }


def forward(weight, bias, r, alpha, a, b, x):
    """A LoRALinear's output; ``a``/``b`` of None keep the layer's own initial values."""
    layer = _layer(weight, bias, r, alpha)
    if a is not None:
        _set_adapter(layer, a, b)
    with torch.no_grad():
        return layer.eval()(x)


def delta(weight, bias, r, alpha, a, b):
    layer = _layer(weight, bias, r, alpha)
    _set_adapter(layer, a, b)
    with torch.no_grad():
        return layer.delta_weight()


def merge_unmerge(weight, bias, r, alpha, a, b, x):
    """Output and weight before merge(), after merge(), after unmerge()."""
    layer = _layer(weight, bias, r, alpha)
    _set_adapter(layer, a, b)
    layer.eval()
    states = []
    for step in ("before", "merge", "unmerge"):
        if step == "merge":
            layer.merge()
        elif step == "unmerge":
            layer.unmerge()
        with torch.no_grad():
            states.append({"merged": bool(layer.merged), "weight": layer.base.weight.detach().clone(),
                           "out": layer(x)})
    return states


def inject_tiny_net(seed, targets, r):
    """inject_lora on TinyNet: returned names, trainable parameter names, counts."""
    import lora
    model = _tiny_net(seed)
    names = lora.inject_lora(model, targets, r)
    return {
        "names": names,
        "trainable": sorted(n for n, p in model.named_parameters() if p.requires_grad),
        "counts": tuple(lora.count_parameters(model)),
    }


def adapter_of_tiny_net(seed, targets, r, alpha):
    """lora_state_dict of TinyNet, and the files save_adapter writes (as bytes)."""
    import lora
    model = _tiny_net(seed)
    lora.inject_lora(model, targets, r, alpha)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, lora.LoRALinear):
                module.lora_B.normal_()
    with tempfile.TemporaryDirectory() as tmp:
        lora.save_adapter(model, tmp, r=r, alpha=alpha, target_modules=targets)
        files = {}
        for name in sorted(os.listdir(tmp)):
            with open(os.path.join(tmp, name), "rb") as f:
                files[name] = f.read()
    return {"state": lora.lora_state_dict(model), "files": files}


def merged_tiny_net(seed, targets, r, tokens):
    """TinyNet's output with adapters, and after merge_lora, plus the merged layers' types."""
    import lora
    model = _tiny_net(seed)
    names = lora.inject_lora(model, targets, r)
    with torch.no_grad():
        for name in names:
            model.get_submodule(name).lora_B.normal_()
        before = model(tokens)
        model = lora.merge_lora(model)
        after = model(tokens)
    return {"before": before, "after": after,
            "types": [type(model.get_submodule(n)).__name__ for n in names]}


def parameter_count(config, r, targets):
    import lora
    from transformers import LlamaConfig
    return lora.lora_parameter_count(LlamaConfig(**config), r, targets)


def train_tiny_llama(config, seed, targets, r, batches, steps, lr):
    """train_lora on a small random Llama: the losses, and one base weight before and after."""
    import lora
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**config))
    before = model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    lora.inject_lora(model, targets, r)
    losses = lora.train_lora(model, batches, steps, lr)
    after = model.model.layers[0].self_attn.q_proj.base.weight.detach().clone()
    return {"losses": losses, "base_weight_before": before, "base_weight_after": after}

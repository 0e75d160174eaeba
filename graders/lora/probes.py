"""Probes of the lora assignment: they run next to the student's code (inside the sandbox).

Each builds the student's objects from plain data (a Linear's weight and bias, a tiny Llama's
config dict and state dict), does the stateful work (inject, set A/B, forward, merge, train,
save) and returns tensors, names and bytes. No expected values live here: every comparison, with
peft or with a formula, is made by the tests in the grading process.
"""

import os
import tempfile

import torch


def _linear(weight, bias):
    out_features, in_features = weight.shape
    lin = torch.nn.Linear(in_features, out_features, bias=bias is not None, dtype=weight.dtype)
    with torch.no_grad():
        lin.weight.copy_(weight)
        if bias is not None:
            lin.bias.copy_(bias)
    return lin


def _layer(weight, bias, r, alpha, dropout=0.0):
    import lora
    lin = _linear(weight, bias)
    if alpha is None:
        return lora.LoRALinear(lin, r, dropout=dropout)
    return lora.LoRALinear(lin, r, alpha, dropout)


def _set(param, value, what):
    if tuple(param.shape) != tuple(value.shape):
        raise ValueError(f"{what} has shape {tuple(param.shape)}, but the grader sets a tensor of shape "
                         f"{tuple(value.shape)} (A is (r, in_features), B is (out_features, r))")
    with torch.no_grad():
        param.copy_(value)


def _set_adapter(layer, a, b):
    _set(layer.lora_A, a, "lora_A")
    _set(layer.lora_B, b, "lora_B")


def _tiny_llama(config, state):
    from transformers import LlamaConfig, LlamaForCausalLM
    model = LlamaForCausalLM(LlamaConfig(**config))
    model.load_state_dict(state)
    return model.eval()


def _injected(config, state, targets, r, alpha, adapters=None, dropout=0.0):
    import lora
    model = _tiny_llama(config, state)
    names = lora.inject_lora(model, targets, r, alpha, dropout)
    for name, (a, b) in (adapters or {}).items():
        _set_adapter(model.get_submodule(name), a, b)
    return model, names


def _logits(model, input_ids):
    with torch.no_grad():
        return model(input_ids=input_ids).logits


# ------------------------------------------------------------------ one LoRALinear

def make_layer(in_features, out_features, r, alpha=None, bias=True, dtype=torch.float32, base_kind="linear"):
    """Build a LoRALinear and report its anatomy (or let its constructor's error propagate)."""
    import lora
    if base_kind == "linear":
        base = torch.nn.Linear(in_features, out_features, bias=bias, dtype=dtype)
    elif base_kind == "embedding":
        base = torch.nn.Embedding(in_features, out_features)
    else:
        base = torch.nn.Conv1d(in_features, out_features, 1)
    weight_before = base.weight.detach().clone()
    layer = lora.LoRALinear(base, r) if alpha is None else lora.LoRALinear(base, r, alpha)
    a, b = layer.lora_A, layer.lora_B
    return {
        "base_is_same": layer.base is base,
        "base_weight_unchanged": torch.equal(base.weight.detach(), weight_before),
        "A_is_parameter": isinstance(a, torch.nn.Parameter),
        "B_is_parameter": isinstance(b, torch.nn.Parameter),
        "A": a.detach().clone(),
        "B": b.detach().clone(),
        "scaling": float(layer.scaling),
        "merged": bool(layer.merged),
        "requires_grad": {n: bool(p.requires_grad) for n, p in layer.named_parameters()},
        "base_requires_grad": {n: bool(p.requires_grad) for n, p in base.named_parameters()},
    }


def layer_forward(weight, bias, r, alpha, a, b, x):
    """Output of a LoRALinear (eval mode) whose A and B are set to ``a`` and ``b``."""
    layer = _layer(weight, bias, r, alpha)
    _set_adapter(layer, a, b)
    layer.eval()
    with torch.no_grad():
        return layer(x)


def dropout_outputs(weight, bias, r, alpha, p, a, b, x, seed):
    """Outputs of a LoRALinear with dropout ``p``, in train and eval mode, and without dropout."""
    layer = _layer(weight, bias, r, alpha, dropout=p)
    layer.train()
    torch.manual_seed(seed)
    with torch.no_grad():
        at_init = layer(x)
    _set_adapter(layer, a, b)
    torch.manual_seed(seed)
    with torch.no_grad():
        train = layer(x)
        layer.eval()
        evaluation = layer(x)
    plain = _layer(weight, bias, r, alpha, dropout=0.0)
    _set_adapter(plain, a, b)
    plain.eval()
    with torch.no_grad():
        no_dropout = plain(x)
    return {"train_at_init": at_init, "train": train, "eval": evaluation, "no_dropout": no_dropout}


def delta_weight(weight, bias, r, alpha, a, b):
    layer = _layer(weight, bias, r, alpha)
    _set_adapter(layer, a, b)
    with torch.no_grad():
        return layer.delta_weight()


def _state(layer, x):
    with torch.no_grad():
        return {"merged": bool(layer.merged), "weight": layer.base.weight.detach().clone(), "out": layer(x)}


def merge_twice(weight, bias, r, alpha, a, b, x):
    """States of a LoRALinear: before, after merge(), after a second merge()."""
    layer = _layer(weight, bias, r, alpha)
    _set_adapter(layer, a, b)
    layer.eval()
    states = [_state(layer, x)]
    layer.merge()
    states.append(_state(layer, x))
    layer.merge()
    states.append(_state(layer, x))
    return states


def unmerge_twice(merged_weight, bias, r, alpha, a, b, x):
    """A LoRALinear whose base already holds ``merged_weight`` (merged=True): states after
    unmerge() and after a second unmerge(). Independent of the student's merge()."""
    layer = _layer(merged_weight, bias, r, alpha)
    _set_adapter(layer, a, b)
    layer.eval()
    layer.merged = True
    states = []
    layer.unmerge()
    states.append(_state(layer, x))
    layer.unmerge()
    states.append(_state(layer, x))
    return states


# ------------------------------------------------------------------ a tiny Llama

def inject(config, state, targets, r, alpha=None, dropout=0.0):
    """inject_lora on a tiny Llama: the names it returns and what the model then looks like."""
    import lora
    model, names = _injected(config, state, targets, r, alpha, dropout=dropout)
    return {
        "names": list(names),
        "lora_layers": sorted(n for n, m in model.named_modules() if isinstance(m, lora.LoRALinear)),
        "trainable": sorted(n for n, p in model.named_parameters() if p.requires_grad),
        "frozen": sorted(n for n, p in model.named_parameters() if not p.requires_grad),
    }


def logits(config, state, targets, r, alpha, adapters, input_ids):
    model, names = _injected(config, state, targets, r, alpha, adapters)
    return {"names": list(names), "logits": _logits(model, input_ids)}


def counts(config, state, targets, r, alpha):
    """count_parameters of a tiny Llama before and after inject_lora."""
    import lora
    model = _tiny_llama(config, state)
    before = lora.count_parameters(model)
    lora.inject_lora(model, targets, r, alpha)
    return {"before": tuple(before), "after": tuple(lora.count_parameters(model))}


def parameter_count(config, r, targets):
    """lora_parameter_count for a LlamaConfig built from ``config`` (a dict)."""
    import lora
    from transformers import LlamaConfig
    return lora.lora_parameter_count(LlamaConfig(**config), r, targets)


def adapter_state(config, state, targets, r, alpha, adapters):
    import lora
    model, _ = _injected(config, state, targets, r, alpha, adapters)
    return lora.lora_state_dict(model)


def load_by_name(config, state, targets, r, alpha, tensors, input_ids):
    """Load the tensors of a peft-saved adapter into the student's layers by their names
    (``base_model.model.<path>.lora_A.weight`` -> ``<path>``'s ``lora_A``), then run the model."""
    import lora
    model, _ = _injected(config, state, targets, r, alpha)
    prefix = "base_model.model."
    for key, value in tensors.items():
        if not key.startswith(prefix):
            raise KeyError(f"unexpected key {key!r}")
        path, which, _ = key[len(prefix):].rsplit(".", 2)
        _set(getattr(model.get_submodule(path), which), value, key)
    return {"keys": sorted(lora.lora_state_dict(model)), "logits": _logits(model, input_ids)}


def saved_adapter(config, state, targets, r, alpha, adapters, input_ids, base_model_name_or_path):
    """save_adapter into a fresh folder: the bytes of every file written there, and the logits."""
    import lora
    model, _ = _injected(config, state, targets, r, alpha, adapters)
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "adapter")  # not there yet: save_adapter creates it
        lora.save_adapter(model, folder, r=r, alpha=alpha, target_modules=targets,
                          base_model_name_or_path=base_model_name_or_path)
        files = {}
        for name in sorted(os.listdir(folder)):
            with open(os.path.join(folder, name), "rb") as f:
                files[name] = f.read()
    return {"files": files, "logits": _logits(model, input_ids)}


def merged_model(config, state, targets, r, alpha, adapters, input_ids, premerge):
    """merge_lora on a tiny Llama (optionally after merging the layers with their own merge())."""
    import lora
    model, names = _injected(config, state, targets, r, alpha, adapters)
    before = _logits(model, input_ids)
    if premerge:
        for name in names:
            model.get_submodule(name).merge()
    model = lora.merge_lora(model)
    layers = {}
    for name in names:
        m = model.get_submodule(name)
        layers[name] = {"plain_linear": type(m) is torch.nn.Linear,
                        "weight": m.weight.detach().clone(),
                        "bias": None if getattr(m, "bias", None) is None else m.bias.detach().clone()}
    return {"before": before, "after": _logits(model, input_ids), "layers": layers,
            "lora_left": sorted(n for n, m in model.named_modules() if isinstance(m, lora.LoRALinear))}


def trained(config, state, targets, r, alpha, batches, steps, lr):
    """train_lora on a tiny Llama: losses, the adapters before training, every parameter after."""
    import lora
    model, names = _injected(config, state, targets, r, alpha)
    start = {n: (model.get_submodule(n).lora_A.detach().clone(), model.get_submodule(n).lora_B.detach().clone())
             for n in names}
    losses = lora.train_lora(model, batches, steps, lr)
    return {
        "names": list(names),
        "losses": [float(v) for v in losses],
        "start": start,
        "after": {n: p.detach().clone() for n, p in model.named_parameters()},
        "trainable": sorted(n for n, p in model.named_parameters() if p.requires_grad),
    }

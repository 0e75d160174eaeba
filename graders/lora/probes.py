"""Probes of the lora assignment: they run next to the student's code (inside the sandbox).

Each builds the student's objects from plain data (a Linear's weight and bias, a tiny Llama's
config dict and state dict), does the stateful work (inject, set A/B, forward, backward, merge,
train, save) and returns raw data only: tensors, numbers, names, type names and bytes. Nothing
here compares, counts matches or decides: everything in this process belongs to the student, so
every check (against peft, against a formula, "is it the same object", "is it frozen") is made
by the tests in the grading process from what comes back, mostly by behaviour (the test changes
the base weight through the original object and reads the output, runs a backward pass and reads
the gradients, changes the live adapters and reads the state dict taken before).
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


def _build(lin, r, alpha, dropout=0.0):
    import lora
    if alpha is None:
        return lora.LoRALinear(lin, r, dropout=dropout)
    return lora.LoRALinear(lin, r, alpha, dropout)


def _layer(weight, bias, r, alpha, dropout=0.0):
    return _build(_linear(weight, bias), r, alpha, dropout)


def _set(param, value, what):
    if tuple(param.shape) != tuple(value.shape):
        raise ValueError(f"{what} has shape {tuple(param.shape)}, but the grader sets a tensor of shape "
                         f"{tuple(value.shape)} (A is (r, in_features), B is (out_features, r))")
    with torch.no_grad():
        param.copy_(value)


def _set_adapter(layer, a, b):
    _set(layer.lora_A, a, "lora_A")
    _set(layer.lora_B, b, "lora_B")


def _flags(module):
    """name -> requires_grad of every parameter ``module`` registers (raw attribute values)."""
    return {n: bool(p.requires_grad) for n, p in module.named_parameters()}


def _type_name(module):
    cls = type(module)
    return f"{cls.__module__}.{cls.__qualname__}"


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
    return model.eval(), names  # new modules start in train mode: the whole model in eval mode


def _logits(model, input_ids):
    with torch.no_grad():
        return model(input_ids=input_ids).logits


def _grads(module):
    return {n: None if p.grad is None else p.grad.detach().clone() for n, p in module.named_parameters()}


# ------------------------------------------------------------------ one LoRALinear

def make_layer(weight, bias, r, alpha, x, new_weight, new_bias):
    """Build a LoRALinear around a Linear holding ``weight``/``bias`` and report its anatomy; then
    overwrite the ORIGINAL Linear's weight and bias with ``new_weight``/``new_bias`` and run the
    layer on ``x`` (a layer that kept that very object computes with the new values)."""
    lin = _linear(weight, bias)
    layer = _build(lin, r, alpha)
    report = {
        "A": layer.lora_A.detach().clone(),
        "B": layer.lora_B.detach().clone(),
        "scaling": float(layer.scaling),
        "merged": bool(layer.merged),
        "requires_grad": _flags(layer),
        "base_requires_grad": _flags(lin),
        "base_weight": lin.weight.detach().clone(),
        "base_bias": None if lin.bias is None else lin.bias.detach().clone(),
    }
    with torch.no_grad():
        lin.weight.copy_(new_weight)
        if new_bias is not None:
            lin.bias.copy_(new_bias)
        report["out_after_base_change"] = layer.eval()(x)
    return report


def construct(kind, in_features, out_features, r, alpha=None):
    """Only build a LoRALinear around a layer of ``kind`` (its constructor's error propagates)."""
    if kind == "linear":
        base = torch.nn.Linear(in_features, out_features)
    elif kind == "embedding":
        base = torch.nn.Embedding(in_features, out_features)
    else:
        base = torch.nn.Conv1d(in_features, out_features, 1)
    _build(base, r, alpha)
    return None


def on_meta(in_features, out_features, r, dtype, x_shape):
    """A LoRALinear around a Linear on the meta device: devices, dtypes and shapes of A, B and of
    the output for a meta input (no memory, no values)."""
    base = torch.nn.Linear(in_features, out_features, device="meta", dtype=dtype)
    layer = _build(base, r, None)

    def facts(t):
        return {"device": str(t.device), "dtype": str(t.dtype), "shape": list(t.shape)}
    report = {"A": facts(layer.lora_A), "B": facts(layer.lora_B)}
    try:
        report["out"] = facts(layer(torch.empty(x_shape, device="meta", dtype=dtype)))
    except Exception as exc:  # data about the error; the test decides what it means
        report["out"] = {"error": type(exc).__name__}
    return report


def layer_forward(weight, bias, r, alpha, a, b, inputs):
    """Outputs of a LoRALinear (eval mode) whose A and B are set to ``a`` and ``b``, for each
    ``(x, strided)`` of ``inputs`` (``strided``: the layer gets a non-contiguous view of x)."""
    layer = _layer(weight, bias, r, alpha)
    _set_adapter(layer, a, b)
    layer.eval()
    outs = []
    with torch.no_grad():
        for x, strided in inputs:
            if strided:
                x = x.transpose(-1, -2).contiguous().transpose(-1, -2)
            outs.append(layer(x))
    return outs


def layer_backward(weight, bias, r, alpha, a, b, x, grad_out):
    """One backward pass of ``(layer(x) * grad_out).sum()`` in train mode: the gradient each
    registered parameter received (None: none), and those of the original Linear's parameters."""
    lin = _linear(weight, bias)
    layer = _build(lin, r, alpha)
    _set_adapter(layer, a, b)
    layer.train()
    out = layer(x)
    if out.requires_grad:  # else nothing needs a gradient: every .grad stays None
        (out * grad_out).sum().backward()
    return {"out": out.detach(), "grads": _grads(layer), "base_grads": _grads(lin)}


def dropout_outputs(weight, bias, r, alpha, p, a, b, x, seed):
    """Outputs of a LoRALinear with dropout ``p``, in train and eval mode, and without dropout,
    and the input tensor as the caller holds it after each call."""
    layer = _layer(weight, bias, r, alpha, dropout=p)
    layer.train()
    torch.manual_seed(seed)
    with torch.no_grad():
        at_init = layer(x)
    x_after_init = x.clone()
    _set_adapter(layer, a, b)
    torch.manual_seed(seed)
    with torch.no_grad():
        train = layer(x)
        x_after_train = x.clone()
        layer.eval()
        evaluation = layer(x)
    plain = _layer(weight, bias, r, alpha, dropout=0.0)
    _set_adapter(plain, a, b)
    plain.eval()
    with torch.no_grad():
        no_dropout = plain(x)
    return {"train_at_init": at_init, "train": train, "eval": evaluation, "no_dropout": no_dropout,
            "x_after": [x_after_init, x_after_train, x.clone()]}


def forward_inputs_after(weight, bias, r, alpha, p, a, b, x, seed):
    """The input as the caller holds it after a train-mode forward (dropout ``p``, with and
    without autograd) and after an eval-mode forward."""
    layer = _layer(weight, bias, r, alpha, dropout=p)
    _set_adapter(layer, a, b)
    after = []
    torch.manual_seed(seed)
    layer.train()
    with torch.no_grad():
        layer(x)
    after.append(x.clone())
    out = layer(x)
    if out.requires_grad:
        out.sum().backward()
    after.append(x.clone())
    layer.eval()
    with torch.no_grad():
        layer(x)
    after.append(x.clone())
    return after


def delta_weight(weight, bias, r, alpha, a, b):
    layer = _layer(weight, bias, r, alpha)
    _set_adapter(layer, a, b)
    with torch.no_grad():
        return layer.delta_weight()


def _state(layer, x):
    with torch.no_grad():
        out = layer(x)
    return {"merged": bool(layer.merged), "weight": layer.base.weight.detach().clone(), "out": out,
            "base_requires_grad": _flags(layer.base)}


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
    model, names = _injected(config, state, targets, r, alpha, dropout=dropout)
    return {
        "names": list(names),
        "types": {n: _type_name(m) for n, m in model.named_modules()},
        "requires_grad": _flags(model),
    }


def inject_each(config, state, target_lists, r):
    """inject_lora on a fresh tiny Llama per target list: the names it returns, or the type and
    message of the error it raises."""
    import lora
    out = []
    for targets in target_lists:
        model = _tiny_llama(config, state)
        try:
            out.append({"names": list(lora.inject_lora(model, targets, r))})
        except Exception as exc:  # data about the error; the test decides what it means
            out.append({"error": type(exc).__name__, "message": str(exc)[:2000]})
    return out


def logits(config, state, targets, r, alpha, adapters, input_ids, dropout=0.0, seed=0):
    """Eval-mode logits after inject_lora (and, with dropout, train-mode logits twice)."""
    model, names = _injected(config, state, targets, r, alpha, adapters, dropout=dropout)
    out = {"names": list(names), "logits": _logits(model, input_ids)}
    if dropout:
        model.train()
        torch.manual_seed(seed)
        out["train"] = [_logits(model, input_ids), _logits(model, input_ids)]
    return out


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


def parameter_count_and_pair(config, r, targets, small):
    """lora_parameter_count as above, and (for a diagnosis) count_parameters of a one-layer meta
    model of shape ``small`` after inject_lora, or None when that raises."""
    import lora
    from transformers import LlamaConfig, LlamaForCausalLM
    count = lora.lora_parameter_count(LlamaConfig(**config), r, targets)
    try:
        with torch.device("meta"):
            model = LlamaForCausalLM(LlamaConfig(**small))
        lora.inject_lora(model, targets, r)
        pair = list(lora.count_parameters(model))
    except Exception:
        pair = None
    return {"count": count, "pair": pair}


def adapter_state(config, state, targets, r, alpha, adapters, bump):
    """lora_state_dict of an injected tiny Llama; then ``bump`` is added in place to every live
    lora_A and lora_B. The state dict is sent back after that (a copy does not move), with the
    live adapters."""
    import lora
    model, names = _injected(config, state, targets, r, alpha, adapters)
    taken = lora.lora_state_dict(model)
    with torch.no_grad():
        for name in names:
            layer = model.get_submodule(name)
            layer.lora_A.add_(bump)
            layer.lora_B.add_(bump)
    live = {n: (model.get_submodule(n).lora_A.detach().clone(), model.get_submodule(n).lora_B.detach().clone())
            for n in names}
    return {"state": taken, "live": live}


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


def merged_model(config, state, targets, r, alpha, adapters, input_ids, premerge, layer_inputs):
    """merge_lora on a tiny Llama, optionally after merging every layer with its own merge()
    (called twice: merged already means merged once): logits before and after; the base weight
    and flags of each layer after its own merges; and for each formerly adapted layer after
    merge_lora its type, state-dict keys, weight, bias, requires_grad flags and its output for
    ``layer_inputs[name]``."""
    import lora
    model, names = _injected(config, state, targets, r, alpha, adapters)
    before = _logits(model, input_ids)
    premerged = {}
    if premerge:
        for name in names:
            layer = model.get_submodule(name)
            layer.merge()
            layer.merge()
            premerged[name] = {"merged": bool(layer.merged), "weight": layer.base.weight.detach().clone(),
                               "requires_grad": _flags(layer.base)}
    model = lora.merge_lora(model)
    layers = {}
    for name in names:
        m = model.get_submodule(name)
        with torch.no_grad():
            out = m(layer_inputs[name])
        weight, bias = getattr(m, "weight", None), getattr(m, "bias", None)
        layers[name] = {"type": _type_name(m), "keys": sorted(m.state_dict()),
                        "weight": weight.detach().clone() if isinstance(weight, torch.Tensor) else None,
                        "bias": bias.detach().clone() if isinstance(bias, torch.Tensor) else None,
                        "requires_grad": _flags(m), "out": out}
    return {"before": before, "after": _logits(model, input_ids), "layers": layers, "premerged": premerged,
            "types": {n: _type_name(m) for n, m in model.named_modules()},
            "requires_grad": _flags(model)}


def trained(config, state, targets, r, alpha, batches, steps, lr, dropout=0.0, seed=0):
    """train_lora on a tiny Llama (handed over in eval mode): losses, the adapters before
    training, every parameter after; with dropout, two train-mode forwards of the trained model
    on the first batch (do the LoRA layers hold an active dropout?)."""
    import lora
    model, names = _injected(config, state, targets, r, alpha, dropout=dropout)
    start = {n: (model.get_submodule(n).lora_A.detach().clone(), model.get_submodule(n).lora_B.detach().clone())
             for n in names}
    losses = lora.train_lora(model, batches, steps, lr)
    report = {
        "names": list(names),
        "losses": [float(v) for v in losses],
        "start": start,
        "after": {n: p.detach().clone() for n, p in model.named_parameters()},
    }
    if dropout:
        model.train()
        torch.manual_seed(seed)
        with torch.no_grad():
            report["train_logits"] = [model(input_ids=batches[0]["input_ids"]).logits for _ in range(2)]
    return report

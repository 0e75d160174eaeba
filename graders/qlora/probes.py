"""Probes for `qlora`: they run next to the student's code and only observe.

A probe builds, calls, steps and returns raw data (tensors, numbers, names, flags as the objects
hold them, file bytes). It never compares, counts matches or decides: every comparison,
tolerance and threshold lives in the test files, against the trusted side's own oracle
(qlora_oracle.py). The probes that train build a fresh model every time and never run a forward
pass before training (see the README's note on bitsandbytes' CPU repacking).
"""

import gc
import os
import tempfile

import torch


# ------------------------------------------------------------------ models (also built by the tests)

def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab["<eos>"], vocab["<pad>"] = len(vocab), len(vocab) + 1
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>"), vocab


def _llama_config(cfg, vocab):
    from transformers import LlamaConfig
    return LlamaConfig(vocab_size=len(vocab), hidden_size=cfg["hidden"], intermediate_size=cfg["intermediate"],
                       num_hidden_layers=cfg["layers"], num_attention_heads=cfg["heads"],
                       num_key_value_heads=cfg.get("kv_heads", cfg["heads"]), max_position_embeddings=1024,
                       initializer_range=cfg.get("init", 0.02), tie_word_embeddings=False,
                       eos_token_id=vocab["<eos>"], pad_token_id=vocab["<pad>"], bos_token_id=None)


def _tiny_llama(cfg, dtype=torch.bfloat16):
    from transformers import LlamaForCausalLM
    _, vocab = _tokenizer()
    torch.manual_seed(cfg.get("seed", 0))
    return LlamaForCausalLM(_llama_config(cfg, vocab)).to(dtype)


def _save_tiny_llama(cfg, folder):
    tokenizer, _ = _tokenizer()
    _tiny_llama(cfg).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _linear(weight, bias, dtype=None):
    out_features, in_features = weight.shape
    linear = torch.nn.Linear(in_features, out_features, bias=bias is not None, dtype=dtype or weight.dtype)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if bias is not None:
            linear.bias.copy_(bias)
    return linear


def _parameters(module):
    """Every parameter's shape, dtype and requires_grad flag, as the module holds them."""
    return {n: [list(p.shape), p.dtype, p.requires_grad] for n, p in module.named_parameters()}


def _buffers(module):
    return {n: b.detach().clone() for n, b in module.named_buffers() if b is not None}


def _folder_files(folder):
    """The files of a folder (regular files only), as bytes."""
    files = {}
    if folder and os.path.isdir(folder):
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as f:
                    files[name] = f.read()
    return files


# ------------------------------------------------------------------ tasks 1-2 where a call is not enough

def quantize_views(w, blocksize):
    """quantize_nf4 of a transposed (non-contiguous) view of w; and w as left afterwards."""
    import qlora
    packed, absmax = qlora.quantize_nf4(w.t(), blocksize)
    return {"packed": packed, "absmax": absmax, "w_after": w}


def nf4_on_meta(shape, blocksize, dtype, step):
    """quantize_nf4 (``step="quantize"``) or dequantize_nf4 on the meta device: the devices, dtypes
    and shapes of the results."""
    import qlora
    if step == "quantize":
        packed, absmax = qlora.quantize_nf4(torch.empty(shape, device="meta", dtype=dtype), blocksize)
        found = {"packed": packed, "absmax": absmax}
    else:
        n = 1
        for size in shape:
            n *= size
        packed = torch.empty(n // 2, dtype=torch.uint8, device="meta")
        absmax = torch.empty(n // blocksize, dtype=torch.float32, device="meta")
        found = {"dequantized": qlora.dequantize_nf4(packed, absmax, shape, blocksize, dtype)}
    return {name: [str(t.device), t.dtype, list(t.shape)] for name, t in found.items()}


# ------------------------------------------------------------------ layers

def linear4bit_state(weight, bias, blocksize, double_quant, compute_dtype, transposed=False, linear_dtype=None):
    """Linear4bit.from_linear: its buffers, parameters, state dict keys, memory_bytes, dequantised
    weight, and the nn.Linear as from_linear left it. ``transposed``: the linear's weight is a
    non-contiguous view (``weight`` is then given as (in, out))."""
    import qlora
    if transposed:
        linear = _linear(weight.t().contiguous(), bias, linear_dtype)
        linear.weight = torch.nn.Parameter(weight.to(linear.weight.dtype).t())
    else:
        linear = _linear(weight, bias, linear_dtype)
    layer = qlora.Linear4bit.from_linear(linear, blocksize=blocksize, double_quant=double_quant,
                                         compute_dtype=compute_dtype)
    with torch.no_grad():
        dequantized = layer.dequantized_weight()
    return {"buffers": _buffers(layer),
            "parameters": [name for name, _ in layer.named_parameters()],
            "state_dict": sorted(layer.state_dict()),
            "memory_bytes": layer.memory_bytes(),
            "weight": dequantized,
            "linear_after": {"weight": linear.weight.detach().clone(),
                             "bias": None if linear.bias is None else linear.bias.detach().clone()}}


def linear4bit_forward_backward(weight, bias, x, grad_out, double_quant, compute_dtype):
    """Forward and backward through Linear4bit: output, dequantised weight, dL/dx, x as the forward
    left it, and every parameter's and buffer's grad and requires_grad as the layer holds them."""
    import qlora
    layer = qlora.Linear4bit.from_linear(_linear(weight, bias), double_quant=double_quant,
                                         compute_dtype=compute_dtype)
    x = x.clone().requires_grad_(True)
    out = layer(x)
    (out.float() * grad_out.float()).sum().backward()
    with torch.no_grad():
        dequantized = layer.dequantized_weight()
    tensors = dict(layer.named_parameters())
    tensors.update({n: b for n, b in layer.named_buffers() if b is not None})
    return {"out": out.detach(), "weight": dequantized, "x_grad": x.grad, "x_after": x.detach(),
            "grads": {n: t.grad for n, t in tensors.items()},
            "requires_grad": {n: t.requires_grad for n, t in tensors.items()}}


def layers_on_meta(in_features, out_features, r, alpha, compute_dtype, x_dtype):
    """Linear4bit (no double quantisation) and QLoRALinear built and run on the meta device."""
    import qlora
    linear = torch.nn.Linear(in_features, out_features, bias=True, device="meta")
    base = qlora.Linear4bit.from_linear(linear, double_quant=False, compute_dtype=compute_dtype)
    x = torch.empty(3, in_features, device="meta", dtype=x_dtype)
    out = base(x)
    layer = qlora.QLoRALinear(base, r, alpha)
    lora_out = layer(x)
    found = {"base_out": out, "lora_out": lora_out, "dequantized": base.dequantized_weight()}
    found.update({f"buffer {n}": b for n, b in base.named_buffers() if b is not None})
    found.update({f"parameter {n}": p for n, p in layer.named_parameters()})
    return {name: [str(t.device), t.dtype, list(t.shape)] for name, t in found.items()}


def qlora_linear_init(weight, x, r, alpha, compute_dtype, seed):
    """A fresh QLoRALinear: its parameters, A, B, and its output next to its base's."""
    import qlora
    base = qlora.Linear4bit.from_linear(_linear(weight, None), compute_dtype=compute_dtype)
    torch.manual_seed(seed)
    layer = qlora.QLoRALinear(base, r, alpha)
    with torch.no_grad():
        out, base_out = layer(x), base(x)
    return {"parameters": _parameters(layer),
            "A": layer.lora_A.weight.detach(), "B": layer.lora_B.weight.detach(),
            "out": out, "base_out": base_out}


def qlora_linear_forward_backward(weight, x, r, alpha, A, B, grad_out, compute_dtype=torch.float32):
    """QLoRALinear with given A and B (no double quantisation): output, base output, grads of A, B, x."""
    import qlora
    base = qlora.Linear4bit.from_linear(_linear(weight, None), double_quant=False, compute_dtype=compute_dtype)
    layer = qlora.QLoRALinear(base, r, alpha)
    with torch.no_grad():
        layer.lora_A.weight.copy_(A)
        layer.lora_B.weight.copy_(B)
    x = x.clone().requires_grad_(True)
    out = layer(x)
    (out.float() * grad_out.float()).sum().backward()
    with torch.no_grad():
        base_out = base(x)
    return {"out": out.detach(), "base_out": base_out, "x_grad": x.grad, "x_after": x.detach(),
            "A_grad": layer.lora_A.weight.grad, "B_grad": layer.lora_B.weight.grad}


def _lora_output(module, x, B):
    """One QLoRALinear of a model: its A, and its output and its base's for x after setting B."""
    with torch.no_grad():
        module.lora_B.weight.copy_(B)
        return {"A": module.lora_A.weight.detach().clone(), "out": module(x), "base_out": module.base(x)}


def quantize_tiny_llama(cfg, kwargs, dtype=torch.bfloat16, probe_layer=None, x=None, B=None):
    """quantize_model(model, **kwargs) on a tiny Llama in ``dtype``: the returned report, every
    module's type name, every parameter's shape/dtype/requires_grad, each replaced layer's buffers
    and the dtype of its dequantised weight; with ``probe_layer``, that layer's LoRA output for x."""
    import qlora
    model = _tiny_llama(cfg, dtype)
    linears = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    if "skip" in kwargs:
        kwargs = dict(kwargs, skip=tuple(kwargs["skip"]))
    returned = qlora.quantize_model(model, **kwargs)
    model, report = returned if isinstance(returned, tuple) and len(returned) == 2 else (returned, None)
    modules = dict(model.named_modules())
    layers = {}
    for name in linears:
        base = getattr(modules.get(name), "base", modules.get(name))
        if base is not None and hasattr(base, "dequantized_weight"):
            with torch.no_grad():
                layers[name] = {"buffers": _buffers(base), "weight_dtype": base.dequantized_weight().dtype}
    out = {"report": report, "types": {n: type(m).__name__ for n, m in modules.items()},
           "parameters": _parameters(model), "layers": layers}
    if probe_layer is not None:
        out["probe"] = _lora_output(modules[probe_layer], x, B)
    return out


# ------------------------------------------------------------------ training on the CPU

def course_training_steps(cfg, texts, steps, lr, r, alpha):
    """The QLoRA idea by hand: quantize_model(r) on a fresh float32 Llama, then AdamW steps.

    Returns the losses, each parameter's gradient (sum of absolute values, or None) at each step,
    requires_grad flags, and the model's frozen parameters, buffers and LoRA matrices before and
    after training.
    """
    import qlora
    tokenizer, _ = _tokenizer()
    model = _tiny_llama(cfg, dtype=torch.float32)
    model, _ = qlora.quantize_model(model, r=r, alpha=alpha)
    buffers_before = _buffers(model)
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    batch = tokenizer(list(texts), return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr) if params else None
    model.train()
    losses, grads = [], []
    for _ in range(steps):
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss
        loss.backward()
        grads.append({n: None if p.grad is None else float(p.grad.abs().sum())
                      for n, p in model.named_parameters()})
        if optimizer is not None:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    return {
        "losses": losses,
        "grads": grads,
        "parameters": _parameters(model),
        "frozen_before": frozen_before,
        "frozen_after": {n: p.detach().clone() for n, p in model.named_parameters() if n in frozen_before},
        "buffers_before": buffers_before,
        "buffers_after": _buffers(model),
        "lora": {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n},
    }


def load_course_backend(cfg, texts, r, alpha, probe_layer, x, B):
    """load_for_training(backend="course") of a saved bfloat16 tiny Llama, then one training step
    with a forward pre-hook on every decoder layer's attention: the model's parameters and buffers,
    how often each attention was entered (checkpointing runs a layer's forward again in the
    backward pass), and one layer's LoRA output."""
    import qlora
    tokenizer, _ = _tokenizer()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = _save_tiny_llama(cfg, os.path.join(tmp, "model"))
        model = qlora.load_for_training(model_dir, "course", r, alpha, torch.device("cpu"))
        calls = {}
        modules = dict(model.named_modules())
        for name in (f"model.layers.{i}.self_attn" for i in range(cfg["layers"])):
            calls[name] = 0
            modules[name].register_forward_pre_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
        buffers = _buffers(model)
        batch = tokenizer(list(texts), return_tensors="pt", padding=True)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        model.train()
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss
        loss.backward()
        return {"parameters": _parameters(model), "buffers": buffers, "layer_calls": dict(calls),
                "loss": float(loss.detach()), "probe": _lora_output(modules[probe_layer], x, B)}


def load_bf16_backend(cfg, texts, r, alpha, probe_layer, x, seed):
    """load_for_training(backend="bf16") of a saved bfloat16 tiny Llama (peft's LoRA, no
    quantisation: it runs on the CPU), then one training step with a forward pre-hook on every
    decoder layer's attention: the parameters, how often each attention was entered, and one
    adapted layer's output next to its base layer's for x after setting its B to values drawn from
    ``seed`` in B's own shape (peft's module names: ``base_model.model.<layer>`` holds
    ``base_layer``, ``lora_A.default``, ``lora_B.default``)."""
    import qlora
    tokenizer, _ = _tokenizer()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = _save_tiny_llama(cfg, os.path.join(tmp, "model"))
        model = qlora.load_for_training(model_dir, "bf16", r, alpha, torch.device("cpu"))
        modules = dict(model.named_modules())
        calls = {}
        for name in (n for n in modules if n.endswith(".self_attn")):
            calls[name] = 0
            modules[name].register_forward_pre_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
        batch = tokenizer(list(texts), return_tensors="pt", padding=True)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        model.train()
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss
        loss.backward()
        layer = modules["base_model.model." + probe_layer]
        with torch.no_grad():
            lora_B = layer.lora_B["default"].weight
            lora_B.copy_(torch.randn(lora_B.shape, generator=torch.Generator().manual_seed(seed)) * 0.1)
            xs = x.to(layer.base_layer.weight.dtype)
            probe = {"A": layer.lora_A["default"].weight.detach().clone(), "B": lora_B.detach().clone(),
                     "x": xs, "out": layer(xs), "base_out": layer.base_layer(xs)}
        return {"parameters": _parameters(model), "layer_calls": dict(calls), "loss": float(loss.detach()),
                "probe": probe}


def save_course_adapter(cfg, r, alpha, seed, base_model):
    """save_adapter(backend="course") without training: quantize_model(r, alpha) on a float32 tiny
    Llama, every B set from ``seed``, then saved twice: into a folder that already exists and into
    one whose parent folders do not exist yet. The folders it returned and was given, their files
    as bytes, and the model's LoRA matrices."""
    import qlora
    model, _ = qlora.quantize_model(_tiny_llama(cfg, torch.float32), r=r, alpha=alpha)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    lora = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    saved = {}
    with tempfile.TemporaryDirectory() as tmp:
        existing = os.path.join(tmp, "existing")
        os.makedirs(existing)
        nested = os.path.join(tmp, "new", "nested", "adapter")
        for case, folder in (("existing", existing), ("nested", nested)):
            returned = qlora.save_adapter(model, folder, "course", r=r, alpha=alpha, base_model=base_model)
            saved[case] = {"given": os.path.realpath(folder),
                           "returned": os.path.realpath(str(returned)) if returned is not None else "",
                           "files": _folder_files(folder)}
    return {"saved": saved, "lora": lora}


def load_unknown_backend(cfg, backend):
    """load_for_training of a saved tiny Llama with a backend name the docstring does not list."""
    import qlora
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = _save_tiny_llama(cfg, os.path.join(tmp, "model"))
        qlora.load_for_training(model_dir, backend, 4, 8, torch.device("cpu"))
    return None


def train_course_backend(cfg, texts, steps, lr, r, alpha, batch_size, seq_len):
    """train_qlora(backend="course") on the CPU: its result, the folder it returned and the one it
    was given, and the files of the adapter folder as bytes."""
    import qlora
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = _save_tiny_llama(cfg, os.path.join(tmp, "model"))
        out_dir = os.path.join(tmp, "adapter")
        result = qlora.train_qlora(model_dir, list(texts), output_dir=out_dir, backend="course", steps=steps,
                                   r=r, alpha=alpha, lr=lr, batch_size=batch_size, seq_len=seq_len, seed=0,
                                   device="cpu")
        result = dict(result) if isinstance(result, dict) else {"not_a_dict": type(result).__name__}
        adapter_dir = str(result.pop("adapter_dir", ""))
        return {"result": result, "adapter_dir": adapter_dir, "output_dir": out_dir,
                "adapter_dir_real": os.path.realpath(adapter_dir) if adapter_dir else "",
                "output_dir_real": os.path.realpath(out_dir), "files": _folder_files(adapter_dir)}


# ------------------------------------------------------------------ the real stack, on a GPU

def bitsandbytes_environment():
    """Why the bitsandbytes CUDA stack cannot run here, in words; None when it can."""
    if not torch.cuda.is_available():
        return "CUDA is not available in the grading worker"
    try:
        import bitsandbytes
        import bitsandbytes.functional as bnb_functional
        from bitsandbytes import cextension
    except Exception as exc:  # not installed, or broken
        return f"bitsandbytes cannot be imported on this GPU machine ({type(exc).__name__}: {exc}); install 'course[gpu]'"
    lib = getattr(cextension, "lib", None)
    if not getattr(lib, "compiled_with_cuda", False):
        return (f"bitsandbytes {bitsandbytes.__version__} has no CUDA build matching torch "
                f"{torch.__version__} (CUDA {torch.version.cuda}): its native library did not load for CUDA")
    try:
        probe = torch.randn(64, 64, device="cuda", dtype=torch.bfloat16)
        packed, state = bnb_functional.quantize_4bit(probe, quant_type="nf4")
        bnb_functional.dequantize_4bit(packed, state)
        torch.cuda.synchronize()
    except Exception as exc:
        return f"bitsandbytes' CUDA NF4 kernels fail on this GPU ({type(exc).__name__}: {exc})"
    return None


def nf4_on_cuda(w, blocksize):
    """Tasks 1-3 on CUDA: quantise, dequantise, and a QLoRALinear forward; each result's device."""
    import qlora
    packed, absmax = qlora.quantize_nf4(w.to("cuda"), blocksize)
    dequantized = qlora.dequantize_nf4(packed, absmax, list(w.shape), blocksize, torch.bfloat16)
    q, scales, offset = qlora.double_quantize(absmax)
    back = qlora.double_dequantize(q, scales, offset)
    base = qlora.Linear4bit.from_linear(_linear(w, None).to("cuda"), blocksize=blocksize)
    layer = qlora.QLoRALinear(base, 4, 8)
    out = layer(torch.ones(2, w.shape[1], device="cuda"))
    found = {"packed": packed, "absmax": absmax, "dequantized": dequantized, "q": q, "scales": scales,
             "double_dequantized": back, "layer_out": out, "dequantized_weight": base.dequantized_weight()}
    found.update({f"buffer {n}": b for n, b in base.named_buffers() if b is not None})
    found.update({f"parameter {n}": p for n, p in layer.named_parameters()})
    return {"devices": {name: str(t.device) for name, t in found.items()},
            "packed": packed.cpu(), "absmax": absmax.cpu(), "dequantized": dequantized.cpu()}


def _free_cuda():
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.synchronize()


def gpu_qlora_run(cfg, texts, steps, lr, r, alpha, batch_size, seq_len):
    """train_qlora(backend="bitsandbytes") on CUDA: its result, the allocator's peak over the run
    (torch.cuda.max_memory_allocated, reset just before), and the adapter folder's files as bytes."""
    problem = bitsandbytes_environment()
    if problem:
        return {"environment": problem}
    import qlora
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = _save_tiny_llama(cfg, os.path.join(tmp, "model"))
        _free_cuda()
        torch.cuda.reset_peak_memory_stats()
        result = qlora.train_qlora(model_dir, list(texts), output_dir=os.path.join(tmp, "adapter"),
                                   backend="bitsandbytes", steps=steps, r=r, alpha=alpha, lr=lr,
                                   batch_size=batch_size, seq_len=seq_len, seed=0, device="cuda")
        torch.cuda.synchronize()
        peak = int(torch.cuda.max_memory_allocated())
        result = dict(result)
        adapter_dir = str(result.pop("adapter_dir", ""))
        files = _folder_files(adapter_dir)
        _free_cuda()
    return {"environment": None, "result": result, "qlora_peak": peak, "files": files}

"""Probes for `qlora`: they run next to the student's code and return data only.

No expected values and no asserts here: the tests in this folder decide. The probes that train
build a fresh model every time and never run a forward pass before training (see the README's
note on bitsandbytes' CPU repacking), so no state leaks from one check into the next.
"""

import gc
import json
import os
import tempfile
import threading

import torch


# ------------------------------------------------------------------ models

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


# ------------------------------------------------------------------ layers

def linear4bit_state(weight, bias, blocksize, double_quant, compute_dtype):
    """Linear4bit.from_linear: its buffers, parameters, memory_bytes and dequantised weight."""
    import qlora
    layer = qlora.Linear4bit.from_linear(_linear(weight, bias), blocksize=blocksize, double_quant=double_quant,
                                         compute_dtype=compute_dtype)
    with torch.no_grad():
        dequantized = layer.dequantized_weight()
    return {"buffers": {name: b for name, b in layer.named_buffers()},
            "parameters": [name for name, _ in layer.named_parameters()],
            "memory_bytes": layer.memory_bytes(),
            "weight": dequantized,
            "is_module": isinstance(layer, torch.nn.Module)}


def linear4bit_forward_backward(weight, bias, x, grad_out, double_quant, compute_dtype):
    """Forward and backward through Linear4bit: output, dequantised weight, dL/dx, and who has grads."""
    import qlora
    layer = qlora.Linear4bit.from_linear(_linear(weight, bias), double_quant=double_quant,
                                         compute_dtype=compute_dtype)
    x = x.clone().requires_grad_(True)
    out = layer(x)
    (out.float() * grad_out.float()).sum().backward()
    with torch.no_grad():
        dequantized = layer.dequantized_weight()
    tensors = dict(layer.named_parameters())
    tensors.update(dict(layer.named_buffers()))
    return {"out": out.detach(), "weight": dequantized, "x_grad": x.grad,
            "with_grad": sorted(n for n, t in tensors.items() if t is not None and t.grad is not None),
            "requires_grad": sorted(n for n, t in tensors.items() if t is not None and t.requires_grad)}


def qlora_linear_init(weight, x, r, alpha, compute_dtype, seed):
    """A fresh QLoRALinear: trainable names, A, B, scaling, dtypes, and its output next to its base's."""
    import qlora
    base = qlora.Linear4bit.from_linear(_linear(weight, None), compute_dtype=compute_dtype)
    torch.manual_seed(seed)
    layer = qlora.QLoRALinear(base, r, alpha)
    with torch.no_grad():
        out, base_out = layer(x), base(x)
    return {"trainable": sorted(n for n, p in layer.named_parameters() if p.requires_grad),
            "all_parameters": sorted(n for n, _ in layer.named_parameters()),
            "A": layer.lora_A.weight.detach(), "B": layer.lora_B.weight.detach(),
            "A_dtype": layer.lora_A.weight.dtype, "B_dtype": layer.lora_B.weight.dtype,
            "out": out, "base_out": base_out}


def qlora_linear_forward_backward(weight, x, r, alpha, A, B, grad_out):
    """QLoRALinear (float32) with given A and B: output, base output, and grads of A, B and x."""
    import qlora
    base = qlora.Linear4bit.from_linear(_linear(weight, None), double_quant=False, compute_dtype=torch.float32)
    layer = qlora.QLoRALinear(base, r, alpha)
    with torch.no_grad():
        layer.lora_A.weight.copy_(A)
        layer.lora_B.weight.copy_(B)
    x = x.clone().requires_grad_(True)
    out = layer(x)
    (out * grad_out).sum().backward()
    with torch.no_grad():
        base_out = base(x)
    return {"out": out.detach(), "base_out": base_out, "x_grad": x.grad,
            "A_grad": layer.lora_A.weight.grad, "B_grad": layer.lora_B.weight.grad}


def quantize_tiny_llama(cfg, skip, r, alpha):
    """quantize_model on a tiny bfloat16 Llama: the report, and the same figures measured here."""
    import qlora
    model = _tiny_llama(cfg)
    linears = {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    weight_bytes = {name: sum(p.numel() * p.element_size() for p in m.parameters()) for name, m in linears.items()}
    kwargs = {} if skip is None else {"skip": tuple(skip)}
    returned = qlora.quantize_model(model, r=r, alpha=alpha, **kwargs)
    model, report = returned if isinstance(returned, tuple) else (returned, None)
    modules = dict(model.named_modules())
    types = {name: type(modules[name]).__name__ for name in linears if name in modules}
    stored = {}
    for name in linears:
        module = modules.get(name)
        base = getattr(module, "base", module)
        if type(base).__name__ == "Linear4bit":
            stored[name] = sum(b.numel() * b.element_size() for b in base.buffers())
    return {"report": report, "types": types, "weight_bytes": weight_bytes, "stored_bytes": stored,
            "trainable": sorted(n for n, p in model.named_parameters() if p.requires_grad),
            "float_linears": sorted(n for n, m in model.named_modules()
                                    if isinstance(m, torch.nn.Linear) and not n.endswith(("lora_A", "lora_B")))}


# ------------------------------------------------------------------ training on the CPU

def course_training_steps(cfg, texts, steps, lr, r, alpha):
    """The QLoRA idea by hand: quantize_model(r) on a fresh float32 Llama, then AdamW steps.

    Returns the losses, which parameters had gradients at each step, which require them, and
    how many stored (quantised) buffers changed.
    """
    import qlora
    tokenizer, _ = _tokenizer()
    model = _tiny_llama(cfg, dtype=torch.float32)
    model, _ = qlora.quantize_model(model, r=r, alpha=alpha)
    stored = {name: b.detach().clone() for name, b in model.named_buffers()
              if b is not None and b.dtype == torch.uint8}
    floats_before = {name: b.detach().clone() for name, b in model.named_buffers()
                     if b is not None and b.dtype != torch.uint8 and "rotary" not in name}
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    batch = tokenizer(list(texts), return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr) if params else None
    model.train()
    losses, grads_per_step = [], []
    for _ in range(steps):
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss
        loss.backward()
        grads_per_step.append(sorted(n for n, p in model.named_parameters()
                                     if p.grad is not None and bool(p.grad.abs().sum() > 0)))
        if optimizer is not None:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    after = dict(model.named_buffers())
    return {
        "losses": losses,
        "grads_per_step": grads_per_step,
        "requires_grad": sorted(n for n, p in model.named_parameters() if p.requires_grad),
        "lora_parameters": sorted(n for n, _ in model.named_parameters() if "lora_" in n),
        "stored_buffers": len(stored),
        "stored_changed": sorted(n for n, b in stored.items() if not torch.equal(b, after[n])),
        "float_buffers_changed": sorted(n for n, b in floats_before.items() if not torch.equal(b, after[n])),
        "frozen_changed": sorted(n for n, p in model.named_parameters()
                                 if n in frozen_before and not torch.equal(p.detach(), frozen_before[n])),
    }


def _adapter_files(adapter_dir):
    files = sorted(os.listdir(adapter_dir)) if os.path.isdir(adapter_dir) else []
    config = None
    if "adapter_config.json" in files:
        with open(os.path.join(adapter_dir, "adapter_config.json"), encoding="utf-8") as f:
            config = json.load(f)
    return files, config


def _peft_reload(base, adapter_dir):
    """Load the adapter with peft: per LoRA layer, whether it equals the file and B is non-zero."""
    from peft import PeftModel
    from safetensors.torch import load_file
    saved = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    model = PeftModel.from_pretrained(base, adapter_dir)
    matched, nonzero_b, layers = 0, 0, 0
    for name, module in model.named_modules():
        if hasattr(module, "lora_A") and hasattr(module.lora_A, "keys") and "default" in module.lora_A:
            layers += 1
            key = name.replace(".base_layer", "")
            a = module.lora_A["default"].weight.detach().cpu()
            b = module.lora_B["default"].weight.detach().cpu()
            file_a, file_b = saved.get(f"{key}.lora_A.weight"), saved.get(f"{key}.lora_B.weight")
            if file_a is not None and file_b is not None and torch.equal(a, file_a.to(a.dtype)) \
                    and torch.equal(b, file_b.to(b.dtype)):
                matched += 1
            nonzero_b += bool(b.abs().sum() > 0)
    return model, {"peft_layers": layers, "matched": matched, "nonzero_B": nonzero_b, "saved_tensors": len(saved)}


def _watch_training(qlora):
    """Wrap load_for_training and save_adapter (train_qlora calls both) to see the trained model:
    what requires grad, which parameters received gradients, and the stored codes at the end."""
    seen = {"loaded": False, "saved": False, "grad_received": set()}
    load, save = qlora.load_for_training, qlora.save_adapter

    def watched_load(*args, **kwargs):
        model = load(*args, **kwargs)
        seen["loaded"] = True
        seen["requires_grad"] = sorted(n for n, p in model.named_parameters() if p.requires_grad)
        seen["lora"] = sorted(n for n, _ in model.named_parameters() if "lora_" in n)
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.register_post_accumulate_grad_hook(lambda t, name=name: seen["grad_received"].add(name))
        return model

    def watched_save(model, *args, **kwargs):
        seen["saved"] = True
        seen["codes"] = {name: m.packed.detach().clone() for name, m in model.named_modules()
                         if isinstance(m, qlora.Linear4bit)}
        return save(model, *args, **kwargs)

    qlora.load_for_training, qlora.save_adapter = watched_load, watched_save
    return seen, (load, save)


def train_course_backend(cfg, texts, steps, lr, r, alpha, batch_size, seq_len, watch=False):
    """train_qlora(backend="course") on the CPU, then the adapter reloaded with peft onto the base.

    With ``watch``: also what the trained model looked like (see _watch_training), and the base
    model's linear weights as saved (bfloat16), for the tests to quantise with bitsandbytes.
    """
    import qlora
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = _save_tiny_llama(cfg, os.path.join(tmp, "model"))
        out_dir = os.path.join(tmp, "adapter")
        seen, originals = _watch_training(qlora) if watch else (None, None)
        try:
            result = qlora.train_qlora(model_dir, list(texts), output_dir=out_dir, backend="course", steps=steps,
                                       r=r, alpha=alpha, lr=lr, batch_size=batch_size, seq_len=seq_len, seed=0,
                                       device="cpu")
        finally:
            if originals:
                qlora.load_for_training, qlora.save_adapter = originals
        if watch:
            weights = load_file(os.path.join(model_dir, "model.safetensors"))
            seen["grad_received"] = sorted(seen["grad_received"])
            seen["base_weights"] = {k[:-len(".weight")]: v for k, v in weights.items()
                                    if k.endswith("_proj.weight")}
            return {"watch": seen, "losses": result.get("losses") if isinstance(result, dict) else None}
        result = dict(result) if isinstance(result, dict) else {"not_a_dict": type(result).__name__}
        adapter_dir = str(result.pop("adapter_dir", ""))
        files, config = _adapter_files(adapter_dir)
        reload = None
        if "adapter_model.safetensors" in files and config is not None:
            base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
            _, reload = _peft_reload(base, adapter_dir)
        keep = ("r", "lora_alpha", "target_modules", "peft_type")
        return {"result": result, "adapter_inside_output_dir": os.path.realpath(adapter_dir) == os.path.realpath(out_dir),
                "files": files, "config": {k: config.get(k) for k in keep} if config else None, "reload": reload}


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


class _PeakSampler:
    """Samples torch.cuda.memory_allocated() from a thread while a run is in progress."""

    def __init__(self, interval=0.002):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    def _loop(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, int(torch.cuda.memory_allocated()))
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, int(torch.cuda.memory_allocated()))


def _free_cuda():
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.synchronize()


def _bf16_lora_baseline(model_dir, texts, steps, r, alpha, lr, batch_size, seq_len):
    """The same run with bf16 LoRA (peft, gradient checkpointing), written here: its peak memory."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = [tokenizer(t, add_special_tokens=False)["input_ids"][:seq_len] for t in texts]
    _free_cuda()
    torch.cuda.reset_peak_memory_stats()   # loading counts, as it does for the QLoRA run
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).to("cuda")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, target_modules="all-linear",
                                             lora_dropout=0.0, task_type="CAUSAL_LM"))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for step in range(steps):
        picked = [rows[(step * batch_size + i) % len(rows)] for i in range(batch_size)]
        width = min(len(row) for row in picked)
        ids = torch.tensor([row[:width] for row in picked], device="cuda")
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    peak = int(torch.cuda.max_memory_allocated())
    del model, optimizer
    _free_cuda()
    return peak


def gpu_qlora_run(cfg, texts, steps, lr, r, alpha, batch_size, seq_len, baseline=False, reload=False):
    """train_qlora(backend="bitsandbytes") on CUDA; optionally the bf16 LoRA baseline and a peft reload.

    Peak memory is measured here (torch.cuda.max_memory_allocated around each run), next to what
    train_qlora reports.
    """
    problem = bitsandbytes_environment()
    if problem:
        return {"environment": problem}
    import qlora
    out = {"environment": None}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = _save_tiny_llama(cfg, os.path.join(tmp, "model"))
        if baseline:
            out["bf16_peak"] = _bf16_lora_baseline(model_dir, texts, steps, r, alpha, lr, batch_size, seq_len)
        _free_cuda()
        torch.cuda.reset_peak_memory_stats()
        with _PeakSampler() as sampler:
            result = qlora.train_qlora(model_dir, list(texts), output_dir=os.path.join(tmp, "adapter"),
                                       backend="bitsandbytes", steps=steps, r=r, alpha=alpha, lr=lr,
                                       batch_size=batch_size, seq_len=seq_len, seed=0, device="cuda")
            torch.cuda.synchronize()
        # the allocator's peak, floored by sampling (a reset inside train_qlora cannot hide memory)
        out["qlora_peak"] = max(int(torch.cuda.max_memory_allocated()), sampler.peak)
        result = dict(result)
        adapter_dir = str(result.pop("adapter_dir", ""))
        out["result"] = result
        _free_cuda()
        if reload:
            out["files"], config = _adapter_files(adapter_dir)
            out["config"] = {k: config.get(k) for k in ("r", "lora_alpha", "peft_type")} if config else None
            out["reload"] = _fresh_4bit_reload(model_dir, adapter_dir, texts)
    return out


def _fresh_4bit_reload(model_dir, adapter_dir, texts):
    """A fresh 4-bit base (bitsandbytes), the adapter loaded onto it with peft, and a forward pass."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids = torch.tensor([tokenizer(texts[0], add_special_tokens=False)["input_ids"][:64]], device="cuda")
    base = AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=quant, dtype=torch.bfloat16,
                                                device_map={"": "cuda"})
    four_bit = sum(type(m).__name__ == "Linear4bit" for m in base.modules())
    with torch.no_grad():
        base_logits = base(input_ids=ids).logits.float()
    model, info = _peft_reload(base, adapter_dir)
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()
    info.update({"four_bit_layers": four_bit, "finite": bool(torch.isfinite(logits).all()),
                 "changed": float((logits - base_logits).abs().max())})
    return info

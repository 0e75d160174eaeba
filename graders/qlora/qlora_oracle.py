"""The trusted side's oracles for the hidden qlora tests (they run in the test process, never in
the worker).

* NF4: the public tests' ``nf4_oracle`` (assignments/qlora/tests/nf4_oracle.py), loaded from the
  instructor's copy so that public and hidden tests share one oracle: bitsandbytes' table and
  quantisation, and a dequantisation that does not depend on the machine's CPU (see that file).
* Models: the probes' tiny Llama rebuilt here from its seed (the worker's copy is never trusted),
  optionally with its projections replaced by their NF4 round trip.
* Adapters: the files a submission saved come back as bytes; they are parsed here and loaded with
  peft onto the trusted side's own base model, and the trusted side measures what they do.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import tempfile
from pathlib import Path

import torch

PUBLIC_TESTS = Path(__file__).resolve().parents[2] / "assignments" / "qlora" / "tests"


def _load_nf4_oracle():
    if "nf4_oracle" in sys.modules:
        return sys.modules["nf4_oracle"]
    path = PUBLIC_TESTS / "nf4_oracle.py"
    if not path.is_file():
        raise ImportError(f"{path}: the NF4 oracle shared with the public tests is missing "
                          "(graders/qlora expects assignments/qlora/tests beside it, as in the course folder)")
    spec = importlib.util.spec_from_file_location("nf4_oracle", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["nf4_oracle"] = module
    spec.loader.exec_module(module)
    return module


nf4 = _load_nf4_oracle()


# ------------------------------------------------------------------ models and adapters, trusted side

def tiny_llama(cfg, dtype=torch.float32, nf4_weights=False):
    """The probes' tiny Llama, built here (same seed, same weights); with ``nf4_weights`` every
    projection's weight is replaced by its NF4 round trip (bitsandbytes' codes, dequantised)."""
    import probes
    model = probes._tiny_llama(cfg, dtype)
    if nf4_weights:
        with torch.no_grad():
            for name, module in model.named_modules():
                if isinstance(module, torch.nn.Linear) and name.endswith("_proj"):
                    packed, absmax = nf4.quantize(module.weight.detach(), 64)
                    module.weight.copy_(nf4.dequantize(packed, absmax, module.weight.shape, 64, torch.float32))
    return model.eval()


def tokenizer():
    import probes
    return probes._tokenizer()[0]


def lm_loss(model, texts):
    """Mean next-token loss of ``model`` on ``texts`` (pads not counted), without gradients."""
    batch = tokenizer()(list(texts), return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    model.eval()
    with torch.no_grad():
        return float(model(input_ids=batch["input_ids"].to(model.device),
                           attention_mask=batch["attention_mask"].to(model.device),
                           labels=labels.to(model.device)).loss)


class AdapterProblem(AssertionError):
    """The adapter files cannot be read or loaded by peft (a failure of the submission)."""


def read_adapter(files):
    """(config dict, tensors) from an adapter folder's files (bytes), parsed here."""
    from safetensors.torch import load as load_safetensors
    missing = {"adapter_config.json", "adapter_model.safetensors"} - set(files or {})
    if missing:
        raise AdapterProblem(f"the adapter folder lacks {sorted(missing)}; it holds {sorted(files or {})}")
    try:
        config = json.loads(files["adapter_config.json"].decode("utf-8"))
        tensors = load_safetensors(files["adapter_model.safetensors"])
    except Exception as exc:
        raise AdapterProblem(f"the adapter files cannot be read ({type(exc).__name__})") from None
    if not isinstance(config, dict):
        raise AdapterProblem("adapter_config.json does not hold a JSON object")
    _check_patterns(config)
    return config, tensors


_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.]{1,200}")


def _check_patterns(config):
    """peft matches some config values as regular expressions against module names: only plain
    names are accepted here, so that no file can make this process backtrack for hours."""
    for key in ("target_modules", "exclude_modules"):
        value = config.get(key)
        if value is None or value == "all-linear":
            continue
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, list) or len(names) > 1000 or not all(
                isinstance(n, str) and _PLAIN_NAME.fullmatch(n) for n in names):
            raise AdapterProblem(f"adapter_config.json: {key} must be a list of layer names")
    for key in ("rank_pattern", "alpha_pattern"):
        if config.get(key) not in (None, {}):
            raise AdapterProblem(f"adapter_config.json: {key} is not used by this assignment (leave it empty)")
    if config.get("layers_pattern") not in (None, "", []):
        raise AdapterProblem("adapter_config.json: layers_pattern is not used by this assignment (leave it empty)")


def load_adapter(base, files):
    """peft's PeftModel.from_pretrained(base, folder) on a folder written here from the files.

    Returns the model and, per LoRA layer peft built: whether its A and B are the file's tensors
    and whether B is non-zero (computed here)."""
    from peft import PeftModel
    config, tensors = read_adapter(files)
    with tempfile.TemporaryDirectory(prefix="qlora-adapter-") as folder:
        (Path(folder) / "adapter_config.json").write_text(json.dumps(config), encoding="utf-8")
        (Path(folder) / "adapter_model.safetensors").write_bytes(files["adapter_model.safetensors"])
        try:
            model = PeftModel.from_pretrained(base, folder)
        except Exception as exc:
            raise AdapterProblem(f"peft cannot load the adapter onto the base model "
                                 f"({type(exc).__name__}: {str(exc)[:200]})") from None
    layers = {}
    for name, module in model.named_modules():
        if hasattr(module, "lora_A") and hasattr(module.lora_A, "keys") and "default" in module.lora_A:
            key = name.replace(".base_layer", "")
            a = module.lora_A["default"].weight.detach().cpu()
            b = module.lora_B["default"].weight.detach().cpu()
            file_a, file_b = tensors.get(f"{key}.lora_A.weight"), tensors.get(f"{key}.lora_B.weight")
            layers[key] = {
                "A_from_file": file_a is not None and file_a.shape == a.shape and torch.equal(a, file_a.to(a.dtype)),
                "B_from_file": file_b is not None and file_b.shape == b.shape and torch.equal(b, file_b.to(b.dtype)),
                "B_nonzero": bool(b.abs().sum() > 0)}
    return model.eval(), {"config": config, "tensors": len(tensors), "layers": layers}


def adapter_files_from_lora(lora, r, alpha, targets):
    """peft-format adapter files for LoRA matrices named like a model's parameters
    (``model.layers.0.self_attn.q_proj.lora_A.weight``), written here by peft's own LoraConfig."""
    from peft import LoraConfig
    from safetensors.torch import save
    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=sorted(targets), lora_dropout=0.0,
                        task_type="CAUSAL_LM")
    with tempfile.TemporaryDirectory(prefix="qlora-config-") as folder:
        config.save_pretrained(folder)
        config_bytes = (Path(folder) / "adapter_config.json").read_bytes()
    tensors = {f"base_model.model.{k}": v.detach().float().contiguous() for k, v in lora.items()}
    return {"adapter_config.json": config_bytes, "adapter_model.safetensors": save(tensors)}


# ------------------------------------------------------------------ the real stack (GPU tests), trusted side

def _free(device):
    import gc
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.synchronize(device)


def bf16_lora_peak(cfg, texts, steps, r, alpha, lr, batch_size, seq_len, device="cuda"):
    """The baseline, run here: bf16 LoRA (peft, gradient checkpointing) on the same tiny Llama, the
    same batches' shapes and steps; the allocator's peak over the training steps (the window that
    train_qlora measures too: after loading, from the first step on)."""
    from peft import LoraConfig, get_peft_model
    import probes
    device = torch.device(device)
    tok = tokenizer()
    rows = [tok(t, add_special_tokens=False)["input_ids"][:seq_len] for t in texts]
    _free(device)
    model = probes._tiny_llama(cfg).to(device)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, target_modules="all-linear",
                                             lora_dropout=0.0, task_type="CAUSAL_LM"))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    for step in range(steps):
        picked = [rows[(step * batch_size + i) % len(rows)] for i in range(batch_size)]
        width = min(len(row) for row in picked)
        ids = torch.tensor([row[:width] for row in picked], device=device)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    peak = int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else 0
    del model, optimizer
    _free(device)
    return peak


def fresh_4bit_reload(cfg, files, texts, device="cuda"):
    """A fresh 4-bit base (transformers + bitsandbytes, NF4 with double quantisation) of the tiny
    Llama, built here; the submission's adapter files loaded onto it with peft; measured here:
    how many 4-bit layers the base has, the logits and the loss on ``texts`` without and with the
    adapter, and the per-layer facts of :func:`load_adapter`."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    import probes
    device = torch.device(device)
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
    with tempfile.TemporaryDirectory(prefix="qlora-base-") as folder:
        probes._save_tiny_llama(cfg, folder)
        base = AutoModelForCausalLM.from_pretrained(folder, quantization_config=quant, dtype=torch.bfloat16,
                                                    device_map={"": device})
    four_bit = sum(type(m).__name__ == "Linear4bit" for m in base.modules())
    ids = torch.tensor([tokenizer()(texts[0], add_special_tokens=False)["input_ids"][:64]], device=device)
    with torch.no_grad():
        base_logits = base.eval()(input_ids=ids).logits.float().cpu()
    base_loss = lm_loss(base, texts)
    model, info = load_adapter(base, files)
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float().cpu()
    info.update({"four_bit_layers": four_bit, "base_logits": base_logits, "logits": logits,
                 "base_loss": base_loss, "loss": lm_loss(model, texts)})
    del model, base
    _free(device)
    return info


# ------------------------------------------------------------------ diagnoses

class _Never:
    """Equal to nothing: stands for a variant that, on these inputs, is the right answer."""


def distinct(variants, expected):
    """The variants, each replaced by a value equal to nothing when it equals the right answer on
    these inputs (within the diagnosis tolerance): such a variant would otherwise name its
    misconception for any near-miss. Evaluated lazily, only when a check failed."""
    from course.grading.diagnose import matches

    def lazy(make):
        value = make()
        return _Never() if matches(value, expected) else value
    return {name: (lambda make=make: lazy(make)) for name, make in (variants or {}).items()}


def explain(actual, expected=None, catalogue=None, *, variants=None, what="", generic=True):
    """course.grading.diagnose.explain with :func:`distinct` variants."""
    from course.grading import diagnose
    return diagnose.explain(actual, expected, catalogue, variants=distinct(variants, expected), what=what,
                            generic=generic)

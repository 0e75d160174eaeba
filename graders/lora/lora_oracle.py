"""Trusted helpers of the hidden lora tests: tiny models and their peft twins.

Everything here runs in the grading process, never next to student code. The student's side of
each check is built by a probe (probes.py) from the same config dict and state dict.
"""

from __future__ import annotations

import math

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

# A tiny Llama with biases everywhere (so that a bias left trainable, or dropped, shows), and
# with k_proj/v_proj narrower than q_proj (so that in_features != out_features).
TINY = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=8, max_position_embeddings=64, attention_bias=True, mlp_bias=True,
            tie_word_embeddings=False, initializer_range=0.1)

# The shape of Llama-2-7B (no weights: it is only ever built on the meta device).
LLAMA2_7B = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                 rms_norm_eps=1e-5, tie_word_embeddings=False)

PEFT_PREFIX = "base_model.model."

# Float32 comparisons: logits of the student's model against peft's (different processes,
# different thread counts, so not bitwise).
LOGITS_TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The oracle's models are tiny: one thread is faster than several (and far faster than
    several on a loaded machine). Restored after each test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def seed_from(rng: torch.Generator) -> int:
    return int(torch.randint(0, 2**62, (1,), generator=rng))


def tiny_state(rng: torch.Generator, **overrides) -> tuple[dict, dict[str, torch.Tensor]]:
    """A tiny Llama config (as a dict) and random base weights for it, drawn from ``rng``."""
    config = {**TINY, **overrides}
    with torch.random.fork_rng():
        torch.manual_seed(seed_from(rng))
        model = LlamaForCausalLM(LlamaConfig(**config))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=rng))
            elif "norm" in name:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=rng))
    return config, {k: v.detach().clone() for k, v in model.state_dict().items()}


def tiny_model(config: dict, state: dict[str, torch.Tensor]) -> LlamaForCausalLM:
    model = LlamaForCausalLM(LlamaConfig(**config))
    model.load_state_dict(state)
    return model.eval()


def linear_names(config: dict) -> list[str]:
    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**config))
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]


def peft_model(config: dict, state: dict[str, torch.Tensor], targets: list[str], r: int, alpha: float,
               dropout: float = 0.0):
    model = get_peft_model(tiny_model(config, state),
                           LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), lora_dropout=dropout))
    return model.eval()


def peft_targets(model) -> list[str]:
    """The qualified names (inside the base model) of the layers peft gave an adapter."""
    from peft.tuners.lora import LoraLayer
    return sorted(n for n, m in model.base_model.model.named_modules() if isinstance(m, LoraLayer))


def random_adapters(rng: torch.Generator, shapes: dict[str, tuple[int, int]], r: int,
                    scale: float = 0.1) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """name -> (A of shape (r, in), B of shape (out, r)), both non-zero."""
    out = {}
    for name, (out_f, in_f) in sorted(shapes.items()):
        out[name] = (scale * torch.randn(r, in_f, generator=rng), scale * torch.randn(out_f, r, generator=rng))
    return out


def linear_shapes(config: dict, names: list[str]) -> dict[str, tuple[int, int]]:
    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**config))
    return {n: tuple(model.get_submodule(n).weight.shape) for n in names}


def set_peft_adapters(model, adapters: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
    with torch.no_grad():
        for name, (a, b) in adapters.items():
            layer = model.base_model.model.get_submodule(name)
            layer.lora_A["default"].weight.copy_(a)
            layer.lora_B["default"].weight.copy_(b)


def peft_linear(weight: torch.Tensor, bias: torch.Tensor | None, r: int, alpha: float,
                a: torch.Tensor | None = None, b: torch.Tensor | None = None, dropout: float = 0.0):
    """peft's own LoRA layer around an ``nn.Linear`` with this weight and bias."""
    out_f, in_f = weight.shape
    lin = nn.Linear(in_f, out_f, bias=bias is not None)
    with torch.no_grad():
        lin.weight.copy_(weight)
        if bias is not None:
            lin.bias.copy_(bias)
    model = get_peft_model(nn.Sequential(lin), LoraConfig(r=r, lora_alpha=alpha, target_modules=["0"],
                                                           lora_dropout=dropout))
    layer = model.base_model.model[0]
    with torch.no_grad():
        if a is not None:
            layer.lora_A["default"].weight.copy_(a)
        if b is not None:
            layer.lora_B["default"].weight.copy_(b)
    return layer.eval()


def kaiming_bound(in_features: int) -> float:
    """The bound of ``kaiming_uniform_(a=sqrt(5))`` for a weight with ``in_features`` inputs."""
    gain = nn.init.calculate_gain("leaky_relu", math.sqrt(5))
    return gain * math.sqrt(3.0 / in_features)


def peft_trainable_count(config: dict, r: int, targets: list[str]) -> int:
    """peft's count of trainable parameters, on a model built on the meta device."""
    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**config))
    model = get_peft_model(model, LoraConfig(r=r, lora_alpha=r, target_modules=list(targets)))
    return model.get_nb_trainable_parameters()[0]

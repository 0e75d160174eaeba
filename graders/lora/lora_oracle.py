"""Trusted helpers of the hidden lora tests: tiny models and their peft twins.

Everything here runs in the grading process, never next to student code. The student's side of
each check is built by a probe (probes.py) from the same config dict and state dict.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from course.grading.diagnose import record
from misconceptions import CATALOGUE

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
    """peft's own LoRA layer around an ``nn.Linear`` with this weight and bias (and dtype)."""
    out_f, in_f = weight.shape
    lin = nn.Linear(in_f, out_f, bias=bias is not None, dtype=weight.dtype)
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


def peft_counts(config: dict, r: int, targets: list[str]) -> tuple[int, int, int]:
    """peft's counts of trainable and of all parameters, on a model built on the meta device, and
    the count of the A matrices alone (a catalogue variant)."""
    from peft.tuners.lora import LoraLayer
    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**config))
    model = get_peft_model(model, LoraConfig(r=r, lora_alpha=r, target_modules=list(targets)))
    trainable, total = model.get_nb_trainable_parameters()
    a_only = sum(m.lora_A["default"].weight.numel() for m in model.modules() if isinstance(m, LoraLayer))
    return trainable, total, a_only


# ------------------------------------------------------------------ diagnoses

def close(actual: Any, candidate: Any, rtol: float = 1e-4, atol: float = 1e-5) -> bool:
    """A tight match of the student's float data with a variant the oracle computed in another
    process: same structure and shapes, and every element within ``rtol`` and ``atol`` times the
    candidate's largest magnitude. (The engine's own tight match uses an absolute tolerance of
    1e-7 for float32, below the rounding noise of two processes on elements near zero.) The
    variants of these tests differ from each other and from the right answer by whole factors."""
    if isinstance(actual, torch.Tensor) and isinstance(candidate, torch.Tensor):
        if actual.shape != candidate.shape or not actual.is_floating_point():
            return False
        a, c = actual.detach().double(), candidate.detach().double()
        if not bool(torch.isfinite(a).all()) or not bool(torch.isfinite(c).all()):
            return False
        scale = float(c.abs().max()) if c.numel() else 0.0
        return bool(torch.allclose(a, c, rtol=rtol, atol=atol * (1.0 + scale)))
    if type(actual) in (list, tuple) and type(candidate) in (list, tuple):
        return len(actual) == len(candidate) and all(close(x, y, rtol, atol) for x, y in zip(actual, candidate))
    if type(actual) is dict and type(candidate) is dict:
        return actual.keys() == candidate.keys() and all(close(actual[k], candidate[k], rtol, atol) for k in actual)
    if isinstance(actual, float) and isinstance(candidate, (int, float)):
        return math.isclose(actual, candidate, rel_tol=rtol, abs_tol=atol)
    return actual is None and candidate is None


@contextmanager
def explain_close(actual: Any, variants: Mapping[str, Callable[[], Any]], *, what: str,
                  facts: Mapping[str, Callable[[], bool]] | None = None) -> Iterator[None]:
    """Run a check on float data; if it fails, name the variants of :data:`CATALOGUE` that the
    student's data matches (:func:`close`) and the facts (exact checks on the returned data, made
    here) that hold. Like ``diagnose.explain``: outcome and points never change, any error while
    diagnosing is swallowed, nothing is computed unless the check failed."""
    try:
        yield
    except Exception:
        names = []
        for name, make in {**variants, **(facts or {})}.items():
            try:
                value = make()
                hit = bool(value) if name in (facts or {}) else close(actual, value)
            except Exception:
                continue
            if hit:
                names.append(name)
        try:
            record(names, CATALOGUE, what)
        except Exception:
            pass
        raise


def fact(name: str, holds: bool, what: str) -> None:
    """Attach the misconception ``name`` to this test when ``holds`` (an exact fact about the
    returned data, decided here, just before the check that the fact makes fail)."""
    if holds:
        record([name], CATALOGUE, what)


def with_scaling(r: int, scaling: float) -> float:
    """The alpha that gives ``scaling`` at rank ``r`` (to build peft's twin of a wrong scaling)."""
    return scaling * r


def peft_train(config: dict, state: dict[str, torch.Tensor], targets: list[str], r: int, alpha: float,
               start: dict[str, tuple[torch.Tensor, torch.Tensor]], batches: list[dict[str, torch.Tensor]],
               steps: int, lr: float, *, zero_grad: bool = True, first_batch_only: bool = False,
               loss_after_step: bool = False, adam: bool = False, default_lr: bool = False):
    """torch's AdamW on peft's model (no dropout) from the student's initial adapters: the losses
    and the model. The keyword arguments make the wrong loops of the catalogue."""
    reference = peft_model(config, state, targets, r, alpha)
    set_peft_adapters(reference, start)
    reference.train()
    params = [p for p in reference.parameters() if p.requires_grad]
    kind = torch.optim.Adam if adam else torch.optim.AdamW
    optimizer = kind(params) if default_lr else kind(params, lr=lr)
    losses = []
    for step in range(steps):
        batch = batches[0] if first_batch_only else batches[step % len(batches)]
        loss = reference(**batch).loss
        if zero_grad:
            optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss_after_step:
            with torch.no_grad():
                loss = reference(**batch).loss
        losses.append(loss.item())
    return losses, reference


def losses_tensor(losses: list[float]) -> torch.Tensor:
    return torch.tensor([float(v) for v in losses], dtype=torch.float64)


def match_rule(rule: str, names: list[str], targets: list[str]) -> list[str]:
    """The layers a (wrong) matching rule selects, sorted: the catalogue's target-matching variants."""
    def hit(name: str, t: str) -> bool:
        if rule == "substring":
            return t in name
        if rule == "last_part":
            return name.rsplit(".", 1)[-1] == t
        if rule == "endswith":
            return name.endswith(t)
        return name == t or name.endswith("." + t)
    return sorted(n for n in names if any(hit(n, t) for t in targets))

"""LoRA: low-rank adaptation, written from scratch and held to peft's numbers and file format.

A frozen linear layer ``W`` of shape ``(out, in)`` gets a trainable low-rank update ``B @ A``,
with ``A`` of shape ``(r, in)`` and ``B`` of shape ``(out, r)`` (``r``, the rank, is much smaller
than ``in`` and ``out``). The layer computes::

    y = x @ W^T + b + dropout(x) @ A^T @ B^T * scaling,      scaling = alpha / r

Names used in shapes: ``batch``, ``seq``, ``in`` (in_features), ``out`` (out_features), ``r``.

Off limits: ``peft`` (it is what your code is compared with). ``torch``, ``safetensors`` and
``transformers`` are allowed.
"""

from __future__ import annotations

import json
import math
import os

import torch
from torch import Tensor, nn

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
PEFT_PREFIX = "base_model.model."


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update (one LoRA adapter).

    Attributes:
        base: the ``nn.Linear`` passed in (the very same object), frozen: ``requires_grad`` is
            False on its weight and on its bias (if it has one).
        lora_A: ``nn.Parameter`` of shape ``(r, in)``, initialised like peft does:
            ``nn.init.kaiming_uniform_(A, a=math.sqrt(5))``, i.e. uniform in
            ``±1/sqrt(in)``.
        lora_B: ``nn.Parameter`` of shape ``(out, r)``, initialised to zeros, so that a fresh
            layer computes exactly what ``base`` computes.
        scaling: ``alpha / r`` (a float; ``alpha`` defaults to ``r``, so ``scaling`` to 1.0).
        merged: True while ``B @ A * scaling`` has been added into ``base.weight``.

    ``lora_A`` and ``lora_B`` have the dtype and device of ``base.weight``.
    """

    # Task 1.1
    def __init__(self, base: nn.Linear, r: int, alpha: float | None = None, dropout: float = 0.0):
        """Wrap ``base``.

        Args:
            base: the layer to adapt; must be an ``nn.Linear``.
            r: the rank, a positive int.
            alpha: the scale numerator; ``None`` means ``alpha = r`` (``0.0`` is a value: scaling 0).
            dropout: probability of ``nn.Dropout`` on the LoRA branch's input (0.0: no dropout).

        Raises:
            TypeError: ``base`` is not an ``nn.Linear`` (the message names its type).
            ValueError: ``r <= 0`` (the message names the value of ``r``).
        """
        super().__init__()
        # BEGIN SOLUTION
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
            raise ValueError(f"the rank r must be a positive int, got r={r!r}")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.r = r
        self.alpha = float(r if alpha is None else alpha)
        self.scaling = self.alpha / r
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, **factory))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        # END SOLUTION

    # Task 1.2
    def forward(self, x: Tensor) -> Tensor:
        """``base(x) + dropout(x) @ A^T @ B^T * scaling``; while merged, just ``base(x)``.

        Dropout touches only the LoRA branch: the base path always sees ``x`` itself. ``x`` is
        never modified (the caller, e.g. the next projection of the same hidden state, still
        reads it).

        Args:
            x: ``(..., in)`` with any number of leading dimensions (``(in,)``, ``(n, in)``,
                ``(batch, seq, in)``, ...), contiguous or not.

        Returns:
            ``(..., out)``.
        """
        # BEGIN SOLUTION
        out = self.base(x)
        if self.merged:
            return out
        return out + (self.dropout(x) @ self.lora_A.T @ self.lora_B.T) * self.scaling
        # END SOLUTION

    # Task 1.3
    def delta_weight(self) -> Tensor:
        """The update the adapter makes to ``base.weight``: ``B @ A * scaling``, shape ``(out, in)``."""
        # BEGIN SOLUTION
        return (self.lora_B @ self.lora_A) * self.scaling
        # END SOLUTION

    # Task 1.4
    def merge(self) -> None:
        """Add ``delta_weight()`` into ``base.weight`` (no autograd) and set ``merged``.

        The forward is unchanged (within float rounding), the base stays frozen
        (``requires_grad=False``). Merging a merged layer does nothing.
        """
        # BEGIN SOLUTION
        if self.merged:
            return
        with torch.no_grad():
            self.base.weight += self.delta_weight()
        self.merged = True
        # END SOLUTION

    # Task 1.5
    def unmerge(self) -> None:
        """Subtract ``delta_weight()`` from ``base.weight`` and clear ``merged``.

        Unmerging a layer that is not merged does nothing.
        """
        # BEGIN SOLUTION
        if not self.merged:
            return
        with torch.no_grad():
            self.base.weight -= self.delta_weight()
        self.merged = False
        # END SOLUTION


def _matches(name: str, target_modules: list[str]) -> bool:
    """peft's rule: a module is a target when its qualified name equals a target or ends with
    ``"." + target``. So ``"q_proj"`` matches ``"model.layers.0.self_attn.q_proj"``, but
    ``"proj"`` matches neither ``"q_proj"`` nor ``"...q_proj"``."""
    return any(name == t or name.endswith("." + t) for t in target_modules)


# Task 2.1
def inject_lora(model: nn.Module, target_modules: list[str], r: int, alpha: float | None = None,
                dropout: float = 0.0) -> list[str]:
    """Replace the targeted ``nn.Linear`` layers of ``model`` (in place) by ``LoRALinear``.

    A layer is targeted when it is an ``nn.Linear`` and its qualified name (as in
    ``model.named_modules()``) equals a target or ends with ``"." + target`` (see ``_matches``).
    Every parameter of ``model`` that is not a new ``lora_A``/``lora_B`` ends up frozen
    (``requires_grad=False``), biases and embeddings included.

    Args:
        model: any ``nn.Module`` (e.g. a transformers ``LlamaForCausalLM``).
        target_modules: names (or name endings) such as ``["q_proj", "v_proj"]``.
        r, alpha, dropout: passed to every ``LoRALinear``.

    Returns:
        The qualified names of the replaced layers, sorted.

    Raises:
        ValueError: no ``nn.Linear`` matches; the message lists the model's ``nn.Linear`` names.
    """
    # BEGIN SOLUTION
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    names = sorted(name for name in linears if _matches(name, target_modules))
    if not names:
        raise ValueError(f"no nn.Linear layer matches target_modules={list(target_modules)!r}; "
                         f"the model's nn.Linear layers are: {', '.join(linears)}")
    for p in model.parameters():
        p.requires_grad_(False)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoRALinear(getattr(parent, child), r, alpha, dropout))
    return names
    # END SOLUTION


# Task 2.2
def count_parameters(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` numbers of parameter elements of ``model``.

    A parameter shared by two modules (tied weights) counts once, as in ``model.parameters()``.
    """
    # BEGIN SOLUTION
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
    # END SOLUTION


# Task 2.3
def lora_parameter_count(config, r: int, target_modules: list[str]) -> int:
    """How many parameters LoRA would train on the model of a transformers ``config``.

    The model is ``transformers.AutoModelForCausalLM.from_config(config)``, built on the
    ``meta`` device (shapes, no memory: a 7-billion-parameter model costs nothing to build).

    Returns:
        The number of trainable parameter elements after ``inject_lora(model, target_modules, r)``.
    """
    # BEGIN SOLUTION
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    inject_lora(model, target_modules, r)
    return count_parameters(model)[0]
    # END SOLUTION


# Task 3.1
def lora_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Only the adapter weights of ``model``, named exactly as peft names them in a saved adapter.

    For a ``LoRALinear`` at qualified name ``<path>`` (e.g. ``model.layers.0.self_attn.q_proj``)
    the keys are ``base_model.model.<path>.lora_A.weight`` (shape ``(r, in)``) and
    ``base_model.model.<path>.lora_B.weight`` (shape ``(out, r)``). Values are detached copies
    (no memory shared with the live parameters: later training must not change them).
    """
    # BEGIN SOLUTION
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            out[f"{PEFT_PREFIX}{name}.lora_A.weight"] = module.lora_A.detach().clone()
            out[f"{PEFT_PREFIX}{name}.lora_B.weight"] = module.lora_B.detach().clone()
    return out
    # END SOLUTION


# Task 3.2
def save_adapter(model: nn.Module, path: str | os.PathLike, *, r: int, alpha: float,
                 target_modules: list[str], base_model_name_or_path: str | None = None) -> None:
    """Save the adapter of ``model`` in peft's format, so that
    ``peft.PeftModel.from_pretrained(fresh_base_model, path)`` loads it.

    Writes into the folder ``path`` (created if missing):

    * ``adapter_model.safetensors``: ``lora_state_dict(model)``
      (``safetensors.torch.save_file``);
    * ``adapter_config.json``: at least ``{"peft_type": "LORA", "r": r, "lora_alpha": alpha,
      "target_modules": target_modules, "base_model_name_or_path": base_model_name_or_path}``.
      peft fills in defaults for every key you leave out; also writing ``"lora_dropout"`` (the
      dropout probability of the LoRA layers) and ``"bias": "none"`` documents the adapter fully.
    """
    # BEGIN SOLUTION
    from safetensors.torch import save_file

    os.makedirs(path, exist_ok=True)
    save_file(lora_state_dict(model), os.path.join(path, ADAPTER_WEIGHTS), metadata={"format": "pt"})
    dropouts = [m.dropout.p for m in model.modules() if isinstance(m, LoRALinear) and isinstance(m.dropout, nn.Dropout)]
    config = {
        "peft_type": "LORA",
        "task_type": None,
        "r": r,
        "lora_alpha": alpha,
        "target_modules": list(target_modules),
        "lora_dropout": dropouts[0] if dropouts else 0.0,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "base_model_name_or_path": base_model_name_or_path,
    }
    with open(os.path.join(path, ADAPTER_CONFIG), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    # END SOLUTION


# Task 3.3
def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight and drop the LoRA machinery.

    Returns ``model`` (changed in place) in which every ``LoRALinear`` is replaced by a plain
    ``nn.Linear`` whose weight is ``W + B @ A * scaling`` (and whose bias is the base bias): the
    forward is unchanged. A layer that was already merged is not merged twice. Every parameter
    stays frozen, as in peft's ``merge_and_unload``.
    """
    # BEGIN SOLUTION
    if isinstance(model, LoRALinear):
        model.merge()
        return model.base
    for name, module in list(model.named_modules()):
        if isinstance(module, LoRALinear):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, module.base)
    return model
    # END SOLUTION


# Task 4.1
def train_lora(model: nn.Module, batches: list[dict[str, Tensor]], steps: int, lr: float) -> list[float]:
    """A minimal training loop: only the trainable (LoRA) parameters move.

    * optimiser: ``torch.optim.AdamW`` over the parameters with ``requires_grad`` (learning rate
      ``lr``, every other setting at its default);
    * ``model.train()`` first (the model may arrive in eval mode, and the LoRA layers' dropout
      must act while training); step ``i`` (0-based) uses ``batches[i % len(batches)]``;
    * loss: ``model(**batch).loss`` (a transformers model computes it when the batch holds
      ``labels``);
    * one ``backward`` and one optimiser step per batch, gradients cleared every step.

    Returns:
        The ``steps`` losses as Python floats, each recorded before its optimiser step.
    """
    # BEGIN SOLUTION
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    losses = []
    for step in range(steps):
        batch = batches[step % len(batches)]
        loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses
    # END SOLUTION

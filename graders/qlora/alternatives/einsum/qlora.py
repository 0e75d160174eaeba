"""Alternative solution (style: einsum for the block scaling, the linear map and the LoRA update).

QLoRA: a frozen base stored in 4-bit NormalFloat (NF4), LoRA adapters trained in 16-bit.

Shapes are named once and used everywhere: ``out`` and ``in`` are a linear layer's output and
input features, ``n`` is a tensor's number of elements, ``blocks = n / blocksize``, ``r`` is the
LoRA rank.

Off limits in tasks 1 to 3: ``bitsandbytes`` (it is the oracle the tests compare with) and
``peft``. Task 4 is the opposite: it asks you to use the real stack.

Every function leaves its arguments as they were (no in-place operation on a tensor it was given),
accepts tensors of any layout (a transposed weight is not contiguous: ``reshape``, not ``view``)
and keeps its results on its input's device. The CPU grader checks the device on PyTorch's meta
device, which has shapes but no values: in ``quantize_nf4``, ``dequantize_nf4`` and the layers'
forward passes (without double quantisation) never read a tensor's value into Python
(``.item()``, ``.tolist()``, ``float(t)``, ``if t:``).

Run the tests: ``pytest`` in this folder, or ``course check qlora [--task N.M]``.
"""

from __future__ import annotations

import math
import random
import sys
import time
from pathlib import Path
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NF4_OFFSET = 0.9677083   # bitsandbytes' choice: the quantile the largest code stands for
DQ_BLOCKSIZE = 256       # block size of the second (double) quantisation


# ---------------------------------------------------------------------------- 1. NF4

# Task 1.1
def nf4_code_book() -> Tensor:
    """The 16 NF4 levels, sorted, as a float32 tensor of shape (16,).

    The QLoRA construction (asymmetric, with an exact zero):

    * 8 positive levels: the standard-normal quantiles of
      ``torch.linspace(NF4_OFFSET, 0.5, 9)[:-1]`` (so the largest is ``Phi^-1(NF4_OFFSET)``);
    * 7 negative levels: minus the quantiles of ``torch.linspace(NF4_OFFSET, 0.5, 8)[:-1]``;
    * one exact 0;
    * sort, then divide by the largest value so the levels span [-1, 1].

    To be bit-identical with bitsandbytes' table (which its dequantisation uses), follow its order
    of operations: ``linspace`` in float32 (the default), the quantile function
    (``torch.special.ndtri``) in float64, then back to float32 *before* the normalisation.
    Do not copy the table: derive it.
    """
    # BEGIN SOLUTION
    positive = torch.special.ndtri(torch.linspace(NF4_OFFSET, 0.5, 9)[:-1].double())
    negative = -torch.special.ndtri(torch.linspace(NF4_OFFSET, 0.5, 8)[:-1].double())
    values = torch.cat([positive, negative, torch.zeros(1, dtype=torch.float64)]).float()
    values = values.sort().values
    return values / values.max()
    # END SOLUTION


# Task 1.2
def quantize_nf4(w: Tensor, blocksize: int = 64) -> tuple[Tensor, Tensor]:
    """Block-wise NF4 quantisation of ``w`` (any shape, any float dtype, flattened row-major).

    For each block of ``blocksize`` consecutive elements (computed in float32):

    * ``absmax`` is the block's largest absolute value;
    * the block is scaled *by multiplying with* ``1 / absmax`` (as bitsandbytes does; an all-zero
      block has absmax 0 and scales to zeros), then clamped to [-1, 1];
    * each value gets the index of the nearest code of :func:`nf4_code_book`: compare with the
      15 midpoints between neighbouring codes; a value exactly on a midpoint takes the lower
      code (``torch.bucketize`` against the midpoints does exactly this).

    Two 4-bit codes go into each byte, the first element in the high nibble:
    ``byte = code[2i] << 4 | code[2i+1]``.

    Returns:
        packed: uint8 of shape (n // 2,).
        absmax: float32 of shape (n // blocksize,).

    Raises:
        ValueError: if ``n`` is not divisible by ``blocksize`` (or ``blocksize`` is not even).
    """
    # BEGIN SOLUTION
    n = w.numel()
    if blocksize <= 0 or blocksize % 2 or n % blocksize:
        raise ValueError(f"cannot quantise {n} elements in blocks of {blocksize}: "
                         "the number of elements must be a multiple of an even blocksize")
    blocks = w.reshape(-1, blocksize).float()
    absmax = blocks.abs().amax(dim=1)
    scaled = (blocks * (1.0 / absmax.clamp(min=1e-38)).unsqueeze(1)).clamp(-1, 1)
    code = nf4_code_book().to(w.device)
    midpoints = (code[1:] + code[:-1]) / 2
    idx = torch.bucketize(scaled.reshape(-1), midpoints).to(torch.uint8)
    packed = (idx[0::2] << 4) | idx[1::2]
    return packed, absmax
    # END SOLUTION


# Task 1.3
def dequantize_nf4(packed: Tensor, absmax: Tensor, shape: Sequence[int], blocksize: int = 64,
                   dtype: torch.dtype = torch.bfloat16) -> Tensor:
    """The inverse of :func:`quantize_nf4`: ``code[index] * absmax`` of its block.

    Unpack two codes per byte (high nibble first), look them up in :func:`nf4_code_book`, multiply
    by the block's absmax *in float32*, reshape to ``shape`` and only then cast to ``dtype``
    (this order is what makes the result bit-identical to bitsandbytes).

    Args:
        packed: uint8 (n // 2,).
        absmax: float32 (n // blocksize,).
        shape: the shape of the result; its product is n.
    """
    # BEGIN SOLUTION
    idx = torch.stack([packed >> 4, packed & 0x0F], dim=-1).reshape(absmax.numel(), blocksize).long()
    levels = nf4_code_book().to(packed.device)[idx]
    values = torch.einsum("bk,b->bk", levels, absmax.float())
    return values.reshape(*shape).to(dtype)
    # END SOLUTION


# ---------------------------------------------------------------------------- 2. double quantisation

# Task 2.1
def double_quantize(absmax: Tensor, blocksize: int = DQ_BLOCKSIZE) -> tuple[Tensor, Tensor, float]:
    """Quantise the first-level constants ``absmax`` (float32, (blocks,)) to 8 bits.

    * ``offset`` is the mean of ``absmax`` (a Python float); centre: ``c = absmax - offset``.
    * Split ``c`` into blocks of ``blocksize`` (the last one may be shorter). Each block's scale
      is its largest ``|c|`` (float32).
    * Each value becomes ``q = round(c / scale * 127) + 128``, a uint8 in [1, 255]
      (a block whose scale is 0 stores 128 everywhere).

    Returns:
        q: uint8 (blocks,); scales: float32 (ceil(blocks / blocksize),); offset: float.
    """
    # BEGIN SOLUTION
    absmax = absmax.float().reshape(-1)
    offset = float(absmax.mean())
    centred = absmax - offset
    n = centred.numel()
    pad = (-n) % blocksize
    blocks = F.pad(centred, (0, pad)).reshape(-1, blocksize)
    scales = blocks.abs().amax(dim=1)
    q = torch.round(blocks / scales.clamp(min=1e-38).unsqueeze(1) * 127) + 128
    return q.reshape(-1)[:n].to(torch.uint8), scales, offset
    # END SOLUTION


# Task 2.1
def double_dequantize(q: Tensor, scales: Tensor, offset: float, blocksize: int = DQ_BLOCKSIZE) -> Tensor:
    """The first-level constants back: ``(q - 128) / 127 * scale + offset``, float32 (blocks,).

    The error of a round trip is at most half a step: ``|absmax - back| <= scale / 254`` for every
    value of a block (plus float32 rounding).
    """
    # BEGIN SOLUTION
    n = q.numel()
    full = (n // blocksize) * blocksize
    steps = (q.float() - 128) / 127
    out = torch.empty(n, dtype=torch.float32, device=q.device)
    out[:full] = torch.einsum("bk,b->bk", steps[:full].reshape(-1, blocksize), scales[: full // blocksize].float()).reshape(-1)
    if full < n:
        out[full:] = steps[full:] * scales[-1].float()
    return out + offset
    # END SOLUTION


# Task 2.2
def bits_per_parameter(blocksize: int = 64, double_quant: bool = True, dq_blocksize: int = DQ_BLOCKSIZE) -> float:
    """Storage cost of one weight, in bits: its 4-bit code plus its share of the constants.

    Without double quantisation each block of ``blocksize`` weights carries one float32 absmax.
    With it, each block carries one 8-bit ``q`` and each group of ``dq_blocksize`` blocks one
    float32 scale (the single offset per tensor is negligible and not counted).
    The paper's figures: 4.5 without, about 4.127 with (blocksize 64, dq_blocksize 256).
    """
    # BEGIN SOLUTION
    if not double_quant:
        return 4 + 32 / blocksize
    return 4 + 8 / blocksize + 32 / (blocksize * dq_blocksize)
    # END SOLUTION


# ---------------------------------------------------------------------------- 3. 4-bit layers

class Linear4bit(nn.Module):
    """A frozen linear layer whose weight (out, in) is stored as NF4 codes: no float weight at all.

    Buffers (given): ``packed`` uint8 (out*in // 2,); with double quantisation ``absmax_q``
    uint8 (blocks,), ``absmax_scales`` float32, ``absmax_offset`` float32 0-d; without it
    ``absmax`` float32 (blocks,); ``bias`` in ``compute_dtype`` (out,) or None. Buffers are not
    parameters, so no optimiser ever sees them and no gradient can reach them.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False, *, blocksize: int = 64,
                 double_quant: bool = True, compute_dtype: torch.dtype = torch.bfloat16, device=None):
        super().__init__()
        n = in_features * out_features
        if n % blocksize or blocksize % 2:
            raise ValueError(f"a {out_features}x{in_features} weight does not split into blocks of {blocksize}")
        self.in_features, self.out_features = in_features, out_features
        self.blocksize, self.double_quant, self.compute_dtype = blocksize, double_quant, compute_dtype
        blocks = n // blocksize
        self.register_buffer("packed", torch.zeros(n // 2, dtype=torch.uint8, device=device))
        if double_quant:
            self.register_buffer("absmax_q", torch.zeros(blocks, dtype=torch.uint8, device=device))
            self.register_buffer("absmax_scales", torch.zeros(math.ceil(blocks / DQ_BLOCKSIZE), device=device))
            self.register_buffer("absmax_offset", torch.zeros((), device=device))
        else:
            self.register_buffer("absmax", torch.zeros(blocks, device=device))
        bias_buffer = torch.zeros(out_features, dtype=compute_dtype, device=device) if bias else None
        self.register_buffer("bias", bias_buffer)

    # Task 3.1
    @classmethod
    def from_linear(cls, linear: nn.Linear, blocksize: int = 64, double_quant: bool = True,
                    compute_dtype: torch.dtype = torch.bfloat16) -> "Linear4bit":
        """A Linear4bit holding ``linear``'s weight in NF4 (and its bias in ``compute_dtype``).

        Quantise the weight with :func:`quantize_nf4` (the codes must be exactly those of the
        weight); with ``double_quant`` store the absmax through :func:`double_quantize`.
        Build the layer with ``cls(...)`` on the weight's device, then fill its buffers: assigning a
        tensor to a buffer's name (``layer.packed = packed``) replaces that buffer.
        """
        # BEGIN SOLUTION
        weight = linear.weight.detach()
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, blocksize=blocksize,
                    double_quant=double_quant, compute_dtype=compute_dtype, device=weight.device)
        packed, absmax = quantize_nf4(weight, blocksize)
        layer.packed = packed
        if double_quant:
            q, scales, offset = double_quantize(absmax)
            layer.absmax_q, layer.absmax_scales = q, scales
            layer.absmax_offset = torch.tensor(offset, dtype=torch.float32, device=weight.device)
        else:
            layer.absmax = absmax
        if linear.bias is not None:
            layer.bias = linear.bias.detach().to(compute_dtype).clone()
        return layer
        # END SOLUTION

    # Task 3.1
    def memory_bytes(self) -> int:
        """Bytes of everything the layer stores (all its buffers, the bias included)."""
        # BEGIN SOLUTION
        return sum(b.numel() * b.element_size() for b in self.buffers())
        # END SOLUTION

    # Task 3.2
    def dequantized_weight(self) -> Tensor:
        """The weight (out, in) in ``compute_dtype``, rebuilt from the stored codes and constants."""
        # BEGIN SOLUTION
        if self.double_quant:
            absmax = double_dequantize(self.absmax_q, self.absmax_scales, float(self.absmax_offset))
        else:
            absmax = self.absmax
        return dequantize_nf4(self.packed, absmax, (self.out_features, self.in_features), self.blocksize,
                              self.compute_dtype)
        # END SOLUTION

    # Task 3.2
    def forward(self, x: Tensor) -> Tensor:
        """``F.linear`` of ``x`` (cast to ``compute_dtype``) with the dequantised weight and the bias;
        the result is cast back to ``x``'s dtype. Gradients flow to ``x``, never to the codes."""
        # BEGIN SOLUTION
        weight = self.dequantized_weight()
        out = torch.einsum("...i,oi->...o", x.to(self.compute_dtype), weight)
        if self.bias is not None:
            out = out + self.bias
        return out.to(x.dtype)
        # END SOLUTION

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, blocksize={self.blocksize}, "
                f"double_quant={self.double_quant}, compute_dtype={self.compute_dtype}")


class QLoRALinear(nn.Module):
    """A frozen :class:`Linear4bit` base plus a trainable low-rank update, as in peft:

    ``y = base(x) + lora_B(lora_A(x)) * scaling`` with ``scaling = alpha / r``.

    ``lora_A`` is ``nn.Linear(in, r, bias=False)``, Kaiming-uniform initialised like peft
    (``nn.init.kaiming_uniform_(weight, a=math.sqrt(5))``); ``lora_B`` is ``nn.Linear(r, out,
    bias=False)`` initialised to zero, so a new layer computes exactly its base. Both are in the
    base's ``compute_dtype`` and on its device; they are the layer's only parameters.
    """

    # Task 3.3
    def __init__(self, base: Linear4bit, r: int, alpha: float):
        super().__init__()
        # BEGIN SOLUTION
        self.base, self.r, self.alpha = base, r, alpha
        self.scaling = alpha / r
        device, dtype = base.packed.device, base.compute_dtype
        self.lora_A = nn.Linear(base.in_features, r, bias=False, device=device, dtype=dtype)
        self.lora_B = nn.Linear(r, base.out_features, bias=False, device=device, dtype=dtype)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        # END SOLUTION

    # Task 3.3
    def forward(self, x: Tensor) -> Tensor:
        """The base's output plus the scaled LoRA update, in ``x``'s dtype."""
        # BEGIN SOLUTION
        h = x.to(self.base.compute_dtype)
        update = torch.einsum("...i,ri,or->...o", h, self.lora_A.weight, self.lora_B.weight)
        return self.base(x) + (self.scaling * update).to(x.dtype)
        # END SOLUTION


# Task 3.4
def quantize_model(model: nn.Module, skip: Sequence[str] = ("lm_head",), r: int | None = None,
                   alpha: float | None = None) -> tuple[nn.Module, dict]:
    """Replace every ``nn.Linear`` of ``model`` (in place) by its 4-bit version.

    A layer is skipped when any dot-separated part of its name is in ``skip`` (``"mlp"`` skips
    ``model.layers.0.mlp.up_proj``, ``"up"`` skips nothing there; an empty ``skip`` skips nothing,
    not even the head). Each replaced layer
    becomes ``Linear4bit.from_linear(layer, compute_dtype=<its weight's dtype>)`` (blocksize 64,
    double quantisation), wrapped in ``QLoRALinear(base, r, alpha)`` when ``r`` is given
    (``alpha`` defaults to ``r``). When ``r`` is given every other parameter of the model is frozen
    (``requires_grad = False``), so only the LoRA A and B matrices train.

    Returns:
        ``(model, report)`` where ``report`` is a dict of ints: ``layers`` (how many were
        replaced), ``before_bytes`` (bytes of those layers' weights and biases before),
        ``after_bytes`` (sum of their ``Linear4bit.memory_bytes()``), ``adapter_bytes`` (bytes of
        the LoRA A and B matrices, 0 without ``r``).
    """
    # BEGIN SOLUTION
    alpha = r if alpha is None else alpha
    targets = [(name, module) for name, module in model.named_modules()
               if isinstance(module, nn.Linear) and not set(name.split(".")) & set(skip)]
    report = {"layers": 0, "before_bytes": 0, "after_bytes": 0, "adapter_bytes": 0}
    if r is not None:
        for p in model.parameters():
            p.requires_grad_(False)
    for name, linear in targets:
        report["before_bytes"] += sum(p.numel() * p.element_size() for p in linear.parameters())
        new: nn.Module = Linear4bit.from_linear(linear, compute_dtype=linear.weight.dtype)
        report["after_bytes"] += new.memory_bytes()
        if r is not None:
            new = QLoRALinear(new, r, alpha)
            report["adapter_bytes"] += sum(p.numel() * p.element_size() for p in new.parameters())
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
        report["layers"] += 1
    return model, report
    # END SOLUTION


# ---------------------------------------------------------------------------- 4. a training run

LORA_TARGETS = "all-linear"   # peft: every linear layer but the output head


def synthetic_texts(n: int = 32, seed: int = 0) -> list[str]:
    """A small, memorisable data set of made-up facts, generated from ``seed`` (given)."""
    rnd = random.Random(seed)
    names = ["Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "John", "Radia", "Ken"]
    things = ["lamp", "kettle", "violin", "bicycle", "compass", "teapot", "lantern", "anchor"]
    colours = ["red", "blue", "green", "amber", "violet", "silver", "golden", "white"]
    places = ["the attic", "the garden", "the harbour", "the library", "the mill", "the tower"]
    texts = []
    for i in range(n):
        who, thing = rnd.choice(names), rnd.choice(things)
        texts.append(f"Fact {i}: {who} keeps a {rnd.choice(colours)} {thing} in {rnd.choice(places)}, "
                     f"and it is {rnd.randint(2, 99)} years old.")
    return texts


def training_batches(tokenizer, texts: Sequence[str], batch_size: int, seq_len: int,
                     seed: int) -> Iterator[dict[str, Tensor]]:
    """Endless batches (given): each text + EOS, cut to ``seq_len``, padded; pads are not learnt."""
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    rows = [(tokenizer(t, add_special_tokens=False)["input_ids"] + [eos])[:seq_len] for t in texts]
    gen = torch.Generator().manual_seed(seed)
    order: list[int] = []
    while True:
        picked = []
        while len(picked) < batch_size:
            if not order:
                order = torch.randperm(len(rows), generator=gen).tolist()
            picked.append(rows[order.pop()])
        width = max(len(row) for row in picked)
        ids = torch.full((batch_size, width), pad, dtype=torch.long)
        mask = torch.zeros((batch_size, width), dtype=torch.long)
        for i, row in enumerate(picked):
            ids[i, :len(row)] = torch.tensor(row)
            mask[i, :len(row)] = 1
        yield {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters (given); a 4-bit weight counts its logical out*in elements."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = 0
    for p in model.parameters():
        # bitsandbytes' Params4bit packs two 4-bit values per uint8 element
        total += p.numel() * 2 if type(p).__name__ == "Params4bit" else p.numel()
    total += sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, Linear4bit))
    return trainable, total


def peak_memory_bytes(device: torch.device) -> int:
    """Peak GPU memory allocated since the last reset; on the CPU the process's peak RSS (given)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        import resource
    except ImportError:   # Windows has no getrusage
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)   # bytes on macOS, KiB on Linux


# Task 4.1
def load_for_training(model_dir: str | Path, backend: str, r: int, alpha: float, device: torch.device):
    """The model to fine-tune, ready for training on ``device``, for one backend:

    * ``"bitsandbytes"``: load with transformers' ``BitsAndBytesConfig(load_in_4bit=True,
      bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
      bnb_4bit_compute_dtype=torch.bfloat16)`` on ``device`` (``device_map={"": device}``), then
      peft's ``prepare_model_for_kbit_training`` with gradient checkpointing, then
      ``get_peft_model`` with a ``LoraConfig(r, lora_alpha=alpha, target_modules="all-linear",
      lora_dropout=0.0, task_type="CAUSAL_LM")``.
    * ``"bf16"`` (the baseline): the same LoRA on the unquantised base loaded in bfloat16, with
      gradient checkpointing.
    * ``"course"``: load in bfloat16, move to ``device``, then your :func:`quantize_model` with
      ``r`` and ``alpha``; enable gradient checkpointing.

    Never run a forward pass before training (see the README: on some CPUs a no-grad forward
    through bitsandbytes' 4-bit layers repacks their weights and breaks training).

    Raises:
        ValueError: for an unknown backend.
    """
    # BEGIN SOLUTION
    from transformers import AutoModelForCausalLM
    checkpointing = {"gradient_checkpointing_kwargs": {"use_reentrant": False}}
    if backend == "course":
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).to(device)
        model, _ = quantize_model(model, r=r, alpha=alpha)
        model.gradient_checkpointing_enable(**checkpointing)
    elif backend in ("bitsandbytes", "bf16"):
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
        from transformers import BitsAndBytesConfig
        if backend == "bitsandbytes":
            quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                       bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16)
            model = AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=quant, dtype=torch.bfloat16,
                                                         device_map={"": device})
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True, **checkpointing)
        else:
            model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).to(device)
            model.gradient_checkpointing_enable(**checkpointing)
        config = LoraConfig(r=r, lora_alpha=alpha, target_modules=LORA_TARGETS, lora_dropout=0.0,
                            task_type="CAUSAL_LM")
        model = get_peft_model(model, config)
    else:
        raise ValueError(f"unknown backend {backend!r}: use 'bitsandbytes', 'bf16' or 'course'")
    model.config.use_cache = False
    return model
    # END SOLUTION


# Task 4.2
def save_adapter(model: nn.Module, output_dir: str | Path, backend: str, *, r: int, alpha: float,
                 base_model: str) -> Path:
    """Save the trained adapter in peft's format in ``output_dir`` and return that folder.

    For the peft backends this is ``model.save_pretrained``. For ``"course"`` write the same two
    files yourself, so that ``PeftModel.from_pretrained(base, output_dir)`` loads your adapter:

    * ``adapter_config.json``: a peft ``LoraConfig(r=r, lora_alpha=alpha, target_modules=<sorted
      last names of the adapted layers, e.g. "q_proj">, lora_dropout=0.0, task_type="CAUSAL_LM",
      base_model_name_or_path=base_model)`` saved with its ``save_pretrained``;
    * ``adapter_model.safetensors``: for each adapted layer called ``name`` in the model,
      ``base_model.model.<name>.lora_A.weight`` (r, in) and ``...lora_B.weight`` (out, r).
    """
    # BEGIN SOLUTION
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if backend != "course":
        model.save_pretrained(output_dir)
        return output_dir
    from peft import LoraConfig
    from safetensors.torch import save_file
    tensors, targets = {}, set()
    for name, module in model.named_modules():
        if isinstance(module, QLoRALinear):
            targets.add(name.rsplit(".", 1)[-1])
            for part in ("lora_A", "lora_B"):
                weight = getattr(module, part).weight.detach().cpu().contiguous().clone()
                tensors[f"base_model.model.{name}.{part}.weight"] = weight
    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=sorted(targets), lora_dropout=0.0,
                        task_type="CAUSAL_LM", base_model_name_or_path=str(base_model))
    config.save_pretrained(output_dir)
    save_file(tensors, str(output_dir / "adapter_model.safetensors"), metadata={"format": "pt"})
    return output_dir
    # END SOLUTION


def train_qlora(model_dir: str | Path, texts: Sequence[str], *, output_dir: str | Path,
                backend: str = "bitsandbytes", steps: int = 100, r: int = 16, alpha: float = 32,
                lr: float = 2e-4, batch_size: int = 8, seq_len: int = 256, seed: int = 0,
                device: str | None = None) -> dict:
    """Fine-tune the causal LM in ``model_dir`` on ``texts`` with LoRA on a 4-bit base (given).

    It loads the model with :func:`load_for_training`, trains the LoRA matrices with AdamW for
    ``steps`` steps on batches from :func:`training_batches`, saves the adapter with
    :func:`save_adapter`, and returns a dict: ``losses`` (one float per step),
    ``peak_memory_bytes`` (see :func:`peak_memory_bytes`), ``trainable_params``, ``total_params``,
    ``tokens_per_second`` (non-pad tokens per second of training) and ``adapter_dir`` (str).
    ``device`` defaults to CUDA when available.
    """
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(seed)
    model = load_for_training(model_dir, backend, r, alpha, dev)
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    trainable, total = count_parameters(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    batches = training_batches(tokenizer, texts, batch_size, seq_len, seed)
    model.train()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    losses, tokens, start = [], 0, time.perf_counter()
    for _ in range(steps):
        batch = {k: v.to(dev) for k, v in next(batches).items()}
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        tokens += int(batch["attention_mask"].sum())
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elapsed = time.perf_counter() - start
    adapter_dir = save_adapter(model, output_dir, backend, r=r, alpha=alpha, base_model=str(model_dir))
    return {
        "losses": losses,
        "peak_memory_bytes": peak_memory_bytes(dev),
        "trainable_params": trainable,
        "total_params": total,
        "tokens_per_second": tokens / max(elapsed, 1e-9),
        "adapter_dir": str(adapter_dir),
    }


__all__ = ["nf4_code_book", "quantize_nf4", "dequantize_nf4", "double_quantize", "double_dequantize",
           "bits_per_parameter", "Linear4bit", "QLoRALinear", "quantize_model", "train_qlora",
           "load_for_training", "save_adapter", "synthetic_texts", "training_batches", "count_parameters",
           "peak_memory_bytes", "NF4_OFFSET", "DQ_BLOCKSIZE"]

"""The NF4 oracle of the qlora tests (public and hidden alike): bitsandbytes, used so that the
result cannot depend on the CPU of the machine that runs the tests.

* Code book: bitsandbytes' own table, ``bitsandbytes.functional.get_4bit_type("nf4")``.
* Quantisation: ``bitsandbytes.functional.quantize_4bit``. On the CPU bitsandbytes has no native
  kernel for it: it runs its pure-PyTorch reference (``bitsandbytes.backends.default``), the same
  on every CPU.
* Dequantisation: *not* ``bitsandbytes.functional.dequantize_4bit``. On the CPU that calls native
  code chosen by the CPU's instruction set, and on CPUs with AVX512 (bitsandbytes 0.49 and 0.50)
  it returns wrong values for some blocksizes (errors of several units where a plain
  dequantisation of the same codes errs by about one). Identical files must get identical grades
  on every machine, so the oracle is the arithmetic that bitsandbytes' CUDA kernel performs and
  that the assignment's docstring specifies: look each code up in bitsandbytes' table, multiply
  by its block's absmax *in float32*, and cast to the output dtype last. It is taken from
  bitsandbytes' pure-PyTorch reference dequantisation, called in float32 and then cast with
  ``.to(dtype)`` (that reference's own 16-bit path rounds the table to the target dtype before
  multiplying, which the CUDA kernel does not), and checked against the same formula written
  out here. If a bitsandbytes release moves that private function, the formula here is used
  alone; if the two ever disagree, the test stops with :class:`OracleError`: a fault of the
  grader, never of your code.
"""

from __future__ import annotations

import inspect
from math import prod
from typing import Callable, Sequence

import torch
from bitsandbytes import functional as bnb_functional

__all__ = ["OracleError", "code_book", "quantize", "dequantize", "reference_source"]


class OracleError(RuntimeError):
    """bitsandbytes' reference and the stated formula disagree: the oracle itself is in doubt."""


def code_book() -> torch.Tensor:
    """bitsandbytes' 16 NF4 levels (float32, on the CPU)."""
    return bnb_functional.get_4bit_type("nf4", device="cpu")


def quantize(w: torch.Tensor, blocksize: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """bitsandbytes' NF4 codes of ``w`` (flat uint8, two per byte) and its absmax (float32)."""
    packed, state = bnb_functional.quantize_4bit(w, blocksize=blocksize, quant_type="nf4")
    return packed.reshape(-1), state.absmax


def _formula(packed: torch.Tensor, absmax: torch.Tensor, shape: Sequence[int], blocksize: int) -> torch.Tensor:
    """The CUDA kernel's arithmetic, in float32: ``table[code] * absmax`` of its block."""
    packed = packed.reshape(-1)
    idx = torch.stack([packed >> 4, packed & 0x0F], dim=1).reshape(-1).long()
    n = prod(shape)
    values = code_book().to(packed.device)[idx][:n]
    scale = absmax.float().repeat_interleave(blocksize)[:n]
    return (values * scale).reshape(tuple(shape))


def _bnb_reference() -> tuple[str, Callable[..., torch.Tensor]] | None:
    """bitsandbytes' pure-PyTorch dequantisation (private, so looked up defensively), float32 out."""
    try:
        from bitsandbytes.backends.default import ops
    except Exception:
        return None
    impl = getattr(ops, "_dequantize_4bit_impl", None)            # bitsandbytes <= 0.49
    if inspect.isfunction(impl) and impl.__code__.co_name == "_dequantize_4bit_impl":
        return ("bitsandbytes.backends.default.ops._dequantize_4bit_impl",
                lambda packed, absmax, shape, blocksize: impl(packed, absmax, blocksize, "nf4", tuple(shape),
                                                              torch.float32))
    compute = getattr(ops, "_dequantize_4bit_compute", None)      # 0.50: wrapped in a torch.compile attempt
    plain = inspect.unwrap(compute) if callable(compute) else None  # the function itself, never compiled
    if inspect.isfunction(plain) and plain.__code__.co_name == "_dequantize_4bit_compute":
        return ("bitsandbytes.backends.default.ops._dequantize_4bit_compute",
                lambda packed, absmax, shape, blocksize: plain(packed.reshape(-1), absmax,
                                                               code_book().to(packed.device), blocksize,
                                                               tuple(shape), torch.float32))
    return None


_REFERENCE = _bnb_reference()


def reference_source() -> str:
    """Which implementation the dequantisation oracle is checked against (for the README and reports)."""
    return _REFERENCE[0] if _REFERENCE else "the formula in nf4_oracle.py alone"


def dequantize(packed: torch.Tensor, absmax: torch.Tensor, shape: Sequence[int], blocksize: int = 64,
               dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """The expected ``dequantize_nf4(packed, absmax, shape, blocksize, dtype)``: float32, then ``dtype``."""
    shape = tuple(int(s) for s in shape)
    expected = _formula(packed, absmax, shape, blocksize)
    if _REFERENCE is not None:
        try:
            theirs = _REFERENCE[1](packed, absmax.float(), shape, blocksize)
        except TypeError:      # the private signature changed: the formula alone stays
            theirs = None
        if theirs is not None and not torch.equal(theirs.reshape(shape).float(), expected):
            raise OracleError(f"{_REFERENCE[0]} and the formula in nf4_oracle.py disagree on NF4 "
                              "dequantisation: the grader needs attention (check the bitsandbytes version)")
    return expected.to(dtype)

"""Hidden tests of tasks 1-2: the NF4 code book, block-wise quantisation, double quantisation.

The oracle is bitsandbytes, run here in the trusted process on the very tensors the submission
sees, through the NF4 oracle shared with the public tests (assignments/qlora/tests/nf4_oracle.py):
bitsandbytes' table and quantize_4bit, and a dequantisation that cannot depend on the grading
machine's CPU (bitsandbytes' native CPU dequantize_4bit is wrong on AVX512 CPUs). Codes, absmax and
dequantised values must be bit-identical; double quantisation is held to its stated bound.
"""

import math

import pytest
import torch
from bitsandbytes import functional as bnb_functional

from qlora_oracle import nf4

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def bnb_quantize(w, blocksize):
    packed, state = bnb_functional.quantize_4bit(w, blocksize=blocksize, quant_type="nf4")
    return packed.reshape(-1), state.absmax, state


def weights(rng, shape, dtype):
    """Normal weights with rows of very different scales, and a few outliers (as real layers have)."""
    w = torch.randn(shape, generator=rng)
    w = w * torch.exp(torch.randn(shape[0], 1, generator=rng) * 1.5)
    flat = w.view(-1)
    idx = torch.randint(0, flat.numel(), (max(1, flat.numel() // 500),), generator=rng)
    flat[idx] *= 20
    return w.to(dtype)


@pytest.mark.task("1.1")
@pytest.mark.points(2)
def test_code_book_levels(submission):
    code = submission.call("qlora.nf4_code_book")
    assert code.shape == (16,) and code.dtype == torch.float32, f"got {tuple(code.shape)} {code.dtype}"
    torch.testing.assert_close(code, bnb_functional.get_4bit_type("nf4", device="cpu"), rtol=0, atol=1e-6)
    assert float(code[7]) == 0.0 and float(code[0]) == -1.0 and float(code[15]) == 1.0
    assert int((code > 0).sum()) == 8 and int((code < 0).sum()) == 7, "asymmetric: 8 positive, 7 negative levels"


CASES = [((64, 64), 64), ((96, 128), 128), ((48, 256), 256), ((8, 1024), 1024), ((3, 4096), 4096), ((130, 32), 64)]


@pytest.mark.task("1.2")
@pytest.mark.points(8)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape,blocksize", CASES)
def test_quantize_bit_exact_with_bitsandbytes(submission, rng, dtype, shape, blocksize):
    w = weights(rng, shape, dtype)
    packed, absmax = submission.call("qlora.quantize_nf4", w, blocksize)
    ref_packed, ref_absmax, _ = bnb_quantize(w, blocksize)
    n = w.numel()
    assert packed.dtype == torch.uint8 and tuple(packed.shape) == (n // 2,), f"packed: {packed.dtype} {tuple(packed.shape)}"
    assert absmax.dtype == torch.float32 and tuple(absmax.shape) == (n // blocksize,), f"absmax: {absmax.dtype} {tuple(absmax.shape)}"
    assert torch.equal(absmax, ref_absmax), "absmax differs from bitsandbytes'"
    wrong = int((packed != ref_packed).sum())
    assert wrong == 0, f"{wrong} of {packed.numel()} packed bytes differ from bitsandbytes'"


def reciprocal_block(rng, midpoints):
    """A block whose values sit within an ulp of midpoint * absmax, where ``x * (1 / absmax)`` and
    ``x / absmax`` fall on different sides of the midpoint (bitsandbytes multiplies)."""
    while True:
        absmax = torch.rand(1, generator=rng) * 5 + 0.1
        x = midpoints * absmax
        near = torch.cat([torch.nextafter(x, x + 1), x, torch.nextafter(x, x - 1)])
        near = torch.cat([near, -near])
        split = near[torch.bucketize(near * (1 / absmax), midpoints) != torch.bucketize(near / absmax, midpoints)]
        if split.numel():
            return torch.cat([absmax, split[:63], torch.zeros(max(0, 63 - split.numel()))])


@pytest.mark.task("1.2")
@pytest.mark.points(2)
def test_quantize_edge_blocks(submission, rng):
    """Zero blocks, constant blocks, a lone spike, values exactly on the midpoints, +-absmax, and
    values where multiplying by 1/absmax and dividing by absmax disagree."""
    code = bnb_functional.get_4bit_type("nf4", device="cpu")
    midpoints = (code[1:] + code[:-1]) / 2
    blocks = [
        torch.zeros(64),
        torch.full((64,), -0.75),
        torch.zeros(64).index_fill_(0, torch.tensor([17]), 3.0),
        torch.cat([midpoints, -midpoints, torch.tensor([1.0, -1.0]), midpoints[:15], midpoints.flip(0),
                   torch.tensor([0.5, 1.0])]),
        torch.randn(64, generator=rng) * 1e-30,
        torch.cat([torch.randn(63, generator=rng), torch.tensor([-40.0])]),
        reciprocal_block(rng, midpoints),
    ]
    w = torch.stack(blocks)
    packed, absmax = submission.call("qlora.quantize_nf4", w, 64)
    ref_packed, ref_absmax, _ = bnb_quantize(w, 64)
    assert torch.equal(absmax, ref_absmax), f"absmax {absmax.tolist()} != bitsandbytes' {ref_absmax.tolist()}"
    rows = [i for i in range(len(blocks)) if not torch.equal(packed.view(len(blocks), 32)[i], ref_packed.view(len(blocks), 32)[i])]
    assert not rows, f"codes differ from bitsandbytes' in edge block(s) {rows} (0: zeros, 1: constant, 2: spike, 3: midpoints, 4: tiny, 5: outlier, 6: 1/absmax)"


@pytest.mark.task("1.2")
@pytest.mark.points(1)
@pytest.mark.parametrize("shape,blocksize", [((3, 7), 64), ((96,), 64), ((10, 10), 32)])
def test_quantize_rejects_indivisible(submission, shape, blocksize):
    with pytest.raises(ValueError):
        submission.call("qlora.quantize_nf4", torch.randn(shape), blocksize)


@pytest.mark.task("1.3")
@pytest.mark.points(5)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape,blocksize", [((64, 96), 64), ((32, 512), 256), ((4, 2048), 1024)])
def test_dequantize_bit_exact_with_bitsandbytes(submission, rng, dtype, shape, blocksize):
    w = weights(rng, shape, dtype)
    packed, absmax, state = bnb_quantize(w, blocksize)
    out = submission.call("qlora.dequantize_nf4", packed, absmax, shape, blocksize, dtype)
    expected = nf4.dequantize(packed, absmax, shape, blocksize, dtype)
    assert tuple(out.shape) == shape and out.dtype == dtype, f"got {tuple(out.shape)} {out.dtype}"
    wrong = int((out != expected).sum())
    assert wrong == 0, f"{wrong} of {out.numel()} values differ from bitsandbytes'"


@pytest.mark.task("1.3")
@pytest.mark.points(1)
def test_dequantize_default_dtype_and_round_trip(submission, rng):
    """Default dtype bfloat16; quantise-then-dequantise errs by at most half the widest code gap."""
    w = weights(rng, (40, 128), torch.float32)
    packed, absmax = submission.call("qlora.quantize_nf4", w)
    default = submission.call("qlora.dequantize_nf4", packed, absmax, (40, 128))
    assert default.dtype == torch.bfloat16, f"the default dtype is bfloat16, got {default.dtype}"
    out = submission.call("qlora.dequantize_nf4", packed, absmax, (40, 128), 64, torch.float32)
    torch.testing.assert_close(default, out.to(torch.bfloat16), rtol=0, atol=0)
    code = bnb_functional.get_4bit_type("nf4", device="cpu")
    half_gap = float((code[1:] - code[:-1]).max()) / 2
    scale = absmax.repeat_interleave(64).view(40, 128)
    err = (out.float() - w).abs()
    assert bool((err <= scale * half_gap * 1.01 + 1e-6).all()), f"round-trip error too large: {float((err / scale).max())}"


@pytest.mark.task("2.1")
@pytest.mark.points(3)
@pytest.mark.parametrize("n", [1, 100, 256, 1000, 4097])
def test_double_quant_error_bound(submission, rng, n):
    absmax = torch.rand(n, generator=rng) * torch.exp(torch.randn(1, generator=rng))
    q, scales, offset = submission.call("qlora.double_quantize", absmax)
    blocks = math.ceil(n / 256)
    assert q.dtype == torch.uint8 and tuple(q.shape) == (n,), f"q: {q.dtype} {tuple(q.shape)}"
    assert scales.dtype == torch.float32 and tuple(scales.shape) == (blocks,), f"scales: {scales.dtype} {tuple(scales.shape)}"
    assert isinstance(offset, float), f"offset should be a Python float, got {type(offset).__name__}"
    assert offset == pytest.approx(float(absmax.double().mean()), rel=1e-5), "offset is the mean of absmax"
    centred = torch.nn.functional.pad(absmax - offset, (0, blocks * 256 - n)).view(blocks, 256)
    torch.testing.assert_close(scales, centred.abs().amax(dim=1), rtol=1e-5, atol=1e-7)
    back = submission.call("qlora.double_dequantize", q, scales, offset)
    assert back.dtype == torch.float32 and tuple(back.shape) == (n,)
    bound = scales.repeat_interleave(256)[:n] / 254 * (1 + 1e-4) + 1e-6 * absmax.abs().max()
    over = int(((back - absmax).abs() > bound).sum())
    assert over == 0, f"{over} reconstructed constants err by more than scale / 254"


@pytest.mark.task("2.1")
@pytest.mark.points(2)
def test_double_quant_constant_and_formula(submission, rng):
    """A constant absmax has zero scale and comes back exactly; double_dequantize is the stated formula."""
    absmax = torch.full((300,), 0.625)
    q, scales, offset = submission.call("qlora.double_quantize", absmax)
    assert bool((scales == 0).all()) and bool((q == 128).all()), "a constant block stores scale 0 and q = 128"
    torch.testing.assert_close(submission.call("qlora.double_dequantize", q, scales, offset), absmax)
    q = torch.randint(1, 256, (600,), generator=rng, dtype=torch.uint8)
    scales, offset = torch.rand(3, generator=rng), 0.3
    expected = (q.float() - 128) / 127 * scales.repeat_interleave(256)[:600] + offset
    torch.testing.assert_close(submission.call("qlora.double_dequantize", q, scales, offset), expected,
                               rtol=1e-6, atol=1e-7)


@pytest.mark.task("2.2")
@pytest.mark.points(2)
@pytest.mark.parametrize("blocksize,double_quant,dq_blocksize", [
    (64, True, 256), (64, False, 256), (128, True, 256), (32, False, 256), (256, True, 128)])
def test_bits_per_parameter(submission, blocksize, double_quant, dq_blocksize):
    got = submission.call("qlora.bits_per_parameter", blocksize, double_quant, dq_blocksize)
    codes, absmax_bits = 4, (8 if double_quant else 32) / blocksize
    scale_bits = 32 / (blocksize * dq_blocksize) if double_quant else 0
    assert got == pytest.approx(codes + absmax_bits + scale_bits, rel=1e-9)
    if (blocksize, dq_blocksize) == (64, 256):
        assert got == pytest.approx(4.127 if double_quant else 4.5, abs=5e-4), "the paper's figures"

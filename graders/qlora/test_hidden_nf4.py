"""Hidden tests of tasks 1-2: the NF4 code book, block-wise quantisation, double quantisation.

The oracle is bitsandbytes, run here in the trusted process on the very tensors the submission
sees, through the NF4 oracle shared with the public tests (assignments/qlora/tests/nf4_oracle.py):
bitsandbytes' table and quantize_4bit, and a dequantisation that cannot depend on the grading
machine's CPU (bitsandbytes' native CPU dequantize_4bit is wrong on AVX512 CPUs). Codes, absmax,
levels and dequantised values must be bit-identical (elementwise arithmetic only: no reduction
whose order could depend on the number of threads); double quantisation is held to its stated
bound. Each function is also checked for leaving its inputs unchanged, for non-contiguous and
other-shaped inputs, and for following its input's device (on the meta device).
"""

import math

import pytest
import torch
import torch.nn.functional as F

import probes
from misconceptions import CATALOGUE
from qlora_oracle import explain, nf4

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
NF4_OFFSET = 0.9677083


def dtype_name(dtype):
    return str(dtype).removeprefix("torch.")


def weights(rng, shape, dtype):
    """Normal weights with rows of very different scales, and a few outliers (as real layers have)."""
    w = torch.randn(shape, generator=rng)
    w = w * torch.exp(torch.randn(shape[0], 1, generator=rng) * 1.5)
    flat = w.view(-1)
    idx = torch.randint(0, flat.numel(), (max(1, flat.numel() // 500),), generator=rng)
    flat[idx] *= 20
    return w.to(dtype)


# ------------------------------------------------------------------ wrong answers, computed here

def bits(t):
    """A tensor's bit patterns as integers: diagnoses of bit-exact checks compare these exactly."""
    t = t.detach().contiguous()
    return t if not t.is_floating_point() else t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def exact(variants):
    """Variants compared bit for bit (a tolerance would also match the right answer)."""
    return {name: (lambda make=make: bits(make())) for name, make in variants.items()}


def code_book_variant(negatives=8, zero=True, round_first=True, positive_points=9):
    """The NF4 construction with one detail changed (for diagnoses only)."""
    spaced = torch.linspace(NF4_OFFSET, 0.5, positive_points)
    positive = torch.special.ndtri((spaced[:-1] if positive_points == 9 else spaced).double())
    negative = -torch.special.ndtri(torch.linspace(NF4_OFFSET, 0.5, negatives)[:-1].double())
    parts = [positive, negative] + ([torch.zeros(1, dtype=torch.float64)] if zero else [])
    values = torch.cat(parts)
    if round_first:
        values = values.float().sort().values
        return values / values.max()
    values = values.sort().values
    return (values / values.max()).float()


def codes_variant(w, blocksize, *, divide=False, right=False, boundaries="midpoints", guard=True):
    """NF4 codes of ``w`` by the stated algorithm with one detail changed (for diagnoses only)."""
    blocks = w.reshape(-1, blocksize).float()
    absmax = blocks.abs().amax(dim=1)
    if divide:
        scaled = blocks / absmax.clamp(min=1e-38).unsqueeze(1)
    else:
        scaled = blocks * (1.0 / (absmax.clamp(min=1e-38) if guard else absmax)).unsqueeze(1)
    code = nf4.code_book()
    bounds = (code[1:] + code[:-1]) / 2 if boundaries == "midpoints" else code[1:-1]
    idx = torch.bucketize(scaled.clamp(-1, 1).reshape(-1), bounds, right=right).to(torch.uint8)
    return (idx[0::2] << 4) | idx[1::2]


def swap_nibbles(packed):
    return (packed >> 4) | ((packed & 0x0F) << 4)


def code_variants(w, blocksize, ref_packed):
    return {"nibble_order": lambda: swap_nibbles(ref_packed),
            "divides_by_absmax": lambda: codes_variant(w, blocksize, divide=True),
            "midpoint_ties_up": lambda: codes_variant(w, blocksize, right=True),
            "rounds_down_to_level": lambda: codes_variant(w, blocksize, boundaries="levels", right=True),
            "zero_block_unguarded": lambda: codes_variant(w, blocksize, guard=False)}


def absmax_variants(w, blocksize):
    blocks = w.reshape(-1, blocksize).float()
    return {"absmax_without_abs": lambda: blocks.amax(dim=1).abs(),
            "absmax_per_tensor": lambda: blocks.abs().amax().expand(blocks.shape[0])}


def dequantize_variants(packed, absmax, shape, blocksize, dtype):
    idx = torch.stack([packed >> 4, packed & 0x0F], dim=1).reshape(-1).long()
    variants = {
        "unpack_low_nibble_first": lambda: nf4.dequantize(swap_nibbles(packed), absmax, shape, blocksize, dtype),
        "absmax_tiled": lambda: (nf4.code_book()[idx] * absmax.float().repeat(blocksize)).reshape(shape).to(dtype),
        "code_book_rounded_late": lambda: (code_book_variant(round_first=False)[idx].reshape(-1, blocksize)
                                           * absmax.float().unsqueeze(1)).reshape(shape).to(dtype),
    }
    if dtype != torch.float32:   # in float32 this wrong order of operations is the right one
        variants["dequantize_in_target_dtype"] = lambda: (
            nf4.code_book().to(dtype)[idx].reshape(-1, blocksize) * absmax.to(dtype).unsqueeze(1)).reshape(shape)
    return variants


# ------------------------------------------------------------------ 1.1 the code book

@pytest.mark.task("1.1")
@pytest.mark.points(2)
def test_code_book_levels(submission):
    code = submission.call("qlora.nf4_code_book")
    assert code.shape == (16,) and code.dtype == torch.float32, f"got {tuple(code.shape)} {code.dtype}"
    expected = nf4.code_book()
    with explain(bits(code), bits(expected), CATALOGUE, what="the 16 NF4 levels, bit for bit equal to bitsandbytes' table",
                 variants=exact({"code_book_symmetric": lambda: code_book_variant(negatives=9, zero=False),
                                 "code_book_rounded_late": lambda: code_book_variant(round_first=False),
                                 "code_book_positive_points": lambda: code_book_variant(positive_points=8)})):
        assert torch.equal(code, expected), "the levels differ from bitsandbytes' table"
    assert int((code > 0).sum()) == 8 and int((code < 0).sum()) == 7, "asymmetric: 8 positive, 7 negative levels"


# ------------------------------------------------------------------ 1.2 quantisation

CASES = [((64, 64), 64), ((96, 128), 128), ((48, 256), 256), ((8, 1024), 1024), ((3, 4096), 4096), ((130, 32), 64)]
QUANTIZE_IDS = [f"{dtype_name(d)} {s[0]}x{s[1]} weight in blocks of {b}" for s, b in CASES for d in DTYPES]


def check_quantized(w, blocksize, packed, absmax, what):
    ref_packed, ref_absmax = nf4.quantize(w, blocksize)
    n = w.numel()
    assert packed.dtype == torch.uint8 and tuple(packed.shape) == (n // 2,), f"packed: {packed.dtype} {tuple(packed.shape)}"
    assert absmax.dtype == torch.float32 and tuple(absmax.shape) == (n // blocksize,), \
        f"absmax: {absmax.dtype} {tuple(absmax.shape)}"
    with explain(bits(absmax), bits(ref_absmax), CATALOGUE, variants=exact(absmax_variants(w, blocksize)),
                 what=f"the absmax of {what}"):
        assert torch.equal(absmax, ref_absmax), "absmax differs from bitsandbytes'"
    with explain(packed, ref_packed, CATALOGUE, variants=code_variants(w, blocksize, ref_packed),
                 what=f"the packed NF4 codes of {what}"):
        wrong = int((packed != ref_packed).sum())
        assert wrong == 0, f"{wrong} of {packed.numel()} packed bytes differ from bitsandbytes'"


@pytest.mark.task("1.2")
@pytest.mark.points(5.5)
@pytest.mark.parametrize("shape,blocksize,dtype", [(s, b, d) for s, b in CASES for d in DTYPES], ids=QUANTIZE_IDS)
def test_quantize_bit_exact_with_bitsandbytes(submission, rng, shape, blocksize, dtype):
    w = weights(rng, shape, dtype)
    packed, absmax = submission.call("qlora.quantize_nf4", w, blocksize)
    check_quantized(w, blocksize, packed, absmax, f"a {dtype_name(dtype)} weight in blocks of {blocksize}")


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
    """Zero blocks, constant blocks, a lone spike, values exactly on the midpoints, +-absmax, tiny
    values, an outlier, a negative maximum, and values where multiplying by 1/absmax and dividing by
    absmax disagree."""
    code = nf4.code_book()
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
        -torch.rand(64, generator=rng) - 0.5,
    ]
    w = torch.stack(blocks)
    packed, absmax = submission.call("qlora.quantize_nf4", w, 64)
    check_quantized(w, 64, packed, absmax, "edge blocks (zeros, constants, midpoints, outliers)")


@pytest.mark.task("1.2")
@pytest.mark.points(1)
@pytest.mark.parametrize("shape,blocksize", [((3, 7), 64), ((96,), 64), ((10, 10), 32), ((3, 7), 7)],
                         ids=["21 elements in blocks of 64", "96 elements in blocks of 64",
                              "100 elements in blocks of 32", "an odd blocksize (21 elements in blocks of 7)"])
def test_quantize_rejects_indivisible(submission, shape, blocksize):
    with pytest.raises(ValueError):
        submission.call("qlora.quantize_nf4", torch.randn(shape), blocksize)


@pytest.mark.task("1.2")
@pytest.mark.points(1)
def test_quantize_any_layout(submission, rng):
    """A transposed (non-contiguous) weight, a 3-d and a 1-d tensor: flattened row-major."""
    w = weights(rng, (64, 96), torch.float32)
    got = submission.run(probes.quantize_views, w, 64)
    check_quantized(w.t().contiguous(), 64, got["packed"], got["absmax"], "a transposed weight")
    for shape in [(4, 8, 64), (256,)]:
        x = torch.randn(shape, generator=rng)
        packed, absmax = submission.call("qlora.quantize_nf4", x, 64)
        check_quantized(x, 64, packed, absmax, f"a {len(shape)}-d tensor")


@pytest.mark.task("1.2")
@pytest.mark.points(1)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32 weight", "bfloat16 weight"])
def test_quantize_leaves_its_input_unchanged(submission, rng, dtype):
    w = weights(rng, (32, 128), dtype)
    packed, absmax = submission.call_pure("qlora.quantize_nf4", w, 64)
    check_quantized(w, 64, packed, absmax, "a weight")


@pytest.mark.task("1.2")
@pytest.mark.points(0.5)
def test_quantize_follows_the_input_device(submission):
    """On the meta device (a device without data): the codes and constants stay on the input's device."""
    got = submission.run(probes.nf4_on_meta, [16, 128], 64, torch.bfloat16, "quantize")
    assert got["packed"] == ["meta", torch.uint8, [1024]], f"packed: {got['packed']}"
    assert got["absmax"] == ["meta", torch.float32, [32]], f"absmax: {got['absmax']}"


# ------------------------------------------------------------------ 1.3 dequantisation

DEQUANTIZE_CASES = [((64, 96), 64), ((32, 512), 256), ((4, 2048), 1024)]


@pytest.mark.task("1.3")
@pytest.mark.points(4)
@pytest.mark.parametrize("shape,blocksize,dtype", [(s, b, d) for s, b in DEQUANTIZE_CASES for d in DTYPES],
                         ids=[f"{dtype_name(d)} {s[0]}x{s[1]} in blocks of {b}" for s, b in DEQUANTIZE_CASES for d in DTYPES])
def test_dequantize_bit_exact_with_bitsandbytes(submission, rng, shape, blocksize, dtype):
    w = weights(rng, shape, dtype)
    packed, absmax = nf4.quantize(w, blocksize)
    out = submission.call("qlora.dequantize_nf4", packed, absmax, shape, blocksize, dtype)
    expected = nf4.dequantize(packed, absmax, shape, blocksize, dtype)
    assert tuple(out.shape) == shape and out.dtype == dtype, f"got {tuple(out.shape)} {out.dtype}"
    with explain(bits(out), bits(expected), CATALOGUE,
                 variants=exact(dequantize_variants(packed, absmax, shape, blocksize, dtype)),
                 what=f"dequantised {dtype_name(dtype)} values, bit for bit"):
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
    code = nf4.code_book()
    half_gap = float((code[1:] - code[:-1]).max()) / 2
    scale = absmax.repeat_interleave(64).view(40, 128)
    err = (out.float() - w).abs()
    assert bool((err <= scale * half_gap * 1.01 + 1e-6).all()), f"round-trip error too large: {float((err / scale).max())}"


@pytest.mark.task("1.3")
@pytest.mark.points(0.5)
def test_dequantize_leaves_its_inputs_unchanged(submission, rng):
    """The codes and constants stay as they were; the shape may be any sequence (here a list)."""
    w = weights(rng, (16, 256), torch.float32)
    packed, absmax = nf4.quantize(w, 128)
    out = submission.call_pure("qlora.dequantize_nf4", packed, absmax, [16, 256], 128, torch.float16)
    assert torch.equal(out, nf4.dequantize(packed, absmax, (16, 256), 128, torch.float16))


@pytest.mark.task("1.3")
@pytest.mark.points(0.5)
def test_dequantize_follows_the_codes_device(submission):
    """On the meta device: the dequantised weight is on the codes' device, in the asked dtype."""
    got = submission.run(probes.nf4_on_meta, [16, 128], 64, torch.float16, "dequantize")
    assert got["dequantized"] == ["meta", torch.float16, [16, 128]], f"dequantized: {got['dequantized']}"


# ------------------------------------------------------------------ 2.1 double quantisation

def dq_codes(absmax, rounding=torch.round, steps=127, guard=True, blocksize=256):
    """Double quantisation by the stated formula, with one detail changed (diagnoses only)."""
    absmax = absmax.float().reshape(-1)
    offset = float(absmax.mean())
    c = absmax - offset
    n = c.numel()
    blocks = F.pad(c, (0, (-n) % blocksize)).reshape(-1, blocksize)
    scales = blocks.abs().amax(dim=1)
    q = rounding(blocks / (scales.clamp(min=1e-38) if guard else scales).unsqueeze(1) * steps) + 128
    return q.reshape(-1)[:n].to(torch.uint8), scales, offset


def dq_round_trip(absmax, **changed):
    return double_dequantize_formula(*dq_codes(absmax, **changed))


def double_dequantize_formula(q, scales, offset):
    return (q.float() - 128) / 127 * scales.repeat_interleave(256)[:q.numel()] + offset


@pytest.mark.task("2.1")
@pytest.mark.points(2)
@pytest.mark.parametrize("n", [1, 100, 256, 1000, 4097], ids=lambda n: f"{n} constants")
def test_double_quant_error_bound(submission, rng, n):
    absmax = torch.rand(n, generator=rng) * torch.exp(torch.randn(1, generator=rng))
    q, scales, offset = submission.call("qlora.double_quantize", absmax)
    blocks = math.ceil(n / 256)
    assert q.dtype == torch.uint8 and tuple(q.shape) == (n,), f"q: {q.dtype} {tuple(q.shape)}"
    assert scales.dtype == torch.float32 and tuple(scales.shape) == (blocks,), f"scales: {scales.dtype} {tuple(scales.shape)}"
    assert isinstance(offset, float), f"offset should be a Python float, got {type(offset).__name__}"
    with explain(offset, float(absmax.mean()), CATALOGUE, what="the offset, the mean of the constants",
                 variants={"dq_offset_median": lambda: float(absmax.median())}):
        assert offset == pytest.approx(float(absmax.double().mean()), rel=1e-5), "offset is the mean of absmax"
    centred = F.pad(absmax - offset, (0, blocks * 256 - n)).view(blocks, 256)
    uncentred = F.pad(absmax, (0, blocks * 256 - n)).view(blocks, 256)
    with explain(scales, centred.abs().amax(dim=1), CATALOGUE, what="the per-block scales of the centred constants",
                 variants={"dq_not_centred": lambda: uncentred.abs().amax(dim=1),
                           "dq_one_scale": lambda: centred.abs().amax().expand(blocks)}):
        torch.testing.assert_close(scales, centred.abs().amax(dim=1), rtol=1e-5, atol=1e-7)
    back = submission.call("qlora.double_dequantize", q, scales, offset)
    assert back.dtype == torch.float32 and tuple(back.shape) == (n,)
    bound = scales.repeat_interleave(256)[:n] / 254 * (1 + 1e-4) + 1e-6 * absmax.abs().max()
    with explain(back, absmax, CATALOGUE, what="the constants after a round trip, within half a step",
                 variants={"dq_offset_not_added": lambda: double_dequantize_formula(q, scales, 0.0),
                           "dq_truncates": lambda: dq_round_trip(absmax, rounding=torch.trunc),
                           "dq_scale_128": lambda: dq_round_trip(absmax, steps=128)}):
        over = int(((back - absmax).abs() > bound).sum())
        assert over == 0, f"{over} reconstructed constants err by more than scale / 254"


@pytest.mark.task("2.1")
@pytest.mark.points(1.5)
def test_double_quant_constant_and_formula(submission, rng):
    """A constant absmax has zero scale and comes back exactly; double_dequantize is the stated formula."""
    absmax = torch.full((300,), 0.625)
    q, scales, offset = submission.call("qlora.double_quantize", absmax)
    with explain(q, torch.full((300,), 128, dtype=torch.uint8), CATALOGUE, what="a constant block stores q = 128",
                 variants={"dq_zero_scale_unguarded": lambda: dq_codes(absmax, guard=False)[0]}):
        assert bool((scales == 0).all()) and bool((q == 128).all()), "a constant block stores scale 0 and q = 128"
    torch.testing.assert_close(submission.call("qlora.double_dequantize", q, scales, offset), absmax)
    q = torch.randint(1, 256, (600,), generator=rng, dtype=torch.uint8)
    scales, offset = torch.rand(3, generator=rng), 0.3
    expected = double_dequantize_formula(q, scales, offset)
    back = submission.call("qlora.double_dequantize", q, scales, offset)
    with explain(back, expected, CATALOGUE, what="double_dequantize against its formula",
                 variants={"dq_offset_not_added": lambda: double_dequantize_formula(q, scales, 0.0)}):
        torch.testing.assert_close(back, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.task("2.1")
@pytest.mark.points(1)
def test_double_quant_leaves_its_inputs_unchanged(submission, rng):
    absmax = torch.rand(700, generator=rng) + 0.1
    q, scales, offset = submission.call_pure("qlora.double_quantize", absmax)
    back = submission.call_pure("qlora.double_dequantize", q, scales, offset)
    assert tuple(back.shape) == (700,)


# ------------------------------------------------------------------ 2.2 bits per parameter

@pytest.mark.task("2.2")
@pytest.mark.points(2)
@pytest.mark.parametrize("blocksize,double_quant,dq_blocksize", [
    (64, True, 256), (64, False, 256), (128, True, 256), (32, False, 256), (256, True, 128)],
    ids=["blocks of 64, double quantised (the paper)", "blocks of 64, plain (the paper)",
         "blocks of 128, double quantised", "blocks of 32, plain", "blocks of 256, double quantised in groups of 128"])
def test_bits_per_parameter(submission, blocksize, double_quant, dq_blocksize):
    got = submission.call("qlora.bits_per_parameter", blocksize, double_quant, dq_blocksize)
    codes, absmax_bits = 4, (8 if double_quant else 32) / blocksize
    scale_bits = 32 / (blocksize * dq_blocksize) if double_quant else 0
    variants = {"bits_without_scales": lambda: 4 + 8 / blocksize,
                "bits_scales_per_block": lambda: 4 + 8 / blocksize + 32 / dq_blocksize} if double_quant else {}
    with explain(got, codes + absmax_bits + scale_bits, CATALOGUE, variants=variants,
                 what="bits per weight: codes plus the constants' share"):
        assert got == pytest.approx(codes + absmax_bits + scale_bits, rel=1e-9)
    if (blocksize, dq_blocksize) == (64, 256):
        assert got == pytest.approx(4.127 if double_quant else 4.5, abs=5e-4), "the paper's figures"

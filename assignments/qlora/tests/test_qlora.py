"""Public tests of `qlora`. Run `pytest` in the assignment folder, or `course check qlora [--task N.M]`.

bitsandbytes is the oracle: these tests quantise the same tensors with it and compare bit for bit
(through nf4_oracle.py, next to this file: it explains why dequantisation is not bitsandbytes' CPU
dequantize_4bit, whose native code is wrong on some CPUs).
Hidden tests check the same things more thoroughly (more shapes, dtypes, blocksizes and edge cases,
gradients, a training run's details, and the real bitsandbytes training run on a GPU).
"""

import math

import pytest
import torch
import torch.nn.functional as F

import nf4_oracle
import qlora_public_probes as probes



def bnb_nf4(w, blocksize=64):
    """bitsandbytes' NF4 codes (flat uint8) and absmax of ``w``."""
    packed, absmax = nf4_oracle.quantize(w, blocksize)
    return packed, absmax


@pytest.mark.task("1.1")
@pytest.mark.points(3)
def test_code_book_is_the_bitsandbytes_table(submission):
    code = submission.call("qlora.nf4_code_book")
    assert code.shape == (16,) and code.dtype == torch.float32, f"got {tuple(code.shape)} {code.dtype}"
    expected = nf4_oracle.code_book()
    torch.testing.assert_close(code, expected, rtol=0, atol=1e-6)


@pytest.mark.task("1.2")
@pytest.mark.points(3)
def test_quantize_a_small_tensor_like_bitsandbytes(submission):
    w = torch.randn(32, 64, generator=torch.Generator().manual_seed(0))
    packed, absmax = submission.call("qlora.quantize_nf4", w, 64)
    ref_packed, ref_absmax = bnb_nf4(w, 64)
    assert packed.dtype == torch.uint8 and packed.shape == (w.numel() // 2,), f"packed: {packed.dtype} {tuple(packed.shape)}"
    assert absmax.dtype == torch.float32 and absmax.shape == (w.numel() // 64,), f"absmax: {absmax.dtype} {tuple(absmax.shape)}"
    assert torch.equal(absmax, ref_absmax), "absmax differs from bitsandbytes'"
    wrong = int((packed != ref_packed).sum())
    assert wrong == 0, f"{wrong} of {packed.numel()} packed bytes differ from bitsandbytes'"


@pytest.mark.task("1.2")
@pytest.mark.points(1)
def test_quantize_rejects_a_ragged_tensor(submission):
    with pytest.raises(ValueError):
        submission.call("qlora.quantize_nf4", torch.randn(10, 10), 64)


@pytest.mark.task("1.3")
@pytest.mark.points(3)
def test_dequantize_like_bitsandbytes(submission):
    w = torch.randn(16, 128, generator=torch.Generator().manual_seed(1), dtype=torch.bfloat16)
    packed, absmax = bnb_nf4(w, 64)
    out = submission.call("qlora.dequantize_nf4", packed, absmax, (16, 128), 64, torch.bfloat16)
    expected = nf4_oracle.dequantize(packed, absmax, (16, 128), 64, torch.bfloat16)
    assert out.shape == (16, 128) and out.dtype == torch.bfloat16, f"got {tuple(out.shape)} {out.dtype}"
    assert torch.equal(out, expected), f"{int((out != expected).sum())} values differ from bitsandbytes'"


@pytest.mark.task("2.1")
@pytest.mark.points(3)
def test_double_quant_round_trip(submission):
    absmax = torch.rand(300, generator=torch.Generator().manual_seed(2)) * 2
    q, scales, offset = submission.call("qlora.double_quantize", absmax)
    assert q.dtype == torch.uint8 and q.shape == (300,), f"q: {q.dtype} {tuple(q.shape)}"
    assert scales.shape == (2,), f"300 constants in blocks of 256 need 2 scales, got {tuple(scales.shape)}"
    assert offset == pytest.approx(float(absmax.mean()), rel=1e-6)
    back = submission.call("qlora.double_dequantize", q, scales, offset)
    bound = scales.repeat_interleave(256)[:300] / 254
    assert bool(((back - absmax).abs() <= bound * (1 + 1e-4) + 1e-6).all()), "error above half a step"


@pytest.mark.task("2.2")
@pytest.mark.points(2)
def test_bits_per_parameter_paper_figures(submission):
    assert submission.call("qlora.bits_per_parameter", 64, False) == pytest.approx(4.5)
    assert submission.call("qlora.bits_per_parameter", 64, True, 256) == pytest.approx(4.127, abs=5e-4)


@pytest.mark.task("3.2")
@pytest.mark.points(3)
def test_linear4bit_forward_is_f_linear_of_the_dequantised_weight(submission):
    gen = torch.Generator().manual_seed(3)
    weight, bias = torch.randn(32, 64, generator=gen), torch.randn(32, generator=gen)
    x = torch.randn(5, 64, generator=gen)
    got = submission.run(probes.linear4bit_forward, weight, bias, x, False, torch.float32)
    assert got["parameters"] == [], f"a Linear4bit has no parameters, found {got['parameters']}"
    packed, absmax = bnb_nf4(weight, 64)
    expected_w = nf4_oracle.dequantize(packed, absmax, weight.shape, 64, torch.float32)
    torch.testing.assert_close(got["weight"], expected_w, rtol=0, atol=0)
    torch.testing.assert_close(got["out"], F.linear(x, expected_w, bias), rtol=1e-5, atol=1e-5)


@pytest.mark.task("3.3")
@pytest.mark.points(2)
def test_qlora_linear_starts_as_its_base(submission):
    gen = torch.Generator().manual_seed(4)
    weight, x = torch.randn(48, 64, generator=gen), torch.randn(3, 64, generator=gen)
    got = submission.run(probes.qlora_linear_at_init, weight, x, 8, 16)
    trainable = sorted(n for n, flag in got["requires_grad"].items() if flag)
    assert trainable == ["lora_A.weight", "lora_B.weight"], f"trainable: {trainable}"
    assert got["A"].shape == (8, 64) and got["B"].shape == (48, 8)
    assert bool((got["B"] == 0).all()), "B starts at zero"
    assert float(got["A"].abs().max()) <= 1 / math.sqrt(64) + 1e-6, "A is Kaiming-uniform: |A| <= 1/sqrt(in)"
    torch.testing.assert_close(got["out"], got["base_out"])


@pytest.mark.task("3.4")
@pytest.mark.points(2)
def test_quantize_model_replaces_linears_but_the_head(submission):
    got = submission.run(probes.quantize_small_model)
    assert got["types"] == {"up": "Linear4bit", "act": "ReLU", "down": "Linear4bit", "lm_head": "Linear"}
    report = got["report"]
    assert report["before_bytes"] == (2 * 64 * 256 + 256 + 64) * 2, f"bfloat16 weights and biases of up and down: {report}"
    assert report["before_bytes"] / report["after_bytes"] >= 3.5, f"less than 3.5x smaller: {report}"
    with_lora = submission.run(probes.quantize_small_model, 4)
    trainable = sorted(n for n, flag in with_lora["requires_grad"].items() if flag)
    assert trainable == ["down.lora_A.weight", "down.lora_B.weight", "up.lora_A.weight",
                         "up.lora_B.weight"], f"only A and B train: {trainable}"


def facts(n):
    """A memorisable data set (the tests make their own)."""
    return [f"note {i}: the key to box {i % 3} is under the {['mat', 'pot', 'log'][i % 3]}." for i in range(n)]


@pytest.mark.task("4.1")
@pytest.mark.points(3)
@pytest.mark.timeout(120)
def test_course_backend_trains_a_tiny_llama(submission):
    got = submission.run(probes.train_tiny_llama, facts(8), 12, 1e-2, 8, 16)
    losses = got["losses"]
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, f"the loss should fall: {losses}"
    assert 0 < got["trainable_params"] < got["total_params"]

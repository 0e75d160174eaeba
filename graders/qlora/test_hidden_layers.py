"""Hidden tests of task 3: Linear4bit, QLoRALinear and quantize_model.

The 4-bit weight is checked against bitsandbytes' codes of the same float weight; the forward
pass against F.linear with the oracle's dequantised weight (nf4_oracle: bitsandbytes' arithmetic,
independent of the CPU); LoRA against its formula (peft's).
"""

import math

import pytest
import torch
import torch.nn.functional as F
import probes
from qlora_oracle import nf4

TINY = {"hidden": 64, "intermediate": 128, "layers": 2, "heads": 4, "kv_heads": 2, "init": 0.02, "seed": 0}
PROJECTIONS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


def bnb_reference(weight, blocksize=64):
    packed, absmax = nf4.quantize(weight, blocksize)
    return packed, absmax, nf4.dequantize(packed, absmax, weight.shape, blocksize, weight.dtype)


def bnb_dequantize(packed, absmax, shape, blocksize, dtype):
    """The oracle's dequantisation of these codes with these (possibly double-dequantised) constants."""
    return nf4.dequantize(packed, absmax, shape, blocksize, dtype)


def double_dequantize_formula(q, scales, offset):
    return (q.float() - 128) / 127 * scales.repeat_interleave(256)[:q.numel()] + offset


@pytest.mark.task("3.1")
@pytest.mark.points(4)
@pytest.mark.parametrize("double_quant", [False, True])
@pytest.mark.parametrize("blocksize", [64, 128])
def test_from_linear_stores_nf4_codes_only(submission, rng, double_quant, blocksize):
    weight = torch.randn(96, 128, generator=rng).to(torch.bfloat16)
    bias = torch.randn(96, generator=rng).to(torch.bfloat16)
    got = submission.run(probes.linear4bit_state, weight, bias, blocksize, double_quant, torch.bfloat16)
    assert got["is_module"], "Linear4bit must be an nn.Module"
    assert got["parameters"] == [], f"a Linear4bit keeps no float weight and no parameters: {got['parameters']}"
    buffers = got["buffers"]
    floats = [n for n, b in buffers.items() if b is not None and b.is_floating_point() and b.numel() >= weight.numel() // 8]
    assert not floats, f"buffers as large as a float weight: {floats}"
    ref_packed, ref_absmax, _ = bnb_reference(weight, blocksize)
    assert torch.equal(buffers["packed"], ref_packed), "packed codes differ from bitsandbytes' codes of the weight"
    if double_quant:
        assert "absmax" not in buffers, "with double quantisation the float32 absmax is not stored"
        q, scales, offset = buffers["absmax_q"], buffers["absmax_scales"], buffers["absmax_offset"]
        assert q.dtype == torch.uint8 and scales.dtype == torch.float32
        back = double_dequantize_formula(q, scales, float(offset))
        bound = scales.repeat_interleave(256)[:q.numel()] / 254 * (1 + 1e-4) + 1e-6
        assert bool(((back - ref_absmax).abs() <= bound).all()), "the stored constants do not give back absmax"
        absmax = back
    else:
        assert torch.equal(buffers["absmax"], ref_absmax), "absmax differs from bitsandbytes'"
        absmax = ref_absmax
    assert buffers["bias"].dtype == torch.bfloat16 and torch.equal(buffers["bias"], bias)
    nbytes = sum(b.numel() * b.element_size() for b in buffers.values() if b is not None)
    assert got["memory_bytes"] == nbytes, f"memory_bytes {got['memory_bytes']} != bytes of the buffers {nbytes}"
    expected = bnb_dequantize(ref_packed, absmax, weight.shape, blocksize, torch.bfloat16)
    torch.testing.assert_close(got["weight"], expected, rtol=0, atol=0)


@pytest.mark.task("3.2")
@pytest.mark.points(4)
@pytest.mark.parametrize("double_quant,bias,compute_dtype,x_dtype", [
    (False, True, torch.float32, torch.float32),
    (True, False, torch.bfloat16, torch.bfloat16),
    (True, True, torch.bfloat16, torch.float32),
    (False, False, torch.float16, torch.float16),
])
def test_linear4bit_forward_is_f_linear(submission, rng, double_quant, bias, compute_dtype, x_dtype):
    weight = torch.randn(80, 64, generator=rng)
    b = torch.randn(80, generator=rng) if bias else None
    x = torch.randn(2, 3, 64, generator=rng).to(x_dtype)
    grad_out = torch.randn(2, 3, 80, generator=rng)
    got = submission.run(probes.linear4bit_forward_backward, weight, b, x, grad_out, double_quant, compute_dtype)
    ref_packed, ref_absmax, ref_weight = bnb_reference(weight)
    w = got["weight"]
    assert w.dtype == compute_dtype and tuple(w.shape) == (80, 64), f"dequantized_weight: {w.dtype} {tuple(w.shape)}"
    if double_quant:
        torch.testing.assert_close(w.float(), ref_weight.float(), rtol=0.02, atol=1e-3 * float(ref_absmax.max()))
    else:
        torch.testing.assert_close(w, ref_weight.to(compute_dtype), rtol=0, atol=0)
    bias_c = None if b is None else b.to(compute_dtype)
    expected = F.linear(x.to(compute_dtype).float(), w.float(), None if b is None else bias_c.float())
    out = got["out"]
    assert out.dtype == x_dtype and tuple(out.shape) == (2, 3, 80), f"out: {out.dtype} {tuple(out.shape)} (in x's dtype)"
    tol = {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 3e-3}[compute_dtype]
    torch.testing.assert_close(out.float(), expected, rtol=tol, atol=tol * float(expected.abs().max()))
    expected_grad = grad_out @ w.float()
    torch.testing.assert_close(got["x_grad"].float(), expected_grad, rtol=tol,
                               atol=tol * float(expected_grad.abs().max()))


@pytest.mark.task("3.2")
@pytest.mark.points(2)
def test_no_gradient_reaches_the_4bit_weight(submission, rng):
    weight = torch.randn(32, 64, generator=rng)
    x, grad_out = torch.randn(4, 64, generator=rng), torch.randn(4, 32, generator=rng)
    got = submission.run(probes.linear4bit_forward_backward, weight, torch.randn(32, generator=rng), x, grad_out,
                         True, torch.float32)
    assert got["with_grad"] == [], f"gradients reached {got['with_grad']}"
    assert got["requires_grad"] == [], f"these require grad: {got['requires_grad']}"
    assert got["x_grad"] is not None, "the gradient must still flow to the layer's input (LoRA below needs it)"
    torch.testing.assert_close(got["x_grad"], grad_out @ got["weight"].float(), rtol=1e-4, atol=1e-4)


@pytest.mark.task("3.3")
@pytest.mark.points(3)
@pytest.mark.parametrize("compute_dtype", [torch.bfloat16, torch.float32], ids=str)
def test_qlora_linear_init(submission, rng, compute_dtype):
    r, alpha, d_in = 16, 8, 256
    weight = torch.randn(96, d_in, generator=rng).to(compute_dtype)
    x = torch.randn(5, d_in, generator=rng).to(compute_dtype)
    seed = int(torch.randint(0, 2**31, (1,), generator=rng))
    got = submission.run(probes.qlora_linear_init, weight, x, r, alpha, compute_dtype, seed)
    assert got["trainable"] == ["lora_A.weight", "lora_B.weight"], f"trainable: {got['trainable']}"
    assert got["all_parameters"] == ["lora_A.weight", "lora_B.weight"], f"parameters: {got['all_parameters']}"
    A, B = got["A"], got["B"]
    assert tuple(A.shape) == (r, d_in) and tuple(B.shape) == (96, r), f"A {tuple(A.shape)}, B {tuple(B.shape)}"
    assert got["A_dtype"] == compute_dtype and got["B_dtype"] == compute_dtype, "A and B live in compute_dtype"
    assert bool((B == 0).all()), "B starts at zero"
    bound = 1 / math.sqrt(d_in)   # kaiming_uniform_(a=sqrt(5)) on fan_in = in
    assert float(A.float().abs().max()) <= bound * 1.01, "A exceeds peft's Kaiming-uniform bound 1/sqrt(in)"
    assert float(A.float().std()) == pytest.approx(bound / math.sqrt(3), rel=0.15), "A is not uniform on +-1/sqrt(in)"
    assert torch.equal(got["out"], got["base_out"]), "with B = 0 the layer must compute exactly its base"


@pytest.mark.task("3.3")
@pytest.mark.points(4)
@pytest.mark.parametrize("r,alpha", [(4, 16), (8, 2)])
def test_qlora_linear_forward_and_gradients(submission, rng, r, alpha):
    d_out, d_in = 48, 64
    weight = torch.randn(d_out, d_in, generator=rng)
    x = torch.randn(3, 7, d_in, generator=rng)
    A = torch.randn(r, d_in, generator=rng) * 0.1
    B = torch.randn(d_out, r, generator=rng) * 0.1
    grad_out = torch.randn(3, 7, d_out, generator=rng)
    got = submission.run(probes.qlora_linear_forward_backward, weight, x, r, alpha, A, B, grad_out)
    scaling = alpha / r
    _, _, w = bnb_reference(weight)
    torch.testing.assert_close(got["base_out"], x @ w.T, rtol=1e-4, atol=1e-4)
    expected = x @ w.T + (x @ A.T @ B.T) * scaling
    torch.testing.assert_close(got["out"], expected, rtol=1e-4, atol=1e-4)
    g = grad_out.reshape(-1, d_out)
    xs = x.reshape(-1, d_in)
    torch.testing.assert_close(got["B_grad"], scaling * g.T @ (xs @ A.T), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got["A_grad"], scaling * (g @ B).T @ xs, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got["x_grad"], grad_out @ (w + scaling * B @ A), rtol=1e-4, atol=1e-4)


@pytest.mark.task("3.4")
@pytest.mark.points(3)
def test_quantize_model_report_on_a_tiny_llama(submission):
    got = submission.run(probes.quantize_tiny_llama, TINY, None, None, None)
    names = [f"model.layers.{i}.{p}" for i in range(TINY["layers"]) for p in PROJECTIONS]
    wrong = {n: got["types"].get(n) for n in names if got["types"].get(n) != "Linear4bit"}
    assert not wrong, f"not replaced by Linear4bit: {wrong}"
    assert got["types"]["lm_head"] == "Linear", "lm_head is skipped by default"
    assert got["float_linears"] == ["lm_head"], f"nn.Linear layers left: {got['float_linears']}"
    report = got["report"]
    assert isinstance(report, dict), "quantize_model returns (model, report)"
    before = sum(got["weight_bytes"][n] for n in names)
    after = sum(got["stored_bytes"][n] for n in names)
    assert report.get("layers") == len(names), f"layers: {report.get('layers')} != {len(names)}"
    assert report.get("before_bytes") == before, f"before_bytes {report.get('before_bytes')} != {before} measured"
    assert report.get("after_bytes") == after, f"after_bytes {report.get('after_bytes')} != {after} measured"
    assert before / after >= 3.5, f"only {before / after:.2f}x smaller"


@pytest.mark.task("3.4")
@pytest.mark.points(2)
def test_quantize_model_with_lora_trains_only_a_and_b(submission):
    got = submission.run(probes.quantize_tiny_llama, TINY, ["lm_head", "mlp"], 4, 8)
    attention = [f"model.layers.{i}.self_attn.{p}" for i in range(TINY["layers"])
                 for p in ("q_proj", "k_proj", "v_proj", "o_proj")]
    expected = sorted(f"{n}.lora_{m}.weight" for n in attention for m in "AB")
    assert got["trainable"] == expected, f"trainable parameters: {got['trainable']}"
    types = got["types"]
    assert all(types[n] == "QLoRALinear" for n in attention), f"attention projections: {[types[n] for n in attention]}"
    skipped = [n for n in types if ".mlp." in n or n == "lm_head"]
    assert all(types[n] == "Linear" for n in skipped), "layers whose name has a part in skip stay nn.Linear"
    report = got["report"]
    assert report.get("layers") == len(attention)
    assert report.get("adapter_bytes") == sum(4 * (64 + 64 if "k_proj" not in n and "v_proj" not in n else 64 + 32)
                                              for n in attention) * 2, f"adapter_bytes: {report}"

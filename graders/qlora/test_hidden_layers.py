"""Hidden tests of task 3: Linear4bit, QLoRALinear and quantize_model.

The 4-bit weight is checked against bitsandbytes' codes of the same float weight; the forward
pass against F.linear with the oracle's dequantised weight (nf4_oracle: bitsandbytes' arithmetic,
independent of the CPU); LoRA against its formula (peft's). Probes return raw data only (buffers,
parameters with their flags, outputs, the inputs as the code left them); expected sizes and
names are computed here from the model's configuration. Also checked: inputs left unchanged,
non-contiguous weights, the meta device, batch and sequence of one, each layer's own dtype, and
the skip list matched by name part (an empty list is a list).
"""

import math

import pytest
import torch
import torch.nn.functional as F

import probes
from course.grading.diagnose import record
from misconceptions import CATALOGUE
from qlora_oracle import explain, nf4

TINY = {"hidden": 64, "intermediate": 128, "layers": 2, "heads": 4, "kv_heads": 2, "init": 0.02, "seed": 0}
PROJECTIONS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


def dtype_name(dtype):
    return str(dtype).removeprefix("torch.")


def projection_shapes(cfg):
    """(out, in) of every projection of the tiny Llama, by name."""
    h, i = cfg["hidden"], cfg["intermediate"]
    kv = h // cfg["heads"] * cfg.get("kv_heads", cfg["heads"])
    per_layer = {"self_attn.q_proj": (h, h), "self_attn.k_proj": (kv, h), "self_attn.v_proj": (kv, h),
                 "self_attn.o_proj": (h, h), "mlp.gate_proj": (i, h), "mlp.up_proj": (i, h), "mlp.down_proj": (h, i)}
    return {f"model.layers.{n}.{p}": shape for n in range(cfg["layers"]) for p, shape in per_layer.items()}


def linears(cfg):
    return sorted([*projection_shapes(cfg), "lm_head"])


def stored_bytes(out_features, in_features, blocksize=64, double_quant=True, bias_bytes=0):
    """What a Linear4bit stores by the docstring: codes, constants, bias."""
    n = out_features * in_features
    blocks = n // blocksize
    constants = blocks + 4 * math.ceil(blocks / 256) + 4 if double_quant else 4 * blocks
    return n // 2 + constants + bias_bytes


def double_dequantize_formula(q, scales, offset):
    return (q.float() - 128) / 127 * scales.repeat_interleave(256)[:q.numel()] + offset


def assert_unchanged(after, before, what):
    """An input as the submission's code left it must equal the test's own copy (exactly)."""
    same = type(after) is type(before) and (
        torch.equal(after, before) if isinstance(before, torch.Tensor) else
        after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before))
    if not same:
        record(["input_modified"], CATALOGUE, what=f"{what}, left unchanged")
    assert same, f"{what} was changed in place"


def fitted_scaling(out, base_out, update):
    """The factor by which a layer scales its low-rank update (least squares, rounded to 0.1)."""
    delta = (out.float() - base_out.float()).reshape(-1)
    u = update.float().reshape(-1)
    return round(float(delta @ u / (u @ u)), 1)


def bits(t):
    """A tensor's bit patterns as integers: diagnoses of bit-exact checks compare these exactly."""
    t = t.detach().contiguous()
    return t if not t.is_floating_point() else t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def exact(variants):
    return {name: (lambda make=make: bits(make())) for name, make in variants.items()}


def buffer_bytes(buffers):
    return sum(b.numel() * b.element_size() for b in buffers.values() if b is not None)


# ------------------------------------------------------------------ 3.1 Linear4bit.from_linear

FROM_LINEAR = [  # blocksize, double_quant, linear dtype, compute dtype, transposed weight
    (64, False, torch.bfloat16, torch.bfloat16, False),
    (64, True, torch.bfloat16, torch.bfloat16, False),
    (128, False, torch.bfloat16, torch.bfloat16, False),
    (128, True, torch.bfloat16, torch.bfloat16, False),
    (64, True, torch.float32, torch.bfloat16, False),
    (64, False, torch.float32, torch.float16, True),
]
FROM_LINEAR_IDS = [f"{dtype_name(ld)} linear, {dtype_name(cd)} compute, blocks of {b}, "
                   f"{'double quantised' if dq else 'plain absmax'}{', transposed weight' if t else ''}"
                   for b, dq, ld, cd, t in FROM_LINEAR]


@pytest.mark.task("3.1")
@pytest.mark.points(4)
@pytest.mark.parametrize("blocksize,double_quant,linear_dtype,compute_dtype,transposed", FROM_LINEAR, ids=FROM_LINEAR_IDS)
def test_from_linear_stores_nf4_codes_only(submission, rng, blocksize, double_quant, linear_dtype, compute_dtype,
                                           transposed):
    weight = torch.randn(96, 128, generator=rng).to(linear_dtype)
    bias = torch.randn(96, generator=rng).to(linear_dtype)
    sent = weight.t().contiguous() if transposed else weight
    got = submission.run(probes.linear4bit_state, sent, bias, blocksize, double_quant, compute_dtype,
                         transposed, linear_dtype)
    assert_unchanged(got["linear_after"], {"weight": weight, "bias": bias}, "the nn.Linear given to from_linear")
    assert got["parameters"] == [], f"a Linear4bit keeps no float weight and no parameters: {got['parameters']}"
    buffers = got["buffers"]
    floats = sorted(n for n, b in buffers.items() if b.is_floating_point() and b.numel() >= weight.numel() // 8)
    with explain(floats, [], CATALOGUE, what="no float buffer as large as the weight",
                 variants={"float_weight_kept": lambda: sorted(
                     n for n, b in buffers.items() if b.is_floating_point() and b.numel() == weight.numel())}):
        assert not floats, f"buffers as large as a float weight: {floats}"
    assert set(buffers) <= set(got["state_dict"]), "every buffer is saved in the layer's state dict"
    ref_packed, ref_absmax = nf4.quantize(weight, blocksize)
    assert "packed" in buffers, f"no buffer named packed: {sorted(buffers)}"
    variants = {"nibble_order": lambda: (ref_packed >> 4) | ((ref_packed & 0x0F) << 4)}
    with explain(buffers["packed"], ref_packed, CATALOGUE, variants=variants, what="the stored NF4 codes of the weight"):
        assert torch.equal(buffers["packed"], ref_packed), "packed codes differ from bitsandbytes' codes of the weight"
    if double_quant:
        assert "absmax" not in buffers, "with double quantisation the float32 absmax is not stored"
        q, scales, offset = buffers["absmax_q"], buffers["absmax_scales"], buffers["absmax_offset"]
        assert q.dtype == torch.uint8 and scales.dtype == torch.float32
        back = double_dequantize_formula(q, scales, float(offset))
        bound = scales.repeat_interleave(256)[:q.numel()] / 254 * (1 + 1e-4) + 1e-6
        assert bool(((back - ref_absmax).abs() <= bound).all()), "the stored constants do not give back absmax"
        absmax = back
        no_offset = double_dequantize_formula(q, scales, 0.0)
    else:
        assert torch.equal(buffers["absmax"], ref_absmax), "absmax differs from bitsandbytes'"
        absmax = no_offset = ref_absmax
    with explain(buffers["bias"].dtype, compute_dtype, CATALOGUE, what="the bias, stored in compute_dtype",
                 variants={"bias_not_in_compute_dtype": lambda: linear_dtype} if linear_dtype != compute_dtype else {}):
        assert buffers["bias"].dtype == compute_dtype, f"bias: {buffers['bias'].dtype}"
    assert torch.equal(buffers["bias"], bias.to(compute_dtype))
    nbytes = buffer_bytes(buffers)
    with explain(got["memory_bytes"], nbytes, CATALOGUE, what="memory_bytes: the bytes of every buffer",
                 variants={"memory_counts_elements": lambda: sum(b.numel() for b in buffers.values()),
                           "memory_without_bias": lambda: nbytes - buffer_bytes({"bias": buffers["bias"]})}):
        assert got["memory_bytes"] == nbytes, f"memory_bytes {got['memory_bytes']} != bytes of the buffers {nbytes}"
    expected = nf4.dequantize(ref_packed, absmax, weight.shape, blocksize, compute_dtype)
    variants = {"unpack_low_nibble_first": lambda: nf4.dequantize(
        (ref_packed >> 4) | ((ref_packed & 0x0F) << 4), absmax, weight.shape, blocksize, compute_dtype)}
    if double_quant:
        variants["dq_offset_not_added"] = lambda: nf4.dequantize(ref_packed, no_offset, weight.shape, blocksize,
                                                                 compute_dtype)
    with explain(bits(got["weight"]), bits(expected), CATALOGUE, variants=exact(variants),
                 what="the dequantised weight, rebuilt from the stored constants"):
        torch.testing.assert_close(got["weight"], expected, rtol=0, atol=0)


# ------------------------------------------------------------------ 3.2 dequantized_weight and forward

FORWARD = [  # double_quant, bias, compute dtype, x dtype, x shape
    (False, True, torch.float32, torch.float32, (2, 3, 64)),
    (True, False, torch.bfloat16, torch.bfloat16, (2, 3, 64)),
    (True, True, torch.bfloat16, torch.float32, (2, 3, 64)),
    (False, False, torch.float16, torch.float16, (2, 3, 64)),
    (True, True, torch.float32, torch.bfloat16, (1, 1, 64)),
]
FORWARD_IDS = [f"{'double quantised' if dq else 'plain absmax'}, {'bias' if b else 'no bias'}, "
               f"{dtype_name(cd)} compute, {dtype_name(xd)} x of shape {'x'.join(map(str, s))}"
               for dq, b, cd, xd, s in FORWARD]


@pytest.mark.task("3.2")
@pytest.mark.points(3.5)
@pytest.mark.parametrize("double_quant,bias,compute_dtype,x_dtype,x_shape", FORWARD, ids=FORWARD_IDS)
def test_linear4bit_forward_is_f_linear(submission, rng, double_quant, bias, compute_dtype, x_dtype, x_shape):
    weight = torch.randn(80, 64, generator=rng)
    b = torch.randn(80, generator=rng) if bias else None
    x = torch.randn(x_shape, generator=rng).to(x_dtype)
    grad_out = torch.randn(*x_shape[:-1], 80, generator=rng)
    got = submission.run(probes.linear4bit_forward_backward, weight, b, x, grad_out, double_quant, compute_dtype)
    assert_unchanged(got["x_after"], x, "the input x of forward")
    ref_packed, ref_absmax = nf4.quantize(weight, 64)
    ref_weight = nf4.dequantize(ref_packed, ref_absmax, weight.shape, 64, torch.float32)
    w = got["weight"]
    with explain(w.dtype, compute_dtype, CATALOGUE, what="the dequantised weight's dtype (compute_dtype)",
                 variants={"weight_in_default_dtype": lambda: torch.bfloat16} if compute_dtype != torch.bfloat16 else {}):
        assert w.dtype == compute_dtype, f"dequantized_weight: {w.dtype}, not the layer's compute_dtype"
    assert tuple(w.shape) == (80, 64), f"dequantized_weight: {tuple(w.shape)}"
    if double_quant:
        torch.testing.assert_close(w.float(), ref_weight.float(), rtol=0.02, atol=1e-3 * float(ref_absmax.max()))
    else:
        torch.testing.assert_close(w, ref_weight.to(compute_dtype), rtol=0, atol=0)
    bias_c = None if b is None else b.to(compute_dtype).float()
    expected = F.linear(x.to(compute_dtype).float(), w.float(), bias_c)
    out = got["out"]
    with explain(out, expected.to(x_dtype), CATALOGUE, what="the output's dtype and shape (x's dtype)"):
        assert out.dtype == x_dtype and tuple(out.shape) == (*x_shape[:-1], 80), \
            f"out: {out.dtype} {tuple(out.shape)} (in x's dtype)"
    tols = {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 3e-3}
    tol = max(tols[compute_dtype], tols[x_dtype])   # computed in one dtype, returned in x's
    with explain(out.float(), expected, CATALOGUE, what="F.linear of x with the dequantised weight and the bias",
                 variants={"bias_dropped": lambda: F.linear(x.to(compute_dtype).float(), w.float())} if bias else {}):
        torch.testing.assert_close(out.float(), expected, rtol=tol, atol=tol * float(expected.abs().max()))
    expected_grad = grad_out @ w.float()
    torch.testing.assert_close(got["x_grad"].float(), expected_grad, rtol=tol,
                               atol=tol * float(expected_grad.abs().max()))


@pytest.mark.task("3.2")
@pytest.mark.points(1.5)
def test_no_gradient_reaches_the_4bit_weight(submission, rng):
    weight = torch.randn(32, 64, generator=rng)
    x, grad_out = torch.randn(4, 64, generator=rng), torch.randn(4, 32, generator=rng)
    got = submission.run(probes.linear4bit_forward_backward, weight, torch.randn(32, generator=rng), x, grad_out,
                         True, torch.float32)
    with_grad = sorted(n for n, g in got["grads"].items() if g is not None)
    assert not with_grad, f"gradients reached {with_grad}"
    requiring = sorted(n for n, flag in got["requires_grad"].items() if flag)
    assert not requiring, f"these require grad: {requiring}"
    assert got["x_grad"] is not None, "the gradient must still flow to the layer's input (LoRA below needs it)"
    torch.testing.assert_close(got["x_grad"], grad_out @ got["weight"].float(), rtol=1e-4, atol=1e-4)


@pytest.mark.task("3.2")
@pytest.mark.points(0.5)
def test_layers_follow_the_device(submission):
    """Linear4bit (plain absmax) and QLoRALinear built from an nn.Linear on the meta device: every
    buffer, parameter and output stays there, in the stated dtypes."""
    got = submission.run(probes.layers_on_meta, 64, 32, 4, 8, torch.bfloat16, torch.float32)
    elsewhere = {name: found[0] for name, found in got.items() if found[0] != "meta"}
    assert not elsewhere, f"not on the layer's device: {elsewhere}"
    assert got["base_out"][1:] == [torch.float32, [3, 32]] and got["lora_out"][1:] == [torch.float32, [3, 32]]
    assert got["dequantized"][1:] == [torch.bfloat16, [32, 64]], f"dequantized: {got['dequantized']}"
    assert got["parameter lora_A.weight"][1] == torch.bfloat16 and got["parameter lora_B.weight"][1] == torch.bfloat16


# ------------------------------------------------------------------ 3.3 QLoRALinear

def init_facts(A, B, d_in):
    """What A's and B's initial values look like, in words (compared exactly).

    kaiming_uniform_(a) draws from +-gain * sqrt(3 / in) with gain = sqrt(2 / (1 + a^2)): 1/sqrt(in)
    for peft's a = sqrt(5). With r * in = 4096 draws the largest |A| is within 1 % of the bound
    except with probability 0.99^4096 < 1e-17 (and a given seed decides it), so a bound 1 % or more
    off (a = sqrt(6) gives 0.926 / sqrt(in)) is another initialisation."""
    bound = float(A.float().abs().max()) * math.sqrt(d_in)
    a = ("zero" if bound == 0 else "bound 1/sqrt(in)" if 0.99 <= bound <= 1.01 else
         "bound sqrt(6/in)" if 2.2 <= bound <= math.sqrt(6) * 1.01 else "other")
    return {"A": a, "B": "zero" if bool((B == 0).all()) else "non-zero"}


@pytest.mark.task("3.3")
@pytest.mark.points(2.5)
@pytest.mark.parametrize("compute_dtype", [torch.bfloat16, torch.float32], ids=["bfloat16 base", "float32 base"])
def test_qlora_linear_init(submission, rng, compute_dtype):
    r, alpha, d_in = 16, 8, 256
    weight = torch.randn(96, d_in, generator=rng).to(compute_dtype)
    x = torch.randn(5, d_in, generator=rng).to(compute_dtype)
    seed = int(torch.randint(0, 2**31, (1,), generator=rng))
    got = submission.run(probes.qlora_linear_init, weight, x, r, alpha, compute_dtype, seed)
    params = got["parameters"]
    with explain(sorted(params), ["lora_A.weight", "lora_B.weight"], CATALOGUE, what="A and B are the only parameters",
                 variants={"lora_with_bias": lambda: ["lora_A.bias", "lora_A.weight", "lora_B.weight"]}):
        assert sorted(params) == ["lora_A.weight", "lora_B.weight"], f"parameters: {sorted(params)}"
    assert all(flag for _, _, flag in params.values()), "A and B are trainable"
    A, B = got["A"], got["B"]
    assert tuple(A.shape) == (r, d_in) and tuple(B.shape) == (96, r), f"A {tuple(A.shape)}, B {tuple(B.shape)}"
    with explain(A.dtype, compute_dtype, CATALOGUE, what="A and B in the base's compute_dtype",
                 variants={"lora_not_in_compute_dtype": lambda: torch.float32} if compute_dtype != torch.float32 else {}):
        assert A.dtype == compute_dtype and B.dtype == compute_dtype, "A and B live in compute_dtype"
    facts = init_facts(A, B, d_in)
    with explain(facts, {"A": "bound 1/sqrt(in)", "B": "zero"}, CATALOGUE, what="A Kaiming-uniform, B zero",
                 variants={"lora_init_swapped": lambda: {"A": "zero", "B": "non-zero"},
                           "kaiming_without_a": lambda: {"A": "bound sqrt(6/in)", "B": "zero"}}):
        assert facts == {"A": "bound 1/sqrt(in)", "B": "zero"}, f"initialisation: {facts}"
    bound = 1 / math.sqrt(d_in)   # kaiming_uniform_(a=sqrt(5)) on fan_in = in
    assert float(A.float().std()) == pytest.approx(bound / math.sqrt(3), rel=0.15), "A is not uniform on +-1/sqrt(in)"
    with explain(got["out"], got["base_out"], CATALOGUE, what="a new layer computes exactly its base",
                 variants={"scaling_on_base_too": lambda: got["base_out"] * (alpha / r)}):
        assert torch.equal(got["out"], got["base_out"]), "with B = 0 the layer must compute exactly its base"


QLORA_FORWARD = [(4, 16, torch.float32), (8, 2, torch.float32), (8, 16, torch.bfloat16)]


@pytest.mark.task("3.3")
@pytest.mark.points(3.5)
@pytest.mark.parametrize("r,alpha,compute_dtype", QLORA_FORWARD,
                         ids=[f"r={r}, alpha={a}, {dtype_name(d)} base, float32 x" for r, a, d in QLORA_FORWARD])
def test_qlora_linear_forward_and_gradients(submission, rng, r, alpha, compute_dtype):
    d_out, d_in = 48, 64
    weight = torch.randn(d_out, d_in, generator=rng)
    x = torch.randn(3, 7, d_in, generator=rng)
    A = torch.randn(r, d_in, generator=rng) * 0.1
    B = torch.randn(d_out, r, generator=rng) * 0.1
    grad_out = torch.randn(3, 7, d_out, generator=rng)
    got = submission.run(probes.qlora_linear_forward_backward, weight, x, r, alpha, A, B, grad_out, compute_dtype)
    assert_unchanged(got["x_after"], x, "the input x of forward")
    scaling = alpha / r
    packed, absmax = nf4.quantize(weight, 64)
    w = nf4.dequantize(packed, absmax, weight.shape, 64, compute_dtype).float()
    xc = x.to(compute_dtype).float()
    Ac, Bc = A.to(compute_dtype).float(), B.to(compute_dtype).float()
    base, update = xc @ w.T, xc @ Ac.T @ Bc.T
    out = got["out"]
    assert out.dtype == torch.float32 and tuple(out.shape) == (3, 7, d_out), f"out: {out.dtype} {tuple(out.shape)}"
    tol = 1e-4 if compute_dtype == torch.float32 else 3e-2
    close = {"rtol": tol, "atol": tol * float((base + update * scaling).abs().max())}
    torch.testing.assert_close(got["base_out"].float(), base, **close)
    with explain(out, base + update * scaling, CATALOGUE, what="base output plus the update scaled by alpha / r",
                 variants={"scaling_inverted": lambda: base + update * (r / alpha),
                           "scaling_on_base_too": lambda: (base + update) * scaling}):
        torch.testing.assert_close(out, base + update * scaling, **close)
    if compute_dtype != torch.float32:
        return
    g = grad_out.reshape(-1, d_out)
    xs = x.reshape(-1, d_in)
    torch.testing.assert_close(got["B_grad"], scaling * g.T @ (xs @ A.T), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got["A_grad"], scaling * (g @ B).T @ xs, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got["x_grad"], grad_out @ (w + scaling * B @ A), rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ 3.4 quantize_model

def replaced(got):
    """The layers quantize_model turned into 4-bit layers (those that dequantise a weight)."""
    return sorted(got["layers"])


def skipped_by(skip, how):
    """The linear layers a skip list keeps, by the docstring's rule or a wrong one (diagnoses)."""
    keep = {"part": lambda n: bool(set(n.split(".")) & set(skip)), "substring": lambda n: any(s in n for s in skip),
            "full": lambda n: n in skip}[how]
    return sorted(n for n in linears(TINY) if not keep(n))


@pytest.mark.task("3.4")
@pytest.mark.points(2)
def test_quantize_model_report_on_a_tiny_llama(submission):
    got = submission.run(probes.quantize_tiny_llama, TINY, {})
    shapes = projection_shapes(TINY)
    assert replaced(got) == sorted(shapes), f"replaced: {replaced(got)}"
    assert got["types"].get("lm_head") == "Linear", "lm_head is skipped by default"
    kept = sorted(n for n in got["parameters"] if "_proj." in n)
    assert not kept, f"float parameters left in replaced layers: {kept[:5]}"
    for name, layer in got["layers"].items():
        floats = [b for b, t in layer["buffers"].items() if t.is_floating_point() and t.numel() >= math.prod(shapes[name]) // 8]
        assert not floats, f"{name} keeps float buffers as large as its weight: {floats}"
    report = got["report"]
    assert isinstance(report, dict), "quantize_model returns (model, report)"
    before = sum(o * i * 2 for o, i in shapes.values())   # bfloat16 weights, no biases in Llama
    after = sum(buffer_bytes(layer["buffers"]) for layer in got["layers"].values())
    assert report.get("layers") == len(shapes), f"layers: {report.get('layers')} != {len(shapes)}"
    assert report.get("before_bytes") == before, f"before_bytes {report.get('before_bytes')} != {before}"
    assert report.get("after_bytes") == after, f"after_bytes {report.get('after_bytes')} != {after}, the layers' buffers"
    assert after == sum(stored_bytes(o, i) for o, i in shapes.values()), "the 4-bit layers store more than codes and constants"
    assert report.get("adapter_bytes") == 0, "no adapters without r"
    assert before / after >= 3.5, f"only {before / after:.2f}x smaller"


@pytest.mark.task("3.4")
@pytest.mark.points(1.5)
def test_quantize_model_with_lora_trains_only_a_and_b(submission):
    skip = ["lm_head", "mlp"]
    got = submission.run(probes.quantize_tiny_llama, TINY, {"skip": skip, "r": 4, "alpha": 8})
    with explain(replaced(got), skipped_by(skip, "part"), CATALOGUE, what="the layers replaced with skip=[lm_head, mlp]",
                 variants={"skip_by_full_name": lambda: skipped_by(skip, "full")}):
        assert replaced(got) == skipped_by(skip, "part"), f"replaced: {replaced(got)}"
    attention = [n for n in projection_shapes(TINY) if ".self_attn." in n]
    expected = sorted(f"{n}.lora_{m}.weight" for n in attention for m in "AB")
    trainable = sorted(n for n, (_, _, flag) in got["parameters"].items() if flag)
    with explain(trainable, expected, CATALOGUE, what="with r, only A and B train",
                 variants={"not_frozen_with_r": lambda: sorted(got["parameters"])}):
        assert trainable == expected, f"trainable parameters: {trainable[:6]}"
    assert all(got["types"][n] == "QLoRALinear" for n in attention), "attention projections become QLoRALinear"
    shapes = projection_shapes(TINY)
    report = got["report"]
    assert report.get("layers") == len(attention)
    adapter = sum(4 * (shapes[n][0] + shapes[n][1]) * 2 for n in attention)   # bfloat16 A and B
    with explain(report.get("adapter_bytes"), adapter, CATALOGUE, what="adapter_bytes: the bytes of A and B",
                 variants={"adapter_bytes_elements": lambda: adapter // 2}):
        assert report.get("adapter_bytes") == adapter, f"adapter_bytes: {report.get('adapter_bytes')} != {adapter}"


SKIPS = [["lm_head", "self_attn", "up"], []]


@pytest.mark.task("3.4")
@pytest.mark.points(1.5)
@pytest.mark.parametrize("skip", SKIPS, ids=["skip=[lm_head, self_attn, up]", "skip=[] (quantise every linear)"])
def test_quantize_model_skips_by_name_part(submission, skip):
    got = submission.run(probes.quantize_tiny_llama, TINY, {"skip": skip})
    expected = skipped_by(skip, "part")
    variants = {"skip_by_substring": lambda: skipped_by(skip, "substring")}
    if not skip:
        variants = {"empty_skip_ignored": lambda: skipped_by(["lm_head"], "part")}
    with explain(replaced(got), expected, CATALOGUE, variants=variants,
                 what="the layers replaced: those with no dot-separated name part in skip"):
        assert replaced(got) == expected, f"replaced: {replaced(got)}"
    assert got["report"].get("layers") == len(expected)


@pytest.mark.task("3.4")
@pytest.mark.points(1)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["float32 model", "float16 model"])
def test_quantize_model_keeps_each_layers_dtype(submission, dtype):
    got = submission.run(probes.quantize_tiny_llama, TINY, {"r": 4}, dtype)
    facts = {"4-bit weights": sorted({dtype_name(layer["weight_dtype"]) for layer in got["layers"].values()}),
             "LoRA": sorted({dtype_name(d) for n, (_, d, _) in got["parameters"].items() if "lora_" in n})}
    mine = dtype_name(dtype)
    variants = {"default_compute_dtype": lambda: {"4-bit weights": ["bfloat16"], "LoRA": ["bfloat16"]},
                "weight_in_default_dtype": lambda: {"4-bit weights": ["bfloat16"], "LoRA": [mine]}}
    if dtype != torch.float32:
        variants["lora_not_in_compute_dtype"] = lambda: {"4-bit weights": [mine], "LoRA": ["float32"]}
    with explain(facts, {"4-bit weights": [mine], "LoRA": [mine]}, CATALOGUE, variants=variants,
                 what="each 4-bit layer and its A and B compute in the layer's weight dtype"):
        assert facts == {"4-bit weights": [mine], "LoRA": [mine]}, f"dtypes in a {mine} model: {facts}"


@pytest.mark.task("3.4")
@pytest.mark.points(1)
def test_quantize_model_without_r_and_with_default_alpha(submission, rng):
    """Without r nothing is frozen; with r and no alpha, alpha = r (scaling 1)."""
    got = submission.run(probes.quantize_tiny_llama, TINY, {}, torch.float32)
    frozen = sorted(n for n, (_, _, flag) in got["parameters"].items() if not flag)
    with explain(frozen, [], CATALOGUE, what="without r, every remaining parameter still trains",
                 variants={"freezes_without_r": lambda: sorted(got["parameters"])}):
        assert not frozen, f"frozen without r: {frozen[:5]}"
    layer = "model.layers.0.self_attn.q_proj"
    x, B = torch.randn(5, 64, generator=rng), torch.randn(64, 4, generator=rng) * 0.1
    got = submission.run(probes.quantize_tiny_llama, TINY, {"r": 4}, torch.float32, layer, x, B)
    probe = got["probe"]
    update = x @ probe["A"].T @ B.T
    scaling = fitted_scaling(probe["out"], probe["base_out"], update)
    with explain(scaling, 1.0, CATALOGUE, what="with alpha left out, the scaling is 1",
                 variants={"alpha_default_not_r": lambda: 2.0}):
        assert scaling == 1.0, f"with alpha left out the update is scaled by {scaling}, not 1"
    torch.testing.assert_close(probe["out"], probe["base_out"] + update, rtol=1e-4, atol=1e-5)

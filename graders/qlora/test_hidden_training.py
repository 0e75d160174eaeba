"""Hidden tests of task 4: QLoRA training runs.

On the CPU, the "course" backend (the student's own quantize_model) trains a tiny random Llama;
on a GPU (tests marked gpu, pending elsewhere), the real stack: transformers + bitsandbytes + peft.

Immunity to the bitsandbytes CPU trap (a no-grad forward through its 4-bit layers repacks their
weights on CPUs with avx512_bf16, after which training breaks): the CPU tests never put a
bitsandbytes 4-bit layer in a model, every probe builds a fresh model, and no probe runs a
forward pass before training. The GPU probe reloads the adapter onto a *fresh* 4-bit base.
"""

import pytest
import torch
from bitsandbytes import functional as bnb_functional

import probes

TINY = {"hidden": 64, "intermediate": 128, "layers": 2, "heads": 4, "init": 0.1}
# The GPU model: its linear weights dominate its memory, so 4 bits must show in the peak.
GPU_SMALL = {"hidden": 256, "intermediate": 1024, "layers": 4, "heads": 4, "init": 0.1}
GPU_WIDE = {"hidden": 1024, "intermediate": 4096, "layers": 8, "heads": 8, "init": 0.02}
PROJECTIONS = {"q_proj": ("hidden", "hidden"), "k_proj": ("hidden", "hidden"), "v_proj": ("hidden", "hidden"),
               "o_proj": ("hidden", "hidden"), "gate_proj": ("hidden", "intermediate"),
               "up_proj": ("hidden", "intermediate"), "down_proj": ("intermediate", "hidden")}


def lora_params(cfg, r):
    """LoRA parameters on every linear layer but the head: r * (in + out) each."""
    return cfg["layers"] * sum(r * (cfg[a] + cfg[b]) for a, b in PROJECTIONS.values())


def memorisable(rng, n, words=6):
    """A small set of made-up facts, drawn from the test's rng (the model must memorise them)."""
    nouns = ["lamp", "kettle", "violin", "compass", "teapot", "lantern", "anchor", "ribbon", "saddle"]
    places = ["attic", "garden", "harbour", "library", "mill", "tower", "cellar"]
    texts = []
    for i in range(n):
        pick = torch.randint(0, 1000, (words,), generator=rng).tolist()
        texts.append(f"item {i}: the {nouns[pick[0] % len(nouns)]} from the {places[pick[1] % len(places)]} "
                     f"weighs {pick[2] % 90 + 10} grams and costs {pick[3] % 900 + 100} coins.")
    return texts


def falls(losses, fraction):
    head, tail = losses[:3], losses[-3:]
    return sum(tail) / len(tail) <= (1 - fraction) * sum(head) / len(head)


# ------------------------------------------------------------------ CPU: the course backend

@pytest.mark.task("4.1")
@pytest.mark.points(3)
@pytest.mark.timeout(120)
def test_course_training_grads_reach_only_lora(submission, rng):
    got = submission.run(probes.course_training_steps, TINY, memorisable(rng, 4), 6, 1e-2, 8, 16)
    lora = set(got["lora_parameters"])
    assert len(lora) == 2 * 7 * TINY["layers"], f"expected A and B on 14 layers, got {len(lora)} LoRA parameters"
    assert set(got["requires_grad"]) == lora, \
        f"only LoRA A and B may require grad; also: {sorted(set(got['requires_grad']) - lora)}"
    for step, names in enumerate(got["grads_per_step"]):
        stray = sorted(set(names) - lora)
        assert not stray, f"step {step}: gradients reached {stray[:5]}"
    reached = set().union(*got["grads_per_step"])
    assert reached == lora, f"no gradient ever reached {sorted(lora - reached)[:5]}"
    assert not got["frozen_changed"], f"frozen parameters changed: {got['frozen_changed'][:5]}"


@pytest.mark.task("4.1")
@pytest.mark.points(2)
@pytest.mark.timeout(120)
def test_course_training_keeps_the_codes_and_learns(submission, rng):
    got = submission.run(probes.course_training_steps, TINY, memorisable(rng, 4), 8, 1e-2, 8, 16)
    assert got["stored_buffers"] >= 7 * TINY["layers"], "every quantised layer stores uint8 codes as buffers"
    assert not got["stored_changed"], f"training changed stored codes: {got['stored_changed'][:5]}"
    assert not got["float_buffers_changed"], f"training changed stored constants: {got['float_buffers_changed'][:5]}"
    assert falls(got["losses"], 0.2), f"the loss should fall by 20 %: {got['losses']}"


@pytest.mark.task("4.1")
@pytest.mark.points(3)
@pytest.mark.timeout(120)
def test_train_qlora_course_backend(submission, rng):
    got = submission.run(probes.train_course_backend, TINY, memorisable(rng, 8), 16, 1e-2, 8, 16, 4, 48)
    result = got["result"]
    keys = {"losses", "peak_memory_bytes", "trainable_params", "total_params", "tokens_per_second"}
    assert keys <= set(result), f"missing keys: {sorted(keys - set(result))}"
    losses = result["losses"]
    assert len(losses) == 16 and all(isinstance(x, float) for x in losses), "one float loss per step"
    assert falls(losses, 0.3), f"the loss should fall by 30 %: {losses}"
    assert result["trainable_params"] == lora_params(TINY, 8), f"trainable_params: {result['trainable_params']}"
    embeddings = 2 * 258 * TINY["hidden"]
    weights = TINY["layers"] * sum(TINY[a] * TINY[b] for a, b in PROJECTIONS.values())
    norms = (2 * TINY["layers"] + 1) * TINY["hidden"]
    assert result["total_params"] == weights + embeddings + norms + lora_params(TINY, 8), \
        f"total_params {result['total_params']}: the 4-bit weights count as out*in parameters each"
    assert result["tokens_per_second"] > 0 and result["peak_memory_bytes"] > 0


@pytest.mark.task("4.1")
@pytest.mark.points(3)
@pytest.mark.timeout(120)
def test_train_qlora_course_backend_trains_only_lora_on_fixed_codes(submission, rng):
    """Inside train_qlora itself: only A and B require and receive gradients, and after training the
    stored codes are still exactly bitsandbytes' NF4 codes of the base model's weights."""
    got = submission.run(probes.train_course_backend, TINY, memorisable(rng, 4), 4, 1e-2, 8, 16, 4, 32, watch=True)
    seen = got["watch"]
    assert seen["loaded"] and seen["saved"], "train_qlora must call load_for_training and save_adapter"
    lora = set(seen["lora"])
    assert len(lora) == 2 * 7 * TINY["layers"], f"expected A and B on 14 layers, got {len(lora)} LoRA parameters"
    assert set(seen["requires_grad"]) == lora, f"requires grad: {sorted(set(seen['requires_grad']) ^ lora)[:5]}"
    assert set(seen["grad_received"]) == lora, f"gradients: {sorted(set(seen['grad_received']) ^ lora)[:5]}"
    codes = seen["codes"]
    assert len(codes) == len(seen["base_weights"]), f"{len(codes)} Linear4bit layers for {len(seen['base_weights'])} linears"
    for layer, weight in seen["base_weights"].items():
        mine = [c for name, c in codes.items() if name == layer or name.startswith(layer + ".")]
        assert len(mine) == 1, f"no single Linear4bit inside {layer}"
        packed, _ = bnb_functional.quantize_4bit(weight, blocksize=64, quant_type="nf4")
        assert torch.equal(mine[0], packed.reshape(-1)), f"{layer}: the codes after training are not the NF4 codes of its weight"


@pytest.mark.task("4.2")
@pytest.mark.points(4)
@pytest.mark.timeout(120)
def test_course_adapter_loads_with_peft(submission, rng):
    got = submission.run(probes.train_course_backend, TINY, memorisable(rng, 4), 4, 1e-2, 8, 16, 4, 32)
    assert got["adapter_inside_output_dir"], "adapter_dir must be the output_dir"
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(got["files"]), f"files: {got['files']}"
    config = got["config"]
    assert config["r"] == 8 and config["lora_alpha"] == 16 and config["peft_type"] == "LORA", f"config: {config}"
    assert sorted(config["target_modules"]) == sorted(PROJECTIONS), f"target_modules: {config['target_modules']}"
    reload = got["reload"]
    layers = 7 * TINY["layers"]
    assert reload["saved_tensors"] == 2 * layers, f"{reload['saved_tensors']} tensors saved, expected {2 * layers}"
    assert reload["peft_layers"] == layers, f"peft built LoRA on {reload['peft_layers']} layers"
    assert reload["matched"] == layers, f"peft loaded the saved A and B into only {reload['matched']} of {layers} layers"
    assert reload["nonzero_B"] == layers, "every trained B is non-zero after training"


# ------------------------------------------------------------------ GPU: bitsandbytes + peft

def gpu_run(submission, cfg, texts, steps, lr, **flags):
    got = submission.run(probes.gpu_qlora_run, cfg, texts, steps, lr, 16, 32, 8, 128, **flags)
    if got["environment"]:
        pytest.fail(f"the GPU stack is not usable here: {got['environment']}")
    return got


@pytest.mark.gpu
@pytest.mark.task("4.1")
@pytest.mark.points(5)
@pytest.mark.timeout(600)
def test_bitsandbytes_loss_falls_by_30_percent(submission, rng):
    got = gpu_run(submission, GPU_SMALL, memorisable(rng, 16), 60, 2e-3)
    result = got["result"]
    assert len(result["losses"]) == 60
    assert falls(result["losses"], 0.3), f"the loss should fall by 30 % in 60 steps: {result['losses']}"
    assert result["trainable_params"] == lora_params(GPU_SMALL, 16), f"trainable_params: {result['trainable_params']}"
    assert result["peak_memory_bytes"] > 0 and result["tokens_per_second"] > 0


@pytest.mark.gpu
@pytest.mark.task("4.1")
@pytest.mark.points(4)
@pytest.mark.timeout(600)
def test_bitsandbytes_peak_memory_below_bf16_lora(submission, rng):
    texts = [" ".join(memorisable(rng, 4)) for _ in range(8)]   # rows longer than seq_len: full batches
    got = gpu_run(submission, GPU_WIDE, texts, 4, 2e-4, baseline=True)
    qlora_peak, bf16_peak = got["qlora_peak"], got["bf16_peak"]
    assert qlora_peak < bf16_peak, f"QLoRA peak {qlora_peak / 2**20:.1f} MiB is not below bf16 LoRA's {bf16_peak / 2**20:.1f} MiB"
    reported = got["result"]["peak_memory_bytes"]
    assert 0.5 * qlora_peak <= reported <= qlora_peak * 1.01, \
        f"train_qlora reports {reported} bytes, measured {qlora_peak} (torch.cuda.max_memory_allocated)"


@pytest.mark.gpu
@pytest.mark.task("4.2")
@pytest.mark.points(3)
@pytest.mark.timeout(600)
def test_bitsandbytes_adapter_reloads_on_a_fresh_4bit_base(submission, rng):
    got = gpu_run(submission, GPU_SMALL, memorisable(rng, 8), 20, 2e-3, reload=True)
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(got["files"]), f"files: {got['files']}"
    assert got["config"]["r"] == 16 and got["config"]["lora_alpha"] == 32, f"config: {got['config']}"
    reload = got["reload"]
    layers = 7 * GPU_SMALL["layers"]
    assert reload["four_bit_layers"] == layers, f"the fresh base has {reload['four_bit_layers']} 4-bit layers"
    assert reload["peft_layers"] == layers and reload["matched"] == layers, f"reload: {reload}"
    assert reload["nonzero_B"] == layers, "every trained B is non-zero"
    assert reload["finite"] and reload["changed"] > 0, "the reloaded adapter must change the base's logits"

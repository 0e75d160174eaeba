"""Hidden tests of task 4: QLoRA training runs.

On the CPU, the "course" backend (the student's own quantize_model) trains a tiny random Llama;
on a GPU (tests marked gpu, pending elsewhere), the real stack: transformers + bitsandbytes + peft.

The worker only observes: probes return losses, parameters with their flags, gradients' sizes,
buffers before and after, hook counts and the adapter folder's files as bytes. Everything is
decided here: the tiny Llama is rebuilt here from its seed, its NF4 codes come from bitsandbytes
here, the adapter files are parsed and loaded with peft here onto this side's own base model, and
what the adapter does (the loss it reaches on the training texts) is measured here. Reported
figures that cannot be checked this way (the losses train_qlora reports, the GPU's peak memory)
are observations of the worker, held to thresholds with wide margins.

Immunity to the bitsandbytes CPU trap (a no-grad forward through its 4-bit layers repacks their
weights on CPUs with avx512_bf16, after which training breaks): the CPU tests never put a
bitsandbytes 4-bit layer in a model, every probe builds a fresh model, and no probe runs a
forward pass before training. The GPU tests reload the adapter onto a *fresh* 4-bit base.
"""

import pytest
import torch

import probes
import qlora_oracle as oracle
from misconceptions import CATALOGUE
from qlora_oracle import explain, nf4

TINY = {"hidden": 64, "intermediate": 128, "layers": 2, "heads": 4, "init": 0.1}
# The GPU model: its linear weights dominate its memory, so 4 bits must show in the peak.
GPU_SMALL = {"hidden": 256, "intermediate": 1024, "layers": 4, "heads": 4, "init": 0.1}
GPU_WIDE = {"hidden": 1024, "intermediate": 4096, "layers": 8, "heads": 8, "init": 0.02}
PROJECTIONS = {"q_proj": ("hidden", "hidden"), "k_proj": ("hidden", "hidden"), "v_proj": ("hidden", "hidden"),
               "o_proj": ("hidden", "hidden"), "gate_proj": ("hidden", "intermediate"),
               "up_proj": ("hidden", "intermediate"), "down_proj": ("intermediate", "hidden")}
PROBE_LAYER = "model.layers.0.self_attn.q_proj"


def lora_params(cfg, r):
    """LoRA parameters on every linear layer but the head: r * (in + out) each."""
    return cfg["layers"] * sum(r * (cfg[a] + cfg[b]) for a, b in PROJECTIONS.values())


def projection_names(cfg):
    group = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
             "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}
    return [f"model.layers.{i}.{group[p]}.{p}" for i in range(cfg["layers"]) for p in PROJECTIONS]


def adapter_shapes(cfg, r, swapped=False):
    """The shapes of A (r, in) and B (out, r) by file key (or with A and B swapped: diagnoses)."""
    shapes = {}
    for name in projection_names(cfg):
        a, b = PROJECTIONS[name.rsplit(".", 1)[-1]]   # (in, out)
        A, B = [r, cfg[a]], [cfg[b], r]
        if swapped:
            A, B = B, A
        shapes[f"base_model.model.{name}.lora_A.weight"] = A
        shapes[f"base_model.model.{name}.lora_B.weight"] = B
    return shapes


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


def codes_match_weights(buffers, weights):
    """Per layer: whether one of its uint8 buffers holds bitsandbytes' NF4 codes of its weight."""
    found = {}
    for layer, weight in weights.items():
        expected, _ = nf4.quantize(weight, 64)
        found[layer] = any(b.dtype == torch.uint8 and b.shape == expected.shape and torch.equal(b, expected)
                           for name, b in buffers.items() if name.startswith(layer + "."))
    return found


def trusted_weights(cfg, dtype):
    """The projections' weights of the tiny Llama, rebuilt here."""
    model = oracle.tiny_llama(cfg, dtype)
    return {name: m.weight.detach() for name, m in model.named_modules() if name in set(projection_names(cfg))}


def fitted_scaling(out, base_out, update):
    """The factor by which a layer scales its low-rank update (least squares, rounded to 0.1)."""
    delta = (out.float() - base_out.float()).reshape(-1)
    u = update.float().reshape(-1)
    return round(float(delta @ u / (u @ u)), 1)


# ------------------------------------------------------------------ CPU: quantize_model + AdamW

@pytest.mark.task("4.1")
@pytest.mark.points(3)
@pytest.mark.timeout(120)
def test_course_training_grads_reach_only_lora(submission, rng):
    got = submission.run(probes.course_training_steps, TINY, memorisable(rng, 4), 6, 1e-2, 8, 16)
    params = got["parameters"]
    lora = {n for n in params if "lora_" in n}
    assert len(lora) == 2 * 7 * TINY["layers"], f"expected A and B on 14 layers, got {len(lora)} LoRA parameters"
    requiring = {n for n, (_, _, flag) in params.items() if flag}
    assert requiring == lora, f"only LoRA A and B may require grad; also: {sorted(requiring - lora)[:5]}"
    reached = set()
    for step, grads in enumerate(got["grads"]):
        nonzero = {n for n, size in grads.items() if size is not None and size > 0}
        stray = sorted(nonzero - lora)
        assert not stray, f"step {step}: gradients reached {stray[:5]}"
        reached |= nonzero
    assert reached == lora, f"no gradient ever reached {sorted(lora - reached)[:5]}"
    changed = [n for n, before in got["frozen_before"].items() if not torch.equal(before, got["frozen_after"][n])]
    assert not changed, f"frozen parameters changed: {changed[:5]}"


@pytest.mark.task("4.1")
@pytest.mark.points(2)
@pytest.mark.timeout(120)
def test_course_training_keeps_the_codes_and_learns(submission, rng):
    texts = memorisable(rng, 4)
    got = submission.run(probes.course_training_steps, TINY, texts, 8, 1e-2, 8, 16)
    before, after = got["buffers_before"], got["buffers_after"]
    stored = [n for n, b in before.items() if b.dtype == torch.uint8]
    assert len(stored) >= 7 * TINY["layers"], "every quantised layer stores uint8 codes as buffers"
    changed = [n for n, b in before.items() if n not in after or not torch.equal(b, after[n])]
    assert not changed, f"training changed stored codes or constants: {changed[:5]}"
    matched = codes_match_weights(after, trusted_weights(TINY, torch.float32))
    wrong = sorted(n for n, ok in matched.items() if not ok)
    assert not wrong, f"after training these layers do not hold the NF4 codes of their weight: {wrong[:5]}"
    assert falls(got["losses"], 0.2), f"the loss should fall by 20 %: {got['losses']}"
    # what the trained A and B do, measured here on the NF4 base (bitsandbytes' round trip of the weights)
    files = oracle.adapter_files_from_lora(got["lora"], 8, 16, PROJECTIONS)
    base = oracle.tiny_llama(TINY, nf4_weights=True)
    base_loss = oracle.lm_loss(base, texts)
    model, _ = oracle.load_adapter(base, files)
    loss = oracle.lm_loss(model, texts)
    assert loss <= 0.75 * base_loss, f"the trained A and B lower the loss only from {base_loss:.2f} to {loss:.2f}"


# ------------------------------------------------------------------ CPU: load_for_training and train_qlora

@pytest.mark.task("4.1")
@pytest.mark.points(2.5)
@pytest.mark.timeout(120)
def test_load_for_training_course_backend(submission, rng):
    """bfloat16 weights, only A and B trainable, bitsandbytes' codes, gradient checkpointing (each
    layer's forward runs again in the backward pass) and the scaling alpha / r."""
    r, alpha = 8, 16
    x, B = torch.randn(3, TINY["hidden"], generator=rng), torch.randn(TINY["hidden"], r, generator=rng) * 0.1
    got = submission.run(probes.load_course_backend, TINY, memorisable(rng, 2), r, alpha, PROBE_LAYER, x, B)
    params = got["parameters"]
    dtypes = sorted({str(d).removeprefix("torch.") for _, d, _ in params.values()})
    with explain(dtypes, ["bfloat16"], CATALOGUE, what="the course backend's weights and adapters in bfloat16",
                 variants={"course_backend_float32": lambda: ["float32"]}):
        assert dtypes == ["bfloat16"], f"parameter dtypes: {dtypes}"
    lora = {n for n in params if "lora_" in n}
    assert len(lora) == 2 * 7 * TINY["layers"], f"{len(lora)} LoRA parameters"
    requiring = {n for n, (_, _, flag) in params.items() if flag}
    assert requiring == lora, f"requires grad besides LoRA: {sorted(requiring - lora)[:5]}"
    matched = codes_match_weights(got["buffers"], trusted_weights(TINY, torch.bfloat16))
    wrong = sorted(n for n, ok in matched.items() if not ok)
    assert not wrong, f"these layers do not hold the NF4 codes of their bfloat16 weight: {wrong[:5]}"
    calls = got["layer_calls"]
    with explain(calls, {n: 2 for n in calls}, CATALOGUE, what="gradient checkpointing: each layer recomputed",
                 variants={"no_gradient_checkpointing": lambda: {n: 1 for n in calls}}):
        assert set(calls.values()) == {2}, f"forward passes per layer in one training step: {calls}"
    probe = got["probe"]
    update = x.to(torch.bfloat16).float() @ probe["A"].float().T @ B.to(torch.bfloat16).float().T
    scaling = fitted_scaling(probe["out"], probe["base_out"], update)
    with explain(scaling, alpha / r, CATALOGUE, what="the course backend's LoRA scaling alpha / r",
                 variants={"course_backend_alpha_dropped": lambda: 1.0}):
        assert scaling == alpha / r, f"the layers scale their update by {scaling}, not alpha / r = {alpha / r}"


@pytest.mark.task("4.1")
@pytest.mark.points(1)
@pytest.mark.timeout(120)
def test_load_for_training_bf16_backend(submission, rng):
    """The bf16 baseline needs no GPU: peft's LoRA with rank r on every linear layer but the head,
    scaled by alpha / r, on a frozen bfloat16 base, with gradient checkpointing."""
    r, alpha = 4, 12   # neither is peft's default (r 8, lora_alpha 8)
    x = torch.randn(3, TINY["hidden"], generator=rng)
    got = submission.run(probes.load_bf16_backend, TINY, memorisable(rng, 2), r, alpha, PROBE_LAYER, x, 5)
    params = got["parameters"]
    # peft's parameter names: base_model.model.<layer>.lora_A.default.weight
    expected = {key.removesuffix(".weight") + ".default.weight": shape for key, shape in adapter_shapes(TINY, r).items()}
    trainable = {n: shape for n, (shape, _, flag) in params.items() if flag}
    missing, extra = sorted(set(expected) - set(trainable)), sorted(set(trainable) - set(expected))
    assert not missing and not extra, \
        f"trainable parameters: peft's LoRA on all linear layers but the head; missing {missing[:3]}, extra {extra[:3]}"
    wrong = sorted(n for n in expected if trainable[n] != expected[n])
    assert not wrong, f"LoRA matrices not of rank r = {r}: {[(n, trainable[n]) for n in wrong[:2]]}"
    base = sorted({str(d).removeprefix("torch.") for n, (_, d, flag) in params.items() if not flag})
    assert base == ["bfloat16"], f"the frozen base's dtypes: {base}"
    calls = got["layer_calls"]
    assert len(calls) == TINY["layers"] and set(calls.values()) == {2}, \
        f"gradient checkpointing: forward passes per layer in one training step: {calls}"
    probe = got["probe"]
    update = probe["x"].float() @ probe["A"].float().T @ probe["B"].float().T
    scaling = fitted_scaling(probe["out"], probe["base_out"], update)
    assert scaling == alpha / r, f"the bf16 backend's layers scale their update by {scaling}, not alpha / r = {alpha / r}"


@pytest.mark.task("4.1")
@pytest.mark.points(0.5)
@pytest.mark.timeout(120)
def test_load_for_training_rejects_an_unknown_backend(submission):
    with pytest.raises(ValueError):
        submission.run(probes.load_unknown_backend, TINY, "bnb-8bit")


@pytest.mark.task("4.1")
@pytest.mark.points(2.5)
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


@pytest.mark.task("4.2")
@pytest.mark.points(2.5)
@pytest.mark.timeout(120)
def test_course_adapter_loads_with_peft(submission, rng):
    """The adapter folder, loaded here with peft onto this side's own base model: the files' A and B
    arrive in every layer, and the adapter lowers the loss on the training texts."""
    texts = memorisable(rng, 4)
    got = submission.run(probes.train_course_backend, TINY, texts, 6, 1e-2, 8, 16, 4, 32)
    same = got["adapter_dir"] == got["output_dir"] or got["adapter_dir_real"] == got["output_dir_real"]
    assert same, "save_adapter must return the output_dir it was given"
    files = got["files"]
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(files), f"files: {sorted(files)}"
    config, tensors = oracle.read_adapter(files)
    with explain(config.get("lora_alpha"), 16, CATALOGUE, what="lora_alpha in adapter_config.json",
                 variants={"adapter_alpha_is_r": lambda: 8}):
        assert config.get("lora_alpha") == 16, f"lora_alpha: {config.get('lora_alpha')}"
    assert config.get("r") == 8 and config.get("peft_type") == "LORA", \
        f"config: r={config.get('r')}, peft_type={config.get('peft_type')}"
    targets = sorted(config.get("target_modules") or [])
    with explain(targets, sorted(PROJECTIONS), CATALOGUE, what="target_modules: the adapted layers' last names",
                 variants={"target_modules_full_names": lambda: sorted(projection_names(TINY))}):
        assert targets == sorted(PROJECTIONS), f"target_modules: {targets[:7]}"
    expected_keys = sorted(f"base_model.model.{n}.lora_{m}.weight" for n in projection_names(TINY) for m in "AB")
    with explain(sorted(tensors), expected_keys, CATALOGUE, what="the tensors' names in adapter_model.safetensors",
                 variants={"adapter_keys_without_prefix": lambda: sorted(k.removeprefix("base_model.model.")
                                                                         for k in expected_keys)}):
        assert sorted(tensors) == expected_keys, f"{len(tensors)} tensors saved, e.g. {sorted(tensors)[:2]}"
    shapes = {k: list(t.shape) for k, t in tensors.items()}
    expected_shapes = adapter_shapes(TINY, 8)
    with explain(shapes, expected_shapes, CATALOGUE, what="A (r, in) and B (out, r) in the adapter file",
                 variants={"adapter_a_b_swapped": lambda: adapter_shapes(TINY, 8, swapped=True)}):
        assert shapes == expected_shapes, "the saved tensors do not have the shapes of A (r, in) and B (out, r)"
    base = oracle.tiny_llama(TINY)
    base_loss = oracle.lm_loss(base, texts)
    model, info = oracle.load_adapter(base, files)
    layers = info["layers"]
    assert len(layers) == 7 * TINY["layers"], f"peft built LoRA on {len(layers)} layers"
    not_loaded = sorted(n for n, facts in layers.items() if not (facts["A_from_file"] and facts["B_from_file"]))
    assert not not_loaded, f"peft did not load the saved A and B into {not_loaded[:3]}"
    zero = sorted(n for n, facts in layers.items() if not facts["B_nonzero"])
    with explain(zero, [], CATALOGUE, what="the trained B in every layer of the file",
                 variants={"adapter_b_untrained": lambda: sorted(layers)}):
        assert not zero, f"B is still zero after training in {zero[:3]}"
    loss = oracle.lm_loss(model, texts)
    assert loss <= 0.85 * base_loss, f"the saved adapter lowers the loss only from {base_loss:.2f} to {loss:.2f}"


def safetensors_metadata(data):
    """The metadata of a safetensors file (bytes), read here with safetensors' safe_open."""
    import tempfile
    from safetensors import safe_open
    with tempfile.TemporaryDirectory(prefix="qlora-metadata-") as folder:
        path = f"{folder}/adapter_model.safetensors"
        with open(path, "wb") as f:
            f.write(data)
        with safe_open(path, "pt") as f:
            return f.metadata()


@pytest.mark.task("4.2")
@pytest.mark.points(1)
@pytest.mark.timeout(120)
def test_save_adapter_writes_peft_files(submission):
    """save_adapter without training, like peft's save_pretrained: into a folder that exists already
    and into one whose parents do not exist yet; the config's r and lora_alpha are the arguments
    (neither is peft's default), the tensors are the model's A and B, the safetensors metadata
    is peft's (or none), and peft loads the folder onto this side's own base model."""
    r, alpha = 4, 12
    got = submission.run(probes.save_course_adapter, TINY, r, alpha, 7, "tiny-llama")
    lora = got["lora"]
    for case, saved in got["saved"].items():
        where = {"existing": "into a folder that already exists", "nested": "into a folder with new parents"}[case]
        assert saved["returned"] == saved["given"], f"save_adapter {where} must return the output_dir it was given"
        files = saved["files"]
        assert {"adapter_config.json", "adapter_model.safetensors"} <= set(files), f"{where}: files {sorted(files)}"
        config, tensors = oracle.read_adapter(files)
        facts = {k: config.get(k) for k in ("r", "lora_alpha", "peft_type", "base_model_name_or_path")}
        assert facts == {"r": r, "lora_alpha": alpha, "peft_type": "LORA", "base_model_name_or_path": "tiny-llama"}, \
            f"adapter_config.json {where}: {facts}"
        assert sorted(config.get("target_modules") or []) == sorted(PROJECTIONS), \
            f"target_modules: {config.get('target_modules')}"
        metadata = safetensors_metadata(files["adapter_model.safetensors"])
        assert metadata is None or metadata.get("format") == "pt", \
            f"adapter_model.safetensors metadata {metadata}: peft writes {{'format': 'pt'}}"
        expected = {f"base_model.model.{n}": t for n, t in lora.items()}
        assert sorted(tensors) == sorted(expected), f"tensor names, e.g. {sorted(tensors)[:2]}"
        differ = sorted(k for k in expected if tensors[k].dtype != expected[k].dtype
                        or not torch.equal(tensors[k], expected[k]))
        assert not differ, f"saved tensors differ from the model's A and B: {differ[:3]}"
        _, info = oracle.load_adapter(oracle.tiny_llama(TINY), files)
        loaded = sorted(n for n, f in info["layers"].items() if f["A_from_file"] and f["B_from_file"])
        assert len(loaded) == 7 * TINY["layers"], f"peft loaded the saved A and B into {len(loaded)} layers"


# ------------------------------------------------------------------ GPU: bitsandbytes + peft

def gpu_run(submission, cfg, texts, steps, lr):
    got = submission.run(probes.gpu_qlora_run, cfg, texts, steps, lr, 16, 32, 8, 128)
    if got["environment"]:
        pytest.fail(f"the GPU stack is not usable here: {got['environment']}")
    return got


@pytest.mark.gpu
@pytest.mark.task("3.2")
@pytest.mark.points(1)
@pytest.mark.timeout(300)
def test_nf4_and_layers_on_cuda(submission, rng):
    """Tasks 1-3 on a CUDA device: every result stays on the input's device (the CPU-only grader can
    check this with the meta device for most, not all, of them); values near the oracle's."""
    w = torch.randn(64, 128, generator=rng)
    got = submission.run(probes.nf4_on_cuda, w, 64)
    elsewhere = {name: device for name, device in got["devices"].items() if not device.startswith("cuda")}
    assert not elsewhere, f"results not on the CUDA device: {elsewhere}"
    ref_packed, ref_absmax = nf4.quantize(w, 64)
    assert float((got["packed"] != ref_packed).float().mean()) < 1e-3, "the codes computed on CUDA are not NF4's"
    torch.testing.assert_close(got["absmax"], ref_absmax, rtol=1e-6, atol=0)
    expected = nf4.dequantize(got["packed"], got["absmax"], w.shape, 64, torch.bfloat16)   # of its own codes
    torch.testing.assert_close(got["dequantized"].float(), expected.float(), rtol=2e-2, atol=1e-2)


@pytest.mark.gpu
@pytest.mark.task("4.1")
@pytest.mark.points(4)
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
    """The allocator's peak over the training steps (torch.cuda.max_memory_allocated: deterministic,
    no sampling), next to bf16 LoRA's over the same steps, which this side runs itself."""
    texts = [" ".join(memorisable(rng, 4)) for _ in range(8)]   # rows longer than seq_len: full batches
    got = gpu_run(submission, GPU_WIDE, texts, 4, 2e-4)
    qlora_peak = got["qlora_peak"]
    bf16_peak = oracle.bf16_lora_peak(GPU_WIDE, texts, 4, 16, 32, 2e-4, 8, 128)
    assert qlora_peak < bf16_peak, f"QLoRA peak {qlora_peak / 2**20:.1f} MiB is not below bf16 LoRA's {bf16_peak / 2**20:.1f} MiB"
    reported = got["result"]["peak_memory_bytes"]
    assert 0.5 * qlora_peak <= reported <= qlora_peak * 1.01, \
        f"train_qlora reports {reported} bytes, measured {qlora_peak} (torch.cuda.max_memory_allocated)"


@pytest.mark.gpu
@pytest.mark.task("4.2")
@pytest.mark.points(3)
@pytest.mark.timeout(600)
def test_bitsandbytes_adapter_reloads_on_a_fresh_4bit_base(submission, rng):
    texts = memorisable(rng, 8)
    got = gpu_run(submission, GPU_SMALL, texts, 20, 2e-3)
    files = got["files"]
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(files), f"files: {sorted(files)}"
    config, _ = oracle.read_adapter(files)
    assert config.get("r") == 16 and config.get("lora_alpha") == 32, f"config: r={config.get('r')}, alpha={config.get('lora_alpha')}"
    info = oracle.fresh_4bit_reload(GPU_SMALL, files, texts, "cuda")
    layers = 7 * GPU_SMALL["layers"]
    assert info["four_bit_layers"] == layers, f"the fresh base has {info['four_bit_layers']} 4-bit layers"
    assert len(info["layers"]) == layers, f"peft built LoRA on {len(info['layers'])} layers"
    loaded = sum(f["A_from_file"] and f["B_from_file"] for f in info["layers"].values())
    assert loaded == layers, f"peft loaded the saved A and B into {loaded} of {layers} layers"
    assert all(f["B_nonzero"] for f in info["layers"].values()), "every trained B is non-zero"
    assert bool(torch.isfinite(info["logits"]).all()), "the reloaded model's logits are not finite"
    assert float((info["logits"] - info["base_logits"]).abs().max()) > 0, "the adapter must change the base's logits"
    assert info["loss"] < info["base_loss"], \
        f"the reloaded adapter does not lower the loss on the training texts ({info['base_loss']:.2f} -> {info['loss']:.2f})"

"""Helpers for the public tests: they build your layers next to your code and return plain data.

They only observe (build, call, return tensors, names and flags as your objects hold them); every
comparison is made by the tests in test_qlora.py.
"""

import torch


def linear4bit_forward(weight, bias, x, double_quant=True, compute_dtype=torch.bfloat16):
    """Your Linear4bit made from an nn.Linear with this weight and bias, run on x."""
    import qlora
    out_features, in_features = weight.shape
    linear = torch.nn.Linear(in_features, out_features, bias=bias is not None, dtype=weight.dtype)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if bias is not None:
            linear.bias.copy_(bias)
    layer = qlora.Linear4bit.from_linear(linear, double_quant=double_quant, compute_dtype=compute_dtype)
    with torch.no_grad():
        return {"out": layer(x), "weight": layer.dequantized_weight(),
                "parameters": [name for name, _ in layer.named_parameters()],
                "memory_bytes": layer.memory_bytes()}


def qlora_linear_at_init(weight, x, r, alpha):
    """Your QLoRALinear on a Linear4bit of this weight: trainable names, A and B, outputs at init."""
    import qlora
    out_features, in_features = weight.shape
    linear = torch.nn.Linear(in_features, out_features, bias=False, dtype=weight.dtype)
    with torch.no_grad():
        linear.weight.copy_(weight)
    base = qlora.Linear4bit.from_linear(linear, compute_dtype=weight.dtype)
    layer = qlora.QLoRALinear(base, r, alpha)
    with torch.no_grad():
        return {"requires_grad": {n: p.requires_grad for n, p in layer.named_parameters()},
                "A": layer.lora_A.weight, "B": layer.lora_B.weight,
                "out": layer(x), "base_out": base(x)}


def quantize_small_model(r=None):
    """Your quantize_model on a small bfloat16 model with an 'lm_head'; module types and the report."""
    import qlora
    torch.manual_seed(0)
    model = torch.nn.Sequential()
    model.add_module("up", torch.nn.Linear(64, 256, dtype=torch.bfloat16))
    model.add_module("act", torch.nn.ReLU())
    model.add_module("down", torch.nn.Linear(256, 64, dtype=torch.bfloat16))
    model.add_module("lm_head", torch.nn.Linear(64, 128, bias=False, dtype=torch.bfloat16))
    model, report = qlora.quantize_model(model, r=r)
    return {"types": {name: type(m).__name__ for name, m in model.named_children()},
            "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
            "report": report}


def tiny_llama(folder, hidden=64, layers=2, init=0.1, seed=0):
    """Save a tiny random Llama (bfloat16) and a byte-level tokenizer in `folder`; returns the folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab["<eos>"], vocab["<pad>"] = len(vocab), len(vocab) + 1
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=256, initializer_range=init, tie_word_embeddings=False,
                         eos_token_id=vocab["<eos>"], pad_token_id=vocab["<pad>"], bos_token_id=None)
    torch.manual_seed(seed)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def train_tiny_llama(texts, steps, lr, r, alpha):
    """train_qlora(backend="course") on a tiny random Llama, on the CPU; its result without the folder."""
    import tempfile

    import qlora
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = tiny_llama(f"{tmp}/model")
        result = qlora.train_qlora(model_dir, texts, output_dir=f"{tmp}/adapter", backend="course", steps=steps,
                                   r=r, alpha=alpha, lr=lr, batch_size=4, seq_len=48, device="cpu")
    result.pop("adapter_dir", None)
    return result

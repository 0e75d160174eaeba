"""Peak memory and tokens/s of bf16 LoRA, QLoRA (bitsandbytes) and QLoRA (the course's layers).

    python benchmarks/qlora_memory.py                        # CUDA: the 1.1B Llama shape; CPU: a small one
    python benchmarks/qlora_memory.py --preset small --steps 5 --batch-size 4 --seq-len 128
    python benchmarks/qlora_memory.py --model smollm2        # SmolLM2-135M (course.models.prepare_smollm2)

All three runs use the same model, batch, sequence length, LoRA rank (all linear layers) and
gradient checkpointing, through ``train_qlora`` of ``--submission`` (default: solutions/qlora).
Each run goes in its own fresh process: peak figures do not mix, and no bitsandbytes 4-bit layer
ever runs a no-grad forward before training (the avx512_bf16 CPU repacking trap). Peak memory is
``torch.cuda.max_memory_allocated`` on CUDA and the process's peak RSS on the CPU (which includes
the Python and torch runtime, so compare the three rows, not the absolute figure). Figures only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = [("bf16", "bf16 LoRA"), ("bitsandbytes", "QLoRA (bitsandbytes)"), ("course", "QLoRA (course)")]
PRESETS = {   # random Llama-shaped models; "1b" is TinyLlama-1.1B's shape
    "tiny": dict(hidden=256, intermediate=1024, layers=4, heads=4, kv_heads=4, vocab=258),
    "small": dict(hidden=1024, intermediate=2816, layers=8, heads=16, kv_heads=4, vocab=8192),
    "1b": dict(hidden=2048, intermediate=5632, layers=22, heads=32, kv_heads=4, vocab=32000),
}


def build_random_llama(folder: Path, shape: dict, seed: int = 0) -> Path:
    """A random, seeded Llama of this shape (bfloat16) with a byte-level tokenizer, saved in ``folder``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab["<eos>"], vocab["<pad>"] = len(vocab), len(vocab) + 1
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")
    config = LlamaConfig(vocab_size=max(shape["vocab"], len(vocab)), hidden_size=shape["hidden"],
                         intermediate_size=shape["intermediate"], num_hidden_layers=shape["layers"],
                         num_attention_heads=shape["heads"], num_key_value_heads=shape["kv_heads"],
                         max_position_embeddings=2048, tie_word_embeddings=False,
                         eos_token_id=vocab["<eos>"], pad_token_id=vocab["<pad>"], bos_token_id=None)
    torch.manual_seed(seed)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model = model.to_empty(device="cpu").to(torch.bfloat16)
    for p in model.parameters():   # a cheap random init: normal(0, 0.02), norms at 1
        with torch.no_grad():
            p.normal_(0, 0.02) if p.dim() > 1 else p.fill_(1.0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def child(args: argparse.Namespace) -> None:
    """One run, in this fresh process: print its figures as one JSON line."""
    sys.path.insert(0, str(Path(args.submission).resolve()))
    import qlora
    texts = [" ".join(qlora.synthetic_texts(12, seed=i)) for i in range(32)]   # rows longer than seq_len
    with tempfile.TemporaryDirectory() as tmp:
        result = qlora.train_qlora(args.model_dir, texts, output_dir=tmp, backend=args.child, steps=args.steps,
                                   r=args.r, alpha=2 * args.r, batch_size=args.batch_size, seq_len=args.seq_len,
                                   device=args.device)
    result.pop("adapter_dir", None)
    print("RESULT " + json.dumps(result))


def run_child(backend: str, model_dir: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", backend, "--model-dir", str(model_dir), "--steps", str(args.steps),
           "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len), "--r", str(args.r),
           "--submission", args.submission] + (["--device", args.device] if args.device else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"error": " | ".join(tail) or f"exit code {proc.returncode}"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, choices=[*PRESETS, "smollm2"],
                        help="a random Llama shape, or SmolLM2-135M (default: 1b on CUDA, tiny on CPU)")
    parser.add_argument("--preset", dest="model", choices=list(PRESETS), help="same as --model")
    parser.add_argument("--steps", type=int, default=None, help="default 20 on CUDA, 3 on CPU")
    parser.add_argument("--batch-size", type=int, default=None, help="default 8 on CUDA, 2 on CPU")
    parser.add_argument("--seq-len", type=int, default=None, help="default 512 on CUDA, 64 on CPU")
    parser.add_argument("--r", type=int, default=16)
    parser.add_argument("--device", default=None)
    parser.add_argument("--backends", default=",".join(b for b, _ in BACKENDS))
    parser.add_argument("--cache", default=os.path.expanduser("~/.cache/course/models"),
                        help="where SmolLM2 is prepared (as `course models prepare`)")
    parser.add_argument("--submission", default=str(ROOT / "solutions" / "qlora"), help="folder holding qlora.py")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return

    import torch
    cuda = (args.device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    args.model = args.model or ("1b" if cuda else "tiny")
    args.steps = args.steps or (20 if cuda else 3)
    args.batch_size = args.batch_size or (8 if cuda else 2)
    args.seq_len = args.seq_len or (512 if cuda else 64)
    with tempfile.TemporaryDirectory() as tmp:
        if args.model == "smollm2":
            from course.models import prepare_smollm2
            model_dir = prepare_smollm2(args.cache)
        else:
            model_dir = build_random_llama(Path(tmp) / "model", PRESETS[args.model])
        where = torch.cuda.get_device_name() if cuda else f"CPU ({os.cpu_count()} cores)"
        print(f"model {args.model}, batch {args.batch_size}x{args.seq_len}, r={args.r} on all linear layers, "
              f"gradient checkpointing, {args.steps} steps, {where}")
        print(f"{'run':<22} {'peak memory':>12} {'throughput':>14} {'trainable':>11} {'total params':>13}")
        names = dict(BACKENDS)
        for backend in args.backends.split(","):
            got = run_child(backend, model_dir, args)
            if "error" in got:
                print(f"{names.get(backend, backend):<22} failed: {got['error'][:200]}")
                continue
            print(f"{names.get(backend, backend):<22} {got['peak_memory_bytes'] / 2**30:>8.3f} GiB "
                  f"{got['tokens_per_second']:>10.0f} tok/s {got['trainable_params']:>11,} {got['total_params']:>13,}")


if __name__ == "__main__":
    main()

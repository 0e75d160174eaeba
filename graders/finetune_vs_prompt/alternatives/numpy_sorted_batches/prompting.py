"""Alternative correct prompting.py: numpy for the scores, a brace-matching scanner (strings and
escapes respected) instead of raw_decode."""

import json
import math

import numpy as np

FIELDS = ("flight_number", "departure_time", "gate")
TEMPLATE = "Input: {input}\nOutput: {output}"


def count_tokens(text, tokenizer):
    return int(np.asarray(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=np.int64).size)


def build_few_shot_prompt(instruction, examples, query, tokenizer, max_tokens, template=TEMPLATE):
    def prompt_with(n):
        return "\n\n".join([instruction] + [template.format(input=x, output=y) for x, y in examples[:n]]
                           + [template.format(input=query, output="").rstrip()])
    base = count_tokens(prompt_with(0), tokenizer)
    if base > max_tokens:
        raise ValueError(f"instruction and query use {base} tokens; the budget is {max_tokens}")
    n = 0
    for n in range(len(examples) + 1):
        if n == len(examples) or count_tokens(prompt_with(n + 1), tokenizer) > max_tokens:
            break
    return prompt_with(n), n


def _balanced(text, start):
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        c = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[start:i + 1]
    return None


def parse_json_answer(text, keys=FIELDS):
    for start in [i for i, c in enumerate(text) if c == "{"]:
        candidate = _balanced(text, start)
        if candidate is None:
            continue
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if not isinstance(value, dict):
            continue
        return value if set(value.keys()) == set(keys) else None
    return None


def exact_match(preds, golds, field=None):
    if len(preds) != len(golds) or len(golds) == 0:
        raise ValueError("need equally many predictions and gold answers (at least one)")
    fields = sorted({k for g in golds for k in g}) if field is None else [field]
    table = np.zeros((len(golds), len(fields)), dtype=bool)
    for i, (p, g) in enumerate(zip(preds, golds)):
        for j, f in enumerate(fields):
            table[i, j] = (f not in g) or (p is not None and f in p and str(p[f]).strip() == str(g[f]).strip())
    return float(table.all(axis=1).mean())


def prompt_cost(prompt_tokens, output_tokens, calls, price_in_per_1k, price_out_per_1k):
    prices = np.array([price_in_per_1k, price_out_per_1k], dtype=np.float64) / 1000
    return float(calls * (np.array([prompt_tokens, output_tokens], dtype=np.float64) @ prices))


def break_even_calls(finetune_cost, prompt_tokens_saved, price_in_per_1k):
    if finetune_cost <= 0:
        return 0
    per_call = prompt_tokens_saved / 1000 * price_in_per_1k
    if per_call <= 0:
        raise ValueError(f"saving {per_call} per call: never pays back")
    n = max(0, math.floor(finetune_cost / per_call) - 2)
    while not n * prompt_tokens_saved / 1000 * price_in_per_1k >= finetune_cost:
        n += 1
    return int(n)

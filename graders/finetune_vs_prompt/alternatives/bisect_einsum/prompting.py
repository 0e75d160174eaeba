"""Alternative correct prompting.py: binary search over the number of examples, a regex scan for
braces, exact decimal arithmetic for the break-even."""

from __future__ import annotations

import json
import re
from fractions import Fraction

FIELDS = ("flight_number", "departure_time", "gate")
TEMPLATE = "Input: {input}\nOutput: {output}"


def count_tokens(text, tokenizer):
    return len(tokenizer.encode(text, add_special_tokens=False))


def _render(instruction, examples, query, template):
    parts = [instruction]
    parts.extend(template.format(input=x, output=y) for x, y in examples)
    parts.append(template.format(input=query, output="").rstrip())
    return "\n\n".join(parts)


def build_few_shot_prompt(instruction, examples, query, tokenizer, max_tokens, template=TEMPLATE):
    sizes = {}

    def size(n):
        if n not in sizes:
            sizes[n] = count_tokens(_render(instruction, examples[:n], query, template), tokenizer)
        return sizes[n]

    if size(0) > max_tokens:
        raise ValueError(f"instruction + query = {size(0)} tokens > budget {max_tokens}")
    # adding an example never shortens the prompt: the prompts that fit are a prefix of 0..len
    lo, hi = 0, len(examples)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if size(mid) <= max_tokens:
            lo = mid
        else:
            hi = mid - 1
    return _render(instruction, examples[:lo], query, template), lo


def parse_json_answer(text, keys=FIELDS):
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            obj, _end = decoder.raw_decode(text[match.start():])
        except ValueError:
            continue
        return obj if sorted(obj) == sorted(keys) else None
    return None


def exact_match(preds, golds, field=None):
    if not golds or len(preds) != len(golds):
        raise ValueError("preds and golds must be non-empty and of equal length")

    def norm(v):
        return str(v).strip()

    def ok(p, g):
        if p is None:
            return False
        fields = g.keys() if field is None else (field,)
        return all(k in p and norm(p[k]) == norm(g[k]) for k in fields)
    return sum(map(ok, preds, golds)) / len(golds)


def prompt_cost(prompt_tokens, output_tokens, calls, price_in_per_1k, price_out_per_1k):
    return calls * (prompt_tokens * price_in_per_1k + output_tokens * price_out_per_1k) / 1000


def break_even_calls(finetune_cost, prompt_tokens_saved, price_in_per_1k):
    cost = Fraction(repr(float(finetune_cost)))
    saving = Fraction(prompt_tokens_saved) / 1000 * Fraction(repr(float(price_in_per_1k)))
    if cost <= 0:
        return 0
    if saving <= 0:
        raise ValueError("no saving per call: fine-tuning never pays for itself")
    n = cost // saving
    return int(n if n * saving >= cost else n + 1)

"""Alternative correct prompting.py in a functional style (itertools, comprehensions)."""

import itertools
import json
from decimal import Decimal

FIELDS = ("flight_number", "departure_time", "gate")
TEMPLATE = "Input: {input}\nOutput: {output}"


def count_tokens(text, tokenizer):
    return sum(1 for _ in tokenizer(text, add_special_tokens=False)["input_ids"])


def _prompt(instruction, shots, query, template):
    return "\n\n".join(itertools.chain([instruction], (template.format(input=x, output=y) for x, y in shots),
                                       [template.format(input=query, output="").rstrip()]))


def build_few_shot_prompt(instruction, examples, query, tokenizer, max_tokens, template=TEMPLATE):
    fits = lambda n: count_tokens(_prompt(instruction, examples[:n], query, template), tokenizer) <= max_tokens  # noqa: E731
    if not fits(0):
        need = count_tokens(_prompt(instruction, [], query, template), tokenizer)
        raise ValueError(f"the instruction and query need {need} tokens (max_tokens={max_tokens})")
    n = sum(1 for _ in itertools.takewhile(fits, range(1, len(examples) + 1)))
    return _prompt(instruction, examples[:n], query, template), n


def parse_json_answer(text, keys=FIELDS):
    decoder = json.JSONDecoder()

    def attempt(i):
        try:
            return decoder.raw_decode(text, i)[0]
        except json.JSONDecodeError:
            return None
    first = next((v for v in (attempt(i) for i, c in enumerate(text) if c == "{") if v is not None), None)
    return first if first is not None and set(first) == set(keys) else None


def exact_match(preds, golds, field=None):
    if not (preds or golds) or len(preds) != len(golds) or not golds:
        raise ValueError("mismatched or empty lists")
    same = lambda p, g, k: p is not None and k in p and str(p[k]).strip() == str(g[k]).strip()  # noqa: E731
    return sum(all(same(p, g, k) for k in (g if field is None else [field])) for p, g in zip(preds, golds)) / len(golds)


def prompt_cost(prompt_tokens, output_tokens, calls, price_in_per_1k, price_out_per_1k):
    return sum(t / 1000 * price for t, price in ((prompt_tokens, price_in_per_1k), (output_tokens, price_out_per_1k))) * calls


def break_even_calls(finetune_cost, prompt_tokens_saved, price_in_per_1k):
    cost, saved, price = Decimal(repr(finetune_cost)), Decimal(prompt_tokens_saved), Decimal(repr(price_in_per_1k))
    if cost <= 0:
        return 0
    saving = saved / 1000 * price          # exact: a few decimal digits, well inside Decimal's precision
    if saving <= 0:
        raise ValueError("no saving per call")
    whole = cost // saving                  # Decimal's // truncates: the floor, for positive values
    return int(whole if whole * saving >= cost else whole + 1)

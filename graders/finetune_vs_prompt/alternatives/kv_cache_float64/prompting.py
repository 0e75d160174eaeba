"""Alternative correct prompting.py: the prompt grown one shot at a time, a hand-written brace
scan, a per-field tally for exact match, and a float search for the break-even."""

import json

FIELDS = ("flight_number", "departure_time", "gate")
TEMPLATE = "Input: {input}\nOutput: {output}"


def count_tokens(text: str, tokenizer) -> int:
    encoded = tokenizer(text, add_special_tokens=False, return_attention_mask=False)
    return len(encoded["input_ids"])


def build_few_shot_prompt(instruction, examples, query, tokenizer, max_tokens, template=TEMPLATE):
    tail = template.format(input=query, output="").rstrip()
    head = [instruction]
    prompt = "\n\n".join(head + [tail])
    need = count_tokens(prompt, tokenizer)
    if need > max_tokens:
        raise ValueError(f"needs {need} tokens for instruction and query, but max_tokens is {max_tokens}")
    taken = 0
    for x, y in examples:
        candidate = "\n\n".join(head + [template.format(input=x, output=y)] + [tail])
        if count_tokens(candidate, tokenizer) > max_tokens:
            break
        head.append(template.format(input=x, output=y))
        prompt = candidate
        taken += 1
    return prompt, taken


def parse_json_answer(text, keys=FIELDS):
    decoder = json.JSONDecoder()
    i = 0
    while True:
        i = text.find("{", i)
        if i < 0:
            return None
        try:
            value = decoder.raw_decode(text, i)[0]
        except json.JSONDecodeError:
            i += 1
            continue
        if len(value) == len(set(keys)) and all(k in value for k in keys):
            return value
        return None


def exact_match(preds, golds, field=None):
    if len(golds) == 0 or len(preds) != len(golds):
        raise ValueError(f"{len(preds)} predictions for {len(golds)} gold answers")
    right = 0
    for p, g in zip(preds, golds):
        if p is None:
            continue
        fields = list(g) if field is None else [field]
        good = True
        for f in fields:
            if f not in p or str(p[f]).strip() != str(g[f]).strip():
                good = False
                break
        right += good
    return right / len(golds)


def prompt_cost(prompt_tokens, output_tokens, calls, price_in_per_1k, price_out_per_1k):
    return (prompt_tokens / 1000 * price_in_per_1k) * calls + (output_tokens / 1000 * price_out_per_1k) * calls


def break_even_calls(finetune_cost, prompt_tokens_saved, price_in_per_1k):
    if not finetune_cost > 0:
        return 0
    if prompt_tokens_saved * price_in_per_1k <= 0:
        raise ValueError("nothing is saved per call")

    def pays(n):
        return n * prompt_tokens_saved / 1000 * price_in_per_1k >= finetune_cost
    hi = 1
    while not pays(hi):
        hi *= 2
    lo = hi // 2            # pays(lo) is False (or lo = 0)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if pays(mid):
            hi = mid
        else:
            lo = mid
    return hi

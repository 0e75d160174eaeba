"""Part A: in-context learning. Few-shot prompts within a context budget, parsing, scoring, cost.

In-context learning puts the skill in the prompt: an instruction and a few worked examples, sent
again with every call. Two limits follow: the examples must fit the model's context window, and
every call pays for their tokens. Token counts are always measured with a real tokenizer.

The running task (scenario 4 of the activity notebook): pull ``flight_number``, ``departure_time`` and ``gate``
out of flight-confirmation emails whose format varies slightly from airline to airline.
"""

from __future__ import annotations

import json
import math

FIELDS = ("flight_number", "departure_time", "gate")
TEMPLATE = "Input: {input}\nOutput: {output}"


# Task 1.1
def count_tokens(text: str, tokenizer) -> int:
    """The number of tokens of ``text`` for this (Hugging Face) tokenizer, without special tokens.

    Use ``tokenizer(text, add_special_tokens=False)["input_ids"]``: the tokens of the text itself,
    no ``[CLS]``/``[SEP]`` or BOS added.
    """
    # BEGIN SOLUTION
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])
    # END SOLUTION


# Task 1.2
def build_few_shot_prompt(instruction: str, examples: list[tuple[str, str]], query: str, tokenizer,
                          max_tokens: int, template: str = TEMPLATE) -> tuple[str, int]:
    """A few-shot prompt holding as many of ``examples`` (in order) as fit in ``max_tokens``.

    The prompt is the instruction, the first ``n`` examples and the query, joined by blank lines::

        "\\n\\n".join([instruction,
                      *(template.format(input=x, output=y) for x, y in examples[:n]),
                      template.format(input=query, output="").rstrip()])

    ``n`` is the largest number such that the whole prompt measures at most ``max_tokens`` tokens
    (:func:`count_tokens`) with each of the examples ``0 .. n-1`` included: take examples in
    order and stop at the first that no longer fits. Measure the whole prompt each time (token
    counts of pieces do not add up exactly). The instruction and the query are never truncated.

    Raises:
        ValueError: when the instruction and the query alone (``n = 0``) need more than
            ``max_tokens`` tokens; the message names both numbers.

    Returns:
        ``(prompt, n)``.
    """
    # BEGIN SOLUTION
    def render(n: int) -> str:
        shots = [template.format(input=x, output=y) for x, y in examples[:n]]
        return "\n\n".join([instruction, *shots, template.format(input=query, output="").rstrip()])

    needed = count_tokens(render(0), tokenizer)
    if needed > max_tokens:
        raise ValueError(f"the instruction and the query alone need {needed} tokens, "
                         f"more than max_tokens={max_tokens}")
    n = 0
    while n < len(examples) and count_tokens(render(n + 1), tokenizer) <= max_tokens:
        n += 1
    return render(n), n
    # END SOLUTION


# Task 1.3
def parse_json_answer(text: str, keys: tuple[str, ...] | list[str] = FIELDS) -> dict | None:
    """The JSON object in a model's reply, or ``None``.

    Tolerant of what surrounds the object: prose before or after it, Markdown code fences
    (```` ```json ... ``` ````). Strict about the object: the first ``{`` at which a JSON object
    can be decoded (``json.JSONDecoder().raw_decode``) is the answer, and it is returned only if
    its keys are exactly ``keys`` (no key missing, none extra); otherwise ``None``. No JSON
    object at all: ``None``.
    """
    # BEGIN SOLUTION
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
            continue
        return value if set(value) == set(keys) else None
    return None
    # END SOLUTION


# Task 1.4
def exact_match(preds: list[dict | None], golds: list[dict], field: str | None = None) -> float:
    """The fraction of predictions that match the gold answers exactly.

    With ``field=None`` (overall) a prediction counts only if every field of its gold answer is
    right; with ``field="gate"`` (per field) only that field is compared. Values are compared as
    strings after ``str(value).strip()``. A ``None`` prediction (unparseable reply) or a missing
    field is wrong.

    Raises:
        ValueError: when the lists differ in length or are empty.
    """
    # BEGIN SOLUTION
    if len(preds) != len(golds) or not golds:
        raise ValueError(f"need as many predictions as gold answers, and at least one: "
                         f"{len(preds)} predictions, {len(golds)} gold answers")

    def right(pred: dict | None, gold: dict, key: str) -> bool:
        return pred is not None and key in pred and str(pred[key]).strip() == str(gold[key]).strip()

    hits = 0
    for pred, gold in zip(preds, golds):
        keys = list(gold) if field is None else [field]
        hits += all(right(pred, gold, key) for key in keys)
    return hits / len(golds)
    # END SOLUTION


# Task 1.5
def prompt_cost(prompt_tokens: int, output_tokens: int, calls: int, price_in_per_1k: float,
                price_out_per_1k: float) -> float:
    """The price of ``calls`` calls, each sending ``prompt_tokens`` and receiving ``output_tokens``.

    Prices are per 1,000 tokens, input and output priced separately (as API providers do).
    """
    # BEGIN SOLUTION
    per_call = prompt_tokens / 1000 * price_in_per_1k + output_tokens / 1000 * price_out_per_1k
    return calls * per_call
    # END SOLUTION


# Task 1.5
def break_even_calls(finetune_cost: float, prompt_tokens_saved: int, price_in_per_1k: float) -> int:
    """After how many calls a one-off fine-tuning cost is paid back by shorter prompts.

    A fine-tuned model needs no examples in its prompt: each call saves ``prompt_tokens_saved``
    input tokens. Returns the smallest number of calls ``n`` (an ``int``) for which
    ``n * prompt_tokens_saved / 1000 * price_in_per_1k >= finetune_cost`` holds, evaluated as
    written (0 when the cost is 0, whatever the saving). Check the condition itself: a
    ``math.ceil`` of a float division can land one call off at a boundary. (Computing the same
    condition exactly, on the decimal values of the arguments, is also accepted.)

    Raises:
        ValueError: when nothing is saved per call (``prompt_tokens_saved * price_in_per_1k <= 0``)
            while ``finetune_cost > 0``: the fine-tuning never pays for itself.
    """
    # BEGIN SOLUTION
    if finetune_cost <= 0:
        return 0
    saving = prompt_tokens_saved / 1000 * price_in_per_1k
    if saving <= 0:
        raise ValueError(f"a saving of {saving} per call never pays back a cost of {finetune_cost}")

    def pays(n: int) -> bool:
        return n * prompt_tokens_saved / 1000 * price_in_per_1k >= finetune_cost

    n = math.ceil(finetune_cost / saving)   # a first guess, then the condition itself decides
    while n > 0 and pays(n - 1):
        n -= 1
    while not pays(n):
        n += 1
    return n
    # END SOLUTION

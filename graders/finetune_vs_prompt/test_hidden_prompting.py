"""Hidden tests of part A (prompting.py): budgets measured with two real tokenizers, MiniLM's
WordPiece and SmolLM2's byte-level BPE (where the tokens of pieces joined do not add up)."""

import json
import math
import re

import pytest
import torch

import fvp_oracle as oracle
import probes
from course.grading.diagnose import explain
from misconceptions import CATALOGUE

FIELDS = ("flight_number", "departure_time", "gate")
INSTRUCTION = ("Extract the flight number, the departure time (24-hour HH:MM) and the gate from the email. "
               "Answer with JSON only.")
# written as a triple-quoted string would be: it ends with a newline, which BPE merges with the
# blank line that follows it in the prompt
INSTRUCTION_NL = ("Extract the flight number, the departure time (24-hour HH:MM) and the gate from the email.\n"
                  "Answer with JSON only.\n")


def _answer(row, newline=False):
    if newline:  # an answer as read from a JSONL line, newline kept
        return json.dumps({k: row["answer"][k] for k in FIELDS}, indent=1) + "\n"
    return json.dumps({k: row["answer"][k] for k in FIELDS})


def _rows():
    return oracle.load_jsonl("flights_hidden.jsonl")


def _shuffled_emails(rng):
    rows = _rows()
    order = torch.randperm(len(rows), generator=rng).tolist()
    return [rows[i] for i in order]


def _spec(name):
    """What a probe needs to build the tokenizer (SmolLM2's is sent as data)."""
    return oracle.smollm2_spec() if name == "SmolLM2" else oracle.MINILM


def _specific(variants):
    """Only the wrong answers that say something: a variant that gives None (what many bugs give)
    or the same answer as another variant names nobody."""
    values = {}
    for name, make in variants.items():
        try:
            values[name] = make()
        except Exception:
            continue

    def unique(name):
        v = values[name]
        return v is not None and not any(other != name and values[other] == v for other in values)
    return {name: (lambda v=values[name]: v) for name in values if unique(name)}


# ------------------------------------------------------------------ 1.1

@pytest.mark.task("1.1")
@pytest.mark.points(1)
@pytest.mark.parametrize("name", ["MiniLM", "SmolLM2"], ids=["MiniLM WordPiece", "SmolLM2 byte-level BPE"])
def test_hidden_count_tokens_without_special_tokens(submission, rng, name):
    spec = _spec(name)
    tok = oracle.make(spec)
    texts = [r["email"] for r in _shuffled_emails(rng)[:4]] + ["", "kcat/Km of PfkB", INSTRUCTION_NL, "  two  spaces "]
    got = submission.run(probes.count_tokens, texts, spec)
    expected = [oracle.n_tokens(t, tok) for t in texts]
    with explain(got, expected, CATALOGUE, what="token counts of emails and short texts", variants={
            "count_with_special_tokens": lambda: [len(tok(t)["input_ids"]) for t in texts],
            "count_words": lambda: [len(t.split()) for t in texts]}):
        assert got == expected


# ------------------------------------------------------------------ 1.2

def _budget_case(kind):
    rows = _rows()
    if kind == "bpe-newlines":
        return "SmolLM2", INSTRUCTION_NL, [(r["email"], _answer(r, newline=True)) for r in rows[:6]], rows[6]["email"]
    if kind == "bpe":
        return "SmolLM2", INSTRUCTION, [(r["email"], _answer(r)) for r in rows[7:13]], rows[13]["email"]
    return "MiniLM", INSTRUCTION, [(r["email"], _answer(r)) for r in rows[14:20]], rows[20]["email"]


def _few_shot_variants(instruction, examples, query, tok, budgets):
    """The misconceptions' answers for each budget: [prompt, n] as the test receives them."""
    def with_n(n):
        return [oracle.render_prompt(instruction, examples[:n], query), n]

    def skipping(budget):
        chosen = []
        for ex in examples:
            if oracle.n_tokens(oracle.render_prompt(instruction, chosen + [ex], query), tok) <= budget:
                chosen.append(ex)
        return [oracle.render_prompt(instruction, chosen, query), len(chosen)]
    return {"budget_summed_pieces": lambda: [with_n(oracle.summed_n(instruction, examples, query, tok, b)) for b in budgets],
            "budget_strict_inequality": lambda: [with_n(oracle.few_shot_n(instruction, examples, query, tok, b - 1))
                                                 for b in budgets],
            "skips_examples_that_do_not_fit": lambda: [skipping(b) for b in budgets]}


@pytest.mark.task("1.2")
@pytest.mark.points(5)
@pytest.mark.parametrize("kind", ["bpe-newlines", "bpe", "wordpiece"], ids=[
    "SmolLM2 BPE, instruction and answers ending in a newline", "SmolLM2 BPE, plain pieces", "MiniLM WordPiece"])
def test_hidden_few_shot_measures_the_whole_prompt(submission, kind):
    name, instruction, examples, query = _budget_case(kind)
    spec, tok = _spec(name), oracle.make(_spec(name))
    whole = [oracle.n_tokens(oracle.render_prompt(instruction, examples[:n], query), tok) for n in range(len(examples) + 1)]
    # for n = 0, 1, 3, 5 examples: the budget exactly at n, one token above it, one token short of
    # n + 1, and one token short of n
    cases = [(budget, expect) for n in (0, 1, 3, 5)
             for budget, expect in ((whole[n], n), (whole[n] + 1, n), (whole[n + 1] - 1, n), (whole[n] - 1, n - 1))
             if expect >= 0]
    budgets = [b for b, _ in cases]
    got = submission.run(probes.few_shot_budgets, instruction, examples, query, budgets, spec)
    expected = [[oracle.render_prompt(instruction, examples[:n], query), n] for _, n in cases]
    got = [list(x) for x in got] if isinstance(got, (list, tuple)) else got
    with explain(got, expected, CATALOGUE, variants=_few_shot_variants(instruction, examples, query, tok, budgets),
                 what=f"the number of examples that fit a budget, measured on the whole prompt ({name})"):
        assert got == expected


@pytest.mark.task("1.2")
@pytest.mark.points(2)
def test_hidden_few_shot_keeps_order_and_stops_at_first_misfit(submission, rng):
    rows = _shuffled_emails(rng)
    long_example = (rows[0]["email"] + "\n" + rows[1]["email"], _answer(rows[0]))
    short = [("Flight AU1 at 10:00, gate A1.", '{"flight_number": "AU1", "departure_time": "10:00", "gate": "A1"}'),
             ("CJ-22 leaves 9:05 PM from gate C3.", '{"flight_number": "CJ22", "departure_time": "21:05", "gate": "C3"}')]
    query = rows[2]["email"]
    spec = oracle.smollm2_spec()
    tok = oracle.make(spec)
    budget = oracle.n_tokens(oracle.render_prompt(INSTRUCTION, short, query), tok)  # the two short ones would fit
    examples = [short[0], long_example, short[1]]
    got = [list(submission.run(probes.few_shot, INSTRUCTION, examples, query, budget, spec))]
    with explain(got, [[oracle.render_prompt(INSTRUCTION, examples[:1], query), 1]], CATALOGUE,
                 variants=_few_shot_variants(INSTRUCTION, examples, query, tok, [budget]),
                 what="examples taken in order, stopping at the first that does not fit"):
        assert got == [[oracle.render_prompt(INSTRUCTION, examples[:1], query), 1]]
    order = [short[1], short[0], long_example]
    big = oracle.n_tokens(oracle.render_prompt(INSTRUCTION, order, query), tok)
    assert list(submission.run(probes.few_shot, INSTRUCTION, order, query, big, spec)) == \
        [oracle.render_prompt(INSTRUCTION, order, query), 3]


@pytest.mark.task("1.2")
@pytest.mark.points(2)
def test_hidden_few_shot_refuses_to_truncate(submission, rng):
    rows = _shuffled_emails(rng)
    query = rows[0]["email"]
    spec = oracle.smollm2_spec()
    need = oracle.n_tokens(oracle.render_prompt(INSTRUCTION, [], query), oracle.make(spec))
    examples = [(rows[1]["email"], _answer(rows[1]))]
    # the instruction and the query alone fill the budget exactly: a prompt without examples
    assert list(submission.run(probes.few_shot, INSTRUCTION, examples, query, need, spec)) == \
        [oracle.render_prompt(INSTRUCTION, [], query), 0], "a budget of exactly the instruction and the query fits them"
    budget = need - 1 - int(torch.randint(0, 5, (1,), generator=rng))
    with pytest.raises(ValueError) as info:
        submission.run(probes.few_shot, INSTRUCTION, examples, query, budget, spec)
    numbers = set(re.findall(r"\d+", str(info.value)))
    assert {str(need), str(budget)} <= numbers, "the message should name the tokens needed and the budget"


@pytest.mark.task("1.2")
@pytest.mark.points(1)
def test_hidden_few_shot_uses_the_template(submission, rng):
    rows = _shuffled_emails(rng)
    template = "### Email\n{input}\n### JSON\n{output}"
    examples = [(r["email"], _answer(r)) for r in rows[:3]]
    query = rows[3]["email"]
    spec = oracle.smollm2_spec()
    budget = oracle.n_tokens(oracle.render_prompt(INSTRUCTION, examples[:2], query, template), oracle.make(spec))
    prompt, n = submission.run(probes.few_shot, INSTRUCTION, examples, query, budget, spec, template)
    assert n == 2
    assert prompt == oracle.render_prompt(INSTRUCTION, examples[:2], query, template)


# ------------------------------------------------------------------ 1.3

def _gold(rng):
    row = _shuffled_emails(rng)[0]
    return {k: row["answer"][k] for k in FIELDS}


WRAPPINGS = {
    "the bare object": "{json}",
    "a json code fence": "```json\n{json}\n```",
    "prose, a plain fence, braces in the prose after it": "Sure! Here is the extracted data:\n\n```\n{json}\n```\n"
                                                         "Let me know if you need anything else {{or not}}.",
    "prose on both sides": "The answer is {json}. (Times are local.)",
    "a stray closing brace after it": "Output: {json}\n}}",
    "a brace that opens no JSON before it": "Note {{see below}}: {json}",
}


@pytest.mark.task("1.3")
@pytest.mark.points(2)
@pytest.mark.parametrize("wrapping", list(WRAPPINGS.values()), ids=list(WRAPPINGS))
def test_hidden_parse_json_tolerates_surroundings(submission, rng, wrapping):
    gold = _gold(rng)
    text = wrapping.format(json=json.dumps(gold, indent=2 if "```" in wrapping else None))
    assert submission.call("prompting.parse_json_answer", text, list(FIELDS)) == gold


@pytest.mark.task("1.3")
@pytest.mark.points(1)
def test_hidden_parse_json_is_strict_about_keys(submission, rng):
    gold = _gold(rng)
    missing = {k: gold[k] for k in FIELDS[:2]}
    extra = {**gold, "seat": "12A"}
    for text in [json.dumps(missing), "Here: " + json.dumps(extra), "no JSON here", "{flight_number: AU1}",
                 '{"flight_number": "AU1", "departure_time": "10:00", "gate": "A1"', "", "[1, 2, 3]"]:
        got = submission.call("prompting.parse_json_answer", text, list(FIELDS))
        with explain(got, None, CATALOGUE, variants={"json_extra_keys_accepted": lambda: extra if "seat" in text else None},
                     what="replies whose object has missing or extra keys, or no object at all"):
            assert got is None
    reordered = {k: gold[k] for k in reversed(FIELDS)}          # keys are a set: any order is right
    assert submission.call("prompting.parse_json_answer", json.dumps(reordered), list(FIELDS)) == gold
    assert submission.call("prompting.parse_json_answer", '{"name": "Ada", "seat": "3C"}', ["name", "seat"]) == \
        {"name": "Ada", "seat": "3C"}


def _first_object_cases():
    gold = {"flight_number": "AU481", "departure_time": "14:35", "gate": "B12"}
    other = {"flight_number": "XX0", "departure_time": "00:00", "gate": "Z9"}
    nested = {"flight_number": "BF2210", "departure_time": "06:40", "gate": {"terminal": "2", "number": "F21"}}
    return {
        "two objects, the answer first": (f"{json.dumps(gold)}\nA second guess: {json.dumps(other)}", gold),
        "an object nested in the answer": (f"Result: {json.dumps(nested)} (gate details included)", nested),
        "a first object with other keys, the answer, another object": (
            f'Example: {{"name": "x"}}\nAnswer: {json.dumps(gold)}\nAlso: {{"note": 1}}', None),
        "an answer, then an object with other keys": (f'{json.dumps(gold)} and {{"note": "ok"}}', gold),
    }


@pytest.mark.task("1.3")
@pytest.mark.points(2)
@pytest.mark.parametrize("case", list(_first_object_cases()), ids=list(_first_object_cases()))
def test_hidden_parse_json_takes_the_first_object(submission, case):
    text, expected = _first_object_cases()[case]
    got = submission.call("prompting.parse_json_answer", text, list(FIELDS))

    def from_start(start_of):
        decoder = json.JSONDecoder()
        start = start_of(text)
        while start != -1:
            try:
                value, _ = decoder.raw_decode(text, start)
            except json.JSONDecodeError:
                start = text.find("{", start + 1)
                continue
            return value if set(value) == set(FIELDS) else None
        return None

    def searching():
        decoder = json.JSONDecoder()
        for m in re.finditer(r"\{", text):
            try:
                value, _ = decoder.raw_decode(text, m.start())
            except json.JSONDecodeError:
                continue
            if set(value) == set(FIELDS):
                return value
        return None
    with explain(got, expected, CATALOGUE, what="the first decodable object of a reply with several braces",
                 variants=_specific({"json_last_object": lambda: from_start(lambda t: t.rfind("{")),
                                     "json_keeps_searching": searching})):
        assert got == expected


# ------------------------------------------------------------------ 1.4

@pytest.mark.task("1.4")
@pytest.mark.points(2)
def test_hidden_exact_match_overall_and_per_field(submission, rng):
    golds = [{k: r["answer"][k] for k in FIELDS} for r in _shuffled_emails(rng)[:12]]
    preds = []
    for gold in golds:
        kind = int(torch.randint(0, 5, (1,), generator=rng))
        if kind == 0:
            preds.append(None)
        elif kind == 1:
            preds.append({**gold, "gate": gold["gate"] + "X"})
        elif kind == 2:
            preds.append({k: f"  {v} " for k, v in gold.items()})  # whitespace does not count
        elif kind == 3:
            preds.append({k: v for k, v in gold.items() if k != "departure_time"})
        else:
            preds.append(dict(gold))

    def right(p, g, k):
        return p is not None and k in p and str(p[k]).strip() == str(g[k]).strip()
    expected_overall = sum(all(right(p, g, k) for k in FIELDS) for p, g in zip(preds, golds)) / len(golds)
    assert submission.call("prompting.exact_match", preds, golds) == pytest.approx(expected_overall)
    for field in FIELDS:
        expected = sum(right(p, g, field) for p, g in zip(preds, golds)) / len(golds)
        assert submission.call("prompting.exact_match", preds, golds, field) == pytest.approx(expected), field
    with pytest.raises(ValueError):
        submission.call("prompting.exact_match", preds[:-1], golds)


@pytest.mark.task("1.4")
@pytest.mark.points(1)
def test_hidden_exact_match_edge_values(submission):
    golds = [{"flight_number": "AU1", "departure_time": "10:00", "gate": 12},
             {"flight_number": " BF2 ", "departure_time": "11:30", "gate": "B2"},
             {"flight_number": "CJ3", "departure_time": "09:05", "gate": "C3"}]
    preds = [{"flight_number": "AU1", "departure_time": "10:00", "gate": "12"},          # a number as text
             {"flight_number": "BF2  ", "departure_time": "11:30", "gate": "B2", "seat": "3C"},  # an extra key
             {}]                                                                          # nothing found
    got = [submission.call_pure("prompting.exact_match", preds, golds),       # and leaves its inputs as they were
           submission.call_pure("prompting.exact_match", preds, golds, "gate")]
    assert got == [pytest.approx(2 / 3), pytest.approx(2 / 3)], "values compare as str(value).strip(), both sides"
    with pytest.raises(ValueError):
        submission.call("prompting.exact_match", [], [])


# ------------------------------------------------------------------ 1.5

@pytest.mark.task("1.5")
@pytest.mark.points(1)
def test_hidden_prompt_cost_prices_input_and_output(submission, rng):
    for _ in range(5):
        p, o, c = (int(torch.randint(1, 5000, (1,), generator=rng)) for _ in range(3))
        pin, pout = (float(torch.rand(1, generator=rng)) for _ in range(2))
        expected = c * (p * pin + o * pout) / 1000
        assert submission.call("prompting.prompt_cost", p, o, c, pin, pout) == pytest.approx(expected, rel=1e-9)


BREAK_EVEN = {
    "a saving that divides the cost": (50.0, 2000, 0.5),
    "a float boundary where ceil of a division is one too many": (1.1, 1, 0.0005),
    "the README's example": (5.0, 956, 0.0005),
}


@pytest.mark.task("1.5")
@pytest.mark.points(2)
def test_hidden_break_even_is_the_first_paying_call(submission, rng):
    cases = list(BREAK_EVEN.values())
    for _ in range(6):
        cases.append((float(torch.rand(1, generator=rng)) * 500, int(torch.randint(50, 3000, (1,), generator=rng)),
                      float(torch.rand(1, generator=rng)) * 0.01 + 1e-4))
    got = [submission.call("prompting.break_even_calls", cost, saved, price) for cost, saved, price in cases]
    accepted = [oracle.break_even_answers(*case) for case in cases]
    with explain(got, [min(a) for a in accepted], CATALOGUE, what="the first call at which the saving pays the cost back",
                 variants={"break_even_ceil_rounding": lambda: [math.ceil(c / (s / 1000 * p)) for c, s, p in cases],
                           "break_even_plus_one": lambda: [int(c / (s / 1000 * p)) + 1 for c, s, p in cases]}):
        assert all(type(n) is int and n in ok for n, ok in zip(got, accepted)), \
            "the smallest n (an int) with n * saved / 1000 * price >= cost"
    assert submission.call("prompting.break_even_calls", 0.0, 100, 0.5) == 0
    assert submission.call("prompting.break_even_calls", 0.0, 0, 0.5) == 0, "nothing to pay back: 0, even with no saving"
    for saved, price in ((0, 0.5), (100, 0.0)):
        with pytest.raises(ValueError):
            submission.call("prompting.break_even_calls", 10.0, saved, price)

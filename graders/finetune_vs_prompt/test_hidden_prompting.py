"""Hidden tests of part A (prompting.py): budgets measured with the real MiniLM tokenizer."""

import json
import re

import pytest
import torch

import fvp_oracle as oracle
import probes

FIELDS = ("flight_number", "departure_time", "gate")
INSTRUCTION = ("Extract the flight number, the departure time (24-hour HH:MM) and the gate from the email. "
               "Answer with JSON only.")


def _answer(row):
    return json.dumps({k: row["answer"][k] for k in FIELDS})


def _shuffled_emails(rng):
    rows = oracle.load_jsonl("flights_hidden.jsonl")
    order = torch.randperm(len(rows), generator=rng).tolist()
    return [rows[i] for i in order]


# ------------------------------------------------------------------ 1.1

@pytest.mark.task("1.1")
@pytest.mark.points(1)
def test_hidden_count_tokens_without_special_tokens(submission, rng):
    texts = [r["email"] for r in _shuffled_emails(rng)[:6]] + ["", "kcat/Km of PfkB"]
    assert submission.run(probes.count_tokens, texts) == [oracle.n_tokens(t) for t in texts]


# ------------------------------------------------------------------ 1.2

@pytest.mark.task("1.2")
@pytest.mark.points(4)
@pytest.mark.parametrize("n", [0, 1, 3, 7])
def test_hidden_few_shot_takes_the_most_examples_that_fit(submission, rng, n):
    rows = _shuffled_emails(rng)
    examples = [(r["email"], _answer(r)) for r in rows[:7]]
    query = rows[7]["email"]
    exact = oracle.n_tokens(oracle.render_prompt(INSTRUCTION, examples[:n], query))
    prompt, got = submission.run(probes.few_shot, INSTRUCTION, examples, query, exact)
    assert got == n, f"a budget of exactly {exact} tokens fits {n} examples, not {got}"
    assert prompt == oracle.render_prompt(INSTRUCTION, examples[:n], query)
    if n:
        prompt, got = submission.run(probes.few_shot, INSTRUCTION, examples, query, exact - 1)
        assert got == n - 1, f"a budget of {exact - 1} tokens fits {n - 1} examples, not {got}"
        assert oracle.n_tokens(prompt) <= exact - 1


@pytest.mark.task("1.2")
@pytest.mark.points(3)
def test_hidden_few_shot_keeps_order_and_stops_at_first_misfit(submission, rng):
    rows = _shuffled_emails(rng)
    long_example = (rows[0]["email"] + "\n" + rows[1]["email"], _answer(rows[0]))
    short = [("Flight AU1 at 10:00, gate A1.", '{"flight_number": "AU1", "departure_time": "10:00", "gate": "A1"}'),
             ("CJ-22 leaves 9:05 PM from gate C3.", '{"flight_number": "CJ22", "departure_time": "21:05", "gate": "C3"}')]
    query = rows[2]["email"]
    budget = oracle.n_tokens(oracle.render_prompt(INSTRUCTION, short, query))  # the two short ones would fit
    prompt, n = submission.run(probes.few_shot, INSTRUCTION, [long_example, *short], query, budget)
    assert n == 0, "examples are taken in order: the first (long) one does not fit, so none is taken"
    assert prompt == oracle.render_prompt(INSTRUCTION, [], query)
    big = oracle.n_tokens(oracle.render_prompt(INSTRUCTION, [short[1], short[0], long_example], query))
    prompt, n = submission.run(probes.few_shot, INSTRUCTION, [short[1], short[0], long_example], query, big)
    assert n == 3 and prompt == oracle.render_prompt(INSTRUCTION, [short[1], short[0], long_example], query)


@pytest.mark.task("1.2")
@pytest.mark.points(2)
def test_hidden_few_shot_refuses_to_truncate(submission, rng):
    rows = _shuffled_emails(rng)
    query = rows[0]["email"]
    need = oracle.n_tokens(oracle.render_prompt(INSTRUCTION, [], query))
    budget = need - 1 - int(torch.randint(0, 5, (1,), generator=rng))
    with pytest.raises(ValueError) as info:
        submission.run(probes.few_shot, INSTRUCTION, [(rows[1]["email"], _answer(rows[1]))], query, budget)
    numbers = set(re.findall(r"\d+", str(info.value)))
    assert {str(need), str(budget)} <= numbers, f"the message should name {need} and {budget}: {info.value}"


@pytest.mark.task("1.2")
@pytest.mark.points(1)
def test_hidden_few_shot_uses_the_template(submission, rng):
    rows = _shuffled_emails(rng)
    template = "### Email\n{input}\n### JSON\n{output}"
    examples = [(r["email"], _answer(r)) for r in rows[:3]]
    query = rows[3]["email"]
    budget = oracle.n_tokens(oracle.render_prompt(INSTRUCTION, examples[:2], query, template))
    prompt, n = submission.run(probes.few_shot, INSTRUCTION, examples, query, budget, template)
    assert n == 2
    assert prompt == oracle.render_prompt(INSTRUCTION, examples[:2], query, template)


# ------------------------------------------------------------------ 1.3

def _gold(rng):
    row = _shuffled_emails(rng)[0]
    return {k: row["answer"][k] for k in FIELDS}


WRAPPINGS = [
    "{json}",
    "```json\n{json}\n```",
    "Sure! Here is the extracted data:\n\n```\n{json}\n```\nLet me know if you need anything else {{or not}}.",
    "The answer is {json}. (Times are local.)",
    "Output: {json}\n}}",
]


@pytest.mark.task("1.3")
@pytest.mark.points(3)
@pytest.mark.parametrize("wrapping", WRAPPINGS)
def test_hidden_parse_json_tolerates_surroundings(submission, rng, wrapping):
    gold = _gold(rng)
    text = wrapping.format(json=json.dumps(gold, indent=2 if "```" in wrapping else None))
    assert submission.call("prompting.parse_json_answer", text, list(FIELDS)) == gold


@pytest.mark.task("1.3")
@pytest.mark.points(2)
def test_hidden_parse_json_is_strict_about_keys(submission, rng):
    gold = _gold(rng)
    missing = {k: gold[k] for k in FIELDS[:2]}
    extra = {**gold, "seat": "12A"}
    for text in [json.dumps(missing), "Here: " + json.dumps(extra), "no JSON here", "{flight_number: AU1}",
                 '{"flight_number": "AU1", "departure_time": "10:00", "gate": "A1"']:
        assert submission.call("prompting.parse_json_answer", text, list(FIELDS)) is None, text
    other_keys = ["name", "seat"]
    assert submission.call("prompting.parse_json_answer", '{"name": "Ada", "seat": "3C"}', other_keys) == \
        {"name": "Ada", "seat": "3C"}


# ------------------------------------------------------------------ 1.4

@pytest.mark.task("1.4")
@pytest.mark.points(3)
def test_hidden_exact_match_overall_and_per_field(submission, rng):
    golds = [{k: r["answer"][k] for k in FIELDS} for r in _shuffled_emails(rng)[:12]]
    preds = []
    for i, gold in enumerate(golds):
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
        return p is not None and k in p and str(p[k]).strip() == g[k]
    expected_overall = sum(all(right(p, g, k) for k in FIELDS) for p, g in zip(preds, golds)) / len(golds)
    assert submission.call("prompting.exact_match", preds, golds) == pytest.approx(expected_overall)
    for field in FIELDS:
        expected = sum(right(p, g, field) for p, g in zip(preds, golds)) / len(golds)
        assert submission.call("prompting.exact_match", preds, golds, field) == pytest.approx(expected), field
    with pytest.raises(ValueError):
        submission.call("prompting.exact_match", preds[:-1], golds)


# ------------------------------------------------------------------ 1.5

@pytest.mark.task("1.5")
@pytest.mark.points(1)
def test_hidden_prompt_cost_prices_input_and_output(submission, rng):
    for _ in range(5):
        p, o, c = (int(torch.randint(1, 5000, (1,), generator=rng)) for _ in range(3))
        pin, pout = (float(torch.rand(1, generator=rng)) for _ in range(2))
        expected = c * (p * pin + o * pout) / 1000
        assert submission.call("prompting.prompt_cost", p, o, c, pin, pout) == pytest.approx(expected, rel=1e-9)


@pytest.mark.task("1.5")
@pytest.mark.points(2)
def test_hidden_break_even_is_the_first_paying_call(submission, rng):
    for _ in range(6):
        cost = float(torch.rand(1, generator=rng)) * 500
        saved = int(torch.randint(50, 3000, (1,), generator=rng))
        price = float(torch.rand(1, generator=rng)) * 0.01 + 1e-4
        n = submission.call("prompting.break_even_calls", cost, saved, price)
        saving = saved * price / 1000
        assert isinstance(n, int)
        assert n * saving >= cost and (n - 1) * saving < cost, (cost, saved, price, n)
    assert submission.call("prompting.break_even_calls", 50.0, 2000, 0.5) == 50  # exactly 1.0 saved per call
    assert submission.call("prompting.break_even_calls", 0.0, 100, 0.5) == 0
    with pytest.raises(ValueError):
        submission.call("prompting.break_even_calls", 10.0, 0, 0.5)

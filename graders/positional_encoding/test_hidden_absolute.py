"""Hidden tests of part 1: sinusoidal table, sinusoidal module, learned embedding, and the order demonstration.

Oracles: the formula of the sinusoid evaluated in float64 here; for the order demonstration, the
reference solution's MultiHeadAttention (solutions/attention, run here in the trusted process).
"""

import importlib.util
import math
from pathlib import Path

import pytest
import torch

import probes

REFERENCE_ATTENTION = Path(__file__).resolve().parents[2] / "solutions" / "attention" / "attention.py"


def randn(rng, *shape, dtype=torch.float32):
    return torch.randn(*shape, generator=rng, dtype=dtype)


def sinusoid_formula(seq_len, d_model, base=10000.0):
    """PE[p, 2i] = sin(p / base^(2i/d)), PE[p, 2i+1] = cos(...), evaluated entry by entry in float64."""
    p = torch.arange(seq_len, dtype=torch.float64)[:, None]
    column = torch.arange(d_model, dtype=torch.float64)[None, :]
    pair = torch.div(column, 2, rounding_mode="floor")
    angle = p / torch.tensor(base, dtype=torch.float64) ** (2 * pair / d_model)
    return torch.where(column % 2 == 0, torch.sin(angle), torch.cos(angle))


# ------------------------------------------------------------------ 1.1 sinusoidal_encoding

@pytest.mark.task("1.1")
@pytest.mark.points(11)
@pytest.mark.parametrize("seq_len,d_model,base", [
    (1, 2, 10000.0), (50, 16, 10000.0), (4096, 64, 10000.0), (300, 10, 100.0), (128, 128, 500000.0)])
def test_sinusoid_equals_formula(submission, seq_len, d_model, base):
    table = submission.call("positional_encoding.sinusoidal_encoding", seq_len, d_model, base=base)
    assert table.dtype == torch.float32, f"the table must be float32, got {table.dtype}"
    assert tuple(table.shape) == (seq_len, d_model), f"expected shape {(seq_len, d_model)}, got {tuple(table.shape)}"
    expected = sinusoid_formula(seq_len, d_model, base)
    error = (table.double() - expected).abs()
    worst = divmod(int(error.argmax()), d_model)
    assert float(error.max()) <= 1e-6, (
        f"PE{list(worst)} is {float(table[worst]):.7f}, the formula gives {float(expected[worst]):.7f} "
        f"(seq_len={seq_len}, d_model={d_model}, base={base}; tolerance 1e-6)")


@pytest.mark.task("1.1")
@pytest.mark.points(2)
@pytest.mark.parametrize("d_model", [7, 1])
def test_sinusoid_refuses_odd_width(submission, d_model):
    with pytest.raises(ValueError, match=rf"\b{d_model}\b"):
        submission.call("positional_encoding.sinusoidal_encoding", 10, d_model)


# ------------------------------------------------------------------ 1.2 SinusoidalPositionalEncoding

@pytest.mark.task("1.2")
@pytest.mark.points(4)
@pytest.mark.parametrize("d_model,max_len,base", [(16, 2048, 10000.0), (8, 40, 50.0)])
def test_sinusoidal_module_keeps_its_table_in_a_buffer(submission, d_model, max_len, base):
    info = submission.run(probes.sinusoidal_module, d_model, max_len, base)
    assert info["is_module"], "SinusoidalPositionalEncoding must be an nn.Module"
    assert info["parameters"] == {}, f"the table is fixed: the module must have no parameters, found {info['parameters']}"
    tables = [name for name, (shape, _) in info["buffers"].items() if shape == (max_len, d_model)]
    assert len(tables) == 1, f"expected one buffer of shape {(max_len, d_model)}, found buffers {info['buffers']}"
    assert tables[0] in info["state_dict"], "the table buffer should be saved in the state_dict (persistent)"
    table = submission.run(probes.sinusoidal_module, d_model, max_len, base, torch.zeros(1, max_len, d_model))["out"]
    torch.testing.assert_close(table[0].double(), sinusoid_formula(max_len, d_model, base), rtol=0, atol=1e-6)


@pytest.mark.task("1.2")
@pytest.mark.points(5)
@pytest.mark.parametrize("seq", [1, 7, 64])
def test_sinusoidal_module_adds_the_table(submission, rng, seq):
    d_model, max_len = 12, 64
    x = randn(rng, 3, seq, d_model)
    out = submission.run(probes.sinusoidal_forward, d_model, max_len, x)
    assert tuple(out.shape) == (3, seq, d_model) and out.dtype == torch.float32
    expected = x.double() + sinusoid_formula(seq, d_model)
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=1e-5)


@pytest.mark.task("1.2")
@pytest.mark.points(2)
def test_sinusoidal_module_refuses_long_sequences(submission):
    with pytest.raises(ValueError, match=r"(?s)(?=.*\b37\b)(?=.*\b32\b)"):
        submission.run(probes.sinusoidal_forward, 8, 32, torch.zeros(2, 37, 8))


# ------------------------------------------------------------------ 1.3 LearnedPositionalEmbedding

@pytest.mark.task("1.3")
@pytest.mark.points(3)
def test_learned_embedding_is_one_trainable_table(submission):
    info = submission.run(probes.learned_module, 50, 12)
    assert info["is_module"], "LearnedPositionalEmbedding must be an nn.Module"
    assert info["embedding_type"] == "Embedding", f"the attribute `embedding` must be an nn.Embedding, found {info['embedding_type']}"
    assert info["embedding_shape"] == (50, 12), f"embedding should be nn.Embedding(max_len=50, d_model=12), found {info['embedding_shape']}"
    assert info["parameters"] == {"embedding.weight": ((50, 12), True)}, \
        f"the only parameter should be the trainable embedding.weight, found {info['parameters']}"


@pytest.mark.task("1.3")
@pytest.mark.points(6)
@pytest.mark.parametrize("seq", [1, 9, 20])
def test_learned_embedding_adds_rows_and_trains_them(submission, rng, seq):
    max_len, d_model, batch = 20, 6, 4
    weight = randn(rng, max_len, d_model)
    x = randn(rng, batch, seq, d_model)
    grad_out = randn(rng, batch, seq, d_model)
    info = submission.run(probes.learned_module, max_len, d_model, weight, x, grad_out)
    torch.testing.assert_close(info["out"], x + weight[:seq], msg=lambda m: "position p must add row p of embedding.weight\n" + m)
    expected_grad = torch.zeros(max_len, d_model)
    expected_grad[:seq] = grad_out.sum(0)
    assert info["grad"] is not None, "no gradient reached embedding.weight"
    torch.testing.assert_close(info["grad"], expected_grad, msg=lambda m: "gradient of embedding.weight\n" + m)


@pytest.mark.task("1.3")
@pytest.mark.points(2)
def test_learned_embedding_refuses_long_sequences(submission):
    with pytest.raises(ValueError, match=r"(?s)(?=.*\b21\b)(?=.*\b16\b)"):
        submission.run(probes.learned_forward, 16, 4, torch.zeros(1, 21, 4))


# ------------------------------------------------------------------ order: attention alone cannot see it

def reference_attention(rng, d_model, heads):
    """The solution's MultiHeadAttention (trusted code), with rng-drawn weights."""
    spec = importlib.util.spec_from_file_location("_reference_attention", REFERENCE_ATTENTION)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    mha = module.MultiHeadAttention(d_model, heads)
    with torch.no_grad():
        for p in mha.parameters():
            p.copy_(randn(rng, *p.shape) / math.sqrt(d_model))
    return lambda x: mha(x)[0].detach()


def two_sentences(rng, d_model):
    """Embeddings of "the cat chased the dog" and "the dog chased the cat" (same words, other order)."""
    vocab = {w: randn(rng, d_model) for w in ("the", "cat", "chased", "dog")}
    first = torch.stack([vocab[w] for w in "the cat chased the dog".split()])[None]
    second = torch.stack([vocab[w] for w in "the dog chased the cat".split()])[None]
    return first, second


def assert_blind_to_order(attend, first, second, rng):
    """Without positions, attention is permutation-equivariant: it cannot tell the sentences apart."""
    out1, out2 = attend(first), attend(second)
    torch.testing.assert_close(out2[0, 2], out1[0, 2], msg="reference check: without positions, "
                               "'chased' must come out the same in both sentences")
    perm = torch.randperm(first.shape[1], generator=rng)
    torch.testing.assert_close(attend(first[:, perm]), out1[:, perm])


CHASED = 2


@pytest.mark.task("1.2")
@pytest.mark.points(6)
def test_order_sinusoids_let_attention_tell_who_chased_whom(submission, rng):
    d_model = 16
    attend = reference_attention(rng, d_model, 4)
    first, second = two_sentences(rng, d_model)
    assert_blind_to_order(attend, first, second, rng)
    with_pos1 = submission.run(probes.sinusoidal_forward, d_model, 64, first)
    with_pos2 = submission.run(probes.sinusoidal_forward, d_model, 64, second)
    gap = float((attend(with_pos1)[0, CHASED] - attend(with_pos2)[0, CHASED]).norm())
    assert gap > 1e-2, (f"with your sinusoidal encoding added, 'chased' still comes out (nearly) the same in "
                        f"'the cat chased the dog' and 'the dog chased the cat' (difference {gap:.2e})")
    perm = torch.tensor([4, 1, 2, 3, 0])
    shuffled = submission.run(probes.sinusoidal_forward, d_model, 64, first[:, perm])
    gap = float((attend(shuffled) - attend(with_pos1)[:, perm]).abs().max())
    assert gap > 1e-2, "with positions added, permuting the tokens must no longer just permute the outputs"


@pytest.mark.task("1.3")
@pytest.mark.points(3)
def test_order_learned_positions_let_attention_tell_who_chased_whom(submission, rng):
    d_model = 16
    attend = reference_attention(rng, d_model, 4)
    first, second = two_sentences(rng, d_model)
    assert_blind_to_order(attend, first, second, rng)
    weight = randn(rng, 10, d_model)
    zero = torch.zeros(1, 5, d_model)
    with_pos1 = submission.run(probes.learned_module, 10, d_model, weight, first, zero)["out"]
    with_pos2 = submission.run(probes.learned_module, 10, d_model, weight, second, zero)["out"]
    gap = float((attend(with_pos1)[0, CHASED] - attend(with_pos2)[0, CHASED]).norm())
    assert gap > 1e-2, (f"with your learned positions added, 'chased' still comes out (nearly) the same in "
                        f"both sentences (difference {gap:.2e})")

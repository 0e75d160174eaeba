"""Hidden tests of part 1: sinusoidal table, sinusoidal module, learned embedding, and the order demonstration.

Oracles: the formula of the sinusoid evaluated in float64 here (pe_oracle.py); for the order
demonstration, the reference solution's MultiHeadAttention (solutions/attention, run here in the
trusted process). Module structure is judged from raw facts the probes return (names, shapes,
dtypes, devices after ``.to(...)``).
"""

import contextlib
import importlib.util
import math
import re
from pathlib import Path

import pytest
import torch

import pe_oracle as oracle
import probes
from course.grading.diagnose import explain, record
from course.grading.failures import SubmissionError
from misconceptions import CATALOGUE
from pe_oracle import randn

REFERENCE_ATTENTION = Path(__file__).resolve().parents[2] / "solutions" / "attention" / "attention.py"


@contextlib.contextmanager
def expect_value_error(pattern, what, *, wrong_type=None, no_error=None):
    """Like pytest.raises(ValueError, match=pattern) on the student's own message, recording the
    exact fact behind a failure (another exception type, or none at all) as a diagnosis."""
    try:
        yield
    except SubmissionError as error:        # the student's exception, as data: built-in type and message
        if not isinstance(error, ValueError):
            if wrong_type and error.base != "NotImplementedError":     # a stub is not a wrong exception type
                record([wrong_type], CATALOGUE, what)
            raise AssertionError(f"expected a ValueError, got {error.remote_type}: {error.remote_message}") from None
        if not re.search(pattern, error.remote_message):
            raise AssertionError(f"the ValueError's message does not match {pattern}: {error.remote_message!r}") from None
        return
    if no_error:
        record([no_error], CATALOGUE, what)
    raise AssertionError("no ValueError was raised")


def run_at_max_len(submission, probe, at_max_len, *args):
    """submission.run, recording "max_len_off_by_one" when a sequence of exactly max_len is refused."""
    try:
        return submission.run(probe, *args)
    except SubmissionError as error:
        if at_max_len and isinstance(error, ValueError):
            record(["max_len_off_by_one"], CATALOGUE, "a sequence exactly max_len long is accepted")
        raise


def buffer_facts(info, shape):
    """Exact facts about where the table lives, from the module's returned structure."""
    if any(s == shape for s, _ in info["parameters"].values()):
        return ["table_is_a_parameter"]
    names = [name for name, (s, _) in info["buffers"].items() if s == shape]
    if not names:
        return ["table_not_a_buffer"]
    if names[0] not in info["state_dict"]:
        return ["buffer_not_persistent"]
    if info["buffers"][names[0]][1] != "torch.float32":
        return ["wrong_dtype"]
    return []


# ------------------------------------------------------------------ 1.1 sinusoidal_encoding

SINUSOID_CASES = [
    (1, 2, 10000.0, "one position, width 2"),
    (50, 16, 10000.0, "50 positions, width 16"),
    (4096, 64, 10000.0, "4096 positions, width 64 (far positions need float64 angles)"),
    (300, 10, 100.0, "base 100, width 10"),
    (128, 128, 500000.0, "base 500000, width 128"),
]


@pytest.mark.task("1.1")
@pytest.mark.points(10)
@pytest.mark.parametrize("seq_len,d_model,base", [c[:3] for c in SINUSOID_CASES], ids=[c[3] for c in SINUSOID_CASES])
def test_sinusoid_equals_formula(submission, seq_len, d_model, base):
    table = submission.call("positional_encoding.sinusoidal_encoding", seq_len, d_model, base=base)
    if table.dtype != torch.float32:
        record(["wrong_dtype"], CATALOGUE, "sinusoidal table: float32, the float64 formula to 1e-6")
    assert table.dtype == torch.float32, f"the table must be float32, got {table.dtype}"
    assert tuple(table.shape) == (seq_len, d_model), f"expected shape {(seq_len, d_model)}, got {tuple(table.shape)}"
    expected = oracle.sinusoid(seq_len, d_model, base)
    with explain(table, expected.float(), CATALOGUE,
                 variants=oracle.Unambiguous(oracle.sinusoid_variants(seq_len, d_model, base), expected.float()),
                 what="sinusoidal table: sin in even columns, cos in odd ones, float64 formula to 1e-6"):
        error = (table.double() - expected).abs()
        worst = divmod(int(error.argmax()), d_model)
        assert float(error.max()) <= 1e-6, (
            f"PE{list(worst)} is {float(table[worst]):.7f}, the formula gives {float(expected[worst]):.7f} "
            f"(seq_len={seq_len}, d_model={d_model}, base={base}; tolerance 1e-6)")


@pytest.mark.task("1.1")
@pytest.mark.points(2)
@pytest.mark.parametrize("d_model", [7, 1], ids=["width 7", "width 1"])
def test_sinusoid_refuses_odd_width(submission, d_model):
    with expect_value_error(rf"\b{d_model}\b", "an odd width is refused with a ValueError naming it",
                            no_error="odd_width_accepted"):
        submission.call("positional_encoding.sinusoidal_encoding", 10, d_model)


# ------------------------------------------------------------------ 1.2 SinusoidalPositionalEncoding

@pytest.mark.task("1.2")
@pytest.mark.points(4)
@pytest.mark.parametrize("d_model,max_len,base", [(16, 2048, 10000.0), (8, 40, 50.0)],
                         ids=["width 16, 2048 positions", "width 8, 40 positions, base 50"])
def test_sinusoidal_module_keeps_its_table_in_a_buffer(submission, d_model, max_len, base):
    info = submission.run(probes.sinusoidal_module, d_model, max_len, base, torch.zeros(1, max_len, d_model))
    record(buffer_facts(info, (max_len, d_model)), CATALOGUE,
           "the table: one float32 buffer of shape (max_len, d_model), moved by .to(), saved in the state_dict")
    assert info["parameters"] == {}, f"the table is fixed: the module must have no parameters, found {info['parameters']}"
    tables = [name for name, (shape, _) in info["buffers"].items() if shape == (max_len, d_model)]
    assert len(tables) == 1, f"expected one buffer of shape {(max_len, d_model)}, found buffers {info['buffers']}"
    name = tables[0]
    assert info["buffers"][name][1] == "torch.float32", f"the table buffer should be float32, found {info['buffers'][name][1]}"
    assert name in info["state_dict"], "the table buffer should be saved in the state_dict (persistent)"
    assert info["dtypes_after_to_float64"].get(name) == "torch.float64", \
        "module.to(torch.float64) should convert the table (a registered buffer of an nn.Module)"
    assert info["devices_after_to_meta"].get(name) == "meta", "module.to('meta') should move the table (a registered buffer)"
    expected = oracle.sinusoid(max_len, d_model, base)
    table = info["out"][0]
    with explain(table, expected.float(), CATALOGUE,
                 variants=oracle.Unambiguous(oracle.sinusoid_variants(max_len, d_model, base), expected.float()),
                 what="the module's table, read through forward on zeros: the formula with the module's base"):
        oracle.close(table.double(), expected, "the module's table (forward on zeros) vs the float64 formula", rtol=0, atol=1e-6)


@pytest.mark.task("1.2")
@pytest.mark.points(5)
@pytest.mark.parametrize("seq", [1, 7, 64], ids=["one token", "7 tokens", "64 tokens (= max_len)"])
def test_sinusoidal_module_adds_the_table(submission, rng, seq):
    d_model, max_len = 12, 64
    x = randn(rng, 3, seq, d_model)
    out = run_at_max_len(submission, probes.sinusoidal_forward, seq == max_len, d_model, max_len, x)["out"]
    if out.dtype != torch.float32:
        record(["wrong_dtype"], CATALOGUE, "forward(x) = x + PE[:seq], float32 for float32 input")
    assert tuple(out.shape) == (3, seq, d_model) and out.dtype == torch.float32, \
        f"expected float32 of shape {(3, seq, d_model)}, got {out.dtype} {tuple(out.shape)}"
    expected = x.double() + oracle.sinusoid(seq, d_model)
    variants = {name: (lambda f=f: x + f()) for name, f in oracle.sinusoid_variants(seq, d_model, 10000.0).items()}
    with explain(out, expected.float(), CATALOGUE, variants=oracle.Unambiguous(variants, expected.float()),
                 what="forward(x) = x + PE[:seq], the table broadcast over the batch"):
        oracle.close(out.double(), expected, "forward(x) vs x + the float64 table", rtol=0, atol=1e-5)


@pytest.mark.task("1.2")
@pytest.mark.points(1)
def test_sinusoidal_module_leaves_its_input_unchanged_and_follows_its_device(submission, rng):
    x = randn(rng, 2, 9, 8)
    found = submission.run(probes.sinusoidal_forward, 8, 16, x)
    if not torch.equal(found["x_after"], x):
        record(["input_modified"], CATALOGUE, "forward leaves its input x unchanged")
    assert torch.equal(found["x_after"], x), "forward must not change its input x in place (x + PE, not x += PE)"
    device, shape = submission.run(probes.sinusoidal_on_meta, 8, 16, 2, 9)
    assert (device, shape) == ("meta", (2, 9, 8)), \
        f"the module moved to meta and run on a meta input should give a meta (2, 9, 8) result, got {device} {shape}"


@pytest.mark.task("1.2")
@pytest.mark.points(2)
def test_sinusoidal_module_refuses_long_sequences(submission):
    with expect_value_error(r"(?s)(?=.*\b37\b)(?=.*\b32\b)", "a sequence longer than max_len is refused with a "
                            "ValueError naming both lengths", wrong_type="length_error_not_value_error"):
        submission.run(probes.sinusoidal_forward, 8, 32, torch.zeros(2, 37, 8))


# ------------------------------------------------------------------ 1.3 LearnedPositionalEmbedding

@pytest.mark.task("1.3")
@pytest.mark.points(3)
def test_learned_embedding_is_one_trainable_table(submission):
    info = submission.run(probes.learned_module, 50, 12)
    what = "the module's only parameter: the trainable embedding.weight of an nn.Embedding(max_len, d_model)"
    if info["embedding_type"] != "Embedding":
        record(["embedding_not_nn_embedding"], CATALOGUE, what)
    elif any(trainable is False for _, trainable in info["parameters"].values()):
        record(["embedding_not_trained"], CATALOGUE, what)
    assert info["embedding_type"] == "Embedding", f"the attribute `embedding` must be an nn.Embedding, found {info['embedding_type']}"
    assert info["embedding_shape"] == (50, 12), f"embedding should be nn.Embedding(max_len=50, d_model=12), found {info['embedding_shape']}"
    assert info["parameters"] == {"embedding.weight": ((50, 12), True)}, \
        f"the only parameter should be the trainable embedding.weight, found {info['parameters']}"
    assert info["state_dict"] == ["embedding.weight"], f"the state_dict should hold embedding.weight only, found {info['state_dict']}"
    assert info["dtypes_after_to_float64"] == {"embedding.weight": "torch.float64"}, \
        "module.to(torch.float64) should convert embedding.weight (an nn.Module's parameter)"


@pytest.mark.task("1.3")
@pytest.mark.points(5)
@pytest.mark.parametrize("seq", [1, 9, 20], ids=["one token", "9 tokens", "20 tokens (= max_len)"])
def test_learned_embedding_adds_rows_and_trains_them(submission, rng, seq):
    max_len, d_model, batch = 20, 6, 4
    weight = randn(rng, max_len, d_model)
    x = randn(rng, batch, seq, d_model)
    grad_out = randn(rng, batch, seq, d_model)
    info = run_at_max_len(submission, probes.learned_module, seq == max_len, max_len, d_model, weight, x, grad_out)
    variants = {"learned_positions_from_one": lambda: x + weight[torch.arange(1, seq + 1).clamp(max=max_len - 1)]}
    with explain(info["out"], x + weight[:seq], CATALOGUE, variants=oracle.Unambiguous(variants, x + weight[:seq]),
                 what="forward(x) = x + embedding.weight[p] for positions p = 0 .. seq - 1"):
        torch.testing.assert_close(info["out"], x + weight[:seq],
                                   msg=lambda m: "position p must add row p of embedding.weight\n" + m)
    expected_grad = torch.zeros(max_len, d_model)
    expected_grad[:seq] = grad_out.sum(0)
    if info["grad"] is None or not bool(info["grad"].any()):
        record(["embedding_not_trained"], CATALOGUE, "the gradient of the output reaches embedding.weight, row p for position p")
    assert info["grad"] is not None, "no gradient reached embedding.weight"
    torch.testing.assert_close(info["grad"], expected_grad, msg=lambda m: "gradient of embedding.weight\n" + m)


@pytest.mark.task("1.3")
@pytest.mark.points(1)
def test_learned_embedding_leaves_its_input_unchanged(submission, rng):
    weight, x = randn(rng, 10, 4), randn(rng, 2, 6, 4)
    info = submission.run(probes.learned_module, 10, 4, weight, x, torch.ones(2, 6, 4))
    if not torch.equal(info["x_after"], x):
        record(["input_modified"], CATALOGUE, "forward leaves its input x unchanged")
    assert torch.equal(info["x_after"], x), "forward must not change its input x in place (x + E, not x += E)"
    oracle.close(info["out"], x + weight[:6], "forward(x) (after checking x came back unchanged)")


@pytest.mark.task("1.3")
@pytest.mark.points(1)
def test_learned_embedding_builds_positions_on_its_inputs_device(submission):
    """On the meta device, with every aten operation logged: no operation may mix a tensor made on the
    default device (torch.arange without device=) with the module's tensors. On a GPU that fails."""
    found = submission.run(probes.learned_on_meta, 10, 4, 2, 6)
    assert found["out"] == ("meta", (2, 6, 4)), f"the module on meta should give a meta (2, 6, 4) result, got {found['out']}"
    mixed = oracle.mixed_device_ops(found["ops"])
    if mixed:
        record(["positions_on_default_device"], CATALOGUE, "forward builds its positions on the input's device")
    assert not mixed, (f"{', '.join(sorted(set(mixed)))} received tensors on two devices: make the positions on "
                       "the input's device (torch.arange(seq, device=x.device))")


@pytest.mark.task("1.3")
@pytest.mark.points(2)
def test_learned_embedding_refuses_long_sequences(submission):
    with expect_value_error(r"(?s)(?=.*\b21\b)(?=.*\b16\b)", "a sequence longer than max_len is refused with a "
                            "ValueError naming both lengths", wrong_type="length_error_not_value_error"):
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
    oracle.close(attend(first[:, perm]), out1[:, perm], "reference check: without positions, permuting the tokens permutes the outputs")


CHASED = 2


@pytest.mark.task("1.2")
@pytest.mark.points(5)
def test_order_sinusoids_let_attention_tell_who_chased_whom(submission, rng):
    d_model = 16
    attend = reference_attention(rng, d_model, 4)
    first, second = two_sentences(rng, d_model)
    assert_blind_to_order(attend, first, second, rng)
    with_pos1 = submission.run(probes.sinusoidal_forward, d_model, 64, first)["out"]
    with_pos2 = submission.run(probes.sinusoidal_forward, d_model, 64, second)["out"]
    gap = float((attend(with_pos1)[0, CHASED] - attend(with_pos2)[0, CHASED]).norm())
    assert gap > 1e-2, (f"with your sinusoidal encoding added, 'chased' still comes out (nearly) the same in "
                        f"'the cat chased the dog' and 'the dog chased the cat' (difference {gap:.2e})")
    perm = torch.tensor([4, 1, 2, 3, 0])
    shuffled = submission.run(probes.sinusoidal_forward, d_model, 64, first[:, perm])["out"]
    gap = float((attend(shuffled) - attend(with_pos1)[:, perm]).abs().max())
    assert gap > 1e-2, "with positions added, permuting the tokens must no longer just permute the outputs"


@pytest.mark.task("1.3")
@pytest.mark.points(2)
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

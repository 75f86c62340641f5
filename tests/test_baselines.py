"""Count-based baselines against dense PyTorch references built from the definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_lib.baselines import BigramLM, UnigramLM, choose_k

TOL = 1e-10  # float64 on both sides; only the order of summation differs


def _stream(n: int, vocab: int, seed: int) -> np.ndarray:
    """A stream with some structure (a bias towards token+1), so bigram and unigram differ."""
    rng = np.random.default_rng(seed)
    out = [int(rng.integers(vocab))]
    for _ in range(n - 1):
        out.append((out[-1] + 1) % vocab if rng.random() < 0.5 else int(rng.integers(vocab)))
    return np.asarray(out)


def _dense_bigram_log_probs(train: np.ndarray, vocab: int, k: float) -> torch.Tensor:
    """(V, V) log p(b | a) from a dense count matrix: the textbook formula."""
    t = torch.from_numpy(train)
    counts = torch.bincount(t[:-1] * vocab + t[1:], minlength=vocab * vocab).view(vocab, vocab).double()
    return torch.log((counts + k) / (counts.sum(dim=1, keepdim=True) + k * vocab))


@pytest.mark.parametrize("vocab, k", [(5, 1.0), (13, 0.1), (40, 0.01), (40, 2.5)])
def test_unigram_nll_is_the_cross_entropy_of_its_log_probs(vocab, k):
    train, val = _stream(500, vocab, 0), _stream(200, vocab, 1)
    model = UnigramLM(vocab, k).fit(train)
    counts = np.bincount(train, minlength=vocab)
    expected_log_probs = np.log((counts + k) / (len(train) + k * vocab))
    np.testing.assert_allclose(model.log_probs(), expected_log_probs, atol=TOL)
    assert math.isclose(np.exp(model.log_probs()).sum(), 1.0, abs_tol=TOL)
    logits = torch.from_numpy(model.log_probs()).expand(len(val) - 1, vocab)  # the same row for every target
    reference = F.cross_entropy(logits, torch.from_numpy(val[1:])).item()
    assert math.isclose(model.nll(val), reference, abs_tol=TOL)


@pytest.mark.parametrize("vocab, k", [(5, 1.0), (13, 0.1), (40, 0.01), (64, 0.003)])
def test_bigram_matches_the_dense_count_matrix(vocab, k):
    train, val = _stream(800, vocab, 2), _stream(300, vocab, 3)
    model = BigramLM(vocab, k).fit(train)
    dense = _dense_bigram_log_probs(train, vocab, k)
    torch.testing.assert_close(
        torch.exp(dense).sum(dim=1), torch.ones(vocab, dtype=torch.float64), atol=TOL, rtol=0
    )
    for a in (0, vocab // 2, vocab - 1):
        np.testing.assert_allclose(model.next_token_log_probs(a), dense[a].numpy(), atol=TOL)
    v = torch.from_numpy(val)
    reference = F.nll_loss(dense[v[:-1]], v[1:]).item()  # rows log p(. | previous token), targets the next
    assert math.isclose(model.nll(val), reference, abs_tol=TOL)


def test_unseen_pairs_count_zero_including_codes_past_the_last_stored_one():
    model = BigramLM(10, 1.0).fit(np.array([0, 1, 2, 0, 1]))
    got = model.pair_count(np.array([0, 1, 9, 2, 0]), np.array([1, 2, 9, 0, 0]))
    np.testing.assert_array_equal(got, [2, 1, 0, 1, 0])


def test_bigram_beats_unigram_on_structured_text_and_smoothing_helps_on_unseen_pairs():
    train, val = _stream(3000, 30, 4), _stream(1000, 30, 5)
    assert BigramLM(30, 0.1).fit(train).nll(val) < UnigramLM(30, 0.1).fit(train).nll(val)
    # a pair never seen in training costs -log(k / (count(a) + kV)): finite, and larger for smaller k
    tiny = BigramLM(30, 1e-6).fit(np.array([0, 1] * 50))
    assert math.isfinite(tiny.nll(np.array([0, 2]))) and tiny.nll(np.array([0, 2])) > 10


def test_choose_k_picks_the_best_held_out_value_without_seeing_validation_tokens():
    train = _stream(4000, 50, 6)
    best, losses = choose_k(BigramLM, 50, train, grid=(1.0, 0.1, 0.01))
    assert best == min(losses, key=losses.get) and set(losses) == {1.0, 0.1, 0.01}
    cut = int(len(train) * 0.9)
    assert math.isclose(losses[0.1], BigramLM(50, 0.1).fit(train[:cut]).nll(train[cut:]), abs_tol=TOL)


def test_samples_follow_the_counts():
    chain = np.array([0, 1, 2, 3] * 200)  # 0 -> 1 -> 2 -> 3 -> 0 ...
    sample = BigramLM(4, 1e-9).fit(chain).sample(start=2, n=12, generator=np.random.default_rng(0))
    np.testing.assert_array_equal(sample, [3, 0, 1, 2] * 3)
    uni = UnigramLM(4, 1e-9).fit(np.array([3] * 50)).sample(20, np.random.default_rng(0))
    assert (uni == 3).all()


@pytest.mark.parametrize("cls", [UnigramLM, BigramLM])
@pytest.mark.parametrize(
    "tokens, message",
    [
        (np.array([0, 1, 7]), r"ids in \[0, 7\] but vocab_size=5"),
        (np.array([[0, 1], [2, 3]]), "1-D stream"),
        (np.array([0.0, 1.0]), "integer token ids"),
        (np.array([-1, 2]), "vocab_size=5"),
    ],
)
def test_bad_tokens_say_what_is_wrong(cls, tokens, message):
    with pytest.raises(ValueError, match=message):
        cls(5).fit(tokens)


@pytest.mark.parametrize("cls", [UnigramLM, BigramLM])
def test_bad_settings_and_unfitted_models_raise_with_the_fix(cls):
    with pytest.raises(ValueError, match="needs k > 0"):
        cls(5, k=0.0)
    with pytest.raises(ValueError, match="positive integer"):
        cls(0)
    with pytest.raises(RuntimeError, match=r"call \.fit\(train_tokens\) first"):
        cls(5).nll(np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="at least 2"):
        cls(5).fit(np.array([0, 1, 2])).nll(np.array([1]))


def test_choose_k_rejects_bad_arguments():
    with pytest.raises(ValueError, match="held_out_fraction"):
        choose_k(BigramLM, 5, np.arange(5).repeat(10), held_out_fraction=1.0)
    with pytest.raises(ValueError, match="grid is empty"):
        choose_k(BigramLM, 5, np.arange(5).repeat(10), grid=())

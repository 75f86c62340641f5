"""course_lib.metrics against scikit-learn on random labels, including classes never predicted."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from sklearn import metrics as skm

from course_lib.metrics import (
    accuracy,
    classification_report,
    confusion_matrix,
    longest_common_subsequence,
    perplexity,
    precision_recall_f1,
    rouge_l,
    tokenizer_compression,
)

TOL = 1e-12  # both sides divide the same integer counts in float64
SEEDS = range(6)


def _labels(seed: int, n: int = 60, k: int = 5, missing_in_pred: bool = False):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, k, n)
    y_pred = np.where(rng.random(n) < 0.5, y_true, rng.integers(0, k, n))
    if missing_in_pred:  # a class the model never predicts -> precision 0/0 for it
        y_pred = np.where(y_pred == 1, 2, y_pred)
    return y_true, y_pred


CASES = [(s, m) for s in SEEDS for m in (False, True)]


@pytest.mark.parametrize("seed, missing", CASES)
def test_accuracy_and_confusion_matrix(seed, missing):
    t, p = _labels(seed, missing_in_pred=missing)
    assert accuracy(t, p) == pytest.approx(skm.accuracy_score(t, p), abs=TOL)
    np.testing.assert_array_equal(confusion_matrix(t, p), skm.confusion_matrix(t, p))
    np.testing.assert_array_equal(
        confusion_matrix(t, p, labels=[3, 0]), skm.confusion_matrix(t, p, labels=[3, 0])
    )


@pytest.mark.parametrize("seed, missing", CASES)
@pytest.mark.parametrize("average", [None, "macro", "weighted", "micro"])
def test_precision_recall_f1_match_sklearn_with_zero_division_0(seed, missing, average):
    t, p = _labels(seed, missing_in_pred=missing)
    ours = precision_recall_f1(t, p, average=average)
    ref = skm.precision_recall_fscore_support(t, p, average=average, zero_division=0)
    for key, value in zip(("precision", "recall", "f1"), ref[:3]):
        np.testing.assert_allclose(ours[key], value, atol=TOL, rtol=0, err_msg=key)
    if average is None:
        np.testing.assert_array_equal(ours["support"], ref[3])


def test_a_class_only_in_the_labels_list_gets_zeros_not_nans():
    t, p = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])
    ours = precision_recall_f1(t, p, labels=[0, 1, 7])
    ref = skm.precision_recall_fscore_support(t, p, labels=[0, 1, 7], zero_division=0)
    for key, value in zip(("precision", "recall", "f1"), ref[:3]):
        np.testing.assert_allclose(ours[key], value, atol=TOL, rtol=0)
    assert ours["precision"][2] == ours["recall"][2] == ours["f1"][2] == 0.0


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("labels", [None, [0, 2, 4]])
def test_classification_report_dict_and_text_match_sklearn(seed, labels):
    t, p = _labels(seed, missing_in_pred=seed % 2 == 0)
    ours = classification_report(t, p, labels=labels, output_dict=True)
    ref = skm.classification_report(t, p, labels=labels, output_dict=True, zero_division=0)
    assert list(ours) == list(ref)  # same rows, same order ("micro avg" when labels leave classes out)
    for row, values in ref.items():
        if isinstance(values, dict):
            for k, v in values.items():
                assert ours[row][k] == pytest.approx(v, abs=TOL), (row, k)
        else:
            assert ours[row] == pytest.approx(values, abs=TOL)
    assert classification_report(t, p, labels=labels, digits=3) == skm.classification_report(
        t, p, labels=labels, digits=3, zero_division=0
    )


def test_target_names_and_torch_inputs():
    t, p = torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 0, 2])
    ours = classification_report(t, p, target_names=["a", "b", "c"], output_dict=True)
    ref = skm.classification_report(t.numpy(), p.numpy(), target_names=["a", "b", "c"], output_dict=True)
    assert ours["b"]["recall"] == ref["b"]["recall"] == 0.5


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: accuracy([0, 1], [0]), "must pair up"),
        (lambda: accuracy([[0, 1]], [[0, 1]]), "1-D sequence"),
        (lambda: accuracy([], []), "empty"),
        (lambda: precision_recall_f1([0], [0], average="samples"), "average must be one of"),
        (lambda: classification_report([0, 1], [0, 1], target_names=["a"]), "one name per class"),
        (lambda: perplexity(-0.5), "non-negative"),
    ],
)
def test_bad_input_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_perplexity_is_exp_of_the_mean_nll():
    # uniform guessing over V tokens has cross-entropy log V and perplexity exactly V
    for vocab in (2, 50, 50257):
        assert perplexity(math.log(vocab)) == pytest.approx(vocab, rel=1e-12)
    logits = torch.randn(4, 10, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([1, 2, 3, 4])
    nll = torch.nn.functional.cross_entropy(logits, targets)
    probs = logits.softmax(-1)[torch.arange(4), targets].double()
    assert perplexity(nll) == pytest.approx(float(probs.prod() ** (-1 / 4)), rel=1e-6)  # geometric mean
    assert perplexity(0.0) == 1.0 and perplexity(1e4) == math.inf


# ---------------------------------------------------------------------------------------------- ROUGE-L

ROUGE_PAIRS = [
    ("Shares rise at BT", "BT shares rise sharply"),
    ("the cat sat on the mat", "the cat sat on the mat"),
    ("", "a headline"),
    ("Blair: UK-EU deal!", "EU deal for Blair"),
    ("Oil prices hit record high as demand grows", "Record oil price as China's demand grows"),
    ("a a a b", "a b a b a"),
    ("Microsoft 2005 profits up 20%", "profits up at microsoft in 2005"),
]


@pytest.mark.parametrize("candidate,reference", ROUGE_PAIRS)
def test_rouge_l_matches_the_rouge_score_package(candidate, reference):
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    expected = rouge_scorer.RougeScorer(["rougeL"]).score(reference, candidate)["rougeL"].fmeasure
    assert rouge_l(candidate, reference) == pytest.approx(expected, abs=1e-12)


@given(st.lists(st.integers(0, 4), max_size=9), st.lists(st.integers(0, 4), max_size=9))
def test_lcs_equals_brute_force_over_subsequences(a, b):
    import itertools

    subs = {s for k in range(len(a) + 1) for s in itertools.combinations(a, k)}
    best = max((len(s) for s in subs if _is_subsequence(s, b)), default=0)
    assert longest_common_subsequence(a, b) == best


def _is_subsequence(s, b):
    it = iter(b)
    return all(x in it for x in s)


@pytest.mark.parametrize("k,n", [(179, 179), (173, 179), (0, 10), (5, 10), (1, 1), (970, 1000)])
@pytest.mark.parametrize("confidence", [0.95, 0.9])
def test_accuracy_interval_is_scipys_wilson_interval(k, n, confidence):
    from scipy.stats import binomtest

    from course_lib.metrics import accuracy_interval

    ref = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    lo, hi = accuracy_interval(k, n, confidence)
    assert lo == pytest.approx(ref.low, abs=1e-9) and hi == pytest.approx(ref.high, abs=1e-9)
    assert lo <= k / n <= hi


def test_accuracy_interval_rejects_impossible_counts():
    from course_lib.metrics import accuracy_interval

    with pytest.raises(ValueError, match="n_correct <= n"):
        accuracy_interval(11, 10)


# ----------------------------------------------------------------------------------------------- compression


def test_tokenizer_compression_counts_utf8_bytes_and_characters():
    texts = ["ab c", "中文"]  # 4 + 2 characters; 4 + 6 UTF-8 bytes
    stats = tokenizer_compression(lambda t: list(t.encode("utf-8")), texts)  # the 256-byte "tokenizer"
    assert (stats.chars, stats.bytes, stats.tokens) == (6, 10, 10)
    assert stats.bytes_per_token == 1.0 and stats.tokens_per_char == pytest.approx(10 / 6)
    per_char = tokenizer_compression(list, texts)  # one token per character
    assert per_char.tokens_per_char == 1.0 and per_char.bytes_per_token == pytest.approx(10 / 6)


def test_tokenizer_compression_is_a_ratio_of_totals_and_rejects_empty_input():
    # one long text of 2 bytes/token and one short of 1 byte/token: totals, not the mean of the two ratios
    stats = tokenizer_compression(lambda t: [0] * (len(t) // 2 if len(t) > 2 else len(t)), ["a" * 100, "b"])
    assert stats.bytes_per_token == pytest.approx(101 / 51)
    with pytest.raises(ValueError, match="no tokens"):
        tokenizer_compression(lambda t: [], ["abc"])

"""Chapter 2's self-checks pass right answers and catch the usual wrong ones, naming the case."""

from __future__ import annotations

import math

import pytest
import torch

from course_lib.exercises import ExerciseFailure
from course_lib.exercises.ch02 import (
    check_causal_mask,
    check_merge_heads,
    check_scaled_dot_product_attention,
    check_softmax,
    check_split_heads,
)

# ------------------------------------------------------------------------- answers a learner may write


def stable_softmax(x):
    e = (x - x.amax(dim=-1, keepdim=True)).exp()
    return e / e.sum(dim=-1, keepdim=True)


def naive_softmax(x):  # overflows: exp(1000) = inf, inf / inf = nan
    return x.exp() / x.exp().sum(dim=-1, keepdim=True)


def softmax_over_everything(x):  # forgets that each row is its own distribution
    e = (x - x.max()).exp()
    return e / e.sum()


def attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def attention_unscaled(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def attention_ignoring_the_mask(q, k, v, mask=None):
    return attention(q, k, v)


def attention_mask_zeroed_after_softmax(q, k, v, mask=None):  # weights no longer sum to 1
    w = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.size(-1)), dim=-1)
    return (w * mask if mask is not None else w) @ v


def split_heads(x, n_heads):
    B, T, C = x.shape
    return x.view(B, T, n_heads, C // n_heads).transpose(1, 2)


def split_heads_by_view_only(x, n_heads):  # right shape, tokens and heads mixed up
    B, T, C = x.shape
    return x.view(B, n_heads, T, C // n_heads)


def merge_heads(y):
    B, nh, T, hs = y.shape
    return y.transpose(1, 2).reshape(B, T, nh * hs)


def merge_heads_view_without_contiguous(y):
    B, nh, T, hs = y.shape
    return y.transpose(1, 2).view(B, T, nh * hs)


def merge_heads_without_transpose(y):
    B, nh, T, hs = y.shape
    return y.reshape(B, T, nh * hs)


def blank(*args, **kwargs):
    raise NotImplementedError()


# ------------------------------------------------------------------------------------------ tests

RIGHT = [
    (check_softmax, stable_softmax),
    (check_scaled_dot_product_attention, attention),
    (check_causal_mask, lambda T: torch.tril(torch.ones(T, T, dtype=torch.bool))),
    (check_split_heads, split_heads),
    (check_merge_heads, merge_heads),
]


@pytest.mark.parametrize("check, answer", RIGHT, ids=lambda x: getattr(x, "__name__", "answer"))
def test_right_answers_pass(check, answer, capsys):
    check(answer)
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize("check", [c for c, _ in RIGHT], ids=lambda c: c.__name__)
def test_blank_answers_say_not_written_yet_and_give_a_hint(check):
    with pytest.raises(ExerciseFailure, match="not written yet.*Hint:"):
        check(blank)


WRONG = [
    (check_softmax, naive_softmax, "large scores 1000"),
    (check_softmax, softmax_over_everything, "a (4, 6) batch"),
    (check_scaled_dot_product_attention, attention_unscaled, "one sequence"),
    (check_scaled_dot_product_attention, attention_ignoring_the_mask, "with a causal mask"),
    (check_scaled_dot_product_attention, attention_mask_zeroed_after_softmax, "with a causal mask"),
    (check_causal_mask, lambda T: torch.triu(torch.ones(T, T, dtype=torch.bool)), "T = 2"),
    (check_causal_mask, lambda T: torch.tril(torch.ones(T, T), diagonal=-1).bool(), "T = 1"),
    (check_split_heads, split_heads_by_view_only, "into 2 heads"),
    (check_merge_heads, merge_heads_without_transpose, "(1, 2, 2, 2)"),
    (check_merge_heads, merge_heads_view_without_contiguous, "raised RuntimeError: view size"),
]


WRONG_IDS = [f"{check.__name__}-{k}" for k, (check, *_) in enumerate(WRONG)]


@pytest.mark.parametrize("check, answer, case", WRONG, ids=WRONG_IDS)
def test_wrong_answers_fail_on_the_case_that_exposes_them(check, answer, case):
    with pytest.raises(ExerciseFailure) as err:
        check(answer)
    assert case in str(err.value), f"{case!r} not in the feedback: {err.value}"


# ------------------------------------------------------------------------- previous-token weight (2C)


def previous_token_weight(A, length):
    q = torch.arange(1, length - 1)
    return A[:, q, q - 1].mean(dim=-1)


def previous_weight_with_cls(A, length):  # off by one: [CLS] at 0 "looks back" to the last column
    q = torch.arange(0, length - 1)
    return A[:, q, q - 1].mean(dim=-1)


def previous_weight_with_sep(A, length):  # [SEP] counted as a word piece
    q = torch.arange(1, length)
    return A[:, q, q - 1].mean(dim=-1)


def next_token_weight(A, length):  # the wrong diagonal
    q = torch.arange(1, length - 1)
    return A[:, q, q + 1].mean(dim=-1)


def transposed_previous_weight(A, length):  # reads the map by columns: how much i-1 looks at i
    q = torch.arange(1, length - 1)
    return A[:, q - 1, q].mean(dim=-1)


def previous_weight_over_padding(A, length):  # averages over every row, padding included
    q = torch.arange(1, A.shape[-1])
    return A[:, q, q - 1].mean(dim=-1)


def summed_previous_weight(A, length):  # a total, not a mean
    q = torch.arange(1, length - 1)
    return A[:, q, q - 1].sum(dim=-1)


def test_previous_token_weight_passes_a_right_answer(capsys):
    from course_lib.exercises.ch02 import check_previous_token_weight

    check_previous_token_weight(previous_token_weight)
    assert "all 4 cases pass" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong",
    [
        previous_weight_with_cls,
        previous_weight_with_sep,
        next_token_weight,
        transposed_previous_weight,
        previous_weight_over_padding,
        summed_previous_weight,
    ],
)
def test_previous_token_weight_rejects_plausible_mistakes(wrong):
    from course_lib.exercises.ch02 import check_previous_token_weight

    with pytest.raises(ExerciseFailure, match=r"previous_token_weight, case \d of 4"):
        check_previous_token_weight(wrong)

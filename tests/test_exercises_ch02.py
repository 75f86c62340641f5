"""Chapter 2's self-checks pass right answers and catch the usual wrong ones, naming the case."""

from __future__ import annotations

import math

import pytest
import torch

from course_lib.exercises import ExerciseFailure
from course_lib.exercises.ch02 import (
    check_attention_entropy,
    check_causal_mask,
    check_head_attention_map,
    check_mean_attention_distance,
    check_merge_heads,
    check_previous_token_weight,
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


def softmax_by_torch(x):  # the answer, not written
    return torch.softmax(x, dim=-1)


def softmax_by_the_method(x):
    return x.softmax(-1)


def attention_by_pytorchs_kernel(q, k, v, mask=None):
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def attention_by_the_library(q, k, v, mask=None):
    from course_lib.attention import explicit_attention

    return explicit_attention(q, k, v, attn_mask=mask)[0]


def causal_mask_by_the_library(T):
    from course_lib.attention import causal_mask

    return causal_mask(T)


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
def test_blank_answers_say_not_written_yet_and_keep_the_hint_for_a_real_failure(check):
    with pytest.raises(ExerciseFailure, match="not written yet") as failure:
        check(blank)
    assert "hint" not in str(failure.value).lower()


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
    (check_softmax, softmax_by_torch, "uses the library (PyTorch's softmax)"),
    (check_softmax, softmax_by_the_method, "uses the library"),
    (check_scaled_dot_product_attention, attention_by_pytorchs_kernel, "uses the library"),
    (check_scaled_dot_product_attention, attention_by_the_library, "course_lib.attention"),
    (check_causal_mask, causal_mask_by_the_library, "uses the library"),
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
    check_previous_token_weight(previous_token_weight)
    assert "all 4 cases pass" in capsys.readouterr().out


PREVIOUS_TOKEN_WRONG = [
    (check_previous_token_weight, wrong, "previous_token_weight, case")
    for wrong in (
        previous_weight_with_cls,
        previous_weight_with_sep,
        next_token_weight,
        transposed_previous_weight,
        previous_weight_over_padding,
        summed_previous_weight,
    )
]


@pytest.mark.parametrize("check, wrong, case", PREVIOUS_TOKEN_WRONG, ids=lambda x: getattr(x, "__name__", ""))
def test_previous_token_weight_rejects_plausible_mistakes(check, wrong, case):
    with pytest.raises(ExerciseFailure, match=r"previous_token_weight, case \d of 4"):
        check(wrong)


# ------------------------------------------------------------------------------- attention entropy (2A)


def attention_entropy(A):
    return -torch.where(A > 0, A * A.log(), torch.zeros_like(A)).sum(dim=-1)


def entropy_nan_at_zero(A):  # 0 * log(0) = 0 * -inf = nan
    return -(A * A.log()).sum(dim=-1)


def entropy_in_bits(A):  # log base 2: right shape, wrong unit
    return -torch.where(A > 0, A * A.log2(), torch.zeros_like(A)).sum(dim=-1)


def entropy_without_the_minus(A):
    return torch.where(A > 0, A * A.log(), torch.zeros_like(A)).sum(dim=-1)


def entropy_over_the_queries(A):  # sums down the columns
    return -torch.where(A > 0, A * A.log(), torch.zeros_like(A)).sum(dim=-2)


def entropy_with_a_large_epsilon(A):  # hides the nan by shifting every log
    return -(A * (A + 1e-3).log()).sum(dim=-1)


def entropy_mean_not_sum(A):
    return -torch.where(A > 0, A * A.log(), torch.zeros_like(A)).mean(dim=-1)


def entropy_by_pytorch(A):
    return torch.special.entr(A).sum(dim=-1)


def entropy_by_distributions(A):
    return torch.distributions.Categorical(probs=A).entropy()


def test_attention_entropy_passes_a_right_answer(capsys):
    check_attention_entropy(attention_entropy)
    assert "all 6 cases pass" in capsys.readouterr().out


ENTROPY_WRONG = [
    (check_attention_entropy, entropy_nan_at_zero, "case 2 of 6 (one-hot rows"),
    (check_attention_entropy, entropy_in_bits, "case 1 of 6 (an even spread"),
    (check_attention_entropy, entropy_without_the_minus, "case 1 of 6"),
    (check_attention_entropy, entropy_over_the_queries, "case 1 of 6"),
    (check_attention_entropy, entropy_with_a_large_epsilon, "case 1 of 6"),
    (check_attention_entropy, entropy_mean_not_sum, "case 1 of 6"),
    (check_attention_entropy, entropy_by_pytorch, "uses the library"),
    (check_attention_entropy, entropy_by_distributions, "uses the library"),
]


@pytest.mark.parametrize("check, wrong, case", ENTROPY_WRONG, ids=lambda x: getattr(x, "__name__", str(x)))
def test_attention_entropy_rejects_plausible_mistakes(check, wrong, case):
    with pytest.raises(ExerciseFailure) as err:
        check(wrong)
    assert case in str(err.value), f"{case!r} not in the feedback: {err.value}"


@pytest.mark.parametrize("check", [check_attention_entropy])
def test_attention_entropy_says_not_written_yet(check):
    with pytest.raises(ExerciseFailure, match="not written yet"):
        check(blank)


# ------------------------------------------------------------------------ one head of a real layer (2C)


def head_attention_map(x, W_q, b_q, W_k, b_k, head, n_heads, attention_mask):
    hs = x.size(-1) // n_heads
    rows = slice(head * hs, (head + 1) * hs)
    q = x @ W_q[rows].T + b_q[rows]  # (B, T, hs)
    k = x @ W_k[rows].T + b_k[rows]
    scores = q @ k.transpose(-2, -1) / math.sqrt(hs)  # (B, T, T)
    scores = scores.masked_fill(attention_mask[:, None, :] == 0, float("-inf"))
    return torch.softmax(scores, dim=-1)


def _head_variant(slice_rows=None, bias=True, scale=None, transpose_w=True, mask="keys", swap=False):
    def fn(x, W_q, b_q, W_k, b_k, head, n_heads, attention_mask):
        hs = x.size(-1) // n_heads
        rows = slice(head * hs, (head + 1) * hs) if slice_rows is None else slice_rows(head, hs, n_heads)
        Wq, Wk = (W_q[rows].T, W_k[rows].T) if transpose_w else (W_q.T[rows].T, W_k.T[rows].T)
        q = x @ Wq + (b_q[rows] if bias else 0)
        k = x @ Wk + (b_k[rows] if bias else 0)
        if swap:
            q, k = k, q
        scores = q @ k.transpose(-2, -1) / math.sqrt(scale(x.size(-1), hs) if scale else hs)
        if mask == "keys":
            scores = scores.masked_fill(attention_mask[:, None, :] == 0, float("-inf"))
        elif mask == "queries":
            scores = scores.masked_fill(attention_mask[:, :, None] == 0, float("-inf"))
        return torch.softmax(scores, dim=-1)

    return fn


head_map_without_biases = _head_variant(bias=False)
head_map_interleaved_heads = _head_variant(slice_rows=lambda h, hs, nh: slice(h, None, nh))
head_map_scaled_by_the_width = _head_variant(scale=lambda d, hs: d)
head_map_untransposed_weights = _head_variant(transpose_w=False)  # x @ W: columns, not rows, of W
head_map_masking_queries = _head_variant(mask="queries")
head_map_without_the_mask = _head_variant(mask=None)
head_map_keys_looking_at_queries = _head_variant(swap=True)  # the transposed map


def head_map_by_the_library(x, W_q, b_q, W_k, b_k, head, n_heads, attention_mask):
    from course_lib.attention import explicit_attention

    hs = x.size(-1) // n_heads
    rows = slice(head * hs, (head + 1) * hs)
    q, k = x @ W_q[rows].T + b_q[rows], x @ W_k[rows].T + b_k[rows]
    return explicit_attention(q, k, k, attn_mask=attention_mask[:, None, :].bool())[1]


def test_head_attention_map_passes_a_right_answer(capsys):
    check_head_attention_map(head_attention_map)
    assert "all 6 cases pass" in capsys.readouterr().out


HEAD_MAP_WRONG = [
    (check_head_attention_map, head_map_without_biases, "case 1 of 6 (one sentence"),
    (check_head_attention_map, head_map_interleaved_heads, "case 2 of 6 (4 heads of size 4, head 0"),
    (check_head_attention_map, head_map_scaled_by_the_width, "case 2 of 6"),
    (check_head_attention_map, head_map_untransposed_weights, "case 1 of 6"),
    (check_head_attention_map, head_map_masking_queries, "case 5 of 6 (a batch of 3 padded"),
    (check_head_attention_map, head_map_without_the_mask, "case 5 of 6"),
    (check_head_attention_map, head_map_keys_looking_at_queries, "case 1 of 6"),
    (check_head_attention_map, head_map_by_the_library, "uses the library"),
]


@pytest.mark.parametrize("check, wrong, case", HEAD_MAP_WRONG, ids=lambda x: getattr(x, "__name__", str(x)))
def test_head_attention_map_rejects_plausible_mistakes(check, wrong, case):
    with pytest.raises(ExerciseFailure) as err:
        check(wrong)
    assert case in str(err.value), f"{case!r} not in the feedback: {err.value}"


@pytest.mark.parametrize("check", [check_head_attention_map])
def test_head_attention_map_says_not_written_yet(check):
    with pytest.raises(ExerciseFailure, match="not written yet"):
        check(blank)


# ------------------------------------------------------------------------- mean attention distance (2C)


def mean_attention_distance(A, length):
    i = torch.arange(A.shape[-1])
    distance = (i[:, None] - i[None, :]).abs()  # (T, T): |query - key|
    return (A[:, :length] * distance[:length]).sum(dim=-1).mean(dim=-1)


def signed_distance(A, length):  # looking back and looking ahead cancel
    i = torch.arange(A.shape[-1])
    return (A[:, :length] * (i[:, None] - i[None, :])[:length]).sum(dim=-1).mean(dim=-1)


def distance_over_padding_rows(A, length):  # padded queries counted too
    i = torch.arange(A.shape[-1])
    return (A * (i[:, None] - i[None, :]).abs()).sum(dim=-1).mean(dim=-1)


def distance_summed_over_rows(A, length):  # a total, not a mean
    i = torch.arange(A.shape[-1])
    return (A[:, :length] * (i[:, None] - i[None, :]).abs()[:length]).sum(dim=-1).sum(dim=-1)


def distance_of_word_pieces_only(A, length):  # leaves out [CLS] and [SEP], as in 2.7
    i = torch.arange(A.shape[-1])
    return (A[:, 1 : length - 1] * (i[:, None] - i[None, :]).abs()[1 : length - 1]).sum(dim=-1).mean(dim=-1)


def distance_read_by_columns(A, length):  # transposed: the same total without padding, not with it
    i = torch.arange(A.shape[-1])
    return (A.transpose(-2, -1)[:, :length] * (i[:, None] - i[None, :]).abs()[:length]).sum(dim=-1).mean(-1)


def squared_distance(A, length):
    i = torch.arange(A.shape[-1])
    return (A[:, :length] * ((i[:, None] - i[None, :]) ** 2)[:length]).sum(dim=-1).mean(dim=-1)


def test_mean_attention_distance_passes_a_right_answer(capsys):
    check_mean_attention_distance(mean_attention_distance)
    assert "all 6 cases pass" in capsys.readouterr().out


DISTANCE_WRONG = [
    (check_mean_attention_distance, signed_distance, "case 1 of 6 (12 heads"),
    (check_mean_attention_distance, distance_over_padding_rows, "case 2 of 6 (4 heads, 6 real tokens padded"),
    (check_mean_attention_distance, distance_summed_over_rows, "case 1 of 6"),
    (check_mean_attention_distance, distance_of_word_pieces_only, "case 1 of 6"),
    (check_mean_attention_distance, distance_read_by_columns, "case 2 of 6"),
    (check_mean_attention_distance, squared_distance, "case 1 of 6"),
]


@pytest.mark.parametrize("check, wrong, case", DISTANCE_WRONG, ids=lambda x: getattr(x, "__name__", str(x)))
def test_mean_attention_distance_rejects_plausible_mistakes(check, wrong, case):
    with pytest.raises(ExerciseFailure) as err:
        check(wrong)
    assert case in str(err.value), f"{case!r} not in the feedback: {err.value}"


@pytest.mark.parametrize("check", [check_mean_attention_distance])
def test_mean_attention_distance_says_not_written_yet(check):
    with pytest.raises(ExerciseFailure, match="not written yet"):
        check(blank)


# ---------------------------------------------------------------- more ways to split and merge heads


def split_heads_interleaved(x, n_heads):  # head h takes features h, h + nh, ...: not GPT-2's layout
    B, T, C = x.shape
    return x.view(B, T, C // n_heads, n_heads).permute(0, 3, 1, 2)


def split_heads_without_transpose(x, n_heads):  # (B, T, nh, hs): tokens where heads should be
    B, T, C = x.shape
    return x.view(B, T, n_heads, C // n_heads)


def split_heads_by_einops_style_permute(x, n_heads):  # (B, hs, nh, T): the wrong axes swapped
    B, T, C = x.shape
    return x.view(B, T, n_heads, C // n_heads).transpose(1, 3)


def merge_heads_interleaved(y):  # features of the heads interleaved, not side by side
    B, nh, T, hs = y.shape
    return y.permute(0, 2, 3, 1).reshape(B, T, nh * hs)


def merge_heads_summed(y):  # adds the heads up: (B, T, hs)
    return y.sum(dim=1)


HEADS_WRONG = [
    (check_split_heads, split_heads_interleaved, "case 1 of 4"),
    (check_split_heads, split_heads_without_transpose, "case 1 of 4"),
    (check_split_heads, split_heads_by_einops_style_permute, "case 1 of 4"),
    (check_merge_heads, merge_heads_interleaved, "case 1 of 4"),
    (check_merge_heads, merge_heads_summed, "shape (1, 2, 2) instead of (1, 2, 4)"),
]


@pytest.mark.parametrize("check, wrong, case", HEADS_WRONG, ids=lambda x: getattr(x, "__name__", str(x)))
def test_more_head_mistakes_fail_naming_the_case(check, wrong, case):
    with pytest.raises(ExerciseFailure) as err:
        check(wrong)
    assert case in str(err.value), f"{case!r} not in the feedback: {err.value}"


MUTANTS = WRONG + PREVIOUS_TOKEN_WRONG + ENTROPY_WRONG + HEAD_MAP_WRONG + DISTANCE_WRONG + HEADS_WRONG

"""Notebooks 3.6 and 3.7's self-checks pass right answers and catch the usual wrong ones, naming the
case; answers that call the library (or PyTorch's own version) instead of doing the work are refused."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from course_lib.baselines import BigramLM
from course_lib.exercises import ExerciseFailure
from course_lib.exercises.ch03_pretraining import (
    check_accumulated_gradients,
    check_bigram_nll,
    check_clip_gradients,
    check_power_law_fit,
    check_round_to_bfloat16,
)
from course_lib.model_costs import fit_power_law

# ------------------------------------------------------------------------- the bigram baseline


def _bigram(train, val, V, k, context_all=False, k_times_v=True, transposed=False):
    counts = np.zeros((V, V))
    np.add.at(counts, (train[:-1], train[1:]), 1)
    if transposed:
        counts = counts.T
    context = np.bincount(train if context_all else train[:-1], minlength=V)
    denominator = context[val[:-1]] + (k * V if k_times_v else k)
    return float(-np.mean(np.log((counts[val[:-1], val[1:]] + k) / denominator)))


def bigram_nll(train, val, V, k):
    return _bigram(train, val, V, k)


def bigram_context_counts_every_token(train, val, V, k):  # count(a) includes the last training token
    return _bigram(train, val, V, k, context_all=True)


def bigram_k_not_times_v(train, val, V, k):  # p no longer sums to one over the vocabulary
    return _bigram(train, val, V, k, k_times_v=False)


def bigram_transposed(train, val, V, k):  # p(a | b) instead of p(b | a)
    return _bigram(train, val, V, k, transposed=True)


def bigram_log2(train, val, V, k):  # bits instead of nats
    return _bigram(train, val, V, k) / math.log(2)


def bigram_library(train, val, V, k):
    return BigramLM(V, k).fit(train).nll(val)


# ------------------------------------------------------------------------- gradient clipping


def clip_gradients(grads, max_norm):
    total = torch.sqrt(sum((g**2).sum() for g in grads))
    scale = min(1.0, max_norm / (float(total) + 1e-6))
    return [g * scale for g in grads], float(total)


def clip_each_tensor(grads, max_norm):  # one norm per tensor instead of one for all
    out = []
    for g in grads:
        n = float(g.norm())
        out.append(g * min(1.0, max_norm / (n + 1e-6)))
    return out, float(torch.sqrt(sum((g**2).sum() for g in grads)))


def clip_always(grads, max_norm):  # rescales small gradients up to max_norm too
    total = float(torch.sqrt(sum((g**2).sum() for g in grads)))
    return [g * max_norm / (total + 1e-6) for g in grads], total


def clip_without_sqrt(grads, max_norm):  # the squared norm
    total = float(sum((g**2).sum() for g in grads))
    return [g * min(1.0, max_norm / (total + 1e-6)) for g in grads], total


def clip_reports_norm_after(grads, max_norm):
    clipped, _ = clip_gradients(grads, max_norm)
    return clipped, float(torch.sqrt(sum((g**2).sum() for g in clipped)))


def clip_with_torch(grads, max_norm):
    params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g
    return [p.grad for p in params], float(torch.nn.utils.clip_grad_norm_(params, max_norm))


# ------------------------------------------------------------------------- rounding to bfloat16


def round_to_bfloat16(x):
    bits = x.float().view(torch.int32)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & -0x10000
    return rounded.view(torch.float32)


def bfloat16_truncated(x):  # cuts the low bits instead of rounding
    return (x.float().view(torch.int32) & -0x10000).view(torch.float32)


def bfloat16_ties_away(x):  # rounds half-way cases away from zero
    return ((x.float().view(torch.int32) + 0x8000) & -0x10000).view(torch.float32)


def bfloat16_as_float16(x):  # the other 16-bit format
    return x.half().float()


def bfloat16_with_torch(x):
    return x.bfloat16().float()


# ------------------------------------------------------------------------- gradient accumulation


def accumulated_gradients(model, x, y, micro_batch_size):
    model.zero_grad()
    for xm, ym in zip(x.split(micro_batch_size), y.split(micro_batch_size)):
        (model(xm, ym)[1] * len(xm) / len(x)).backward()
    return [p.grad for p in model.parameters()]


def accumulated_divided_by_count(model, x, y, micro_batch_size):  # right only when the sizes are equal
    model.zero_grad()
    pieces = list(zip(x.split(micro_batch_size), y.split(micro_batch_size)))
    for xm, ym in pieces:
        (model(xm, ym)[1] / len(pieces)).backward()
    return [p.grad for p in model.parameters()]


def accumulated_stale(model, x, y, micro_batch_size):  # adds onto the gradients of an earlier step
    for xm, ym in zip(x.split(micro_batch_size), y.split(micro_batch_size)):
        (model(xm, ym)[1] * len(xm) / len(x)).backward()
    return [p.grad for p in model.parameters()]


def accumulated_summed(model, x, y, micro_batch_size):  # no scaling: the sum of the micro-batch means
    model.zero_grad()
    for xm, ym in zip(x.split(micro_batch_size), y.split(micro_batch_size)):
        model(xm, ym)[1].backward()
    return [p.grad for p in model.parameters()]


def accumulated_zeroed_each_time(model, x, y, micro_batch_size):  # keeps only the last micro-batch
    for xm, ym in zip(x.split(micro_batch_size), y.split(micro_batch_size)):
        model.zero_grad()
        (model(xm, ym)[1] * len(xm) / len(x)).backward()
    return [p.grad for p in model.parameters()]


# ------------------------------------------------------------------------- a power-law fit


def power_law_fit(x, y):
    lx, ly = np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float))
    b = ((lx - lx.mean()) * (ly - ly.mean())).sum() / ((lx - lx.mean()) ** 2).sum()
    return float(np.exp(ly.mean() - b * lx.mean())), float(b)


def power_law_log_a(x, y):  # forgot to undo the logarithm for a
    a, b = power_law_fit(x, y)
    return math.log(a), b


def power_law_swapped(x, y):  # (b, a)
    a, b = power_law_fit(x, y)
    return b, a


def power_law_x_on_y(x, y):  # regresses log x on log y, then inverts the line
    lx, ly = np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float))
    slope = ((lx - lx.mean()) * (ly - ly.mean())).sum() / ((ly - ly.mean()) ** 2).sum()
    b = 1 / slope
    return float(np.exp(ly.mean() - b * lx.mean())), float(b)


def power_law_semilog(x, y):  # log y against x, not log x
    xa, ly = np.asarray(x, dtype=float), np.log(np.asarray(y, dtype=float))
    b = ((xa - xa.mean()) * (ly - ly.mean())).sum() / ((xa - xa.mean()) ** 2).sum()
    return float(np.exp(ly.mean() - b * xa.mean())), float(b)


def power_law_polyfit(x, y):
    b, log_a = np.polyfit(np.log(x), np.log(y), 1)
    return float(np.exp(log_a)), float(b)


def power_law_library(x, y):
    return fit_power_law(x, y)


# ------------------------------------------------------------------------- the tests


@pytest.mark.parametrize(
    "check, answer",
    [
        (check_bigram_nll, bigram_nll),
        (check_clip_gradients, clip_gradients),
        (check_round_to_bfloat16, round_to_bfloat16),
        (check_accumulated_gradients, accumulated_gradients),
        (check_power_law_fit, power_law_fit),
    ],
)
def test_right_answers_pass(check, answer, capsys):
    check(answer)
    assert "✓" in capsys.readouterr().out


WRONG = [
    (check_bigram_nll, bigram_context_counts_every_token, "V=4, k=1"),
    (check_bigram_nll, bigram_k_not_times_v, "V=4, k=1"),
    (check_bigram_nll, bigram_transposed, "V=4, k=1"),
    (check_bigram_nll, bigram_log2, "V=4, k=1"),
    (check_clip_gradients, clip_each_tensor, "total norm 5"),
    (check_clip_gradients, clip_always, "nothing changes"),
    (check_clip_gradients, clip_without_sqrt, "total norm 5"),
    (check_clip_gradients, clip_reports_norm_after, "total norm 5"),
    (check_round_to_bfloat16, bfloat16_truncated, "random normal"),
    (check_round_to_bfloat16, bfloat16_ties_away, "ties go to"),
    (check_round_to_bfloat16, bfloat16_as_float16, "random normal"),
    (check_accumulated_gradients, accumulated_divided_by_count, "only 2"),
    (check_accumulated_gradients, accumulated_stale, "micro-batches of 2"),
    (check_accumulated_gradients, accumulated_summed, "micro-batches of 2"),
    (check_accumulated_gradients, accumulated_zeroed_each_time, "micro-batches of 2"),
    (check_power_law_fit, power_law_log_a, "exact law"),
    (check_power_law_fit, power_law_swapped, "exact law"),
    (check_power_law_fit, power_law_x_on_y, "with noise"),
    (check_power_law_fit, power_law_semilog, "exact law"),
]


@pytest.mark.parametrize("check, wrong, case", WRONG)
def test_wrong_answers_fail_naming_the_case(check, wrong, case):
    with pytest.raises(ExerciseFailure, match="case") as err:
        check(wrong)
    assert case in str(err.value)


LIBRARY = [
    (check_bigram_nll, bigram_library, "BigramLM"),
    (check_clip_gradients, clip_with_torch, "clip_grad_norm_"),
    (check_round_to_bfloat16, bfloat16_with_torch, "bfloat16"),
    (check_power_law_fit, power_law_library, "fit_power_law"),
    (check_power_law_fit, power_law_polyfit, "polyfit"),
]


@pytest.mark.parametrize("check, answer, used", LIBRARY)
def test_answers_that_call_the_library_are_refused(check, answer, used):
    with pytest.raises(ExerciseFailure, match="uses the library") as err:
        check(answer)
    assert used in str(err.value)


def test_an_unwritten_exercise_says_what_to_do():
    def not_written(*args):
        raise NotImplementedError()

    for check in (check_bigram_nll, check_clip_gradients, check_round_to_bfloat16, check_power_law_fit):
        with pytest.raises(ExerciseFailure, match="not written yet"):
            check(not_written)
    with pytest.raises(ExerciseFailure, match="not written yet"):
        check_accumulated_gradients(not_written)


def test_the_rounding_cases_really_sit_at_and_near_ties():
    """The tie cases are half-way between two bfloat16 numbers: truncation and rounding disagree there."""
    ties = torch.tensor([0x3F808000, 0x3F818000], dtype=torch.int32).view(torch.float32)
    assert not torch.equal(bfloat16_truncated(ties), bfloat16_ties_away(ties))
    assert torch.equal(round_to_bfloat16(ties), ties.bfloat16().float())


MUTANTS = WRONG + [(check, answer, "uses the library") for check, answer, _ in LIBRARY]

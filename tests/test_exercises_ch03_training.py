"""Chapter 3's self-checks for notebooks 3.1-3.3 (finite differences, dropout, convolution, confusion
matrix): a right answer passes, plausible wrong ones fail naming the case, the library's own is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_lib import training_basics
from course_lib.exercises import ExerciseFailure
from course_lib.exercises.ch03 import check_dropout, check_numerical_gradient

# ------------------------------------------------------------------------- finite differences (3.1b)


def numerical_gradient(f, x, eps):
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[i] = eps
        grad[i] = (f(x + step) - f(x - step)) / (2 * eps)
    return grad


def forward_difference(f, x, eps):  # one-sided: error of order eps
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[i] = eps
        grad[i] = (f(x + step) - f(x)) / eps
    return grad


def divides_by_eps(f, x, eps):  # the points are 2 eps apart
    return numerical_gradient(f, x, eps) * 2


def never_puts_x_back(f, x, eps):  # in place, no restore: later entries are taken at a shifted point
    x = x.copy()
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        x[i] += eps
        up = f(x)
        x[i] -= 2 * eps
        grad[i] = (up - f(x)) / (2 * eps)
    return grad


def aliased_copies(f, x, eps):  # xp = x and xm = x are one array: the second point is x itself
    x = x.copy()
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp = x
        xp[i] += eps
        up = f(xp)
        xm = x
        xm[i] -= eps
        grad[i] = (up - f(xm)) / (2 * eps)
    return grad


def flattened(f, x, eps):
    return numerical_gradient(f, x, eps).ravel()


def calls_the_library(f, x, eps):
    return training_basics.numerical_gradient(f, x, eps)


def test_numerical_gradient_right_answer_passes(capsys):
    check_numerical_gradient(numerical_gradient)
    assert "all 5 cases pass" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong,case",
    [
        (forward_difference, "case 1 of 5"),
        (divides_by_eps, "case 1 of 5"),
        (never_puts_x_back, "case 1 of 5"),
        (aliased_copies, "case 1 of 5"),
        (flattened, "case 3 of 5"),
        (calls_the_library, "uses the library"),
    ],
)
def test_numerical_gradient_wrong_answers_fail_naming_the_case(wrong, case):
    with pytest.raises(ExerciseFailure, match=case):
        check_numerical_gradient(wrong)


# ------------------------------------------------------------------------- inverted dropout (3.2c)


def dropout(x, p, training, generator):
    if not training or p == 0:
        return x
    keep = torch.rand(x.shape, generator=generator) >= p
    return torch.where(keep, x / (1 - p), torch.zeros_like(x))


def dropout_with_bernoulli(x, p, training, generator):  # another right answer: a different draw
    if not training:
        return x
    keep = torch.bernoulli(torch.full_like(x, 1 - p), generator=generator)
    return x * keep / (1 - p) if p < 1 else x * 0


def forgets_the_scale(x, p, training, generator):
    if not training:
        return x
    return x * (torch.rand(x.shape, generator=generator) >= p)


def keeps_with_probability_p(x, p, training, generator):
    if not training:
        return x
    keep = torch.rand(x.shape, generator=generator) < p
    return torch.where(keep, x / (1 - p), torch.zeros_like(x))


def scales_at_eval_instead(x, p, training, generator):  # the original 2012 form, not inverted
    if not training:
        return x * (1 - p)
    return x * (torch.rand(x.shape, generator=generator) >= p)


def drops_in_eval_mode_too(x, p, training, generator):
    keep = torch.rand(x.shape, generator=generator) >= p
    return torch.where(keep, x / (1 - p), torch.zeros_like(x))


def nan_at_p_one(x, p, training, generator):
    if not training:
        return x
    return x * (torch.rand(x.shape, generator=generator) >= p) / (1 - p)


def ignores_the_generator(x, p, training, generator):
    if not training:
        return x
    return torch.where(torch.rand(x.shape) >= p, x / (1 - p), torch.zeros_like(x))


def calls_pytorch(x, p, training, generator):
    return F.dropout(x, p, training)


@pytest.mark.parametrize("right", [dropout, dropout_with_bernoulli])
def test_dropout_right_answers_pass(right, capsys):
    check_dropout(right)
    assert "all 8 cases pass" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong,case",
    [
        (forgets_the_scale, "case 1 of 8"),
        (keeps_with_probability_p, "case 2 of 8"),
        (scales_at_eval_instead, "case 1 of 8"),
        (drops_in_eval_mode_too, "case 4 of 8"),
        (nan_at_p_one, "case 6 of 8"),
        (ignores_the_generator, "case 8 of 8"),
        (calls_pytorch, "uses the library"),
    ],
)
def test_dropout_wrong_answers_fail_naming_the_case(wrong, case):
    with pytest.raises(ExerciseFailure, match=case):
        check_dropout(wrong)

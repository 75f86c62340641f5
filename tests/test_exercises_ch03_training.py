"""Chapter 3's self-checks for notebooks 3.1-3.3 (finite differences, dropout, convolution, confusion
matrix): a right answer passes, plausible wrong ones fail naming the case, the library's own is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_lib import training_basics
from course_lib.exercises import ExerciseFailure
from course_lib.exercises.ch03 import (
    check_conv2d,
    check_dropout,
    check_numerical_gradient,
    check_per_class_scores,
)

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


GRADIENT_WRONG = [
    (check_numerical_gradient, forward_difference, "case 1 of 5"),
    (check_numerical_gradient, divides_by_eps, "case 1 of 5"),
    (check_numerical_gradient, never_puts_x_back, "case 1 of 5"),
    (check_numerical_gradient, aliased_copies, "case 1 of 5"),
    (check_numerical_gradient, flattened, "case 3 of 5"),
    (check_numerical_gradient, calls_the_library, "uses the library"),
]


@pytest.mark.parametrize("check, wrong, case", GRADIENT_WRONG, ids=lambda x: getattr(x, "__name__", str(x)))
def test_numerical_gradient_wrong_answers_fail_naming_the_case(check, wrong, case):
    with pytest.raises(ExerciseFailure, match=case):
        check(wrong)


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


DROPOUT_WRONG = [
    (check_dropout, forgets_the_scale, "case 1 of 8"),
    (check_dropout, keeps_with_probability_p, "case 2 of 8"),
    (check_dropout, scales_at_eval_instead, "case 1 of 8"),
    (check_dropout, drops_in_eval_mode_too, "case 4 of 8"),
    (check_dropout, nan_at_p_one, "case 6 of 8"),
    (check_dropout, ignores_the_generator, "case 8 of 8"),
    (check_dropout, calls_pytorch, "uses the library"),
]


@pytest.mark.parametrize("check, wrong, case", DROPOUT_WRONG, ids=lambda x: getattr(x, "__name__", str(x)))
def test_dropout_wrong_answers_fail_naming_the_case(check, wrong, case):
    with pytest.raises(ExerciseFailure, match=case):
        check(wrong)


# ------------------------------------------------------------------------- a convolution (3.3a)


def conv2d(x, weight, bias, padding):  # a loop over the kernel offsets
    x = F.pad(x, (padding,) * 4)
    O, C, kH, kW = weight.shape
    Ho, Wo = x.shape[2] - kH + 1, x.shape[3] - kW + 1
    out = torch.zeros(x.shape[0], O, Ho, Wo, dtype=x.dtype)
    for u in range(kH):
        for v in range(kW):
            out += torch.einsum("bchw,oc->bohw", x[:, :, u : u + Ho, v : v + Wo], weight[:, :, u, v])
    return out + bias.view(1, -1, 1, 1)


def conv2d_unfold(x, weight, bias, padding):  # another right answer: im2col and one matrix product
    B, _, H, W = x.shape
    O, C, kH, kW = weight.shape
    cols = F.unfold(x, (kH, kW), padding=padding)  # (B, C*kH*kW, L)
    out = weight.view(O, -1) @ cols + bias.view(1, O, 1)  # (B, O, L)
    return out.view(B, O, H + 2 * padding - kH + 1, W + 2 * padding - kW + 1)


def flips_the_kernel(x, weight, bias, padding):  # the textbook convolution, not PyTorch's correlation
    return conv2d(x, weight.flip(-1, -2), bias, padding)


def one_pixel_short(x, weight, bias, padding):  # output size H - k instead of H - k + 1
    return conv2d(x, weight, bias, padding)[:, :, :-1, :-1]


def pads_one_side_only(x, weight, bias, padding):
    return conv2d(F.pad(x, (padding, 0, padding, 0)), weight, bias, 0)


def forgets_the_bias(x, weight, bias, padding):
    return conv2d(x, weight, torch.zeros_like(bias), padding)


def no_sum_over_channels(x, weight, bias, padding):  # only the first input channel counts
    return conv2d(x[:, :1], weight[:, :1], bias, padding)


def assumes_a_square_kernel(x, weight, bias, padding):  # kW taken to be kH
    x = F.pad(x, (padding,) * 4)
    O, C, k, _ = weight.shape
    Ho, Wo = x.shape[2] - k + 1, x.shape[3] - k + 1
    out = torch.zeros(x.shape[0], O, Ho, Wo, dtype=x.dtype)
    for u in range(k):
        for v in range(k):
            out += torch.einsum("bchw,oc->bohw", x[:, :, u : u + Ho, v : v + Wo], weight[:, :, u, v])
    return out + bias.view(1, -1, 1, 1)


def calls_pytorch_conv(x, weight, bias, padding):
    return F.conv2d(x, weight, bias, padding=padding)


@pytest.mark.parametrize("right", [conv2d, conv2d_unfold])
def test_conv2d_right_answers_pass(right, capsys):
    check_conv2d(right)
    assert "all 7 cases pass" in capsys.readouterr().out


CONV_WRONG = [
    (check_conv2d, flips_the_kernel, "case 1 of 7"),
    (check_conv2d, one_pixel_short, "case 1 of 7"),
    (check_conv2d, pads_one_side_only, "case 2 of 7"),
    (check_conv2d, forgets_the_bias, "case 1 of 7"),
    (check_conv2d, no_sum_over_channels, "case 3 of 7"),
    (check_conv2d, assumes_a_square_kernel, "case 4 of 7"),
    (check_conv2d, calls_pytorch_conv, "uses the library"),
]


@pytest.mark.parametrize("check, wrong, case", CONV_WRONG, ids=lambda x: getattr(x, "__name__", str(x)))
def test_conv2d_wrong_answers_fail_naming_the_case(check, wrong, case):
    with pytest.raises(ExerciseFailure, match=case):
        check(wrong)


# ------------------------------------------------------------------------- confusion matrix (3.3c)


def per_class_scores(y_true, y_pred, num_classes):
    cm = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    for t, p in zip(y_true.tolist(), y_pred.tolist()):
        cm[t, p] += 1
    hits = cm.diag().double()
    predicted, actual = cm.sum(0).double(), cm.sum(1).double()
    precision = torch.where(predicted > 0, hits / predicted.clamp(min=1), 0.0)
    recall = torch.where(actual > 0, hits / actual.clamp(min=1), 0.0)
    return cm, precision, recall


def per_class_scores_bincount(y_true, y_pred, num_classes):  # another right answer, vectorised
    cm = torch.bincount(y_true * num_classes + y_pred, minlength=num_classes**2).view(
        num_classes, num_classes
    )
    hits = cm.diag().double()
    return cm, (hits / cm.sum(0)).nan_to_num(0.0), (hits / cm.sum(1)).nan_to_num(0.0)


def transposed(y_true, y_pred, num_classes):  # rows = prediction
    cm, precision, recall = per_class_scores(y_true, y_pred, num_classes)
    return cm.T, precision, recall


def precision_and_recall_swapped(y_true, y_pred, num_classes):  # divides by the row for precision
    cm, precision, recall = per_class_scores(y_true, y_pred, num_classes)
    return cm, recall, precision


def nan_for_zero_over_zero(y_true, y_pred, num_classes):
    cm, _, _ = per_class_scores(y_true, y_pred, num_classes)
    hits = cm.diag().double()
    return cm, hits / cm.sum(0), hits / cm.sum(1)


def only_the_classes_seen(y_true, y_pred, num_classes):  # bincount without minlength: too small a matrix
    c = int(max(y_true.max(), y_pred.max())) + 1
    return per_class_scores(y_true, y_pred, c)


def calls_the_course_metrics(y_true, y_pred, num_classes):
    from course_lib import metrics

    labels = list(range(num_classes))
    s = metrics.precision_recall_f1(y_true.numpy(), y_pred.numpy(), labels=labels)
    return (
        metrics.confusion_matrix(y_true.numpy(), y_pred.numpy(), labels=labels),
        s["precision"],
        s["recall"],
    )


@pytest.mark.parametrize("right", [per_class_scores, per_class_scores_bincount])
def test_per_class_scores_right_answers_pass(right, capsys):
    check_per_class_scores(right)
    assert "all 7 cases pass" in capsys.readouterr().out


SCORES_WRONG = [
    (check_per_class_scores, transposed, "case 1 of 7"),
    (check_per_class_scores, precision_and_recall_swapped, "case 1 of 7"),
    (check_per_class_scores, nan_for_zero_over_zero, "case 3 of 7"),
    (check_per_class_scores, only_the_classes_seen, "case 5 of 7"),
    (check_per_class_scores, calls_the_course_metrics, "uses the library"),
]


@pytest.mark.parametrize("check, wrong, case", SCORES_WRONG, ids=lambda x: getattr(x, "__name__", str(x)))
def test_per_class_scores_wrong_answers_fail_naming_the_case(check, wrong, case):
    with pytest.raises(ExerciseFailure, match=case):
        check(wrong)


MUTANTS = GRADIENT_WRONG + DROPOUT_WRONG + CONV_WRONG + SCORES_WRONG

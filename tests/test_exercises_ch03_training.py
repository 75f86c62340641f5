"""Chapter 3's self-checks for notebooks 3.1-3.3 (finite differences, dropout, convolution, confusion
matrix): a right answer passes, plausible wrong ones fail naming the case, the library's own is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_lib import lm_data, trainer, training_basics
from course_lib.exercises import ExerciseFailure
from course_lib.exercises.ch03 import (
    check_adamw_step,
    check_conv2d,
    check_dropout,
    check_lm_batch,
    check_logistic_gradient,
    check_numerical_gradient,
    check_per_class_scores,
    check_two_layer_backward,
    check_warmup_cosine_lr,
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


# ------------------------------------------------------------- gradients by hand, AdamW, the schedule


def logistic_gradient(X, y, w, b):
    error = 1 / (1 + np.exp(-(X @ w + b))) - y  # (N,)
    return X.T @ error / len(y), float(error.mean())


def logistic_gradient_summed(X, y, w, b):  # forgot the 1/N of the mean
    error = 1 / (1 + np.exp(-(X @ w + b))) - y
    return X.T @ error, float(error.sum())


def logistic_gradient_wrong_sign(X, y, w, b):  # y - p: the gradient of the log-likelihood, not the loss
    error = y - 1 / (1 + np.exp(-(X @ w + b)))
    return X.T @ error / len(y), float(error.mean())


def logistic_gradient_without_sigmoid(X, y, w, b):  # the residual of a linear model, z - y
    error = X @ w + b - y
    return X.T @ error / len(y), float(error.mean())


def logistic_gradient_by_autograd(X, y, w, b):
    wt = torch.tensor(w, requires_grad=True)
    bt = torch.tensor(b, dtype=torch.float64, requires_grad=True)
    F.binary_cross_entropy_with_logits(torch.from_numpy(X) @ wt + bt, torch.from_numpy(y)).backward()
    return wt.grad.numpy(), float(bt.grad)


def logistic_gradient_by_the_library(X, y, w, b):
    return training_basics.logistic_gradient(X, y, w, b)


def two_layer_backward(x, y, W1, b1, W2, b2, relu_mask=True, mean=True, bias_axis=0):
    z1 = x @ W1 + b1  # (B, H)
    h = torch.relu(z1)
    logits = h @ W2 + b2  # (B, C)
    dz2 = torch.softmax(logits, -1) - F.one_hot(y, logits.shape[-1]).to(logits.dtype)
    dz2 = dz2 / len(y) if mean else dz2
    dh = dz2 @ W2.T
    dz1 = dh * (z1 > 0) if relu_mask else dh
    return x.T @ dz1, dz1.sum(bias_axis), h.T @ dz2, dz2.sum(bias_axis)


def backward_without_the_relu(x, y, W1, b1, W2, b2):  # the ReLU's gradient forgotten: dz1 = dh
    return two_layer_backward(x, y, W1, b1, W2, b2, relu_mask=False)


def backward_summed_over_the_batch(x, y, W1, b1, W2, b2):  # the loss's mean forgotten
    return two_layer_backward(x, y, W1, b1, W2, b2, mean=False)


def backward_transposed_weights(x, y, W1, b1, W2, b2):  # dW = dz.T @ h: the transpose of the gradient
    dW1, db1, dW2, db2 = two_layer_backward(x, y, W1, b1, W2, b2)
    return dW1.T, db1, dW2.T, db2


def backward_by_autograd(x, y, W1, b1, W2, b2):
    params = [t.clone().requires_grad_(True) for t in (W1, b1, W2, b2)]
    F.cross_entropy(torch.relu(x @ params[0] + params[1]) @ params[2] + params[3], y).backward()
    return tuple(p.grad for p in params)


def adamw_step(param, grad, m, v, step, lr, betas, eps, weight_decay, variant="right"):
    b1, b2 = betas
    if variant == "adam with L2":  # decay added to the gradient (Adam), not to the weight (AdamW)
        grad = grad + weight_decay * param
    elif variant != "decay after":
        param = param * (1 - lr * weight_decay)
    m = b1 * m + (1 - b1) * grad
    v = b2 * v + (1 - b2) * grad**2
    m_hat, v_hat = (m, v) if variant == "no bias correction" else (m / (1 - b1**step), v / (1 - b2**step))
    update = lr * m_hat / ((v_hat + eps).sqrt() if variant == "eps inside" else v_hat.sqrt() + eps)
    param = param - update
    if variant == "decay after":  # decay applied to the updated weight
        param = param * (1 - lr * weight_decay)
    return param, m, v


def adamw_without_bias_correction(param, grad, m, v, step, lr, betas, eps, weight_decay):
    return adamw_step(param, grad, m, v, step, lr, betas, eps, weight_decay, "no bias correction")


def adam_with_l2_decay(param, grad, m, v, step, lr, betas, eps, weight_decay):
    return adamw_step(param, grad, m, v, step, lr, betas, eps, weight_decay, "adam with L2")


def adamw_eps_inside_the_root(param, grad, m, v, step, lr, betas, eps, weight_decay):
    return adamw_step(param, grad, m, v, step, lr, betas, eps, weight_decay, "eps inside")


def adamw_by_pytorch(param, grad, m, v, step, lr, betas, eps, weight_decay):
    p = param.clone().requires_grad_(True)
    opt = torch.optim.AdamW([p], lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    if step > 1:  # AdamW's state after step - 1 steps
        opt.state[p] = {"step": torch.tensor(step - 1.0), "exp_avg": m.clone(), "exp_avg_sq": v.clone()}
    p.grad = grad.clone()
    opt.step()
    return p.detach(), opt.state[p]["exp_avg"], opt.state[p]["exp_avg_sq"]


def adamw_by_the_library(param, grad, m, v, step, lr, betas, eps, weight_decay):
    return training_basics.adamw_step(param, grad, m, v, step, lr, betas, eps, weight_decay)


def warmup_cosine_lr(step, max_steps, warmup_steps, lr, min_lr, variant="right"):
    if step < warmup_steps:
        return lr * (step + 1) / (warmup_steps if variant == "warmup reaches lr early" else warmup_steps + 1)
    if step > max_steps and variant != "no floor":
        return min_lr
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    low = 0.0 if variant == "decays to zero" else min_lr
    return low + (lr - low) * 0.5 * (1 + np.cos(np.pi * progress))


def lr_warmup_one_step_early(step, max_steps, warmup_steps, lr, min_lr):  # lr * (step + 1) / W
    return warmup_cosine_lr(step, max_steps, warmup_steps, lr, min_lr, "warmup reaches lr early")


def lr_decaying_to_zero(step, max_steps, warmup_steps, lr, min_lr):  # min_lr ignored
    return warmup_cosine_lr(step, max_steps, warmup_steps, lr, min_lr, "decays to zero")


def lr_rising_again_after_the_end(step, max_steps, warmup_steps, lr, min_lr):  # the cosine goes on
    return warmup_cosine_lr(step, max_steps, warmup_steps, lr, min_lr, "no floor")


def lr_by_the_library(step, max_steps, warmup_steps, lr, min_lr):
    config = trainer.TrainConfig(max_steps=max_steps, warmup_steps=warmup_steps, lr=lr, min_lr=min_lr)
    return trainer.lr_at(step, config)


def lm_batch(data, batch_size, block_size, generator=None, shift=1, bound=0, dtype=torch.long):
    starts = torch.randint(len(data) - block_size + bound, (batch_size,), generator=generator)
    x = torch.stack([data[s : s + block_size] for s in starts]).to(dtype)
    y = torch.stack([data[s + shift : s + shift + block_size] for s in starts]).to(dtype)
    return x, y


def lm_batch_unshifted(data, batch_size, block_size, generator=None):  # y = x: nothing to predict
    return lm_batch(data, batch_size, block_size, generator, shift=0)


def lm_batch_start_bound_off_by_one(data, batch_size, block_size, generator=None):  # a start may overrun
    return lm_batch(data, batch_size, block_size, generator, bound=1)


def lm_batch_int32(data, batch_size, block_size, generator=None):  # ids as int32: cross_entropy refuses
    return lm_batch(data, batch_size, block_size, generator, dtype=torch.int32)


def lm_batch_by_the_library(data, batch_size, block_size, generator=None):
    return lm_data.get_batch(data, batch_size, block_size, generator, device="cpu")


TRAINING_RIGHT = [
    (check_logistic_gradient, logistic_gradient),
    (check_two_layer_backward, two_layer_backward),
    (check_adamw_step, adamw_step),
    (check_warmup_cosine_lr, warmup_cosine_lr),
    (check_lm_batch, lm_batch),
]

TRAINING_WRONG = [
    (check_logistic_gradient, logistic_gradient_summed, "case 1 of 5 (8 examples"),
    (check_logistic_gradient, logistic_gradient_wrong_sign, "case 1 of 5"),
    (check_logistic_gradient, logistic_gradient_without_sigmoid, "case 1 of 5"),
    (check_logistic_gradient, logistic_gradient_by_autograd, "uses the library (PyTorch's backward"),
    (check_logistic_gradient, logistic_gradient_by_the_library, "course_lib.training_basics"),
    (check_two_layer_backward, backward_without_the_relu, "case 1 of 4 (batch 4"),
    (check_two_layer_backward, backward_summed_over_the_batch, "case 1 of 4"),
    (check_two_layer_backward, backward_transposed_weights, "item 0: shape (5, 3) instead of (3, 5)"),
    (check_two_layer_backward, backward_by_autograd, "uses the library (PyTorch's backward"),
    (check_adamw_step, adamw_without_bias_correction, "case 1 of 4 (the first step"),
    (check_adamw_step, adam_with_l2_decay, "case 1 of 4"),
    (check_adamw_step, adamw_eps_inside_the_root, "case 1 of 4"),
    (check_adamw_step, adamw_by_pytorch, "uses the library"),
    (check_adamw_step, adamw_by_the_library, "uses the library (course_lib.training_basics"),
    (check_warmup_cosine_lr, lr_warmup_one_step_early, "case 1 of 14 (step 0 of 1000, warmup 100)"),
    (check_warmup_cosine_lr, lr_decaying_to_zero, "step 101 of 1000"),
    (check_warmup_cosine_lr, lr_rising_again_after_the_end, "step 1200 of 1000"),
    (check_warmup_cosine_lr, lr_by_the_library, "course_lib.trainer"),
    (check_lm_batch, lm_batch_unshifted, "case 1 of 5 (4 windows of 8)"),
    (check_lm_batch, lm_batch_start_bound_off_by_one, "case 1 of 5"),
    (check_lm_batch, lm_batch_int32, "int64 (torch.long)"),
    (check_lm_batch, lm_batch_by_the_library, "course_lib.lm_data"),
]


@pytest.mark.parametrize("check, right", TRAINING_RIGHT, ids=lambda x: getattr(x, "__name__", str(x)))
def test_training_right_answers_pass(check, right, capsys):
    check(right)
    assert "cases pass" in capsys.readouterr().out


@pytest.mark.parametrize("check, wrong, case", TRAINING_WRONG, ids=lambda x: getattr(x, "__name__", str(x)))
def test_training_wrong_answers_fail_naming_the_case(check, wrong, case):
    with pytest.raises(ExerciseFailure) as err:
        check(wrong)
    assert case in str(err.value), f"{case!r} not in the feedback: {err.value}"


MUTANTS = GRADIENT_WRONG + DROPOUT_WRONG + CONV_WRONG + SCORES_WRONG + TRAINING_WRONG

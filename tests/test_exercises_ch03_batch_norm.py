"""Chapter 3's batch-norm self-check passes a right answer and names the case a plausible wrong one fails."""

from __future__ import annotations

import pytest
import torch

from course_lib.exercises import ExerciseFailure
from course_lib.exercises.ch03 import check_batch_norm_train


def per_channel(x):  # (B, C, H, W) -> (1, C, 1, 1) views for broadcasting
    return x[None, :, None, None]


def batch_norm(x, gamma, beta, eps):
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * per_channel(gamma) + per_channel(beta)


def unbiased_variance(x, gamma, beta, eps):  # torch.var's default divides by n - 1
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = x.var(dim=(0, 2, 3), keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * per_channel(gamma) + per_channel(beta)


def over_the_batch_only(x, gamma, beta, eps):  # one mean per pixel and channel, not per channel
    mean = x.mean(dim=0, keepdim=True)
    var = x.var(dim=0, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * per_channel(gamma) + per_channel(beta)


def per_image(x, gamma, beta, eps):  # layer-norm-like: statistics of each image, not of the batch
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    var = x.var(dim=(1, 2, 3), unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * per_channel(gamma) + per_channel(beta)


def eps_outside_the_root(x, gamma, beta, eps):
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    std = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True).sqrt()
    return (x - mean) / (std + eps) * per_channel(gamma) + per_channel(beta)


def forgets_gamma_and_beta(x, gamma, beta, eps):
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


def calls_the_library(x, gamma, beta, eps):  # eval-mode module: fresh running stats (0, 1), not the batch's
    bn = torch.nn.BatchNorm2d(x.shape[1], eps=eps).double().eval()
    with torch.no_grad():
        bn.weight.copy_(gamma)
        bn.bias.copy_(beta)
        return bn(x)


def calls_pytorch_in_training_mode(x, gamma, beta, eps):  # the right numbers, not written by hand
    return torch.nn.functional.batch_norm(x, None, None, gamma, beta, training=True, eps=eps)


def test_a_right_answer_passes(capsys):
    check_batch_norm_train(batch_norm)
    assert "all 5 cases pass" in capsys.readouterr().out


MUTANTS = [
    (check_batch_norm_train, unbiased_variance, "case 1 of 5"),
    (check_batch_norm_train, over_the_batch_only, "case 1 of 5"),
    (check_batch_norm_train, per_image, "case 1 of 5"),
    (check_batch_norm_train, eps_outside_the_root, "case 1 of 5"),
    (check_batch_norm_train, forgets_gamma_and_beta, "case 1 of 5"),
    (check_batch_norm_train, calls_the_library, "uses the library (BatchNorm2d)"),
    (check_batch_norm_train, calls_pytorch_in_training_mode, "uses the library (PyTorch's batch_norm)"),
]


@pytest.mark.parametrize("check, wrong, case", MUTANTS, ids=lambda x: getattr(x, "__name__", str(x)))
def test_plausible_wrong_answers_fail_naming_the_case(check, wrong, case):
    with pytest.raises(ExerciseFailure) as err:
        check(wrong)
    assert case in str(err.value), f"{case!r} not in the feedback: {err.value}"

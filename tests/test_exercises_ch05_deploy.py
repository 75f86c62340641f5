"""Notebooks 5.4 and 5.5's self-checks (course_lib.exercises.ch05_deploy) pass right answers and catch
the usual wrong ones, naming the case."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_lib.compress import distillation_loss
from course_lib.exercises import ExerciseFailure
from course_lib.exercises.ch05_deploy import (
    check_distillation_loss,
    check_dynamic_batches,
    check_to_digit,
    reference_dynamic_batches,
)

# ------------------------------------------------------------------------- the distillation loss


def distill(student, teacher, labels, T, alpha):
    log_p_s = F.log_softmax(student / T, dim=-1)
    p_t = F.softmax(teacher / T, dim=-1)
    kl = (p_t * (p_t.log() - log_p_s)).sum(-1).mean()
    return alpha * T**2 * kl + (1 - alpha) * F.cross_entropy(student, labels)


def distill_with_kl_div(student, teacher, labels, T, alpha):  # the same, with PyTorch's KL
    kl = F.kl_div(
        F.log_softmax(student / T, -1), F.log_softmax(teacher / T, -1), log_target=True, reduction="batchmean"
    )
    return alpha * T * T * kl + (1 - alpha) * F.cross_entropy(student, labels)


def distill_without_t_squared(student, teacher, labels, T, alpha):
    log_p_s = F.log_softmax(student / T, dim=-1)
    p_t = F.softmax(teacher / T, dim=-1)
    return alpha * (p_t * (p_t.log() - log_p_s)).sum(-1).mean() + (1 - alpha) * F.cross_entropy(
        student, labels
    )


def distill_kl_div_mean(student, teacher, labels, T, alpha):  # 'mean' also divides by the classes
    p_t = F.softmax(teacher / T, dim=-1)
    kl = (p_t * (p_t.log() - F.log_softmax(student / T, -1))).mean()  # as F.kl_div(reduction="mean")
    return alpha * T * T * kl + (1 - alpha) * F.cross_entropy(student, labels)


def distill_reversed_kl(student, teacher, labels, T, alpha):  # KL(student || teacher)
    p_s = F.softmax(student / T, dim=-1)
    kl = (p_s * (p_s.log() - F.log_softmax(teacher / T, -1))).sum(-1).mean()
    return alpha * T * T * kl + (1 - alpha) * F.cross_entropy(student, labels)


def distill_swapped_weights(student, teacher, labels, T, alpha):
    return distill(student, teacher, labels, T, 1 - alpha)


def distill_cross_entropy_softened(student, teacher, labels, T, alpha):  # the hard term at temperature T
    soft = distill(student, teacher, labels, T, 1.0)
    return alpha * soft + (1 - alpha) * F.cross_entropy(student / T, labels)


def distill_library(student, teacher, labels, T, alpha):
    return distillation_loss(student, teacher, labels, temperature=T, alpha=alpha)


# ------------------------------------------------------------------------- a picture as the model's input


def to_digit(page):
    h, w = page.shape
    x = page.reshape(8, h // 8, 8, w // 8).mean(axis=(1, 3)) / 255
    return torch.tensor(1 - x if x.mean() > 0.5 else x, dtype=torch.float32)


def to_digit_never_inverted(page):
    h, w = page.shape
    return torch.tensor(page.reshape(8, h // 8, 8, w // 8).mean(axis=(1, 3)) / 255, dtype=torch.float32)


def to_digit_always_inverted(page):
    h, w = page.shape
    return torch.tensor(1 - page.reshape(8, h // 8, 8, w // 8).mean(axis=(1, 3)) / 255, dtype=torch.float32)


def to_digit_wrong_blocks(page):  # reshape without giving the block's rows and columns their own axes
    h, w = page.shape
    x = page.reshape(8, 8, h // 8, w // 8).mean(axis=(2, 3)) / 255
    return torch.tensor(1 - x if x.mean() > 0.5 else x, dtype=torch.float32)


def to_digit_strided(page):  # one pixel of each block instead of its mean
    h, w = page.shape
    x = page[:: h // 8, :: w // 8] / 255
    return torch.tensor(1 - x if x.mean() > 0.5 else x, dtype=torch.float32)


def to_digit_square_blocks(page):  # assumes a square page: blocks of H / 8 on both axes
    b = page.shape[0] // 8
    x = page[: 8 * b, : 8 * b].reshape(8, b, 8, b).mean(axis=(1, 3)) / 255
    return torch.tensor(1 - x if x.mean() > 0.5 else x, dtype=torch.float32)


# ------------------------------------------------------------------------- dynamic batching


def batches(arrivals, max_batch, max_wait):
    out, opened = [], None
    for i, t in enumerate(arrivals):
        if out and len(out[-1]) < max_batch and t - opened <= max_wait:
            out[-1].append(i)
        else:
            out.append([i])
            opened = t
    return out


def batches_strict_window(arrivals, max_batch, max_wait):  # < where <= is asked
    out, opened = [], None
    for i, t in enumerate(arrivals):
        if out and len(out[-1]) < max_batch and t - opened < max_wait:
            out[-1].append(i)
        else:
            out.append([i])
            opened = t
    return out


def batches_sliding_window(arrivals, max_batch, max_wait):  # waits from the previous request
    out = []
    for i, t in enumerate(arrivals):
        if out and len(out[-1]) < max_batch and t - arrivals[i - 1] <= max_wait:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def batches_no_size_limit(arrivals, max_batch, max_wait):
    return batches(arrivals, len(arrivals), max_wait)


def batches_one_too_many(arrivals, max_batch, max_wait):  # <= max_batch: a full batch takes one more
    return batches(arrivals, max_batch + 1, max_wait)


def batches_fixed_grid(arrivals, max_batch, max_wait):  # windows [0, w), [w, 2w), ... of the clock
    out, key = [], None
    for i, t in enumerate(arrivals):
        k = int(t // max_wait) if max_wait else t
        if out and k == key and len(out[-1]) < max_batch:
            out[-1].append(i)
        else:
            out.append([i])
            key = k
    return out


def batches_of_times(arrivals, max_batch, max_wait):  # the arrival times, not the indices
    return [[arrivals[i] for i in b] for b in batches(arrivals, max_batch, max_wait)]


# ------------------------------------------------------------------------- the tests


@pytest.mark.parametrize(
    "check, answer",
    [
        (check_distillation_loss, distill),
        (check_distillation_loss, distill_with_kl_div),
        (check_to_digit, to_digit),
        (check_dynamic_batches, batches),
        (check_dynamic_batches, reference_dynamic_batches),
    ],
)
def test_right_answers_pass(check, answer, capsys):
    check(answer)
    assert "✓" in capsys.readouterr().out


WRONG = [
    (check_distillation_loss, distill_without_t_squared, "T=2, alpha=0.5"),
    (check_distillation_loss, distill_kl_div_mean, "T=2, alpha=0.5"),
    (check_distillation_loss, distill_reversed_kl, "T=2, alpha=0.5"),
    (check_distillation_loss, distill_swapped_weights, "alpha=1"),
    (check_distillation_loss, distill_cross_entropy_softened, "T=2, alpha=0.5"),
    (check_to_digit, to_digit_never_inverted, "dark ink on white"),
    (check_to_digit, to_digit_always_inverted, "bright ink on black"),
    (check_to_digit, to_digit_wrong_blocks, "dark ink on white"),
    (check_to_digit, to_digit_strided, "dark ink on white"),
    (check_to_digit, to_digit_square_blocks, "16 x 24"),
    (check_dynamic_batches, batches_strict_window, "exactly max_wait"),
    (check_dynamic_batches, batches_sliding_window, "4 ms apart"),
    (check_dynamic_batches, batches_no_size_limit, "larger than max_batch"),
    (check_dynamic_batches, batches_one_too_many, "larger than max_batch"),
    (check_dynamic_batches, batches_fixed_grid, "4 ms apart"),
    (check_dynamic_batches, batches_of_times, "three quick requests"),
]
MUTANTS = WRONG + [(check_distillation_loss, distill_library, "uses the library")]


@pytest.mark.parametrize("check, wrong, case", WRONG)
def test_wrong_answers_fail_naming_the_case(check, wrong, case):
    with pytest.raises(ExerciseFailure, match=case):
        check(wrong)


def test_the_distillation_check_rejects_the_library_itself():
    with pytest.raises(ExerciseFailure, match="uses the library"):
        check_distillation_loss(distill_library)


def test_the_digit_reference_is_what_the_predictor_reads(tmp_path):
    """The tolerance of one grey level covers PIL's rounding, and no more: block means agree to it."""
    from PIL import Image

    from course_lib.deploy import read_images

    page = np.full((64, 64), 255, dtype=np.uint8)
    page[8:48, 24:40] = 0  # a dark bar on white, on whole blocks of 8 x 8 pixels: a "1"
    Image.fromarray(page).save(tmp_path / "one.png")
    got = to_digit(page)
    assert torch.allclose(got, read_images([tmp_path / "one.png"], 8)[0, 0], atol=1 / 255, rtol=0)
    assert float(got.max()) == 1.0 and float(got.min()) == 0.0  # pure ink and pure paper


@pytest.mark.parametrize("check", [check_distillation_loss, check_to_digit, check_dynamic_batches])
def test_unwritten_exercise_says_so(check):
    def blank(*args):
        raise NotImplementedError()

    with pytest.raises(ExerciseFailure, match="not written yet"):
        check(blank)

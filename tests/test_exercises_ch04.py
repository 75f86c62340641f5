"""Chapter 4's self-checks pass independent right answers and catch typical mistakes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from course_lib.exercises import ExerciseFailure
from course_lib.exercises.ch04 import (
    check_last_token_pool,
    check_lora_linear,
    check_macro_f1,
    check_mask_prompt,
)


def pool_any_padding(hidden, mask):
    t = torch.arange(mask.size(1))
    last = (t * mask).argmax(1)
    return hidden[torch.arange(hidden.size(0)), last]


def pool_right_padding_only(hidden, mask):
    return hidden[torch.arange(hidden.size(0)), mask.sum(1) - 1]


class Lora(nn.Module):
    def __init__(self, base, r, alpha, zero_b=True):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.lora_A = nn.Parameter(torch.randn(r, base.in_features) * 0.01)
        self.lora_B = nn.Parameter(
            torch.zeros(base.out_features, r) if zero_b else torch.ones(base.out_features, r)
        )
        self.scale = alpha / r

    def forward(self, x):
        return self.base(x) + self.scale * x @ self.lora_A.T @ self.lora_B.T


class LoraNoScale(Lora):
    def forward(self, x):
        return self.base(x) + x @ self.lora_A.T @ self.lora_B.T


def macro_f1(cm):
    cm = np.asarray(cm, dtype=float)
    tp = np.diag(cm)
    den = cm.sum(0) + cm.sum(1)
    return float(np.mean(np.where(den > 0, 2 * tp / np.where(den > 0, den, 1), 0.0)))


def macro_f1_skipping_empty(cm):
    cm = np.asarray(cm, dtype=float)
    tp = np.diag(cm)
    den = cm.sum(0) + cm.sum(1)
    return float(np.mean(2 * tp[den > 0] / den[den > 0]))


def test_right_answers_pass(capsys):
    check_last_token_pool(pool_any_padding)
    check_lora_linear(Lora)
    check_macro_f1(macro_f1)
    check_mask_prompt(lambda p, c, e: (p + c + [e], [-100] * len(p) + c + [e]))
    assert capsys.readouterr().out.count("✓") == 4


@pytest.mark.parametrize(
    "check,wrong,match",
    [
        (check_last_token_pool, pool_right_padding_only, "left padding"),
        (check_lora_linear, lambda base, r, alpha: Lora(base, r, alpha, zero_b=False), "start B at zero"),
        (check_lora_linear, LoraNoScale, "alpha / r"),
        (check_macro_f1, macro_f1_skipping_empty, "never seen nor predicted"),
        (check_mask_prompt, lambda p, c, e: (p + c + [e], [-100] * (len(p) + 1) + c[1:] + [e]), "case 1"),
    ],
)
def test_typical_mistakes_are_caught(check, wrong, match):
    with pytest.raises(ExerciseFailure, match=match):
        check(wrong)

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


# ----------------------------------------------------------------------------- post-training exercises

from course_lib.exercises.ch04 import (  # noqa: E402
    check_answer_logprobs,
    check_dpo_loss,
    check_sft_labels,
    check_to_chatml,
)


def chatml(messages, generation_prompt=True, trailing_newline=True):
    text = "".join(
        f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>" + ("\n" if trailing_newline else "")
        for m in messages
    )
    return text + ("<|im_start|>assistant\n" if generation_prompt else "")


def test_to_chatml_check():
    check_to_chatml(chatml)
    for wrong in (
        lambda m: chatml(m, generation_prompt=False),
        lambda m: chatml(m, trailing_newline=False),
        lambda m: chatml(m).replace("<|im_end|>", "</s>"),
    ):
        with pytest.raises(ExerciseFailure):
            check_to_chatml(wrong)


def answer_logprobs(logits, ids, mask, shift=True, normalise=True, drop_prompt=True):
    lp = torch.log_softmax(logits, -1) if normalise else logits
    if shift:
        tok = lp[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)
        m = mask[:, 1:]
    else:
        tok = lp.gather(-1, ids[..., None]).squeeze(-1)
        m = mask
    return (tok * m).sum(-1) if drop_prompt else tok.sum(-1)


def test_answer_logprobs_check():
    check_answer_logprobs(answer_logprobs)
    for kwargs in ({"shift": False}, {"normalise": False}, {"drop_prompt": False}):
        with pytest.raises(ExerciseFailure):
            check_answer_logprobs(lambda a, b, c, kw=kwargs: answer_logprobs(a, b, c, **kw))


def sft_labels(prompt, answer, end, shift=True, mask=True, end_token=True):
    ids = [*prompt, *answer] + ([end] if end_token else [])
    labels = ([-100] * len(prompt) if mask else list(prompt)) + ids[len(prompt) :]
    return (ids[:-1], labels[1:]) if shift else (ids, labels)


def test_sft_labels_check():
    check_sft_labels(sft_labels)
    for kwargs in ({"shift": False}, {"mask": False}, {"end_token": False}):
        with pytest.raises(ExerciseFailure):
            check_sft_labels(lambda p, a, e, kw=kwargs: sft_labels(p, a, e, **kw))


def dpo(pc, pr, rc, rr, beta, variant="right"):
    margin = (pc - rc) - (pr - rr)
    if variant == "no beta":
        return -torch.nn.functional.logsigmoid(margin).mean()
    if variant == "reference added":
        margin = (pc + rc) - (pr + rr)
    if variant == "naive log of sigmoid":
        return -torch.log(torch.sigmoid(beta * margin)).mean()
    if variant == "sum":
        return -torch.nn.functional.logsigmoid(beta * margin).sum()
    return -torch.nn.functional.logsigmoid(beta * margin).mean()


def test_dpo_loss_check():
    check_dpo_loss(dpo)
    for variant in ("no beta", "reference added", "naive log of sigmoid", "sum"):
        with pytest.raises(ExerciseFailure):
            check_dpo_loss(lambda *a, v=variant: dpo(*a, variant=v))

"""Chapter 4's self-checks pass independent right answers and catch typical mistakes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score
from torch import nn

from course_lib.chat_template import render_chat
from course_lib.exercises import ExerciseFailure
from course_lib.exercises.ch04 import (
    check_last_token_pool,
    check_lora_linear,
    check_macro_f1,
    check_mask_prompt,
)
from course_lib.heads import last_token_pool as library_last_token_pool
from course_lib.lm_data import prompt_completion_example
from course_lib.lora import LoRALinear
from course_lib.preference import dpo_loss as library_dpo_loss


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


def pool_first_token(hidden, mask):  # the first token, as BERT's [CLS]: not the last real one
    return hidden[:, 0]


def pool_last_column(hidden, mask):  # ignores the mask: a padding position under right padding
    return hidden[:, -1]


def pool_by_the_library(hidden, mask):
    return library_last_token_pool(hidden, mask)


class LoraFromTheLibrary(LoRALinear):
    pass


class LoraWithTrainableBase(Lora):  # forgets to freeze the pretrained weight
    def __init__(self, base, r, alpha):
        super().__init__(base, r, alpha)
        self.base.requires_grad_(True)


class LoraTransposedFactors(Lora):  # lora_A (in, r) and lora_B (r, out): PyTorch's weight layout not kept
    def __init__(self, base, r, alpha):
        super().__init__(base, r, alpha)
        self.lora_A = nn.Parameter(torch.randn(base.in_features, r) * 0.01)
        self.lora_B = nn.Parameter(torch.zeros(r, base.out_features))

    def forward(self, x):
        return self.base(x) + self.scale * x @ self.lora_A @ self.lora_B


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


def macro_f1_is_accuracy(cm):  # micro-averaged F1 of single-label data: the accuracy
    cm = np.asarray(cm, dtype=float)
    return float(np.trace(cm) / cm.sum())


def macro_f1_without_the_zero_guard(cm):  # 0/0 gives nan for a class never seen nor predicted
    cm = np.asarray(cm, dtype=float)
    with np.errstate(invalid="ignore"):
        return float(np.mean(2 * np.diag(cm) / (cm.sum(0) + cm.sum(1))))


def macro_f1_by_sklearn(cm):
    cm = np.asarray(cm)
    y_true = np.repeat(np.arange(len(cm)), cm.sum(1))
    y_pred = np.concatenate([np.repeat(np.arange(len(cm)), row) for row in cm])
    return f1_score(y_true, y_pred, labels=list(range(len(cm))), average="macro", zero_division=0)


def mask_prompt(p, c, e):
    return p + c + [e], [-100] * len(p) + c + [e]


def mask_prompt_without_eos(p, c, e):  # the model never learns to stop
    return p + c, [-100] * len(p) + c


def mask_prompt_masking_the_completion(p, c, e):  # the mask on the wrong part
    return p + c + [e], list(p) + [-100] * (len(c) + 1)


def mask_prompt_by_the_library(p, c, e):
    return prompt_completion_example(p, c, e)


def test_right_answers_pass(capsys):
    check_last_token_pool(pool_any_padding)
    check_lora_linear(Lora)
    check_macro_f1(macro_f1)
    check_mask_prompt(lambda p, c, e: (p + c + [e], [-100] * len(p) + c + [e]))
    assert capsys.readouterr().out.count("✓") == 4


TYPICAL_WRONG = [
    (check_last_token_pool, pool_right_padding_only, "left padding"),
    (check_lora_linear, lambda base, r, alpha: Lora(base, r, alpha, zero_b=False), "start B at zero"),
    (check_lora_linear, LoraNoScale, "alpha / r"),
    (check_macro_f1, macro_f1_skipping_empty, "never seen nor predicted"),
    (check_mask_prompt, lambda p, c, e: (p + c + [e], [-100] * (len(p) + 1) + c[1:] + [e]), "case 1"),
    (check_last_token_pool, pool_first_token, "case 1 of 5 (no padding)"),
    (check_last_token_pool, pool_last_column, "case 2 of 5 (right padding"),
    (check_last_token_pool, pool_by_the_library, "uses the library"),
    (check_lora_linear, LoraFromTheLibrary, "uses the library (course_lib.lora.LoRALinear)"),
    (check_lora_linear, LoraWithTrainableBase, "the base layer must be frozen"),
    (check_lora_linear, LoraTransposedFactors, "lora_A must be an nn.Parameter of shape"),
    (check_macro_f1, macro_f1_is_accuracy, "case 2 of 6 (binary)"),
    (check_macro_f1, macro_f1_without_the_zero_guard, "never seen nor predicted"),
    (check_macro_f1, macro_f1_by_sklearn, "uses the library"),
    (check_mask_prompt, mask_prompt_without_eos, "case 1 of 4"),
    (check_mask_prompt, mask_prompt_masking_the_completion, "case 1 of 4"),
    (check_mask_prompt, mask_prompt_by_the_library, "uses the library"),
]


@pytest.mark.parametrize("check,wrong,match", TYPICAL_WRONG)
def test_typical_mistakes_are_caught(check, wrong, match):
    with pytest.raises(ExerciseFailure) as err:
        check(wrong)
    assert match in str(err.value), f"{match!r} not in the feedback: {err.value}"


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


CHATML_WRONG = [
    (check_to_chatml, lambda m: chatml(m, generation_prompt=False), "case"),
    (check_to_chatml, lambda m: chatml(m, trailing_newline=False), "case"),
    (check_to_chatml, lambda m: chatml(m).replace("<|im_end|>", "</s>"), "case"),
    (check_to_chatml, lambda m: render_chat(m, system_prompt=None), "uses the library"),
]


def test_to_chatml_check():
    check_to_chatml(chatml)
    for check, wrong, case in CHATML_WRONG:
        with pytest.raises(ExerciseFailure, match=case):
            check(wrong)


def answer_logprobs(logits, ids, mask, shift=True, normalise=True, drop_prompt=True):
    lp = torch.log_softmax(logits, -1) if normalise else logits
    if shift:
        tok = lp[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)
        m = mask[:, 1:]
    else:
        tok = lp.gather(-1, ids[..., None]).squeeze(-1)
        m = mask
    return (tok * m).sum(-1) if drop_prompt else tok.sum(-1)


LOGPROBS_WRONG = [
    (check_answer_logprobs, lambda a, b, c, kw=kwargs: answer_logprobs(a, b, c, **kw), "case")
    for kwargs in ({"shift": False}, {"normalise": False}, {"drop_prompt": False})
]


def test_answer_logprobs_check():
    check_answer_logprobs(answer_logprobs)
    for check, wrong, case in LOGPROBS_WRONG:
        with pytest.raises(ExerciseFailure, match=case):
            check(wrong)


def sft_labels(prompt, answer, end, shift=True, mask=True, end_token=True):
    ids = [*prompt, *answer] + ([end] if end_token else [])
    labels = ([-100] * len(prompt) if mask else list(prompt)) + ids[len(prompt) :]
    return (ids[:-1], labels[1:]) if shift else (ids, labels)


SFT_LABELS_WRONG = [
    (check_sft_labels, lambda p, a, e, kw=kwargs: sft_labels(p, a, e, **kw), "case")
    for kwargs in ({"shift": False}, {"mask": False}, {"end_token": False})
]


def test_sft_labels_check():
    check_sft_labels(sft_labels)
    for check, wrong, case in SFT_LABELS_WRONG:
        with pytest.raises(ExerciseFailure, match=case):
            check(wrong)


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


DPO_WRONG = [
    (check_dpo_loss, lambda *a, v=variant: dpo(*a, variant=v), "case")
    for variant in ("no beta", "reference added", "naive log of sigmoid", "sum")
] + [
    (
        check_dpo_loss,
        lambda pc, pr, rc, rr, beta: library_dpo_loss(pc, pr, rc, rr, beta).loss,
        "uses the library",
    )
]


def test_dpo_loss_check():
    check_dpo_loss(dpo)
    for check, wrong, case in DPO_WRONG:
        with pytest.raises(ExerciseFailure, match=case):
            check(wrong)


# ------------------------------------------------------------------------- 4.2, 4.3 and 4.4: more exercises

from collections import Counter  # noqa: E402

from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: E402
from sklearn.metrics import confusion_matrix  # noqa: E402

from course_lib.datasets import stratified_split  # noqa: E402
from course_lib.exercises.ch04 import (  # noqa: E402
    check_char_ngrams,
    check_confusion_counts,
    check_masked_lm_loss,
    check_mean_pool,
    check_paired_bootstrap,
    check_rouge_l,
    check_stratified_split,
)
from course_lib.heads import mean_pool as library_mean_pool  # noqa: E402
from course_lib.metrics import bootstrap_interval, rouge_l, rouge_tokens  # noqa: E402


def mean_pool_mine(hidden, mask, variant="right"):
    m = mask.to(hidden.dtype)
    if variant == "ignores the mask":
        return hidden.mean(1)
    if variant == "divides by T":
        return (hidden * m[..., None]).sum(1) / hidden.size(1)
    if variant == "divides by the batch's tokens":
        return (hidden * m[..., None]).sum(1) / m.sum()
    return (hidden * m[..., None]).sum(1) / m.sum(1, keepdim=True)


MEAN_POOL_WRONG = [
    (check_mean_pool, lambda h, m, v=variant: mean_pool_mine(h, m, v), "case")
    for variant in ("ignores the mask", "divides by T", "divides by the batch's tokens")
] + [(check_mean_pool, lambda h, m: library_mean_pool(h, m), "uses the library")]


def test_mean_pool_check():
    check_mean_pool(mean_pool_mine)
    for check, wrong, case in MEAN_POOL_WRONG:
        with pytest.raises(ExerciseFailure, match=case):
            check(wrong)


def confusion_mine(y_true, y_pred, n_classes, variant="right"):
    n = max(max(y_true), max(y_pred)) + 1 if variant == "size from the labels" else n_classes
    cm = np.zeros((n, n), dtype=int)
    for t, p in zip(y_true, y_pred):
        if variant == "transposed":
            cm[p, t] += 1
        elif variant == "fancy-index +=":  # repeated pairs are counted once
            pass
        else:
            cm[t, p] += 1
    if variant == "fancy-index +=":
        cm[np.asarray(y_true), np.asarray(y_pred)] += 1
    return cm


CONFUSION_WRONG = [
    (check_confusion_counts, lambda t, p, n, v=variant: confusion_mine(t, p, n, v), "case")
    for variant in ("transposed", "size from the labels", "fancy-index +=")
] + [
    (
        check_confusion_counts,
        lambda t, p, n: confusion_matrix(t, p, labels=list(range(n))),
        "confusion_matrix from sklearn.metrics",
    )
]


def test_confusion_counts_check():
    check_confusion_counts(confusion_mine)
    for check, wrong, case in CONFUSION_WRONG:
        with pytest.raises(ExerciseFailure, match=case):
            check(wrong)


def split_mine(labels, fractions, seed, variant="right"):
    y = np.asarray(labels)
    rng = np.random.default_rng(seed if variant != "unseeded" else None)
    if variant == "not stratified":
        order = rng.permutation(len(y))
        cuts = np.round(np.cumsum([0, *fractions]) * len(y)).astype(int)
        return tuple(order[cuts[k] : cuts[k + 1]] for k in range(3))
    parts = [[], [], []]
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        if variant != "no shuffle":
            members = rng.permutation(members)
        cuts = np.round(np.cumsum([0, *fractions]) * len(members)).astype(int)
        if variant == "overlapping cuts":
            cuts[1:-1] -= 1
            bounds = [(cuts[k], cuts[k + 1] + 1) for k in range(3)]
        elif variant == "int() cuts, last one too":
            cuts = (np.cumsum([0, *fractions]) * len(members) * 0.999).astype(int)
            bounds = [(cuts[k], cuts[k + 1]) for k in range(3)]
        else:
            bounds = [(cuts[k], cuts[k + 1]) for k in range(3)]
        for k, (lo, hi) in enumerate(bounds):
            parts[k].append(members[lo:hi])
    return tuple(np.concatenate(p) for p in parts)


SPLIT_WRONG = [
    (check_stratified_split, lambda y, f, s, v=variant: split_mine(y, f, s, v), match)
    for variant, match in [
        ("not stratified", "not stratified"),
        ("no shuffle", "seeds 0 and 1"),
        ("unseeded", "same seed"),
        ("overlapping cuts", "overlap"),
        ("int() cuts, last one too", "exactly one part"),
    ]
] + [
    (check_stratified_split, lambda y, f, s: stratified_split(y, f, s), "uses the library"),
    (check_stratified_split, lambda y, f, s: None, "three index arrays"),
]


def test_stratified_split_check(capsys):
    check_stratified_split(split_mine)
    assert "all 5 cases pass" in capsys.readouterr().out
    for check, wrong, case in SPLIT_WRONG:
        with pytest.raises(ExerciseFailure, match=case):
            check(wrong)


def ngrams_mine(text, n_min, n_max, variant="right"):
    top = n_max if variant == "n_max excluded" else n_max + 1
    out = []
    for n in range(n_min, top):
        last = len(text) - n if variant == "off by one" else len(text) - n + 1
        out += [text[i : i + n] for i in range(last)]
    return sorted(set(out)) if variant == "no repeats" else out


NGRAMS_WRONG = [
    (check_char_ngrams, lambda t, a, b, v=variant: ngrams_mine(t, a, b, v), "case")
    for variant in ("n_max excluded", "off by one", "no repeats")
] + [
    (
        check_char_ngrams,
        lambda t, a, b: TfidfVectorizer(analyzer="char", ngram_range=(a, b)).build_analyzer()(t),
        "TfidfVectorizer from sklearn",
    )
]


def test_char_ngrams_check():
    check_char_ngrams(ngrams_mine)
    for check, wrong, case in NGRAMS_WRONG:
        with pytest.raises(ExerciseFailure, match=case):
            check(wrong)


def bootstrap_mine(a, b, confidence, n_resamples, seed, variant="right"):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    rng = np.random.default_rng(seed)
    n = len(a)
    if variant == "unpaired":
        means = a[rng.integers(0, n, (n_resamples, n))].mean(1) - b[
            rng.integers(0, n, (n_resamples, n))
        ].mean(1)
    else:
        means = (a - b)[rng.integers(0, n, (n_resamples, n))].mean(1)
    tail = 1 - confidence if variant == "both tails at 1 - confidence" else (1 - confidence) / 2
    if variant == "normal approximation":
        d = a - b
        se = d.std(ddof=1) / np.sqrt(n)
        return d.mean() - 1.96 * se, d.mean() + 1.96 * se
    lo, hi = np.quantile(means, [tail, 1 - tail])
    return float(lo), float(hi)


BOOTSTRAP_WRONG = [
    (check_paired_bootstrap, lambda *args, v=variant: bootstrap_mine(*args, variant=v), "case")
    for variant in ("unpaired", "both tails at 1 - confidence", "normal approximation")
] + [
    (
        check_paired_bootstrap,
        lambda a, b, c, n, s: bootstrap_interval(np.subtract(a, b), c, n_resamples=n, seed=s),
        "uses the library",
    )
]


def test_paired_bootstrap_check():
    check_paired_bootstrap(bootstrap_mine)
    for check, wrong, case in BOOTSTRAP_WRONG:
        with pytest.raises(ExerciseFailure, match=case):
            check(wrong)


def lcs(x, y):
    table = [[0] * (len(y) + 1) for _ in range(len(x) + 1)]
    for i, u in enumerate(x):
        for j, w in enumerate(y):
            table[i + 1][j + 1] = table[i][j] + 1 if u == w else max(table[i][j + 1], table[i + 1][j])
    return table[-1][-1]


def longest_common_run(x, y):
    best = 0
    for i in range(len(x)):
        for j in range(len(y)):
            k = 0
            while i + k < len(x) and j + k < len(y) and x[i + k] == y[j + k]:
                k += 1
            best = max(best, k)
    return best


def rouge_mine(candidate, reference, variant="right"):
    c, r = rouge_tokens(candidate), rouge_tokens(reference)
    if variant == "bag of words":
        common = sum((Counter(c) & Counter(r)).values())
    elif variant == "contiguous run":
        common = longest_common_run(c, r)
    else:
        common = lcs(c, r)
    if variant == "no zero guard":
        p, rec = common / len(c), common / len(r)
        return 2 * p * rec / (p + rec)
    if common == 0:
        return 0.0
    p, rec = common / len(c), common / len(r)
    return (p + rec) / 2 if variant == "arithmetic mean" else 2 * p * rec / (p + rec)


ROUGE_WRONG = [
    (check_rouge_l, lambda c, r, v=variant: rouge_mine(c, r, v), "case")
    for variant in ("bag of words", "contiguous run", "arithmetic mean", "no zero guard")
] + [(check_rouge_l, lambda c, r: rouge_l(c, r), "uses the library")]


def test_rouge_l_check():
    check_rouge_l(rouge_mine)
    for check, wrong, case in ROUGE_WRONG:
        with pytest.raises(ExerciseFailure, match=case):
            check(wrong)


def masked_loss_mine(logits, labels, variant="right"):
    keep = labels != -100
    logp = torch.log_softmax(logits, -1) if variant != "no log_softmax" else logits
    picked = logp.gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)  # (B, T)
    if variant == "mask ignored":
        return -picked.mean()
    if variant == "divides by every position":
        return -(picked * keep).sum() / keep.numel()
    if variant == "mean of row means":
        return (-(picked * keep).sum(1) / keep.sum(1).clamp(min=1)).mean()
    return -(picked * keep).sum() / keep.sum()


MASKED_LOSS_WRONG = [
    (check_masked_lm_loss, lambda lg, lb, v=variant: masked_loss_mine(lg, lb, v), "case")
    for variant in ("no log_softmax", "mask ignored", "divides by every position", "mean of row means")
] + [
    (
        check_masked_lm_loss,
        lambda lg, lb: torch.nn.functional.cross_entropy(lg.flatten(0, 1), lb.flatten(), ignore_index=-100),
        "cross_entropy",
    )
]


def test_masked_lm_loss_check():
    check_masked_lm_loss(masked_loss_mine)
    for check, wrong, case in MASKED_LOSS_WRONG:
        with pytest.raises(ExerciseFailure, match=case):
            check(wrong)


MUTANTS = (
    TYPICAL_WRONG
    + CHATML_WRONG
    + LOGPROBS_WRONG
    + SFT_LABELS_WRONG
    + DPO_WRONG
    + MEAN_POOL_WRONG
    + CONFUSION_WRONG
    + SPLIT_WRONG
    + NGRAMS_WRONG
    + BOOTSTRAP_WRONG
    + ROUGE_WRONG
    + MASKED_LOSS_WRONG
)

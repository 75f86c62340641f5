"""Chapter 5's self-checks pass right answers and catch the usual wrong ones, naming the case."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from course_lib.exercises import ExerciseFailure
from course_lib.exercises.ch05 import check_magnitude_mask, check_quantize_int8, check_recall_at_k

# ------------------------------------------------------------------------- answers a learner may write


def recall(query_embs, doc_embs, true_idx, k):
    scores = F.normalize(query_embs, dim=-1) @ F.normalize(doc_embs, dim=-1).T
    top = scores.topk(k, dim=-1).indices  # (nq, k)
    return (top == true_idx[:, None]).any(dim=-1).float().mean().item()


def recall_by_dot_product(query_embs, doc_embs, true_idx, k):  # long documents win
    top = (query_embs @ doc_embs.T).topk(k, dim=-1).indices
    return (top == true_idx[:, None]).any(dim=-1).float().mean().item()


def recall_of_the_first_hit_only(query_embs, doc_embs, true_idx, k):  # top-1, whatever k is
    return recall(query_embs, doc_embs, true_idx, 1)


def quantize(w):
    scale = (w.abs().amax(dim=1) / 127).clamp(min=torch.finfo(torch.float32).eps)
    return torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8), scale


def quantize_per_tensor(w):  # one scale for the whole matrix
    scale = (w.abs().max() / 127).expand(w.shape[0]).clone()
    return torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8), scale


def quantize_truncating(w):  # int8 conversion without rounding
    scale = (w.abs().amax(dim=1) / 127).clamp(min=torch.finfo(torch.float32).eps)
    return (w / scale[:, None]).to(torch.int8), scale


def quantize_dividing_by_zero(w):  # a row of zeros gives 0 / 0 = nan
    scale = w.abs().amax(dim=1) / 127
    return torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8), scale


def mask(w, sparsity):
    k = round(sparsity * w.numel())
    keep = torch.ones(w.numel(), dtype=torch.bool)
    if k:
        keep[w.abs().flatten().topk(k, largest=False).indices] = False
    return keep.view_as(w)


def mask_by_value(w, sparsity):  # prunes large negative weights first
    k = round(sparsity * w.numel())
    keep = torch.ones(w.numel(), dtype=torch.bool)
    if k:
        keep[w.flatten().topk(k, largest=False).indices] = False
    return keep.view_as(w)


def mask_inverted(w, sparsity):  # True where pruned
    return ~mask(w, sparsity)


def mask_per_row(w, sparsity):  # the same share from each row, not over the whole tensor
    k = round(sparsity * w.shape[1])
    keep = torch.ones_like(w, dtype=torch.bool)
    if k:
        keep.scatter_(1, w.abs().topk(k, dim=1, largest=False).indices, False)
    return keep


# ------------------------------------------------------------------------------------------ the tests


@pytest.mark.parametrize(
    "check, right",
    [(check_recall_at_k, recall), (check_quantize_int8, quantize), (check_magnitude_mask, mask)],
)
def test_right_answers_pass(check, right, capsys):
    check(right)
    assert "cases pass" in capsys.readouterr().out


@pytest.mark.parametrize(
    "check, wrong, case",
    [
        (check_recall_at_k, recall_by_dot_product, "5 queries, 20 documents"),
        (check_recall_at_k, recall_of_the_first_hit_only, "k=3"),
        (check_quantize_int8, quantize_per_tensor, "a 4 x 8 weight"),
        (check_quantize_int8, quantize_truncating, "a 4 x 8 weight"),
        (check_quantize_int8, quantize_dividing_by_zero, "a row of zeros"),
        (check_magnitude_mask, mask_by_value, "half of a 4 x 4 weight"),
        (check_magnitude_mask, mask_inverted, "half of a 4 x 4 weight"),
        (check_magnitude_mask, mask_per_row, "half of a 4 x 4 weight"),
    ],
)
def test_usual_mistakes_fail_and_name_the_case(check, wrong, case):
    with pytest.raises(ExerciseFailure, match=case):
        check(wrong)


@pytest.mark.parametrize("check", [check_recall_at_k, check_quantize_int8, check_magnitude_mask])
def test_an_unwritten_exercise_says_so(check):
    def blank(*args):
        raise NotImplementedError()

    with pytest.raises(ExerciseFailure, match="not written yet"):
        check(blank)

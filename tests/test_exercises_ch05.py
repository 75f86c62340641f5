"""Chapter 5's self-checks pass right answers and catch the usual wrong ones, naming the case."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from course_lib.exercises import ExerciseFailure
from course_lib.exercises.ch05 import (
    bbc_split_with_copies,
    check_leaked_share,
    check_magnitude_mask,
    check_nucleus_mask,
    check_pad_batch,
    check_quantize_int8,
    check_recall_at_k,
    reference_nucleus_mask,
)
from course_lib.gpt import sample_next_token

# ------------------------------------------------------------------------- answers a learner may write


def nucleus(probs, p):
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    keep = (sorted_probs.cumsum(-1) - sorted_probs) < p
    return torch.zeros_like(keep).scatter(-1, order, keep)


def nucleus_stopping_before_p(probs, p):  # drops the token that takes the total past p
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    keep = sorted_probs.cumsum(-1) < p
    return torch.zeros_like(keep).scatter(-1, order, keep)


def nucleus_unsorted(probs, p):  # running total in vocabulary order
    return (probs.cumsum(-1) - probs) < p


def nucleus_in_sorted_order(probs, p):  # forgets to put the mask back in vocabulary order
    sorted_probs = probs.sort(dim=-1, descending=True).values
    return (sorted_probs.cumsum(-1) - sorted_probs) < p


def nucleus_by_threshold(probs, p):  # keeps tokens whose own probability is at least 1 - p
    return probs >= 1 - p


def pad(id_lists, pad_id):
    T = max(len(x) for x in id_lists)
    ids = torch.full((len(id_lists), T), pad_id, dtype=torch.long)
    mask = torch.zeros(len(id_lists), T, dtype=torch.long)
    for b, x in enumerate(id_lists):
        ids[b, : len(x)] = torch.tensor(x)
        mask[b, : len(x)] = 1
    return ids, mask


def pad_left(id_lists, pad_id):  # padding first
    T = max(len(x) for x in id_lists)
    ids, mask = pad(id_lists, pad_id)
    for b, x in enumerate(id_lists):
        ids[b] = torch.cat([torch.full((T - len(x),), pad_id), torch.tensor(x)])
        mask[b] = torch.cat([torch.zeros(T - len(x)), torch.ones(len(x))]).long()
    return ids, mask


def pad_with_zeros(id_lists, pad_id):  # ignores pad_id
    return pad(id_lists, 0)


def pad_mask_inverted(id_lists, pad_id):  # 1 on padding
    ids, mask = pad(id_lists, pad_id)
    return ids, 1 - mask


def pad_to_the_first(id_lists, pad_id):  # as long as the first text, not the longest
    return pad([x[: len(id_lists[0])] for x in id_lists], pad_id)


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
    [
        (check_nucleus_mask, nucleus),
        (check_recall_at_k, recall),
        (check_quantize_int8, quantize),
        (check_magnitude_mask, mask),
        (check_pad_batch, pad),
    ],
)
def test_right_answers_pass(check, right, capsys):
    check(right)
    assert "cases pass" in capsys.readouterr().out


@pytest.mark.parametrize(
    "check, wrong, case",
    [
        (check_nucleus_mask, nucleus_stopping_before_p, "keeps three"),
        (check_nucleus_mask, nucleus_unsorted, "shuffled"),
        (check_nucleus_mask, nucleus_in_sorted_order, "shuffled"),
        (check_nucleus_mask, nucleus_by_threshold, "three rows of 50"),
        (check_pad_batch, pad_left, "3 and 5 tokens"),
        (check_pad_batch, pad_with_zeros, "not 0"),
        (check_pad_batch, pad_mask_inverted, "3 and 5 tokens"),
        (check_pad_batch, pad_to_the_first, "3 and 5 tokens"),
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


@pytest.mark.parametrize(
    "check",
    [
        check_nucleus_mask,
        check_leaked_share,
        check_recall_at_k,
        check_quantize_int8,
        check_magnitude_mask,
        check_pad_batch,
    ],
)
def test_an_unwritten_exercise_says_so(check):
    def blank(*args):
        raise NotImplementedError()

    with pytest.raises(ExerciseFailure, match="not written yet"):
        check(blank)


def test_the_nucleus_reference_is_the_support_of_gpt_top_p_sampling():
    g = torch.Generator().manual_seed(0)
    logits = 1.5 * torch.randn(4, 30, generator=g)  # (B, V)
    for p in (0.5, 0.8, 0.95):
        keep = reference_nucleus_mask(torch.softmax(logits, -1), p)  # (B, V)
        draws = torch.cat([sample_next_token(logits, 1.0, top_p=p, generator=g) for _ in range(3000)], 1)
        drawn = torch.zeros_like(keep).scatter(1, draws, True)  # (B, V) every token drawn at least once
        assert torch.equal(drawn, keep), p  # nothing outside the nucleus, everything inside it


def test_leaked_share_takes_the_measured_share_and_names_each_mistake(capsys):
    train, test = bbc_split_with_copies()
    seen = set(train)
    n = sum(b in seen for b in test)
    assert (n, len(test)) == (19, 223)  # the figure issue 18 quotes for the split with copies
    check_leaked_share(lambda: n / len(test))
    assert "0.0852" in capsys.readouterr().out
    wrong = {
        float(n): "a count, not a share",
        0.0: "de-duplicated split",
        100 * n / len(test): "a percentage",
        n / (len(train) + len(test)): "training and test articles together",
        sum(b in set(test) for b in train) / len(train): "training bodies found in test",
        0.25: "another value",
    }
    for value, case in wrong.items():
        with pytest.raises(ExerciseFailure, match=case):
            check_leaked_share(lambda v=value: v)
    with pytest.raises(ExerciseFailure, match="must return a number"):
        check_leaked_share(lambda: None)

"""Chapter 5's self-checks pass right answers and catch the usual wrong ones, naming the case."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_lib.compress import quantize_tensor_int8
from course_lib.exercises import ExerciseFailure
from course_lib.exercises.ch05 import (
    _reference_macro_f1,
    _reference_mrr,
    bbc_split_with_copies,
    check_ece,
    check_leaked_share,
    check_macro_f1,
    check_magnitude_mask,
    check_mrr,
    check_nucleus_mask,
    check_pad_batch,
    check_quantize_int8,
    check_recall_at_k,
    check_repetition_penalty,
    check_sentence_embedding,
    check_top_k_logits,
    reference_ece,
    reference_nucleus_mask,
    reference_sentence_embedding,
    reference_top_k_logits,
)
from course_lib.gpt import sample_next_token
from course_lib.heads import mean_pool
from course_lib.lm_data import pad_collate
from course_lib.semantic_search import mean_reciprocal_rank, ranks_from_scores
from course_lib.semantic_search import recall_at_k as library_recall_at_k

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


def pad_by_the_library(id_lists, pad_id):
    batch = pad_collate([(ids, 0) for ids in id_lists], pad_id)
    return batch["input_ids"], batch["attention_mask"]


def recall_as_a_count(query_embs, doc_embs, true_idx, k):  # the number of hits, not their share
    scores = F.normalize(query_embs, dim=-1) @ F.normalize(doc_embs, dim=-1).T
    return float((scores.topk(k, dim=-1).indices == true_idx[:, None]).any(dim=-1).sum())


def recall_by_the_library(query_embs, doc_embs, true_idx, k):
    return library_recall_at_k(query_embs, doc_embs, true_idx, ks=(k,))[k]


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


WRONG = [
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
    (check_recall_at_k, recall_as_a_count, "case 1 of 5"),
    (check_recall_at_k, recall_by_the_library, "uses the library"),
    (check_quantize_int8, quantize_per_tensor, "a 4 x 8 weight"),
    (check_quantize_int8, quantize_truncating, "a 4 x 8 weight"),
    (check_quantize_int8, quantize_dividing_by_zero, "a row of zeros"),
    (check_magnitude_mask, mask_by_value, "half of a 4 x 4 weight"),
    (check_magnitude_mask, mask_inverted, "half of a 4 x 4 weight"),
    (check_magnitude_mask, mask_per_row, "half of a 4 x 4 weight"),
    (check_quantize_int8, lambda w: quantize_tensor_int8(w), "uses the library"),
    (check_pad_batch, pad_by_the_library, "uses the library"),
]


@pytest.mark.parametrize("check, wrong, case", WRONG)
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


@cache
def _leak_counts() -> tuple[int, int, int, int]:
    """(test bodies also in training, test articles, training articles, training bodies also in test)."""
    train, test = bbc_split_with_copies()
    seen, tested = set(train), set(test)
    return sum(b in seen for b in test), len(test), len(train), sum(b in tested for b in train)


def leaked_count():  # a count, not a share
    return float(_leak_counts()[0])


def leaked_none():  # the de-duplicated split
    return 0.0


def leaked_percentage():
    n, n_test, _, _ = _leak_counts()
    return 100 * n / n_test


def leaked_over_both_splits():
    n, n_test, n_train, _ = _leak_counts()
    return n / (n_train + n_test)


def leaked_the_other_way():  # training bodies found in test
    _, _, n_train, back = _leak_counts()
    return back / n_train


LEAKED_WRONG = [
    (check_leaked_share, leaked_count, "a count, not a share"),
    (check_leaked_share, leaked_none, "de-duplicated split"),
    (check_leaked_share, leaked_percentage, "a percentage"),
    (check_leaked_share, leaked_over_both_splits, "training and test articles together"),
    (check_leaked_share, leaked_the_other_way, "training bodies found in test"),
    (check_leaked_share, lambda: 0.25, "another value"),
    (check_leaked_share, lambda: None, "must return a number"),
]


def test_leaked_share_takes_the_measured_share_and_names_each_mistake(capsys):
    n, n_test, _, _ = _leak_counts()
    assert (n, n_test) == (19, 223)  # the figure issue 18 quotes for the split with copies
    check_leaked_share(lambda: n / n_test)
    assert "0.0852" in capsys.readouterr().out
    for check, wrong, case in LEAKED_WRONG:
        with pytest.raises(ExerciseFailure, match=case):
            check(wrong)


# ------------------------------------------------------------- the exercises added for issue 21 (e6)


def penalty(logits, previous_ids, penalty):
    seen = torch.zeros_like(logits, dtype=torch.bool).scatter(1, previous_ids, True)
    return torch.where(seen, torch.where(logits > 0, logits / penalty, logits * penalty), logits)


def penalty_dividing_all(logits, previous_ids, penalty):  # a negative logit divided goes *up*
    seen = torch.zeros_like(logits, dtype=torch.bool).scatter(1, previous_ids, True)
    return torch.where(seen, logits / penalty, logits)


def penalty_per_occurrence(logits, previous_ids, penalty):  # a token seen 3 times penalised 3 times
    out = logits.clone()
    for b in range(len(previous_ids)):
        for t in previous_ids[b].tolist():
            out[b, t] = out[b, t] / penalty if out[b, t] > 0 else out[b, t] * penalty
    return out


def penalty_pooled_over_rows(logits, previous_ids, penalty):  # one history for the whole batch
    seen = torch.zeros(logits.shape[-1], dtype=torch.bool)
    seen[previous_ids.flatten()] = True
    return torch.where(seen, torch.where(logits > 0, logits / penalty, logits * penalty), logits)


def penalty_subtracting(logits, previous_ids, penalty):  # a penalty subtracted, not a scale
    seen = torch.zeros_like(logits, dtype=torch.bool).scatter(1, previous_ids, True)
    return torch.where(seen, logits - penalty, logits)


def penalty_by_transformers(logits, previous_ids, penalty):  # the library, not the learner's code
    from transformers import RepetitionPenaltyLogitsProcessor

    return RepetitionPenaltyLogitsProcessor(penalty)(previous_ids, logits)


def penalty_by_course_lib(logits, previous_ids, penalty):  # course_lib's own, not the learner's code
    from course_lib.gpt import penalize_repetition

    return penalize_repetition(logits, previous_ids, penalty)


def top_k(logits, k):
    kth = logits.topk(min(k, logits.shape[-1]), dim=-1).values[:, -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_k_one_too_many(logits, k):  # the (k+1)-th logit is the threshold
    kth = logits.topk(min(k + 1, logits.shape[-1]), dim=-1).values[:, -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_k_zeroed(logits, k):  # 0 instead of -inf: a softmax still gives those tokens probability
    kth = logits.topk(min(k, logits.shape[-1]), dim=-1).values[:, -1:]
    return logits.masked_fill(logits < kth, 0.0)


def top_k_over_the_batch(logits, k):  # one threshold for every row
    kth = logits.flatten().topk(min(k, logits.numel())).values[-1]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_k_without_clamp(logits, k):  # torch.topk raises for k > V
    kth = logits.topk(k, dim=-1).values[:, -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_k_scattered(logits, k):  # exactly k tokens: a tie at the k-th drops one of them
    idx = logits.topk(min(k, logits.shape[-1]), dim=-1).indices
    return torch.full_like(logits, float("-inf")).scatter(1, idx, logits.gather(1, idx))


def top_k_by_library(logits, k):  # sample_next_token's rule, called instead of written
    return sample_next_token(logits, 1.0, top_k=k)


def macro_f1(y_true, y_pred, n_classes):
    f1s = []
    for c in range(n_classes):
        tp = np.sum((y_true == c) & (y_pred == c))
        fp = np.sum((y_true != c) & (y_pred == c))
        fn = np.sum((y_true == c) & (y_pred != c))
        f1s.append(2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else 0.0)
    return float(np.mean(f1s))


def macro_f1_is_accuracy(y_true, y_pred, n_classes):  # micro-F1 = accuracy
    return float(np.mean(y_true == y_pred))


def macro_f1_weighted(y_true, y_pred, n_classes):  # weighted by support
    f1s, support = [], []
    for c in range(n_classes):
        tp = np.sum((y_true == c) & (y_pred == c))
        den = 2 * tp + np.sum((y_true != c) & (y_pred == c)) + np.sum((y_true == c) & (y_pred != c))
        f1s.append(2 * tp / den if den else 0.0)
        support.append(np.sum(y_true == c))
    return float(np.average(f1s, weights=support))


def macro_f1_of_mean_precision_and_recall(y_true, y_pred, n_classes):  # F1 of the averages
    ps, rs = [], []
    for c in range(n_classes):
        tp = np.sum((y_true == c) & (y_pred == c))
        ps.append(tp / max(np.sum(y_pred == c), 1))
        rs.append(tp / max(np.sum(y_true == c), 1))
    p, r = np.mean(ps), np.mean(rs)
    return float(2 * p * r / (p + r)) if p + r else 0.0


def macro_f1_over_seen_classes(y_true, y_pred, n_classes):  # skips a class absent from both
    classes = np.union1d(y_true, y_pred)
    return macro_f1(y_true, y_pred, n_classes) * n_classes / len(classes)


def macro_f1_by_sklearn(y_true, y_pred, n_classes):
    from sklearn.metrics import f1_score

    return f1_score(y_true, y_pred, labels=list(range(n_classes)), average="macro", zero_division=0)


def ece(confidence, correct, n_bins):
    conf, hit = np.asarray(confidence, float), np.asarray(correct, float)
    total = 0.0
    for m in range(n_bins):
        lo, hi = m / n_bins, (m + 1) / n_bins
        inside = (conf > lo) & (conf <= hi) if m else (conf >= lo) & (conf <= hi)
        if inside.any():
            total += inside.sum() / len(conf) * abs(hit[inside].mean() - conf[inside].mean())
    return total


def ece_unweighted(confidence, correct, n_bins):  # every non-empty bin counts the same
    conf, hit = np.asarray(confidence, float), np.asarray(correct, float)
    gaps = []
    for m in range(n_bins):
        lo, hi = m / n_bins, (m + 1) / n_bins
        inside = (conf > lo) & (conf <= hi) if m else (conf >= lo) & (conf <= hi)
        if inside.any():
            gaps.append(abs(hit[inside].mean() - conf[inside].mean()))
    return float(np.mean(gaps))


def ece_bin_middles(confidence, correct, n_bins):  # the bin's centre instead of its mean confidence
    conf, hit = np.asarray(confidence, float), np.asarray(correct, float)
    total = 0.0
    for m in range(n_bins):
        lo, hi = m / n_bins, (m + 1) / n_bins
        inside = (conf > lo) & (conf <= hi) if m else (conf >= lo) & (conf <= hi)
        if inside.any():
            total += inside.mean() * abs(hit[inside].mean() - (lo + hi) / 2)
    return total


def ece_lower_edge_inclusive(confidence, correct, n_bins):  # [lo, hi) bins, 1.0 in the last
    conf, hit = np.asarray(confidence, float), np.asarray(correct, float)
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for m in range(n_bins):
        inside = bins == m
        if inside.any():
            total += inside.mean() * abs(hit[inside].mean() - conf[inside].mean())
    return total


def ece_signed(confidence, correct, n_bins):  # over- and underconfidence cancel
    conf, hit = np.asarray(confidence, float), np.asarray(correct, float)
    total = 0.0
    for m in range(n_bins):
        lo, hi = m / n_bins, (m + 1) / n_bins
        inside = (conf > lo) & (conf <= hi) if m else (conf >= lo) & (conf <= hi)
        if inside.any():
            total += inside.mean() * (conf[inside].mean() - hit[inside].mean())
    return abs(total)


def embed(hidden, attention_mask):
    m = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return F.normalize((hidden * m).sum(1) / m.sum(1), dim=-1)


def embed_with_padding(hidden, attention_mask):  # the mean over all T positions
    return F.normalize(hidden.mean(1), dim=-1)


def embed_over_the_batch(hidden, attention_mask):  # sums over dim 0, the texts, not the tokens
    m = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return F.normalize((hidden * m).sum(0) / m.sum(0).clamp(min=1), dim=-1)


def embed_not_normalised(hidden, attention_mask):  # forgets the final L2 normalisation
    m = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1)


def embed_normalised_before_pooling(hidden, attention_mask):  # unit token vectors, then mean
    m = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (F.normalize(hidden, dim=-1) * m).sum(1) / m.sum(1)


def embed_by_library(hidden, attention_mask):
    return F.normalize(mean_pool(hidden, attention_mask), dim=-1)


def mrr(scores, true_idx):
    true = scores.gather(1, true_idx[:, None])
    ranks = 1 + (scores > true).sum(1)
    return (1.0 / ranks.double()).mean().item()


def mrr_ties_against(scores, true_idx):  # a tie counts against the right document
    true = scores.gather(1, true_idx[:, None])
    ranks = (scores >= true).sum(1)
    return (1.0 / ranks.double()).mean().item()


def mrr_ascending(scores, true_idx):  # lower score ranked first
    true = scores.gather(1, true_idx[:, None])
    ranks = 1 + (scores < true).sum(1)
    return (1.0 / ranks.double()).mean().item()


def mrr_of_mean_rank(scores, true_idx):  # 1 / mean rank, not mean of 1 / rank
    true = scores.gather(1, true_idx[:, None])
    return 1.0 / (1 + (scores > true).sum(1)).double().mean().item()


def mrr_by_argsort(scores, true_idx):  # position in a sort: ties broken by index
    order = scores.argsort(dim=1, descending=True, stable=True)
    ranks = (order == true_idx[:, None]).float().argmax(1) + 1
    return (1.0 / ranks.double()).mean().item()


def mrr_by_library(scores, true_idx):
    return (1.0 / ranks_from_scores(scores, true_idx).double()).mean().item()


NEW_RIGHT = [
    (check_repetition_penalty, penalty),
    (check_top_k_logits, top_k),
    (check_macro_f1, macro_f1),
    (check_ece, ece),
    (check_sentence_embedding, embed),
    (check_mrr, mrr),
]

NEW_WRONG = [
    (check_repetition_penalty, penalty_dividing_all, "negative logit"),
    (check_repetition_penalty, penalty_per_occurrence, "seen three times"),
    (check_repetition_penalty, penalty_pooled_over_rows, "two rows"),
    (check_repetition_penalty, penalty_subtracting, "penalty 2"),
    (check_repetition_penalty, penalty_by_transformers, "from transformers"),
    (check_repetition_penalty, penalty_by_course_lib, "uses the library"),
    (check_top_k_logits, top_k_one_too_many, "one row, k = 2"),
    (check_top_k_logits, top_k_zeroed, "one row, k = 2"),
    (check_top_k_logits, top_k_over_the_batch, "two rows"),
    (check_top_k_logits, top_k_without_clamp, "larger than the vocabulary"),
    (check_top_k_logits, top_k_scattered, "a tie"),
    (check_top_k_logits, top_k_by_library, "uses the library"),
    (check_macro_f1, macro_f1_is_accuracy, "rare class"),
    (check_macro_f1, macro_f1_weighted, "rare class"),
    (check_macro_f1, macro_f1_of_mean_precision_and_recall, "precision and recall differ"),
    (check_macro_f1, macro_f1_over_seen_classes, "neither in y_true nor in y_pred"),
    (check_macro_f1, macro_f1_by_sklearn, "from sklearn"),
    (check_ece, ece_unweighted, "different sizes"),
    (check_ece, ece_bin_middles, "two bins"),
    (check_ece, ece_lower_edge_inclusive, "bin edges"),
    (check_ece, ece_signed, "two bins"),
    (check_sentence_embedding, embed_with_padding, "6, 3 and 1 tokens"),
    (check_sentence_embedding, embed_over_the_batch, "no padding"),
    (check_sentence_embedding, embed_not_normalised, "no padding"),
    (check_sentence_embedding, embed_normalised_before_pooling, "no padding"),
    (check_sentence_embedding, embed_by_library, "uses the library"),
    (check_mrr, mrr_ties_against, "a tie"),
    (check_mrr, mrr_ascending, "every right document first"),
    (check_mrr, mrr_of_mean_rank, "ranks 1, 2 and 3"),
    (check_mrr, mrr_by_argsort, "a tie"),
    (check_mrr, mrr_by_library, "uses the library"),
]


@pytest.mark.parametrize("check, right", NEW_RIGHT)
def test_new_right_answers_pass(check, right, capsys):
    check(right)
    assert "cases pass" in capsys.readouterr().out


@pytest.mark.parametrize("check, wrong, case", NEW_WRONG)
def test_new_mistakes_fail_and_name_the_case(check, wrong, case):
    with pytest.raises(ExerciseFailure, match=case):
        check(wrong)


@pytest.mark.parametrize("check", [c for c, _ in NEW_RIGHT])
def test_a_new_unwritten_exercise_says_so(check):
    def blank(*args):
        raise NotImplementedError()

    with pytest.raises(ExerciseFailure, match="not written yet"):
        check(blank)


def test_the_repetition_penalty_reference_is_transformers_processor():
    from transformers import RepetitionPenaltyLogitsProcessor

    from course_lib.gpt import penalize_repetition as reference_repetition_penalty

    g = torch.Generator().manual_seed(0)
    for penalty_value in (1.0, 1.2, 2.0):
        logits = 3.0 * torch.randn(4, 50, generator=g)  # (B, V)
        ids = torch.randint(0, 50, (4, 20), generator=g)  # (B, T) with repeats
        expected = RepetitionPenaltyLogitsProcessor(penalty_value)(ids, logits.clone())
        got = reference_repetition_penalty(logits, ids, penalty_value)
        torch.testing.assert_close(got, expected, atol=0, rtol=0)


def test_the_top_k_reference_is_the_support_of_gpt_top_k_sampling_and_transformers_warper():
    from transformers import TopKLogitsWarper

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 30, generator=g)  # (B, V)
    for k in (1, 5, 12):
        kept = reference_top_k_logits(logits, k).isfinite()  # (B, V)
        torch.testing.assert_close(
            reference_top_k_logits(logits, k), TopKLogitsWarper(k)(None, logits.clone())
        )
        draws = torch.cat([sample_next_token(logits, 1.0, top_k=k, generator=g) for _ in range(2000)], 1)
        drawn = torch.zeros_like(kept).scatter(1, draws, True)
        assert torch.equal(drawn, kept), k


def test_the_macro_f1_reference_is_sklearn():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(1)
    for n_classes in (2, 3, 5):
        y, p = rng.integers(0, n_classes, 60), rng.integers(0, n_classes, 60)
        expected = f1_score(y, p, labels=list(range(n_classes)), average="macro", zero_division=0)
        assert abs(_reference_macro_f1(y, p, n_classes) - expected) < 1e-12


def test_the_ece_reference_on_a_case_counted_by_hand():
    # bins of 0.5: (0, 0.5] holds 0.3, 0.5 (accuracy 1/2, confidence 0.4); (0.5, 1] holds 0.9, 1.0, 0.8
    # (accuracy 2/3, confidence 0.9): ECE = 2/5 * 0.1 + 3/5 * (0.9 - 2/3)
    value = reference_ece([0.3, 0.5, 0.9, 1.0, 0.8], [True, False, True, True, False], 2)
    assert abs(value - (0.4 * 0.1 + 0.6 * (0.9 - 2 / 3))) < 1e-12
    assert reference_ece([0.7] * 10, [True] * 7 + [False] * 3, 10) < 1e-12  # perfectly calibrated


def test_the_sentence_embedding_reference_is_what_the_minilm_encoder_returns():
    from course_lib.encoder import SentenceEncoder

    encoder = SentenceEncoder.from_minilm(device="cpu")
    texts = ["A short one.", "A much longer sentence, so that the first one is padded in the batch."]
    batch = encoder.tokenizer(texts)
    with torch.no_grad():
        hidden = encoder.encoder(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        expected = encoder.encode(texts)
    torch.testing.assert_close(
        reference_sentence_embedding(hidden, batch["attention_mask"]), expected, atol=1e-5, rtol=1e-4
    )


def test_the_mrr_reference_is_the_library_mrr_of_cosines():
    g = torch.Generator().manual_seed(0)
    q, d = torch.randn(15, 8, generator=g), torch.randn(40, 8, generator=g)
    true = torch.randint(0, 40, (15,), generator=g)
    cosines = F.normalize(q, dim=-1) @ F.normalize(d, dim=-1).T
    assert abs(_reference_mrr(cosines, true) - mean_reciprocal_rank(q, d, true)) < 1e-12


MUTANTS = WRONG + LEAKED_WRONG + NEW_WRONG

"""Self-checks for chapter 5: a top-p (nucleus) mask, top-k filtering and a repetition penalty; how many
BBC test bodies leak into training, macro-F1 and the expected calibration error; recall@k, the mean
reciprocal rank and a mean-pooled sentence embedding; int8 quantization of a weight, a pruning mask,
and padding a batch of texts.

Each reference is the library's own: :func:`course_lib.gpt.sample_next_token`'s nucleus rule,
:func:`course_lib.datasets.bbc_news` with :class:`course_lib.datasets.Splits`,
:func:`course_lib.semantic_search.recall_at_k`, :func:`course_lib.compress.quantize_tensor_int8`,
:func:`course_lib.compress.magnitude_prune` and :func:`course_lib.lm_data.pad_collate`; the top-k rule of
``sample_next_token``, :func:`course_lib.metrics.precision_recall_f1`, :func:`course_lib.heads.mean_pool`
and :func:`course_lib.semantic_search.ranks_from_scores`; :func:`course_lib.gpt.penalize_repetition` for the
repetition penalty (tested equal to transformers' ``RepetitionPenaltyLogitsProcessor``). The calibration
error's reference is tested against a count by hand.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib.compress import magnitude_prune, quantize_tensor_int8
from course_lib.exercises import Case, ExerciseFailure, check_function, require_own_code
from course_lib.gpt import penalize_repetition
from course_lib.heads import mean_pool
from course_lib.lm_data import pad_collate
from course_lib.metrics import precision_recall_f1
from course_lib.semantic_search import ranks_from_scores, recall_at_k

# ----------------------------------------------------------------------------- a top-p (nucleus) mask


def reference_nucleus_mask(probs: torch.Tensor, p: float) -> torch.Tensor:
    """(B, V) bool, True for the tokens top-p sampling keeps: those whose more likely tokens hold less
    than ``p`` of the probability (the rule of :func:`course_lib.gpt.sample_next_token`), written as a
    loop over each row's tokens, most likely first."""
    keep = torch.zeros(probs.shape, dtype=torch.bool)
    for b in range(probs.shape[0]):
        mass_before = torch.zeros((), dtype=probs.dtype)  # probability of the tokens already kept
        for v in probs[b].argsort(descending=True, stable=True).tolist():
            if mass_before >= p:
                break
            keep[b, v] = True
            mass_before = mass_before + probs[b, v]
    return keep


def _probs_case(label: str, rows: list[list[float]], p: float) -> Case:
    probs = torch.tensor(rows, dtype=torch.float64)
    return Case(label, ((probs / probs.sum(-1, keepdim=True)).float(), p))


def check_nucleus_mask(fn) -> None:
    """``fn(probs, p) -> mask``: probs (B, V) rows summing to 1; mask (B, V) bool, True for the smallest
    set of most likely tokens of each row whose probabilities add up to at least ``p``."""
    require_own_code(fn, "nucleus_mask")
    g = torch.Generator().manual_seed(0)
    random_rows = torch.softmax(2.0 * torch.randn(3, 50, generator=g), dim=-1)
    cases = [
        _probs_case("sorted row 0.5, 0.3, 0.15, 0.05, p = 0.7: keeps three", [[0.5, 0.3, 0.15, 0.05]], 0.7),
        _probs_case(
            "the same row shuffled (vocabulary order is not probability order)", [[0.15, 0.05, 0.5, 0.3]], 0.7
        ),
        _probs_case("one token above p: only that one is kept", [[0.02, 0.95, 0.01, 0.02]], 0.9),
        _probs_case("p = 1 keeps every token", [[0.4, 0.1, 0.3, 0.2]], 1.0),
        Case("three rows of 50 tokens, each with its own nucleus, p = 0.9", (random_rows, 0.9)),
    ]
    check_function(
        "nucleus_mask",
        fn,
        reference_nucleus_mask,
        cases,
        hint="the token whose probability takes the running total past p belongs to the nucleus; the "
        "running total is over tokens ranked by probability, but the mask must be in the vocabulary's "
        "order, one row at a time",
    )


# ----------------------------------------------------------------------------- a leaky split, measured


def bbc_split_with_copies() -> tuple[list[str], list[str]]:
    """The training and test bodies of a stratified 80/10/10 split (seed 0) of all 2,225 BBC articles,
    copies included: ``bbc_news(dedupe=False)``, the split chapter 5 used before it de-duplicated."""
    from course_lib.datasets import Splits, bbc_news

    articles = bbc_news(dedupe=False)
    labels = np.array([a.label_id for a in articles])
    train, _, test = Splits.make(labels, fractions=(0.8, 0.1, 0.1), seed=0).take([a.body for a in articles])
    return train, test


def check_leaked_share(fn) -> None:
    """``fn() -> share``: runs the experiment and returns the fraction of the test articles of
    :func:`bbc_split_with_copies` whose body also occurs, word for word, in its training split."""
    try:
        share = fn()
    except NotImplementedError:
        raise ExerciseFailure(
            "leaked_share is not written yet: replace `raise NotImplementedError()` with your code, then "
            "run this check again"
        ) from None
    except Exception as err:  # the learner's code raised: show it as feedback, not a crash
        raise ExerciseFailure(f"leaked_share: your function raised {type(err).__name__}: {err}") from None
    train, test = bbc_split_with_copies()
    seen = set(train)
    n_leaked = sum(body in seen for body in test)
    expected = n_leaked / len(test)
    if isinstance(share, bool) or not isinstance(share, (int, float, np.floating, np.integer)):
        raise ExerciseFailure(
            f"leaked_share must return a number, got {type(share).__name__} (did it forget to return?)"
        )
    share = float(share)
    if abs(share - expected) < 1e-9:
        print(f"✓ leaked_share: {share:.4f}, the share of the {len(test)} test bodies also in training")
        return
    mistakes = {  # value: the case it reveals
        float(n_leaked): "a count, not a share: divide by the number of test articles",
        0.0: "nothing leaks: that is the de-duplicated split; build the split that keeps the copies",
        len({b for b in test if b in seen}) / len(set(test)): "distinct test bodies, not test articles",
        sum(body in set(test) for body in train) / len(train): "training bodies found in test: the reverse",
        n_leaked / (len(train) + len(test)): "divided by the training and test articles together",
        100.0 * expected: "a percentage: give the share as a fraction between 0 and 1",
    }
    for value, case in mistakes.items():
        if abs(share - value) < 1e-9:
            raise ExerciseFailure(f"leaked_share, case '{case}': got {share:g}")
    raise ExerciseFailure(
        f"leaked_share, case 'another value': got {share:g}, which is not the share of test articles whose "
        "body occurs in the training split; check that the articles keep their copies, the fractions are "
        "(0.8, 0.1, 0.1) and the seed 0, and that whole bodies are compared"
    )


# ----------------------------------------------------------------------------- recall@k


def _retrieval_case(
    label: str, n_queries: int, n_docs: int, d: int, k: int, seed: int, stretch: bool = False
) -> Case:
    g = torch.Generator().manual_seed(seed)
    docs = torch.randn(n_docs, d, generator=g)
    true_idx = torch.randint(0, n_docs, (n_queries,), generator=g)
    queries = docs[true_idx] + 0.8 * torch.randn(n_queries, d, generator=g)  # near, not on, their document
    if stretch:  # documents of very different lengths: a raw dot product would favour the long ones
        docs = docs * torch.linspace(0.1, 10.0, n_docs)[:, None]
    return Case(label, (queries, docs, true_idx, k))


def _reference_recall(query_embs, doc_embs, true_idx, k):
    return recall_at_k(query_embs, doc_embs, true_idx, ks=(k,))[k]


def check_recall_at_k(fn) -> None:
    """``fn(query_embs, doc_embs, true_idx, k) -> float``: the share of queries whose document is in the
    top k by cosine similarity."""
    require_own_code(fn, "recall_at_k")
    cases = [
        _retrieval_case("5 queries, 20 documents, k=1", 5, 20, 8, 1, 0),
        _retrieval_case("k=3", 12, 30, 8, 3, 1),
        _retrieval_case("k as large as the collection", 4, 6, 5, 6, 2),
        _retrieval_case("documents of different lengths (cosine, not dot product)", 10, 25, 16, 2, 3, True),
        _retrieval_case("more queries than documents", 40, 10, 4, 1, 4),
    ]
    check_function(
        "recall_at_k",
        fn,
        _reference_recall,
        cases,
        atol=1e-6,
        rtol=0,
        hint="normalise both sides to unit length, scores = Q @ D.T; a query is a hit when its own document "
        "is among the k highest scores of its row; return the fraction of hits as a float",
    )


# ----------------------------------------------------------------------------- int8 quantization


def _weight_case(label: str, shape: tuple[int, int], seed: int, scale: float = 1.0) -> Case:
    g = torch.Generator().manual_seed(seed)
    return Case(label, (torch.randn(shape, generator=g) * scale,))


def check_quantize_int8(fn) -> None:
    """``fn(w) -> (q, scale)``: symmetric int8 with one scale per row (output channel) of a Linear weight."""
    require_own_code(fn, "quantize_int8", forbidden=("quantize_per_channel", "quantize_dynamic"))
    zero_row = _weight_case("a row of zeros", (3, 5), 3)
    zero_row.args[0][1] = 0.0
    outlier = _weight_case("one large outlier in a row", (4, 16), 4)
    outlier.args[0][2, 7] = 40.0
    cases = [
        _weight_case("a 4 x 8 weight", (4, 8), 0),
        _weight_case("one row", (1, 10), 1),
        _weight_case("small weights (std 0.02, as in a GPT)", (16, 32), 2, scale=0.02),
        zero_row,
        outlier,
    ]
    check_function(
        "quantize_int8",
        fn,
        lambda w: quantize_tensor_int8(w, axis=0),
        cases,
        atol=1e-7,
        rtol=1e-6,
        hint="one scale per row: the row's largest absolute value divided by 127, kept above float32's "
        "machine epsilon so that a row of zeros does not divide by zero; codes are the rounded (not "
        "truncated) ratios, clamped to -127..127 and stored as int8; return the codes and the (rows,) scales",
    )


# ----------------------------------------------------------------------------- a pruning mask


def _reference_mask(w: torch.Tensor, sparsity: float) -> torch.Tensor:
    layer = nn.Linear(w.shape[1], w.shape[0], bias=False)
    with torch.no_grad():
        layer.weight.copy_(w)
    return magnitude_prune(layer, sparsity, scope="layer")["weight"]


def check_magnitude_mask(fn) -> None:
    """``fn(w, sparsity) -> mask``: a bool tensor shaped like ``w``, False at the
    ``round(sparsity * w.numel())`` weights of smallest magnitude, True elsewhere."""
    require_own_code(fn, "magnitude_mask", forbidden=("l1_unstructured", "global_unstructured"))
    cases = [
        Case("half of a 4 x 4 weight", (torch.randn(4, 4, generator=torch.Generator().manual_seed(0)), 0.5)),
        Case(
            "90% of a 20 x 10 weight", (torch.randn(20, 10, generator=torch.Generator().manual_seed(1)), 0.9)
        ),
        Case(
            "sparsity 0 keeps everything",
            (torch.randn(3, 7, generator=torch.Generator().manual_seed(2)), 0.0),
        ),
        Case(
            "sparsity 1 prunes everything",
            (torch.randn(2, 5, generator=torch.Generator().manual_seed(3)), 1.0),
        ),
        Case(
            "large negative weights are kept (magnitude, not value)",
            (torch.tensor([[-5.0, 0.1, 3.0, -0.2], [0.3, -4.0, 0.05, 2.0]]), 0.5),
        ),
    ]
    check_function(
        "magnitude_mask",
        fn,
        _reference_mask,
        cases,
        hint="the number of weights to drop is the sparsity times the number of entries, rounded with "
        "Python's round; rank the entries by absolute value over the whole tensor (torch.topk with "
        "largest=False on the flattened tensor finds the smallest); the mask is True for the weights that "
        "stay and has the shape of w",
    )


# ----------------------------------------------------------------------------- padding a batch of texts


def _reference_pad_batch(id_lists: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    batch = pad_collate([(ids, 0) for ids in id_lists], pad_id)
    return batch["input_ids"], batch["attention_mask"]


def check_pad_batch(fn) -> None:
    """``fn(id_lists, pad_id) -> (input_ids, attention_mask)``: token-id lists of different lengths,
    padded on the right to the longest into (B, T) long tensors; the mask is 1 on real tokens, 0 on
    padding."""
    require_own_code(fn, "pad_batch", forbidden=("pad_sequence",))
    cases = [
        Case("two texts of 3 and 5 tokens, pad id 0", ([[101, 7, 102], [101, 8, 9, 10, 102]], 0)),
        Case(
            "a pad id that is not 0 (MiniLM's [PAD] is 0, other tokenizers differ)",
            ([[5, 6], [1, 2, 3, 4]], 99),
        ),
        Case("the longest text first", ([[1, 2, 3, 4, 5, 6], [7], [8, 9]], 0)),
        Case("texts of equal length need no padding", ([[1, 2, 3], [4, 5, 6]], 0)),
        Case("a single text", ([[11, 12, 13, 14]], 0)),
    ]
    check_function(
        "pad_batch",
        fn,
        _reference_pad_batch,
        cases,
        atol=0,
        rtol=0,
        hint="every row is as long as the longest list; the real tokens come first in each row, the "
        "padding after them; the mask marks which positions the model should read",
    )


# ----------------------------------------------------------------------------- helpers of the checks below


# ----------------------------------------------------------------------------- a repetition penalty


def check_repetition_penalty(fn) -> None:
    """``fn(logits, previous_ids, penalty) -> logits``: logits (B, V), previous_ids (B, T) long; returns new
    (B, V) logits in which every token already in the row's ids is made less likely: a positive logit is
    divided by ``penalty``, a negative one multiplied by it, once per token."""
    require_own_code(fn, "repetition_penalty", packages=("transformers",))
    g = torch.Generator().manual_seed(0)
    random_logits = 3.0 * torch.randn(3, 40, generator=g)  # (3, 40)
    random_ids = torch.randint(0, 40, (3, 12), generator=g)  # (3, 12), with repeats
    cases = [
        Case(
            "positive logits of seen tokens 1 and 3, penalty 2",
            (torch.tensor([[1.0, 4.0, 2.0, 6.0]]), torch.tensor([[1, 3]]), 2.0),
        ),
        Case(
            "a seen token with a negative logit must go down too",
            (torch.tensor([[0.5, -2.0, 1.0, -1.0]]), torch.tensor([[1, 2]]), 1.5),
        ),
        Case(
            "a token seen three times is penalised once",
            (torch.tensor([[2.0, 3.0, 1.0, -0.5]]), torch.tensor([[1, 1, 1, 3]]), 2.0),
        ),
        Case(
            "two rows, each with its own history",
            (torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]), torch.tensor([[0, 0], [2, 1]]), 1.3),
        ),
        Case("penalty 1 changes nothing", (random_logits[:1], random_ids[:1], 1.0)),
        Case("three rows of 40 tokens, 12 previous ids each, penalty 1.2", (random_logits, random_ids, 1.2)),
    ]
    check_function(
        "repetition_penalty",
        fn,
        penalize_repetition,
        cases,
        atol=1e-6,
        rtol=1e-6,
        hint="only the tokens whose ids occur in the row's previous ids change; 'less likely' means a "
        "smaller logit, so look at what dividing does to a negative number; each token is changed once, "
        "however often it occurred; return a new tensor",
    )


# ----------------------------------------------------------------------------- top-k filtering


def reference_top_k_logits(logits: torch.Tensor, k: int) -> torch.Tensor:
    """(B, V) logits with every token below the row's k-th largest logit set to -inf (ties with the k-th
    kept; k larger than V keeps everything): the top-k rule of :func:`course_lib.gpt.sample_next_token`."""
    kth = torch.topk(logits, min(k, logits.size(-1)), dim=-1).values[:, -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def check_top_k_logits(fn) -> None:
    """``fn(logits, k) -> logits``: logits (B, V); returns (B, V) with every logit below the row's k-th
    largest replaced by -inf, so that a softmax gives those tokens probability 0."""
    require_own_code(fn, "top_k_logits", packages=("transformers",))
    g = torch.Generator().manual_seed(1)
    cases = [
        Case("one row, k = 2", (torch.tensor([[1.0, 3.0, -1.0, 2.0, 0.5]]), 2)),
        Case("k = 1 keeps only the largest (greedy)", (torch.tensor([[0.2, -0.3, 1.7, 1.1]]), 1)),
        Case(
            "two rows with different thresholds, k = 3",
            (torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0], [-1.0, -2.0, 0.0, -3.0, -0.5]]), 3),
        ),
        Case("k larger than the vocabulary keeps every token", (torch.tensor([[0.1, 0.4, -0.2]]), 10)),
        Case("a tie at the k-th logit keeps both tied tokens", (torch.tensor([[2.0, 1.0, 1.0, 0.0]]), 2)),
        Case("four rows of 60 tokens, k = 7", (torch.randn(4, 60, generator=g), 7)),
    ]
    check_function(
        "top_k_logits",
        fn,
        reference_top_k_logits,
        cases,
        atol=1e-6,
        rtol=1e-6,
        hint="find the k-th largest logit of each row (not of the whole batch) and compare every logit with "
        "it; the dropped tokens must get -inf, not 0 (a softmax gives 0 probability only to -inf); a k "
        "larger than the row cannot be asked of torch.topk as it is",
    )


# ----------------------------------------------------------------------------- macro-F1


def _reference_macro_f1(y_true, y_pred, n_classes: int) -> float:
    return precision_recall_f1(y_true, y_pred, labels=list(range(n_classes)), average="macro")["f1"]


def check_macro_f1(fn) -> None:
    """``fn(y_true, y_pred, n_classes) -> float``: integer label arrays (N,) with classes 0 .. n_classes-1;
    the unweighted mean over classes of F1 = 2 TP / (2 TP + FP + FN), a class with no TP, FP or FN
    counting 0 (scikit-learn's ``f1_score(..., average="macro", zero_division=0)``)."""
    require_own_code(fn, "macro_f1", packages=("sklearn",))
    rng = np.random.default_rng(0)
    y5 = rng.integers(0, 5, 200)
    noisy5 = np.where(rng.random(200) < 0.3, rng.integers(0, 5, 200), y5)
    rare = np.array([0] * 18 + [1, 1])  # class 1 is rare
    cases = [
        Case("every prediction right: 1.0", (np.array([0, 1, 2, 1, 0]), np.array([0, 1, 2, 1, 0]), 3)),
        Case(
            "a rare class the model never predicts counts as much as the common one",
            (rare, np.zeros(20, dtype=int), 2),
        ),
        Case(
            "precision and recall differ per class",
            (np.array([0, 0, 0, 1, 1, 2, 2, 2, 2]), np.array([0, 1, 1, 1, 2, 2, 2, 0, 2]), 3),
        ),
        Case(
            "a class that occurs neither in y_true nor in y_pred scores 0",
            (np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0]), 3),
        ),
        Case("200 labels of 5 classes, 30% noisy predictions", (y5, noisy5, 5)),
    ]
    check_function(
        "macro_f1",
        fn,
        _reference_macro_f1,
        cases,
        atol=1e-9,
        rtol=0,
        hint="count TP, FP and FN for each class c in range(n_classes) separately, compute each class's F1 "
        "(0 where its denominator is 0), then take the plain mean over all n_classes, not weighted by "
        "how often each class occurs",
    )


# ----------------------------------------------------------------------------- expected calibration error


def reference_ece(confidence, correct, n_bins: int) -> float:
    """The expected calibration error: confidences in [0, 1] put into ``n_bins`` equal bins ((m-1)/M, m/M]
    (0 in the first); the mean over all answers of |accuracy - mean confidence| of the answer's bin."""
    conf = np.asarray(confidence, dtype=np.float64)
    hit = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.digitize(conf, edges[1:-1], right=True)  # (N,) bin m holds edges[m] < c <= edges[m + 1]
    ece = 0.0
    for m in range(n_bins):
        inside = bins == m
        if inside.any():
            ece += inside.mean() * abs(hit[inside].mean() - conf[inside].mean())
    return float(ece)


def check_ece(fn) -> None:
    """``fn(confidence, correct, n_bins) -> float``: confidence (N,) floats in [0, 1], correct (N,) bools;
    the weighted mean over bins ((m-1)/M, m/M] of |accuracy in the bin - mean confidence in the bin|, each
    bin weighted by its share of the answers; empty bins count nothing."""
    require_own_code(fn, "expected_calibration_error", packages=("sklearn",))
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.2, 1.0, 500)
    over = rng.random(500) < conf - 0.15  # an overconfident model: right less often than it claims
    cases = [
        Case(
            "two bins: 0.9 right half the time, 0.3 right one time in three",
            (np.array([0.9, 0.9, 0.3, 0.3, 0.3, 0.9]), np.array([True, False, True, False, False, True]), 2),
        ),
        Case(
            "bins of different sizes: the big one weighs more",
            (np.array([0.95] * 8 + [0.55, 0.55]), np.array([True] * 6 + [False] * 2 + [True, True]), 10),
        ),
        Case(
            "confidences on bin edges (0.5, 0.75, 1.0) belong to the lower bin, 0 to the first",
            (np.array([0.0, 0.5, 0.6, 0.75, 1.0]), np.array([False, True, False, True, True]), 4),
        ),
        Case(
            "an underconfident bin and an overconfident bin do not cancel",
            (np.array([0.6, 0.6, 0.6, 0.6, 0.95, 0.95]), np.array([True, True, True, True, False, False]), 5),
        ),
        Case("500 answers of an overconfident model, 15 bins", (conf, over, 15)),
    ]
    check_function(
        "expected_calibration_error",
        fn,
        reference_ece,
        cases,
        atol=1e-9,
        rtol=0,
        hint="for each bin: which answers fall in it (the upper edge belongs to the bin, the lower does "
        "not), their accuracy and their mean confidence (not the bin's middle); weight |accuracy - "
        "confidence| by the bin's share of all answers, and add",
    )


# ----------------------------------------------------------------------------- a sentence embedding


def reference_sentence_embedding(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T, d) token vectors and a (B, T) 0/1 mask -> (B, d) unit vectors: the mean of the real tokens'
    vectors, scaled to length 1 (:meth:`course_lib.encoder.Encoder.embed`'s recipe)."""
    return F.normalize(mean_pool(hidden, attention_mask), p=2, dim=-1)


def check_sentence_embedding(fn) -> None:
    """``fn(hidden, attention_mask) -> (B, d)``: mean pooling over the real tokens (mask 1), then L2
    normalisation, as sentence-transformers does for all-MiniLM-L6-v2."""
    require_own_code(fn, "sentence_embedding", packages=("sentence_transformers", "transformers"))
    g = torch.Generator().manual_seed(0)
    padded = torch.randn(3, 6, 8, generator=g)  # (B, T, d)
    padded_mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]])
    big_padding = torch.randn(2, 5, 4, generator=g)
    big_padding[:, 3:] = 100.0  # padding positions hold large vectors (a real encoder's are not zero)
    cases = [
        Case("one text, no padding", (torch.randn(1, 4, 6, generator=g), torch.ones(1, 4, dtype=torch.long))),
        Case("three texts of 6, 3 and 1 tokens", (padded, padded_mask)),
        Case(
            "large vectors at the padding positions must not count",
            (big_padding, torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 0, 0]])),
        ),
        Case(
            "a mask of bools works like 0/1",
            (padded[:2], padded_mask[:2].bool()),
        ),
        Case(
            "vectors far from length 1 come out with length 1",
            (5.0 * torch.randn(2, 3, 384, generator=g) + 2.0, torch.tensor([[1, 1, 0], [1, 1, 1]])),
        ),
    ]
    check_function(
        "sentence_embedding",
        fn,
        reference_sentence_embedding,
        cases,
        atol=1e-5,
        rtol=1e-4,
        hint="the average is over the real tokens only: the padded positions must add nothing (the mask "
        "says which they are); average over the token axis, one vector per text; scale each text's "
        "vector to length 1 after pooling, not the token vectors before it",
    )


# ----------------------------------------------------------------------------- MRR from scores


def _reference_mrr(scores: torch.Tensor, true_idx: torch.Tensor) -> float:
    return float((1.0 / ranks_from_scores(scores, true_idx).double()).mean())


def check_mrr(fn) -> None:
    """``fn(scores, true_idx) -> float``: scores (n, N), higher is better; true_idx (n,) long. The mean over
    queries of 1 / rank of the right document, rank = 1 + the number of documents scored strictly higher
    (a tie counts in the right document's favour)."""
    require_own_code(fn, "mean_reciprocal_rank", packages=("sklearn",))
    g = torch.Generator().manual_seed(0)
    cases = [
        Case(
            "ranks 1, 2 and 3: MRR (1 + 1/2 + 1/3) / 3",
            (torch.tensor([[0.9, 0.1, 0.2], [0.5, 0.7, 0.1], [0.3, 0.2, 0.1]]), torch.tensor([0, 0, 2])),
        ),
        Case("every right document first: 1.0", (torch.eye(4), torch.arange(4))),
        Case(
            "a tie with the right document counts in its favour",
            (torch.tensor([[0.5, 0.5, 0.1], [0.2, 0.8, 0.8]]), torch.tensor([1, 2])),
        ),
        Case(
            "negative scores (TF-IDF is never negative, cosines can be)",
            (torch.tensor([[-0.2, -0.9, -0.1, -0.5]]), torch.tensor([1])),
        ),
        Case(
            "20 queries over 50 documents",
            (torch.randn(20, 50, generator=g), torch.randint(0, 50, (20,), generator=g)),
        ),
    ]
    check_function(
        "mean_reciprocal_rank",
        fn,
        _reference_mrr,
        cases,
        atol=1e-9,
        rtol=0,
        hint="a rank starts at 1; count, in the query's own row, the documents scored strictly higher than "
        "the right one (higher is better); average the reciprocals 1 / rank over queries, not the ranks",
    )

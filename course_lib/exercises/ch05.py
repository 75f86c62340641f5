"""Self-checks for chapter 5: a top-p (nucleus) mask, how many BBC test bodies leak into training,
recall@k of a retriever, int8 quantization of a weight, a pruning mask, and padding a batch of texts.

Each reference is the library's own: :func:`course_lib.gpt.sample_next_token`'s nucleus rule,
:func:`course_lib.datasets.bbc_news` with :class:`course_lib.datasets.Splits`,
:func:`course_lib.semantic_search.recall_at_k`, :func:`course_lib.compress.quantize_tensor_int8`,
:func:`course_lib.compress.magnitude_prune` and :func:`course_lib.lm_data.pad_collate`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from course_lib.compress import magnitude_prune, quantize_tensor_int8
from course_lib.exercises import Case, ExerciseFailure, check_function
from course_lib.lm_data import pad_collate
from course_lib.semantic_search import recall_at_k

# ----------------------------------------------------------------------------- a top-p (nucleus) mask


def reference_nucleus_mask(probs: torch.Tensor, p: float) -> torch.Tensor:
    """(B, V) bool, True for the tokens top-p sampling keeps: those whose more likely tokens hold less
    than ``p`` of the probability (the rule of :func:`course_lib.gpt.sample_next_token`)."""
    sorted_probs, order = probs.sort(dim=-1, descending=True)  # (B, V)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs  # (B, V) probability ranked above
    keep_sorted = mass_before < p  # (B, V) in sorted order; the most likely token is always kept
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)  # back to vocabulary order


def _probs_case(label: str, rows: list[list[float]], p: float) -> Case:
    probs = torch.tensor(rows, dtype=torch.float64)
    return Case(label, ((probs / probs.sum(-1, keepdim=True)).float(), p))


def check_nucleus_mask(fn) -> None:
    """``fn(probs, p) -> mask``: probs (B, V) rows summing to 1; mask (B, V) bool, True for the smallest
    set of most likely tokens of each row whose probabilities add up to at least ``p``."""
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
            "run this check again. Hint: build the split, then count test articles, not distinct bodies"
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
        hint="scale = (largest |w| of each row) / 127, at least torch.finfo(torch.float32).eps; "
        "q = round(w / scale) clamped to [-127, 127] and converted with .to(torch.int8); "
        "return (q, scale) with scale of shape (rows,)",
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

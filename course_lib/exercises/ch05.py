"""Self-checks for chapter 5: recall@k of a retriever, int8 quantization of a weight, a pruning mask.

Each reference is the library's own: :func:`course_lib.semantic_search.recall_at_k`,
:func:`course_lib.compress.quantize_tensor_int8` and :func:`course_lib.compress.magnitude_prune`.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from course_lib.compress import magnitude_prune, quantize_tensor_int8
from course_lib.exercises import Case, check_function
from course_lib.semantic_search import recall_at_k

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

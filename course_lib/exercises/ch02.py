"""Self-checks for chapter 2: softmax, scaled dot-product attention, the causal mask, splitting and
merging heads, a head's weight on the previous token, the entropy of attention rows, one head's map from
a layer's weights. The references are course_lib's attention code (or, for softmax and entropy,
PyTorch's; for the previous-token weight, a plain loop)."""

from __future__ import annotations

import torch

from course_lib.attention import MultiHeadAttention, causal_mask, explicit_attention, padding_mask
from course_lib.exercises import Case, check_function, require_own_code


def _randn(*shape: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * scale


# ---------------------------------------------------------------------------------------- softmax

_NEG_INF = float("-inf")


def _softmax_cases() -> list[Case]:
    return [
        Case("one row of small numbers", (torch.tensor([1.0, 2.0, 3.0]),)),
        Case("a single score", (torch.tensor([0.7]),)),
        Case("equal scores give equal weights", (torch.zeros(5),)),
        Case("a (4, 6) batch: softmax along the last dimension", (_randn(4, 6, seed=1),)),
        Case("a (2, 3, 5) batch", (_randn(2, 3, 5, seed=2, scale=3.0),)),
        Case("large scores 1000, 1001, 1002 (exp overflows)", (torch.tensor([1000.0, 1001.0, 1002.0]),)),
        Case("very negative scores (exp underflows)", (torch.tensor([-1000.0, -1001.0, -1003.0]),)),
        Case("a -inf entry (a masked position) gets weight 0", (torch.tensor([0.5, _NEG_INF, 1.5, 0.0]),)),
        Case("-inf next to a large score", (torch.tensor([[1000.0, _NEG_INF], [_NEG_INF, -7.0]]),)),
        Case("float64 scores up to about 150", (_randn(3, 4, seed=3, scale=50.0).double(),)),
    ]


def _reference_softmax(x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(x, dim=-1)


def check_softmax(fn) -> None:
    """``fn(x) -> softmax of x along its last dimension``, numerically stable."""
    require_own_code(fn, "softmax", forbidden=("softmax", "log_softmax"))
    check_function(
        "softmax",
        fn,
        _reference_softmax,
        _softmax_cases(),
        atol=1e-6,  # weights lie in [0, 1]; float32 rounding is ~1e-7
        rtol=1e-5,
        hint="subtract each row's own maximum before taking exp: the result does not change, but exp never "
        "sees a number above 0; each row is its own distribution, so reduce over the last dimension only "
        "and keep that dimension for broadcasting",
    )


# ------------------------------------------------------------------------------------- attention


def _attention_cases() -> list[Case]:
    q, k, v = (_randn(4, 8, seed=s) for s in (10, 11, 12))
    qb, kb, vb = (_randn(2, 3, 5, 16, seed=s) for s in (13, 14, 15))
    q2, k6, v6 = _randn(2, 8, seed=16), _randn(6, 8, seed=17), _randn(6, 8, seed=18)
    q4, k4, v12 = _randn(3, 4, seed=19), _randn(5, 4, seed=20), _randn(5, 12, seed=21)
    padding = torch.tensor([[True, True, True, False, False], [True, True, True, True, True]])
    return [
        Case("one sequence: q, k, v of shape (4, 8)", (q, k, v)),
        Case("a batch with heads: (2, 3, 5, 16)", (qb, kb, vb)),
        Case("2 queries against 6 keys", (q2, k6, v6)),
        Case("values wider than keys (d_v = 12, d_k = 4)", (q4, k4, v12)),
        Case("with a causal mask", (q, k, v), {"mask": causal_mask(4)}),
        Case("with a (2, 1, 1, 5) padding mask", (qb, kb, vb), {"mask": padding[:, None, None, :]}),
        Case("large query vectors (scores in the hundreds)", (_randn(4, 8, seed=22, scale=30.0), k, v)),
    ]


def _reference_attention(q, k, v, mask=None):
    return explicit_attention(q, k, v, attn_mask=mask)[0]


def check_scaled_dot_product_attention(fn) -> None:
    """``fn(q, k, v, mask=None) -> softmax(q k^T / sqrt(d_k), masked) v``; mask True = may attend."""
    require_own_code(fn, "scaled_dot_product_attention", forbidden=("scaled_dot_product_attention",))
    check_function(
        "scaled_dot_product_attention",
        fn,
        _reference_attention,
        _attention_cases(),
        atol=1e-5,  # outputs are sums of O(1) values; the order of the sums differs from the reference
        rtol=1e-4,
        hint="each query's scores are its dot products with every key (swap the last two axes of k), "
        "divided by the square root of the head size; positions the mask forbids get minus infinity "
        "before the softmax over the keys, not zero after it; then weight the values",
    )


# ------------------------------------------------------------------------------------------ masks


def check_causal_mask(fn) -> None:
    """``fn(T) -> (T, T) boolean mask``, True where query i may look at key j (j <= i)."""
    require_own_code(fn, "causal_mask")
    check_function(
        "causal_mask",
        fn,
        causal_mask,
        [Case(f"T = {T}", (T,)) for T in (1, 2, 5, 16)],
        hint="position i may see positions 0..i: the lower triangle, diagonal included "
        "(torch.tril keeps a lower triangle)",
    )


# ---------------------------------------------------------------------------------- split and merge


def _reference_split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Head h owns features h*hs .. (h+1)*hs - 1: cut them out and stack the heads on a new axis 1."""
    hs = x.size(-1) // n_heads
    return torch.stack(x.split(hs, dim=-1), dim=1)  # (B, nh, T, hs)


def check_split_heads(fn) -> None:
    """``fn(x, n_heads)``: (B, T, C) -> (B, n_heads, T, C // n_heads)."""
    require_own_code(fn, "split_heads")
    cases = [
        Case("(1, 2, 4) into 2 heads, numbered entries", (torch.arange(8.0).view(1, 2, 4), 2)),
        Case("(2, 5, 12) into 3 heads", (_randn(2, 5, 12, seed=30), 3)),
        Case("(2, 5, 12) into 1 head", (_randn(2, 5, 12, seed=31), 1)),
        Case("(3, 4, 12) into 12 heads of size 1", (_randn(3, 4, 12, seed=32), 12)),
    ]
    check_function(
        "split_heads",
        fn,
        _reference_split_heads,
        cases,
        atol=0.0,  # pure data movement: the values must be identical
        rtol=0.0,
        hint="view the last dimension as (n_heads, hs): (B, T, nh, hs); then swap the T and head axes "
        "with .transpose(1, 2). Viewing straight to (B, nh, T, hs) mixes up tokens and heads",
    )


def _reference_merge_heads(y: torch.Tensor) -> torch.Tensor:
    """Put the heads side by side along the features: head h fills features h*hs .. (h+1)*hs - 1."""
    return torch.cat(y.unbind(dim=1), dim=-1)  # (B, T, nh * hs)


def check_merge_heads(fn) -> None:
    """``fn(y)``: (B, nh, T, hs) -> (B, T, nh * hs), the inverse of split_heads."""
    require_own_code(fn, "merge_heads")
    made_by_transpose = _randn(2, 6, 3, 4, seed=42).transpose(1, 2)  # (2, 3, 6, 4), not contiguous
    cases = [
        Case("(1, 2, 2, 2), numbered entries", (torch.arange(8.0).view(1, 2, 2, 2),)),
        Case("(2, 3, 5, 4)", (_randn(2, 3, 5, 4, seed=40),)),
        Case("one head (2, 1, 5, 8)", (_randn(2, 1, 5, 8, seed=41),)),
        Case("a non-contiguous input, as attention's output after a transpose", (made_by_transpose,)),
    ]
    check_function(
        "merge_heads",
        fn,
        _reference_merge_heads,
        cases,
        atol=0.0,
        rtol=0.0,
        hint="undo split_heads step by step: first bring the token axis back in front of the head axis, "
        "then flatten the last two axes into one of nh * hs features; a view after a transpose needs a "
        "contiguous copy first (the transpose only changed the strides)",
    )


# ------------------------------------------------------------------------------------ previous-token weight


def _attention_maps(heads: int, T: int, length: int, seed: int) -> torch.Tensor:
    """Random row-stochastic maps (heads, T, T) whose padded keys (>= length) get weight 0, as in a batch."""
    scores = _randn(heads, T, T, seed=seed, scale=2.0)
    scores[:, :, length:] = float("-inf")  # padding is masked out of every row
    return torch.softmax(scores, dim=-1)


def _reference_previous_token_weight(A: torch.Tensor, length: int) -> torch.Tensor:
    """Mean over the word pieces at positions 1 .. length-2 of A[h, i, i - 1], written as a loop."""
    rows = [A[:, i, i - 1] for i in range(1, length - 1)]  # each (heads,)
    return torch.stack(rows, dim=-1).mean(dim=-1)  # (heads,)


def check_previous_token_weight(fn) -> None:
    """``fn(A, length) -> (heads,)``: mean weight real word pieces put on the token before them."""
    cases = [
        Case("12 heads, 9 real tokens, no padding", (_attention_maps(12, 9, 9, seed=50), 9)),
        Case("4 heads, 6 real tokens padded to 10", (_attention_maps(4, 10, 6, seed=51), 6)),
        Case("one word piece between [CLS] and [SEP]", (_attention_maps(3, 5, 3, seed=52), 3)),
        Case("one head, 20 tokens padded to 24", (_attention_maps(1, 24, 20, seed=53), 20)),
    ]
    check_function(
        "previous_token_weight",
        fn,
        _reference_previous_token_weight,
        cases,
        atol=1e-6,
        rtol=1e-5,
        hint="rows are the tokens that look (queries), columns the tokens looked at (keys); the word "
        "pieces are neither position 0 ([CLS]) nor position length - 1 ([SEP]) nor the padding after "
        "it; average, do not sum",
    )


# ------------------------------------------------------------------------------------ attention entropy


def _reference_attention_entropy(A: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of every row (last dimension): PyTorch's entr(p) = -p ln p, with entr(0) = 0."""
    return torch.special.entr(A).sum(dim=-1)


def check_attention_entropy(fn) -> None:
    """``fn(A) -> entropy of each row of A along the last dimension``, in nats, 0 ln 0 taken as 0."""
    require_own_code(fn, "attention_entropy", forbidden=("entr", "entropy"))
    causal_scores = _randn(3, 6, 6, seed=60).masked_fill(~causal_mask(6), _NEG_INF)
    cases = [
        Case("an even spread over 4 keys (entropy ln 4)", (torch.full((4,), 0.25),)),
        Case("one-hot rows: all weight on one key (entropy 0)", (torch.eye(5),)),
        Case("a causal map: zeros above the diagonal", (torch.softmax(causal_scores, dim=-1),)),
        Case(
            "a batch of maps (2, 4, 7, 7)", (torch.softmax(_randn(2, 4, 7, 7, seed=61, scale=2.0), dim=-1),)
        ),
        Case(
            "nearly one-hot rows (scores in the hundreds)",
            (torch.softmax(_randn(5, 16, seed=62, scale=80.0), -1),),
        ),
        Case(
            "float64 weights, 3 queries against 9 keys",
            (torch.softmax(_randn(3, 9, seed=63).double(), dim=-1),),
        ),
    ]
    check_function(
        "attention_entropy",
        fn,
        _reference_attention_entropy,
        cases,
        atol=1e-5,  # entropies are at most ln 16 ~ 2.8 nats here; float32 sums of 16 terms
        rtol=1e-4,
        hint="H = -sum_j p_j ln p_j over the last dimension, in nats (natural log); a weight of exactly 0 "
        "contributes 0, but 0 * log(0) is 0 * -inf = nan: look at the one-hot and causal cases",
    )


# ------------------------------------------------------------------------- one head of a real layer


def _reference_head_attention_map(x, W_q, b_q, W_k, b_k, head, n_heads, attention_mask):
    """course_lib's MultiHeadAttention with these query and key weights: the weights of `head`."""
    d = x.size(-1)
    mha = MultiHeadAttention(d, n_heads, bias=True)
    with torch.no_grad():
        mha.qkv.weight.copy_(torch.cat([W_q, W_k, torch.zeros_like(W_q)]))  # [q | k | v] rows
        mha.qkv.bias.copy_(torch.cat([b_q, b_k, torch.zeros_like(b_q)]))
        _, weights = mha(x, attn_mask=padding_mask(attention_mask), return_weights=True)  # (B, nh, T, T)
    return weights[:, head]  # (B, T, T)


def _head_case(
    label: str, B: int, T: int, d: int, n_heads: int, head: int, lengths: list[int], seed: int
) -> Case:
    x = _randn(B, T, d, seed=seed)
    W_q, W_k = _randn(d, d, seed=seed + 1, scale=d**-0.5), _randn(d, d, seed=seed + 2, scale=d**-0.5)
    W_k[:, : d // 2] *= 3.0  # keys not symmetric with queries: a transposed product shows
    b_q, b_k = _randn(d, seed=seed + 3), _randn(d, seed=seed + 4)
    attention_mask = (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).long()  # (B, T), 1 = real
    return Case(label, (x, W_q, b_q, W_k, b_k, head, n_heads, attention_mask))


def check_head_attention_map(fn) -> None:
    """``fn(x, W_q, b_q, W_k, b_k, head, n_heads, attention_mask) -> (B, T, T)`` weights of one head."""
    require_own_code(
        fn, "head_attention_map", forbidden=("scaled_dot_product_attention", "multi_head_attention_forward")
    )
    cases = [
        _head_case("one sentence, 1 head of size 8, no padding", 1, 5, 8, 1, 0, [5], seed=70),
        _head_case("4 heads of size 4, head 0, no padding", 1, 6, 16, 4, 0, [6], seed=71),
        _head_case("4 heads of size 4, head 2", 2, 6, 16, 4, 2, [6, 6], seed=72),
        _head_case("12 heads of size 32 (as in MiniLM), head 11", 1, 7, 384, 12, 11, [7], seed=73),
        _head_case(
            "a batch of 3 padded to 8 tokens (lengths 8, 5, 2), head 1", 3, 8, 16, 4, 1, [8, 5, 2], seed=74
        ),
        _head_case("one real token and 5 padding tokens", 1, 6, 16, 2, 1, [1], seed=75),
    ]
    check_function(
        "head_attention_map",
        fn,
        _reference_head_attention_map,
        cases,
        atol=1e-5,  # weights in [0, 1]; float32 products of width up to 384 in another order
        rtol=1e-4,
        hint="nn.Linear computes x W^T + b; head h owns rows h*hs .. (h+1)*hs - 1 of W_q and W_k (and of "
        "the biases), hs = d / n_heads, and the scores are divided by sqrt(hs), not sqrt(d); padding is "
        "a property of keys (columns): every query row, padded or not, gives padded keys weight 0",
    )


# ------------------------------------------------------------------------------------ attention distance


def _reference_mean_attention_distance(A: torch.Tensor, length: int) -> torch.Tensor:
    """Mean over the real queries i < length of sum_j A[h, i, j] |i - j|, written as a loop."""
    heads = A.shape[0]
    total = torch.zeros(heads, dtype=A.dtype)
    for i in range(length):
        for j in range(A.shape[-1]):
            total += A[:, i, j] * abs(i - j)
    return total / length  # (heads,)


def _previous_token_head(T: int) -> torch.Tensor:
    """(1, T, T): every token puts all its weight on the one before it; position 0 on itself."""
    A = torch.zeros(1, T, T)
    A[0, 0, 0] = 1.0
    A[0, torch.arange(1, T), torch.arange(T - 1)] = 1.0
    return A


def check_mean_attention_distance(fn) -> None:
    """``fn(A, length) -> (heads,)``: how many positions away, on average, each head's weight lies."""
    require_own_code(fn, "mean_attention_distance")
    cases = [
        Case("12 heads, 9 real tokens, no padding", (_attention_maps(12, 9, 9, seed=80), 9)),
        Case("4 heads, 6 real tokens padded to 10", (_attention_maps(4, 10, 6, seed=81), 6)),
        Case("a head that only looks at itself: distance 0", (torch.eye(7)[None], 7)),
        Case("a previous-token head ([CLS] looks at itself)", (_previous_token_head(6), 6)),
        Case("one real token padded to 4", (_attention_maps(2, 4, 1, seed=82), 1)),
        Case("one head, 20 tokens padded to 24", (_attention_maps(1, 24, 20, seed=83), 20)),
    ]
    check_function(
        "mean_attention_distance",
        fn,
        _reference_mean_attention_distance,
        cases,
        atol=1e-5,  # distances up to ~20 positions, float32 weights
        rtol=1e-5,
        hint="for query row i, the distance to key j is |i - j| (a distance is never negative), weighted by "
        "the row's weights; average over the rows of real tokens only (the first `length`), every one of "
        "them, [CLS] and [SEP] included",
    )

"""Self-checks for chapter 4's notebooks on the real chat model (4.5 meet SmolLM2, 4.6 SFT with LoRA,
4.7 DPO).

4.5: the parameter count of a Llama-style model (reference: :meth:`course_lib.gpt.GPTConfig.num_parameters`,
itself equal to the built model's count). 4.6: the masked next-token loss of SFT (reference: PyTorch's
``cross_entropy`` with ``ignore_index``) and a merged LoRA weight (reference:
:meth:`course_lib.lora.LoRALinear.merge`). 4.7: a batch of preference pairs (reference:
:func:`course_lib.post_training.preference_collate`) and a win rate with its bootstrap interval
(reference: :func:`course_lib.metrics.bootstrap_interval`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.exercises import Case, check_function, require_own_code
from course_lib.gpt import GPTConfig
from course_lib.lm_data import IGNORE_INDEX
from course_lib.lora import LoRALinear
from course_lib.metrics import bootstrap_interval
from course_lib.post_training import preference_collate

# ----------------------------------------------------------------------------- 4.5 parameter count


def _reference_llama_parameters(
    vocab_size: int, n_layer: int, d_model: int, n_head: int, n_kv_head: int, d_ff: int, tied: bool
) -> int:
    cfg = GPTConfig(
        vocab_size=vocab_size,
        block_size=8,
        n_layer=n_layer,
        n_head=n_head,
        d_model=d_model,
        n_kv_head=n_kv_head,
        d_ff=d_ff,
        bias=False,
        positions="rope",
        norm="rmsnorm",
        mlp="swiglu",
        tie_weights=tied,
    )
    return cfg.num_parameters()


def check_llama_parameters(fn) -> None:
    """``fn(vocab_size, n_layer, d_model, n_head, n_kv_head, d_ff, tied) -> int``: the parameters of a
    Llama-style model (RMSNorm, RoPE, grouped-query attention, SwiGLU, no biases)."""
    cases = [
        Case("SmolLM2-135M (9 query heads, 3 key/value heads, tied)", (49152, 30, 576, 9, 3, 1536, True)),
        Case("plain multi-head attention (n_kv_head = n_head)", (1000, 2, 64, 4, 4, 128, True)),
        Case("multi-query attention (one key/value head)", (500, 3, 96, 6, 1, 256, True)),
        Case("untied output layer", (300, 1, 32, 2, 1, 80, False)),
        Case("one layer, one head", (10, 1, 16, 1, 1, 48, True)),
    ]
    require_own_code(fn, "llama_parameters")
    check_function(
        "llama_parameters",
        fn,
        _reference_llama_parameters,
        cases,
        hint="per block: q takes d x d, but k and v only d x (n_kv_head * head_dim) each, head_dim = d / "
        "n_head; the output projection d x d; SwiGLU has three d x d_ff matrices; two RMSNorms of d "
        "weights each (no bias). Then one final RMSNorm, the V x d embedding, and a separate d x V output "
        "layer only when it is not tied. RoPE has no parameters",
    )


# ----------------------------------------------------------------------------- 4.6 masked SFT loss


def _loss_case(label: str, B: int, T: int, V: int, masked: list[int], seed: int, tail: int = 0) -> Case:
    """Labels with the first ``masked[b]`` positions of row b masked (the prompt) and ``tail`` padded."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g) * 2
    labels = torch.randint(0, V, (B, T), generator=g)
    for b, n in enumerate(masked):
        labels[b, :n] = IGNORE_INDEX
        if tail:
            labels[b, T - tail :] = IGNORE_INDEX
    return Case(label, (logits, labels))


def _reference_sft_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(
        logits.double().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX
    )


def check_sft_loss(fn) -> None:
    """``fn(logits (B, T, V), labels (B, T)) -> scalar``: the mean cross-entropy over the positions whose
    label is not IGNORE_INDEX (labels already shifted: ``labels[b, t]`` is the target of ``logits[b, t]``)."""
    cases = [
        _loss_case("nothing masked", 2, 5, 7, [0, 0], 0),
        _loss_case("prompts of different lengths masked", 3, 8, 11, [2, 6, 4], 1),
        _loss_case("masked prompt and padding at the end", 2, 9, 6, [3, 5], 2, tail=2),
        _loss_case("one row with a single label left", 2, 6, 5, [5, 1], 3),
    ]
    require_own_code(fn, "sft_loss", forbidden=("cross_entropy", "nll_loss"))
    check_function(
        "sft_loss",
        fn,
        _reference_sft_loss,
        cases,
        atol=1e-5,
        rtol=1e-5,
        hint="take log_softmax over the vocabulary, pick each position's label entry (a masked position has "
        "no valid id: replace -100 by any id before picking, then drop it), and average over the kept "
        "positions of the whole batch: divide by how many labels are not -100, not by B * T and not row "
        "by row. The labels are already shifted: do not shift again",
    )


# ----------------------------------------------------------------------------- 4.6 merged LoRA weight


def _merge_case(
    label: str, d_out: int, d_in: int, r: int, alpha: float, seed: int, zero_b: bool = False
) -> Case:
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(d_out, d_in, generator=g) * 0.1
    A = torch.randn(r, d_in, generator=g) * 0.1
    B = torch.zeros(d_out, r) if zero_b else torch.randn(d_out, r, generator=g) * 0.1
    return Case(label, (W, A, B, alpha, r))


def _reference_merge(W: torch.Tensor, A: torch.Tensor, B: torch.Tensor, alpha: float, r: int) -> torch.Tensor:
    base = nn.Linear(W.shape[1], W.shape[0], bias=False)
    layer = LoRALinear(base, r=r, alpha=alpha)
    with torch.no_grad():
        base.weight.copy_(W)
        layer.lora_A.copy_(A)
        layer.lora_B.copy_(B)
    layer.merge()
    return layer.base.weight.detach().clone()


def check_merge_lora_weight(fn) -> None:
    """``fn(W (out, in), A (r, in), B (out, r), alpha, r) -> (out, in)``: the weight after merging LoRA."""
    cases = [
        _merge_case("a wide layer, r=4, alpha=16", 6, 10, 4, 16.0, 0),
        _merge_case("a tall layer, r=2, alpha=4", 12, 5, 2, 4.0, 1),
        _merge_case("rank 1, alpha = r", 4, 4, 1, 1.0, 2),
        _merge_case("alpha smaller than r", 7, 5, 4, 2.0, 3),
        _merge_case("B still zero (as initialised): nothing changes", 5, 6, 3, 6.0, 4, zero_b=True),
    ]
    require_own_code(fn, "merge_lora_weight")
    check_function(
        "merge_lora_weight",
        fn,
        _reference_merge,
        cases,
        atol=1e-6,
        rtol=1e-5,
        hint="the update has the weight's shape (out, in): which of B @ A and A @ B gives that? It is "
        "scaled by alpha / r (not alpha, not r / alpha) and added to W; return a new tensor",
    )


# ------------------------------------------------------------------------- 4.7 a batch of preference pairs


def _reference_collate(pairs: list[dict[str, list[int]]], pad_id: int) -> tuple[torch.Tensor, ...]:
    b = preference_collate(pairs, pad_id)
    return b["input_ids"], b["attention_mask"], b["answer_mask"]


def check_collate_pairs(fn) -> None:
    """``fn(pairs, pad_id) -> (input_ids, attention_mask, answer_mask)``, each (2B, T): the B chosen rows
    (prompt + chosen answer), then the B rejected rows, right-padded with ``pad_id``."""
    one = [{"prompt": [5, 6, 7], "chosen": [8, 9, 2], "rejected": [10, 2]}]
    two = [
        {"prompt": [1, 2, 3, 4], "chosen": [20, 2], "rejected": [30, 31, 32, 33, 2]},
        {"prompt": [7, 8], "chosen": [40, 41, 42, 2], "rejected": [50, 2]},
    ]
    three = [
        {"prompt": [3], "chosen": [4, 2], "rejected": [5, 6, 2]},
        {"prompt": [3, 3, 3, 3, 3], "chosen": [9, 2], "rejected": [8, 2]},
        {"prompt": [11, 12], "chosen": [13, 14, 15, 16, 17, 2], "rejected": [18, 2]},
    ]
    zero_token = [
        {"prompt": [0, 4, 5], "chosen": [6, 0, 2], "rejected": [0, 2]},
        {"prompt": [4], "chosen": [7, 2], "rejected": [8, 9, 10, 2]},
    ]
    cases = [
        Case("one pair", (one, 99)),
        Case("two pairs, answers of different lengths", (two, 0)),
        Case("three pairs, prompts of different lengths", (three, 1)),
        Case("the pad id is also a real token of the texts", (zero_token, 0)),
    ]
    require_own_code(fn, "collate_pairs")
    check_function(
        "collate_pairs",
        fn,
        _reference_collate,
        cases,
        atol=0,
        rtol=0,
        hint="rows are [chosen of pair 0, ..., chosen of pair B-1, rejected of pair 0, ...], each prompt + "
        "answer, padded on the right to the longest row; attention_mask is 1 on the real tokens (count "
        "them: the pad id can also be a real token), answer_mask 1 on the answer's tokens only",
    )


# ----------------------------------------------------------------------------- 4.7 win rate and its interval


def _reference_win_rate(new: list[float], old: list[float], seed: int) -> tuple[float, float, float]:
    wins = [1.0 if n > o else 0.5 if n == o else 0.0 for n, o in zip(new, old)]
    lo, hi = bootstrap_interval(wins, seed=seed)
    return float(np.mean(wins)), lo, hi


def check_win_rate_interval(fn) -> None:
    """``fn(new_scores, old_scores, seed) -> (win_rate, lo, hi)``: the share of items where the new
    method scores higher (a tie counts half) and its 95% percentile-bootstrap interval (2,000 resamples)."""
    rng = np.random.default_rng(7)
    a = rng.random(40).round(1).tolist()
    b = rng.random(40).round(1).tolist()
    cases = [
        Case("new always better", ([0.5, 0.6, 0.7, 0.8], [0.1, 0.2, 0.3, 0.4], 0)),
        Case(
            "some ties (a tie counts half)",
            ([0.2, 0.5, 0.5, 0.1, 0.9, 0.3], [0.1, 0.5, 0.4, 0.1, 0.2, 0.6], 0),
        ),
        Case("40 items with ties, seed 3", (a, b, 3)),
        Case("mostly worse, seed 1", ([0.1, 0.2, 0.0, 0.3, 0.9], [0.4, 0.5, 0.6, 0.3, 0.1], 1)),
    ]
    require_own_code(fn, "win_rate_interval")
    check_function(
        "win_rate_interval",
        fn,
        _reference_win_rate,
        cases,
        atol=1e-12,
        rtol=1e-9,
        hint="first one number per item: 1 for a win, 0.5 for a tie, 0 for a loss; resample those numbers "
        "(not the two score lists separately), drawing a (2000, n) array of indices with the integers method "
        "of NumPy's default_rng made from the seed; the interval is the 0.025 and 0.975 quantiles of the "
        "2,000 resampled means",
    )

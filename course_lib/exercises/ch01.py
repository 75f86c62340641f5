"""Self-checks for chapter 1: counting parameters, the memory of training, a compute-optimal plan."""

from __future__ import annotations

from course_lib.exercises import Case, check_function, require_own_code
from course_lib.gpt import get_config
from course_lib.model_costs import chinchilla_tokens, training_flops, training_memory

# (vocab_size, block_size, n_layer, d_model): GPT-2's four published shapes and two odd small ones
_GPT2_SHAPES = [
    ("GPT-2 124M", 50257, 1024, 12, 768),
    ("GPT-2 355M", 50257, 1024, 24, 1024),
    ("GPT-2 1.5B", 50257, 1024, 48, 1600),
    ("one layer, tiny vocabulary", 10, 8, 1, 16),
    ("three layers, odd vocabulary", 97, 32, 3, 64),
    ("wide and short", 300, 16, 2, 96),
]


def _reference_gpt2_count(vocab_size: int, block_size: int, n_layer: int, d_model: int) -> int:
    n_head = 1 if d_model % 64 else d_model // 64
    cfg = get_config(
        "gpt2", vocab_size=vocab_size, block_size=block_size, n_layer=n_layer, d_model=d_model, n_head=n_head
    )
    return cfg.num_parameters()


def check_gpt2_parameter_count(fn) -> None:
    """``fn(vocab_size, block_size, n_layer, d_model) -> int``: a GPT-2 style model with tied embeddings."""
    require_own_code(fn, "gpt2_parameter_count")
    cases = [Case(label, (v, t, n, d)) for label, v, t, n, d in _GPT2_SHAPES]
    check_function(
        "gpt2_parameter_count",
        fn,
        _reference_gpt2_count,
        cases,
        hint="embeddings V*d + T*d; per block two LayerNorms (2d each), attention (4d^2 + 4d), "
        "MLP (8d^2 + 5d); a final LayerNorm; the output layer shares the token embedding",
    )


def _reference_adamw_bytes(n_params: int) -> int:
    return int(training_memory(n_params, "fp32", "adamw").total)


def check_adamw_training_bytes(fn) -> None:
    """``fn(n_params) -> int``: bytes of weights, gradients and AdamW states, all fp32."""
    require_own_code(fn, "adamw_training_bytes")
    cases = [Case(f"{n:,} parameters", (n,)) for n in (1, 1000, 124_439_808, 6_738_415_616)]
    check_function(
        "adamw_training_bytes",
        fn,
        _reference_adamw_bytes,
        cases,
        hint="count 4-byte floats: one for the weight, one for its gradient, and AdamW's two moments",
    )


def _reference_compute_optimal_plan(flops: float, tokens_per_parameter: float = 20.0) -> tuple[float, float]:
    """Bisection on log N for training_flops(N, r N) == flops, with course_lib's 6ND and r = D / N."""
    per = tokens_per_parameter / chinchilla_tokens(1.0)  # the course's rule, rescaled to this ratio
    lo, hi = -10.0, 40.0  # log10 N
    for _ in range(200):
        mid = (lo + hi) / 2
        n = 10.0**mid
        lo, hi = (mid, hi) if training_flops(n, per * chinchilla_tokens(n)) < flops else (lo, mid)
    n = 10.0 ** ((lo + hi) / 2)
    return n, tokens_per_parameter * n


def check_compute_optimal_plan(fn) -> None:
    """``fn(flops, tokens_per_parameter=20) -> (n_params, n_tokens)`` with 6 N D = flops, D = r N."""
    require_own_code(fn, "compute_optimal_plan")
    cases = [
        Case("1e21 FLOPs (one H100 for about a month)", (1e21,)),
        Case("Chinchilla's budget, 6 x 70e9 x 1.4e12 FLOPs", (6 * 70e9 * 1.4e12,)),
        Case("a tiny budget of 1.2e5 FLOPs", (1.2e5,)),
        Case("an integer budget, 10**24", (10**24,)),
        Case("1e21 FLOPs at 100 tokens per parameter", (1e21,), {"tokens_per_parameter": 100.0}),
        Case("1e18 FLOPs at 1 token per parameter", (1e18,), {"tokens_per_parameter": 1.0}),
    ]
    check_function(
        "compute_optimal_plan",
        fn,
        _reference_compute_optimal_plan,
        cases,
        atol=0.0,
        rtol=1e-6,  # a closed form against a bisection in float64
        hint="write the budget with D replaced by r N (r = tokens_per_parameter) and solve for N; "
        "return N first, then D",
    )

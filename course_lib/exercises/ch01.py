"""Self-checks for chapter 1: counting parameters and the memory of training."""

from __future__ import annotations

from course_lib.exercises import Case, check_function
from course_lib.gpt import get_config
from course_lib.model_costs import training_memory

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
    cases = [Case(f"{n:,} parameters", (n,)) for n in (1, 1000, 124_439_808, 6_738_415_616)]
    check_function(
        "adamw_training_bytes",
        fn,
        _reference_adamw_bytes,
        cases,
        hint="count 4-byte floats: one for the weight, one for its gradient, and AdamW's two moments",
    )

"""Self-checks for notebooks 3.6 and 3.7: the bigram baseline, gradient clipping, bfloat16 rounding,
gradient accumulation and a power-law fit.

Each reference is an independent implementation: :class:`course_lib.baselines.BigramLM` for the
baseline, ``torch.nn.utils.clip_grad_norm_`` for clipping, PyTorch's own float32 -> bfloat16 cast for
the rounding, one full-batch backward pass for the accumulated gradients and
:func:`course_lib.model_costs.fit_power_law` for the fit.
"""

from __future__ import annotations

import numpy as np
import torch

from course_lib.baselines import BigramLM
from course_lib.exercises import Case, check_function, require_own_code
from course_lib.gpt import GPT, get_config
from course_lib.model_costs import fit_power_law

# ----------------------------------------------------------------------------- 3.6: the bigram baseline


def _reference_bigram_nll(train_ids: np.ndarray, val_ids: np.ndarray, vocab_size: int, k: float) -> float:
    return BigramLM(vocab_size, k).fit(train_ids).nll(val_ids)


def _random_ids(n: int, vocab_size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, vocab_size + 1)  # Zipf-like: frequent and rare tokens, some pairs unseen
    return rng.choice(vocab_size, size=n, p=weights / weights.sum()).astype(np.int64)


def check_bigram_nll(fn) -> None:
    """``fn(train_ids, val_ids, vocab_size, k) -> float``: add-k bigram loss of val_ids[1:], nats/token."""
    require_own_code(fn, "bigram_nll")
    ids = np.array
    cases = [
        Case(
            "a 12-token stream, V=4, k=1",
            (ids([0, 1, 2, 1, 0, 1, 2, 3, 1, 2, 0, 1]), ids([1, 2, 3, 0, 1]), 4, 1.0),
        ),
        Case(
            "pairs and a token never seen in training, V=6, k=0.01",
            (ids([0, 1, 0, 1, 2, 0]), ids([5, 3, 0, 1, 4]), 6, 0.01),
        ),
        Case(
            "the rarest context is the last training token (count(a) counts a only where a pair starts)",
            (ids([0, 1, 0, 1, 2]), ids([2, 0, 2, 1, 2, 2]), 3, 0.5),
        ),
        Case(
            "2,000 random tokens, V=50, k=0.1", (_random_ids(2000, 50, 0), _random_ids(300, 50, 1), 50, 0.1)
        ),
        Case(
            "5,000 random tokens, V=300, k=0.003",
            (_random_ids(5000, 300, 2), _random_ids(500, 300, 3), 300, 0.003),
        ),
    ]
    check_function(
        "bigram_nll",
        fn,
        _reference_bigram_nll,
        cases,
        atol=1e-9,
        rtol=1e-9,
        hint="count(a, b) over the adjacent pairs of the training stream and count(a) as the first token "
        "of a pair; the denominator adds k once per vocabulary entry; score each validation token from the "
        "second one on, given the token before it, with natural logarithms, and average",
    )


# ----------------------------------------------------------------------------- 3.6: gradient clipping


def _reference_clip(grads: list[torch.Tensor], max_norm: float) -> tuple[list[torch.Tensor], float]:
    """What the Trainer does: torch.nn.utils.clip_grad_norm_ on parameters holding these gradients."""
    params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    total = torch.nn.utils.clip_grad_norm_(params, max_norm)
    return [p.grad for p in params], float(total)


def check_clip_gradients(fn) -> None:
    """``fn(grads, max_norm) -> (clipped grads, total norm before clipping)``, as clip_grad_norm_ does."""
    require_own_code(
        fn,
        "clip_gradients",
        forbidden=("clip_grad_norm_", "clip_grad_norm", "clip_grads_with_norm_", "get_total_norm"),
    )
    g = torch.Generator().manual_seed(0)
    t = torch.tensor
    cases = [
        Case("three tensors of total norm 5, max_norm=1", ([t([3.0, 0.0]), t([[0.0, 4.0]]), t([0.0])], 1.0)),
        Case("total norm 0.5 is below max_norm=1: nothing changes", ([t([0.3, 0.0]), t([0.0, -0.4])], 1.0)),
        Case(
            "each tensor is below max_norm=4.5 but together they are not (one norm over all tensors)",
            ([t([3.0, 0.0]), t([0.0, -4.0])], 4.5),
        ),
        Case("every gradient is zero", ([torch.zeros(3, 2), torch.zeros(4)], 1.0)),
        Case(
            "a matrix, a vector and a scalar, max_norm=0.5",
            (
                [torch.randn(8, 5, generator=g), torch.randn(5, generator=g), torch.randn((), generator=g)],
                0.5,
            ),
        ),
    ]
    check_function(
        "clip_gradients",
        fn,
        _reference_clip,
        cases,
        atol=1e-6,
        rtol=1e-5,
        hint="the total norm is one number for all the tensors together: the square root of the sum of every "
        "squared entry; it is returned as measured before clipping; scale only when it exceeds max_norm, by "
        "max_norm / (total + 1e-6), every tensor by the same factor",
    )


# ----------------------------------------------------------------------------- 3.7: rounding to bfloat16


def _reference_bfloat16(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.bfloat16).to(torch.float32)


def _from_bits(bits: list[int]) -> torch.Tensor:
    """float32 values with exactly these bit patterns (given as unsigned 32-bit integers)."""
    signed = [b - (1 << 32) if b >= 1 << 31 else b for b in bits]
    return torch.tensor(signed, dtype=torch.int32).view(torch.float32)


def check_round_to_bfloat16(fn) -> None:
    """``fn(x) -> float32 tensor``: each value of a float32 tensor rounded to the nearest bfloat16."""
    require_own_code(fn, "round_to_bfloat16", forbidden=("bfloat16",))
    g = torch.Generator().manual_seed(0)
    cases = [
        Case("values a float16 holds exactly", (torch.tensor([1.0, -2.0, 0.5, 0.0, 96.0, -0.25]),)),
        Case("1000 random normal values", (torch.randn(1000, generator=g),)),
        Case(
            "just above and below half-way between two bfloat16 numbers",
            (_from_bits([0x3F808001, 0x3F807FFF, 0xBF808001, 0xBF807FFF, 0x40490FDB]),),
        ),
        Case(
            "exactly half-way: ties go to the neighbour whose last kept bit is 0",
            (_from_bits([0x3F808000, 0x3F818000, 0xBF808000, 0xBF818000, 0x47F18000]),),
        ),
        Case(
            "large and tiny magnitudes (beyond float16's range)",
            (torch.tensor([70000.0, -1.0e20, 3.0e38, 1.0e-10, -2.5e-30, 1.0e-39]),),
        ),
        Case("a 2-D tensor: shape kept", (torch.randn(4, 6, generator=g) * 100,)),
    ]
    check_function(
        "round_to_bfloat16",
        fn,
        _reference_bfloat16,
        cases,
        atol=0,
        rtol=0,
        hint="bfloat16 is the top 16 bits of a float32 (sign, 8 exponent bits, 7 mantissa bits); work on the "
        "bits (a view as int32), round to nearest rather than cut, and resolve exact ties towards an even "
        "last kept bit; return float32 of the input's shape",
    )


# ----------------------------------------------------------------------------- 3.7: gradient accumulation


def _tiny_gpt(seed: int) -> GPT:
    torch.manual_seed(seed)
    cfg = get_config("tiny", vocab_size=40, block_size=8, n_layer=1, n_head=2, d_model=16, dropout=0.0)
    return GPT(cfg)


def _accum_case(label: str, batch: int, micro: int, seed: int) -> Case:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 40, (batch, 8), generator=g)
    y = torch.randint(0, 40, (batch, 8), generator=g)
    return Case(label, (seed, x, y, micro))


def _reference_full_batch(seed: int, x: torch.Tensor, y: torch.Tensor, micro_batch_size: int) -> list:
    """The gradient of the mean loss over the whole batch, in one backward pass."""
    model = _tiny_gpt(seed)
    model.zero_grad()
    model(x, y)[1].backward()
    return [p.grad for p in model.parameters()]


def check_accumulated_gradients(fn) -> None:
    """``fn(model, x, y, micro_batch_size) -> the gradient of every parameter``, for the whole batch."""

    def learner(seed, x, y, micro_batch_size):
        model = _tiny_gpt(seed)
        for p in model.parameters():  # left over from an earlier step: the answer must clear them
            p.grad = torch.ones_like(p)
        got = fn(model, x, y, micro_batch_size)
        if got is None or isinstance(got, torch.Tensor):
            return got
        return list(got)

    cases = [
        _accum_case("a batch of 8 in micro-batches of 2", 8, 2, 0),
        _accum_case("one micro-batch holds the whole batch of 5", 5, 5, 1),
        _accum_case("a batch of 6 in micro-batches of 1", 6, 1, 2),
        _accum_case("a batch of 10 in micro-batches of 4: the last one holds only 2", 10, 4, 3),
        _accum_case("a batch of 7 in micro-batches of 3: sizes 3, 3, 1", 7, 3, 4),
    ]
    check_function(
        "accumulated_gradients",
        learner,
        _reference_full_batch,
        cases,
        atol=1e-6,
        rtol=1e-4,
        hint="start from cleared gradients (the model arrives with old ones), let backward() add up the "
        "micro-batches' gradients, and weight each micro-batch's mean loss by its share of the whole "
        "batch's rows (the last micro-batch may be smaller); return the .grad of every parameter in order",
    )


# ----------------------------------------------------------------------------- 3.7: a power-law fit


def check_power_law_fit(fn) -> None:
    """``fn(x, y) -> (a, b)``: least-squares fit of y = a x^b as a straight line on log-log axes."""
    require_own_code(fn, "power_law_fit", forbidden=("polyfit", "lstsq", "linregress", "fit"))
    rng = np.random.default_rng(0)
    compute = np.logspace(11, 13, 12)
    cases = [
        Case("an exact law y = 2 x^-0.5 at four points", ([1.0, 4.0, 16.0, 64.0], [2.0, 1.0, 0.5, 0.25])),
        Case("two points: the line through them", ([10.0, 1000.0], [5.0, 20.0])),
        Case(
            "a growing law y = 0.3 x^1.7 with noise",
            (np.arange(1.0, 21.0), 0.3 * np.arange(1.0, 21.0) ** 1.7 * np.exp(rng.normal(0, 0.1, 20))),
        ),
        Case(
            "losses of 3 to 5 nats against 1e11 to 1e13 FLOPs",
            (compute, 40.0 * compute**-0.1 * np.exp(rng.normal(0, 0.02, 12))),
        ),
        Case("x and y given as lists of integers", ([1, 2, 3, 5, 8], [100, 60, 45, 30, 22])),
    ]
    check_function(
        "power_law_fit",
        fn,
        fit_power_law,
        cases,
        atol=1e-9,
        rtol=1e-7,
        hint="take the logarithm of x and of y, fit log y = log a + b log x by least squares (slope: "
        "covariance over the variance of log x; intercept: through the means), then undo the logarithm "
        "for a; return (a, b) in that order, as plain numbers",
    )


__all__ = [
    "check_accumulated_gradients",
    "check_bigram_nll",
    "check_clip_gradients",
    "check_power_law_fit",
    "check_round_to_bfloat16",
]

"""Self-checks for chapter 3: gradients by hand, an AdamW step, the learning-rate schedule, LM batches.

Each reference is an independent implementation: autograd for the gradients, ``torch.optim.AdamW`` for
the optimizer step, :func:`course_lib.trainer.lr_at` for the schedule and
:func:`course_lib.lm_data.get_batch` for the batch sampler.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from course_lib.exercises import Case, check_function
from course_lib.lm_data import get_batch
from course_lib.trainer import TrainConfig, lr_at

# ----------------------------------------------------------------------------- logistic regression


def _logistic_case(
    label: str, n: int, d: int, seed: int, scale: float = 1.0, y_value: int | None = None
) -> Case:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * scale
    y = rng.integers(0, 2, size=n).astype(np.float64) if y_value is None else np.full(n, float(y_value))
    w = rng.normal(size=d)
    b = float(rng.normal())
    return Case(label, (X, y, w, b))


def _reference_logistic_gradient(X: np.ndarray, y: np.ndarray, w: np.ndarray, b: float):
    """Autograd of the mean binary cross-entropy with logits, in float64."""
    wt = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    bt = torch.tensor(b, dtype=torch.float64, requires_grad=True)
    z = torch.from_numpy(X) @ wt + bt
    F.binary_cross_entropy_with_logits(z, torch.from_numpy(y)).backward()
    return wt.grad.numpy(), float(bt.grad)


def check_logistic_gradient(fn) -> None:
    """``fn(X, y, w, b) -> (grad_w, grad_b)`` of the mean cross-entropy of sigmoid(X w + b)."""
    cases = [
        _logistic_case("8 examples, 3 features", 8, 3, 0),
        _logistic_case("one example", 1, 4, 1),
        _logistic_case("64 pixels, 50 images", 50, 64, 2),
        _logistic_case("all labels 1", 10, 2, 3, y_value=1),
        _logistic_case("large logits (|z| up to ~30)", 12, 3, 4, scale=10.0),
    ]
    check_function(
        "logistic_gradient",
        fn,
        _reference_logistic_gradient,
        cases,
        atol=1e-10,
        rtol=1e-8,
        hint="with p = sigmoid(X @ w + b): grad_w = X.T @ (p - y) / N and grad_b = mean(p - y); "
        "return grad_b as a float",
    )


# ----------------------------------------------------------------------------- a 2-layer MLP backward


def _mlp_case(label: str, batch: int, d_in: int, hidden: int, classes: int, seed: int) -> Case:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, d_in, generator=g, dtype=torch.float64)
    y = torch.randint(0, classes, (batch,), generator=g)
    W1 = torch.randn(d_in, hidden, generator=g, dtype=torch.float64) / d_in**0.5
    b1 = torch.randn(hidden, generator=g, dtype=torch.float64) * 0.1
    W2 = torch.randn(hidden, classes, generator=g, dtype=torch.float64) / hidden**0.5
    b2 = torch.randn(classes, generator=g, dtype=torch.float64) * 0.1
    return Case(label, (x, y, W1, b1, W2, b2))


def _reference_two_layer_backward(x, y, W1, b1, W2, b2):
    params = [t.clone().requires_grad_(True) for t in (W1, b1, W2, b2)]
    W1, b1, W2, b2 = params
    logits = torch.relu(x @ W1 + b1) @ W2 + b2
    F.cross_entropy(logits, y).backward()
    return tuple(p.grad for p in params)


def check_two_layer_backward(fn) -> None:
    """``fn(x, y, W1, b1, W2, b2) -> (dW1, db1, dW2, db2)`` for a ReLU MLP with mean cross-entropy."""
    cases = [
        _mlp_case("batch 4, 3 -> 5 -> 2", 4, 3, 5, 2, 0),
        _mlp_case("one example", 1, 6, 4, 3, 1),
        _mlp_case("digits-sized: 64 -> 32 -> 10", 16, 64, 32, 10, 2),
        _mlp_case("wide hidden layer", 8, 5, 100, 4, 3),
    ]
    check_function(
        "two_layer_backward",
        fn,
        _reference_two_layer_backward,
        cases,
        atol=1e-10,
        rtol=1e-8,
        hint="dz2 = (softmax(logits) - onehot(y)) / B; dW2 = h.T @ dz2; db2 = dz2.sum(0); "
        "dh = dz2 @ W2.T; dz1 = dh * (z1 > 0); dW1 = x.T @ dz1; db1 = dz1.sum(0)",
    )


# ----------------------------------------------------------------------------- one AdamW step


def _adamw_case(label: str, shape: tuple[int, ...], step: int, lr: float, betas, eps, wd, seed: int) -> Case:
    g = torch.Generator().manual_seed(seed)
    param = torch.randn(shape, generator=g, dtype=torch.float64)
    grad = torch.randn(shape, generator=g, dtype=torch.float64)
    if step == 1:
        m, v = torch.zeros(shape, dtype=torch.float64), torch.zeros(shape, dtype=torch.float64)
    else:
        m = torch.randn(shape, generator=g, dtype=torch.float64) * 0.1
        v = torch.rand(shape, generator=g, dtype=torch.float64) * 0.01
    return Case(label, (param, grad, m, v, step, lr, betas, eps, wd))


def _reference_adamw_step(param, grad, m, v, step, lr, betas, eps, weight_decay):
    """torch.optim.AdamW with its state set to (m, v) after ``step - 1`` steps."""
    p = param.clone().requires_grad_(True)
    opt = torch.optim.AdamW([p], lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, foreach=False)
    if step > 1:
        opt.state[p] = {"step": torch.tensor(float(step - 1)), "exp_avg": m.clone(), "exp_avg_sq": v.clone()}
    p.grad = grad.clone()
    opt.step()
    state = opt.state[p]
    return p.detach(), state["exp_avg"], state["exp_avg_sq"]


def check_adamw_step(fn) -> None:
    """``fn(param, grad, m, v, step, lr, betas, eps, weight_decay) -> (param, m, v)``, step counted from 1."""
    cases = [
        _adamw_case("the first step", (5,), 1, 1e-2, (0.9, 0.999), 1e-8, 0.01, 0),
        _adamw_case("step 10, a matrix", (3, 4), 10, 1e-3, (0.9, 0.95), 1e-8, 0.1, 1),
        _adamw_case("no weight decay (plain Adam)", (6,), 3, 3e-4, (0.9, 0.999), 1e-8, 0.0, 2),
        _adamw_case("strong decay, large eps", (2, 2), 100, 1e-1, (0.8, 0.9), 1e-3, 0.5, 3),
    ]
    check_function(
        "adamw_step",
        fn,
        _reference_adamw_step,
        cases,
        atol=1e-12,
        rtol=1e-10,
        hint="decay first: param * (1 - lr * wd); then m and v; divide m by 1 - b1**step and v by "
        "1 - b2**step; param - lr * m_hat / (sqrt(v_hat) + eps)",
    )


# ----------------------------------------------------------------------------- warmup + cosine


def _reference_lr(step: int, max_steps: int, warmup_steps: int, lr: float, min_lr: float) -> float:
    return lr_at(step, TrainConfig(max_steps=max_steps, warmup_steps=warmup_steps, lr=lr, min_lr=min_lr))


def check_warmup_cosine_lr(fn) -> None:
    """``fn(step, max_steps, warmup_steps, lr, min_lr) -> float``: the Trainer's schedule."""
    grid = [(s, 1000, 100, 1e-3, 1e-4) for s in (0, 1, 50, 99, 100, 101, 550, 999, 1000, 1200)]
    cases = [Case(f"step {s} of {m}, warmup {w}", (s, m, w, lr, lo)) for s, m, w, lr, lo in grid]
    cases += [
        Case("no warmup, first step", (0, 10, 0, 0.1, 0.0)),
        Case("no warmup, half way", (5, 10, 0, 0.1, 0.0)),
        Case("min_lr equal to lr", (7, 20, 5, 3e-4, 3e-4)),
        Case("warmup as long as training", (10, 10, 10, 1.0, 0.1)),
    ]
    check_function(
        "warmup_cosine_lr",
        fn,
        _reference_lr,
        cases,
        atol=1e-12,
        rtol=1e-9,
        hint="during warmup the rate grows linearly, reaching lr * W / (W + 1) at step W - 1; the cosine "
        "part goes from lr at step W to min_lr at step max_steps, with the progress (step - W) divided by "
        "max(1, max_steps - W); after max_steps it stays at min_lr",
    )


# ----------------------------------------------------------------------------- the LM batch sampler


def check_lm_batch(fn) -> None:
    """``fn(data, batch_size, block_size, generator) -> (x, y)``: random windows, y = x shifted by one."""

    def learner(data, batch_size, block_size, seed):
        return fn(data, batch_size, block_size, torch.Generator().manual_seed(seed))

    def reference(data, batch_size, block_size, seed):
        return get_batch(data, batch_size, block_size, torch.Generator().manual_seed(seed), device="cpu")

    stream = torch.arange(1000, 1100)  # distinct ids: any off-by-one shows
    cases = [
        Case("4 windows of 8", (stream, 4, 8, 0)),
        Case("one window", (stream, 1, 16, 1)),
        Case("windows of one token", (stream, 5, 1, 2)),
        Case("the stream is exactly one window long", (stream[:33], 3, 32, 3)),
        Case(
            "random token ids",
            (torch.randint(0, 50, (500,), generator=torch.Generator().manual_seed(4)), 8, 20, 4),
        ),
    ]
    check_function(
        "lm_batch",
        learner,
        reference,
        cases,
        atol=0,
        rtol=0,
        hint="draw all the start positions with one torch.randint call as the exercise text says (same "
        "bound, same shape, the generator passed in); each x row is block_size tokens from a start, its "
        "y row the same span moved one token to the right; stack the rows into int64 tensors",
    )


# ----------------------------------------------------------------------------- batch normalisation


def _bn_case(label: str, shape: tuple[int, ...], seed: int, eps: float = 1e-5, spread: float = 1.0) -> Case:
    g = torch.Generator().manual_seed(seed)
    C = shape[1]
    x = torch.randn(shape, generator=g, dtype=torch.float64) * spread + 3.0  # mean far from 0: centring shows
    gamma = torch.rand(C, generator=g, dtype=torch.float64) + 0.5
    beta = torch.randn(C, generator=g, dtype=torch.float64)
    return Case(label, (x, gamma, beta, eps))


def _reference_batch_norm(x, gamma, beta, eps):
    """PyTorch's batch norm in training mode (batch statistics, no running averages)."""
    return F.batch_norm(x, None, None, weight=gamma, bias=beta, training=True, eps=eps)


def check_batch_norm_train(fn) -> None:
    """``fn(x, gamma, beta, eps) -> y``: training-mode batch norm of images x (B, C, H, W), per channel."""
    cases = [
        _bn_case("a batch of 8 images, 3 channels, 4x4", (8, 3, 4, 4), 0),
        _bn_case("two 1x1 images per channel (few values: the variance's divisor shows)", (2, 5, 1, 1), 1),
        _bn_case("one image, 2 channels, 6x6", (1, 2, 6, 6), 2),
        _bn_case("tiny variance, eps=0.1 (where eps goes shows)", (4, 3, 2, 2), 3, eps=0.1, spread=0.05),
        _bn_case("channels of different scales", (6, 4, 3, 3), 4, spread=10.0),
    ]
    check_function(
        "batch_norm_train",
        fn,
        _reference_batch_norm,
        cases,
        atol=1e-10,
        rtol=1e-8,
        hint="each channel gets its own mean and variance, taken over the batch and both image dimensions; "
        "look at which dims you reduce over, at the divisor of the variance (the biased one, over the "
        "number of values), at where eps is added, and at gamma and beta being applied per channel",
    )

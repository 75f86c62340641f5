"""Self-checks for chapter 3: gradients by hand, finite differences, an AdamW step, the learning-rate
schedule, dropout, a convolution, batch norm, a confusion matrix, LM batches (then BPE and a GPT).

Each reference is an independent implementation: autograd for the gradients,
:func:`course_lib.training_basics.numerical_gradient` for finite differences, ``torch.optim.AdamW`` for
the optimizer step, :func:`course_lib.trainer.lr_at` for the schedule, ``F.dropout``'s rule for dropout,
``F.conv2d`` and ``F.batch_norm`` for the layers, :mod:`course_lib.metrics` for the confusion matrix and
:func:`course_lib.lm_data.get_batch` for the batch sampler.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.exercises import Case, ExerciseFailure, check_function, not_written_yet, require_own_code
from course_lib.lm_data import get_batch
from course_lib.trainer import TrainConfig, lr_at

# ----------------------------------------------------------------------------- logistic regression

_AUTOGRAD = ("backward", "grad", "vjp", "jacobian")  # the gradient exercises are by hand, not autograd


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
    require_own_code(fn, "logistic_gradient", forbidden=_AUTOGRAD)
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


# ----------------------------------------------------------------------------- finite differences


def _fd_quadratic(x: np.ndarray) -> float:
    return float(0.5 * x @ _FD_A @ x)


def _fd_wavy(x: np.ndarray) -> float:  # curved in every direction: a one-sided difference is off by ~eps
    return float(np.sum(np.sin(3 * x) * _FD_W[: x.size].reshape(x.shape)) + np.sum(x**3) / 3)


def _fd_logistic(v: np.ndarray) -> float:
    X, y = _FD_XY
    z = X @ v[:-1] + v[-1]
    return float(np.mean(np.logaddexp(0, z) - y * z))


_fd_rng = np.random.default_rng(7)
_FD_A = _fd_rng.normal(size=(4, 4))
_FD_A = _FD_A @ _FD_A.T
_FD_W = _fd_rng.normal(size=12)
_FD_XY = (_fd_rng.normal(size=(20, 5)), _fd_rng.integers(0, 2, size=20).astype(np.float64))


def _reference_numerical_gradient(f, x: np.ndarray, eps: float) -> np.ndarray:
    from course_lib.training_basics import numerical_gradient

    return numerical_gradient(f, x, eps)


def check_numerical_gradient(fn) -> None:
    """``fn(f, x, eps) -> grad``: central differences of ``f`` at ``x``, one entry at a time, x's shape."""
    require_own_code(fn, "numerical_gradient")
    rng = np.random.default_rng(8)
    cases = [
        Case("a quadratic in 4 numbers, eps 1e-6", (_fd_quadratic, rng.normal(size=4), 1e-6)),
        Case(
            "a curved function, eps 1e-3 (a one-sided difference is off here)",
            (_fd_wavy, rng.normal(size=6), 1e-3),
        ),
        Case("a (3, 4) array: the gradient keeps x's shape", (_fd_wavy, rng.normal(size=(3, 4)), 1e-4)),
        Case("the logistic loss, 5 weights and a bias", (_fd_logistic, rng.normal(size=6), 1e-5)),
        Case("one number", (_fd_wavy, np.array([0.3]), 1e-2)),
    ]
    check_function(
        "numerical_gradient",
        fn,
        _reference_numerical_gradient,
        cases,
        atol=1e-9,
        rtol=1e-7,
        hint="for each entry i: evaluate f with only x[i] raised by eps, then with only x[i] lowered by eps "
        "(every other entry unchanged, x[i] put back afterwards), and divide the difference of the two "
        "values by the distance between the two points, 2 eps; return an array of x's shape",
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
    require_own_code(fn, "two_layer_backward", forbidden=_AUTOGRAD)
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
        hint="go backwards one layer at a time: the loss's gradient with respect to the logits is the "
        "softmax minus the one-hot targets, divided by the batch size (the loss is a mean); a weight's "
        "gradient is its layer's input transposed times the gradient at its output, a bias's the sum over "
        "the batch; the ReLU passes gradient only where its input was positive",
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
    require_own_code(fn, "adamw_step", forbidden=("AdamW", "Adam", "adamw", "adam"))
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
    require_own_code(fn, "warmup_cosine_lr", forbidden=("LambdaLR", "CosineAnnealingLR", "OneCycleLR"))
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


# ----------------------------------------------------------------------------- inverted dropout

_DROPOUT_HINT = (
    "draw one uniform number per entry with the generator passed in; an entry is dropped (set to 0) "
    "with probability p and kept otherwise; divide the kept entries by 1 - p so that the expected "
    "value of each entry stays x; when training is False return x untouched"
)


def _dropout_input(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) + 3.0 * torch.sign(torch.randn(shape, generator=g))  # never 0


def _run_dropout(fn, where: str, x: torch.Tensor, p: float, training: bool, seed: int = 0) -> torch.Tensor:
    try:
        out = fn(x.clone(), p, training, torch.Generator().manual_seed(seed))
    except NotImplementedError:
        raise not_written_yet("dropout") from None
    except Exception as err:
        raise ExerciseFailure(f"{where}: your function raised {type(err).__name__}: {err}") from None
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ExerciseFailure(f"{where}: return a tensor of x's shape {tuple(x.shape)}, got {got}")
    return out


def _dropout_case(fn, where: str, x: torch.Tensor, p: float, training: bool, share_test: bool) -> None:
    """In eval mode (or p = 0) x itself; in training mode each entry 0 or x / (1 - p), a share 1 - p kept."""
    out = _run_dropout(fn, where, x, p, training)
    hint = f"\n  hint: {_DROPOUT_HINT}"
    if not training or p == 0.0:
        reference = F.dropout(x, p, training=False)  # PyTorch: dropout off is the identity
        if not torch.equal(out, reference):
            raise ExerciseFailure(
                f"{where}: with dropout off (eval mode, or p = 0) the output must be x unchanged; "
                f"{int((out != reference).sum())} of {x.numel()} entries differ.{hint}"
            )
        return
    kept = out != 0
    if p < 1 and not torch.allclose(out[kept], x[kept] / (1 - p), rtol=1e-5, atol=1e-6):
        ratio = (out[kept] / x[kept]).nanmedian().item()
        raise ExerciseFailure(
            f"{where}: a kept entry should be x / (1 - p) = x * {1 / (1 - p):.4g}; yours are x * {ratio:.4g} "
            f"(the median ratio).{hint}"
        )
    share = kept.double().mean().item()
    if (share_test or p == 1) and abs(share - (1 - p)) > 0.02:
        raise ExerciseFailure(
            f"{where}: {share:.3f} of the entries survive; with p = {p} it should be about {1 - p:.3f} "
            f"(p is the probability of dropping an entry)"
            f"{'; none may be nan' if out.isnan().any() else ''}.{hint}"
        )


def check_dropout(fn) -> None:
    """``fn(x, p, training, generator) -> y``: inverted dropout, the rule ``F.dropout`` follows.

    In training mode each entry is zeroed with probability ``p`` (random numbers from ``generator``) and
    the survivors are divided by ``1 - p``; in evaluation mode, or with ``p = 0``, x comes back unchanged.
    The masks are random, so training mode is checked by its rule: every entry 0 or x / (1 - p), and the
    share kept within 0.02 of 1 - p on 20,000 entries (over 5 standard deviations at p = 0.5).
    """
    require_own_code(fn, "dropout", forbidden=("dropout", "Dropout", "dropout_", "feature_dropout"))
    x = _dropout_input((200, 100), 0)
    cases = [
        ("training, p = 0.5", x, 0.5, True, True),
        ("training, p = 0.2 (p is the chance to drop, not to keep)", x, 0.2, True, True),
        ("training, p = 0.9", x, 0.9, True, True),
        ("evaluation mode, p = 0.5: nothing dropped, nothing scaled", x, 0.5, False, True),
        ("training, p = 0: the identity", x, 0.0, True, True),
        ("training, p = 1: every entry dropped, no nan", x[:10], 1.0, True, True),
        ("a (4, 3, 5) batch of activations, p = 0.3", _dropout_input((4, 3, 5), 1), 0.3, True, False),
    ]
    n = len(cases) + 1
    for i, (label, xs, p, training, share_test) in enumerate(cases, 1):
        _dropout_case(fn, f"dropout, case {i} of {n} ({label})", xs, p, training, share_test)
    where = f"dropout, case {n} of {n} (the random numbers come from the generator passed in)"
    first, again, other = (_run_dropout(fn, where, x, 0.5, True, seed) for seed in (1, 1, 2))
    if not torch.equal(first, again) or torch.equal(first, other):
        raise ExerciseFailure(
            f"{where}: two generators with the same seed should give the same mask, and different seeds "
            "different masks; pass generator=generator to the function that draws them."
            f"\n  hint: {_DROPOUT_HINT}"
        )
    print(f"✓ dropout: all {n} cases pass")


# ----------------------------------------------------------------------------- the LM batch sampler


def check_lm_batch(fn) -> None:
    """``fn(data, batch_size, block_size, generator) -> (x, y)``: random windows, y = x shifted by one."""
    require_own_code(fn, "lm_batch")

    def learner(data, batch_size, block_size, seed):
        out = fn(data, batch_size, block_size, torch.Generator().manual_seed(seed))
        parts = out if isinstance(out, (tuple, list)) else ()
        wrong = [t.dtype for t in parts if isinstance(t, torch.Tensor) and t.dtype != torch.int64]
        if wrong:  # nn.Embedding takes int32, but cross_entropy's targets must be int64: catch it here
            raise TypeError(f"x and y must be int64 (torch.long) tensors of token ids, got {wrong[0]}")
        return out

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


# ----------------------------------------------------------------------------- a convolution


def _conv_case(
    label: str, x_shape: tuple[int, ...], w_shape: tuple[int, ...], padding: int, seed: int
) -> Case:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(x_shape, generator=g, dtype=torch.float64)
    weight = torch.randn(w_shape, generator=g, dtype=torch.float64)
    bias = torch.randn(w_shape[0], generator=g, dtype=torch.float64)
    return Case(label, (x, weight, bias, padding))


def _reference_conv2d(x, weight, bias, padding):
    """PyTorch's convolution (a cross-correlation: the kernel is not flipped), stride 1."""
    return F.conv2d(x, weight, bias, padding=padding)


def check_conv2d(fn) -> None:
    """``fn(x (B, C, H, W), weight (O, C, kH, kW), bias (O,), padding) -> (B, O, H_out, W_out)``, stride 1."""
    require_own_code(fn, "conv2d", forbidden=("conv2d", "convolution", "conv1d", "conv3d", "Conv2d"))
    cases = [
        _conv_case("one 8x8 image, one 3x3 filter, no padding", (1, 1, 8, 8), (1, 1, 3, 3), 0, 0),
        _conv_case(
            "padding 1 keeps 8x8 (DigitCNN's first layer, 4 filters)", (2, 1, 8, 8), (4, 1, 3, 3), 1, 1
        ),
        _conv_case("3 channels in, 5 out: sum over the input channels", (2, 3, 6, 6), (5, 3, 3, 3), 0, 2),
        _conv_case("a 2x3 kernel on a 5x7 image (not square)", (1, 2, 5, 7), (3, 2, 2, 3), 0, 3),
        _conv_case("a 1x1 kernel: a linear layer at every pixel", (3, 4, 4, 4), (2, 4, 1, 1), 0, 4),
        _conv_case("the kernel as large as the image: one output pixel", (2, 2, 3, 3), (3, 2, 3, 3), 0, 5),
        _conv_case("padding 2 on a 4x4 image", (1, 2, 4, 4), (2, 2, 3, 3), 2, 6),
    ]
    check_function(
        "conv2d",
        fn,
        _reference_conv2d,
        cases,
        atol=1e-10,
        rtol=1e-8,
        hint="the output is (H + 2 padding - kH + 1) by (W + 2 padding - kW + 1); pad with zeros on all four "
        "sides; PyTorch does not flip the kernel: out[b, o, i, j] sums weight[o, c, u, v] times the padded "
        "x[b, c, i + u, j + v] over c, u and v, and adds bias[o] once",
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
    require_own_code(
        fn, "batch_norm_train", forbidden=("batch_norm", "BatchNorm2d", "BatchNorm1d", "instance_norm")
    )
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


# ----------------------------------------------------------------------------- confusion matrix


def _reference_per_class_scores(y_true, y_pred, num_classes):
    """course_lib.metrics: counts C[true, predicted], then precision and recall with 0/0 read as 0."""
    from course_lib.metrics import confusion_matrix, precision_recall_f1

    labels = list(range(num_classes))
    scores = precision_recall_f1(y_true.numpy(), y_pred.numpy(), labels=labels)
    cm = confusion_matrix(y_true.numpy(), y_pred.numpy(), labels=labels)
    return cm, scores["precision"], scores["recall"]


def _digit_predictions(n: int, seed: int, error_rate: float) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y_true = torch.randint(0, 10, (n,), generator=g)
    wrong = torch.rand(n, generator=g) < error_rate
    y_pred = torch.where(wrong, torch.randint(0, 10, (n,), generator=g), y_true)
    return y_true, y_pred


def check_per_class_scores(fn) -> None:
    """``fn(y_true, y_pred, num_classes) -> (confusion (C, C), precision (C,), recall (C,))``.

    ``confusion[i, j]`` counts the examples of true class i predicted as j; a ratio 0/0 is 0, as in
    :func:`course_lib.metrics.precision_recall_f1` (scikit-learn's ``zero_division=0``).
    """
    require_own_code(
        fn,
        "per_class_scores",
        forbidden=("confusion_matrix", "precision_recall_f1", "precision_recall_fscore_support"),
    )
    t = torch.tensor
    cases = [
        Case("6 examples, 3 classes", (t([0, 0, 1, 1, 2, 2]), t([0, 1, 1, 1, 0, 2]), 3)),
        Case("every prediction right", (t([2, 0, 1, 2]), t([2, 0, 1, 2]), 3)),
        Case("class 2 is never predicted: precision 0/0 counts as 0", (t([0, 1, 2, 2]), t([0, 1, 1, 0]), 3)),
        Case("class 3 has no examples: recall 0/0 counts as 0", (t([0, 1, 2, 0]), t([0, 3, 2, 3]), 4)),
        Case("5 classes, only 0 and 1 ever seen", (t([0, 1, 1]), t([1, 1, 0]), 5)),
        Case("everything predicted as class 0", (t([0, 1, 2, 1, 0]), t([0, 0, 0, 0, 0]), 3)),
        Case("179 digits, one in five wrong", (*_digit_predictions(179, 0, 0.2), 10)),
    ]
    check_function(
        "per_class_scores",
        lambda y_true, y_pred, c: tuple(fn(y_true, y_pred, c)),
        _reference_per_class_scores,
        cases,
        atol=1e-12,
        rtol=1e-9,
        hint="rows are the true class and columns the prediction, and the matrix is num_classes by "
        "num_classes even when a class never occurs; precision of class c divides the diagonal entry "
        "by everything predicted as c (its column), recall by every true c (its row); where that total "
        "is 0, the score is 0, not nan",
    )


# ============================================================================= byte-level BPE (notebook 3.4)
# The references are course_lib.tokenizers (trained and applied by its own, faster code) and
# course_lib.metrics.tokenizer_compression; the learner's functions work on plain ids and dicts.

_BPE_TEXTS = [
    "The government announced new plans for the economy on Tuesday. The plans were welcomed by business.",
    "Shares in the firm rose by 5% after the announcement, the highest rise in the market this year.",
    "中国经济今年保持稳定增长，国内生产总值比上年增长百分之八。",
    "人民日报报道，全国人民代表大会在北京召开，代表们讨论了经济发展问题。",
    "Mr Brown said the economy was strong, and that the new plans would help the economy grow.",
]


def _bpe_words(texts: list[str]) -> dict[tuple[int, ...], int]:
    """Pre-tokens (GPT-2's pattern) as tuples of UTF-8 byte values, with how often each occurs."""
    import regex

    from course_lib.tokenizers import GPT2_SPLIT_PATTERN

    counts: dict[tuple[int, ...], int] = {}
    for text in texts:
        for word in regex.findall(GPT2_SPLIT_PATTERN, text):
            key = tuple(word.encode("utf-8"))
            counts[key] = counts.get(key, 0) + 1
    return counts


def _reference_count_pairs(words: dict[tuple[int, ...], int]) -> dict[tuple[int, int], int]:
    counts: dict[tuple[int, int], int] = {}
    for word, freq in words.items():
        for i in range(len(word) - 1):
            counts[word[i], word[i + 1]] = counts.get((word[i], word[i + 1]), 0) + freq
    return counts


def check_count_pairs(fn) -> None:
    """``fn(words) -> {(a, b): count}``: adjacent pairs inside each word, weighted by the word's count."""
    require_own_code(fn, "count_pairs")
    cases = [
        Case("one word", ({(1, 2, 3): 1},)),
        Case("pairs never cross from one word into the next", ({(1, 2): 1, (3, 4): 1},)),
        Case("a word seen 5 times counts its pairs 5 times", ({(1, 2, 3): 5, (2, 3): 2},)),
        Case("(7, 7, 7): the pair (7, 7) occurs twice", ({(7, 7, 7): 1},)),
        Case("one-byte words have no pairs", ({(65,): 9, (66, 67): 1},)),
        Case("the pre-tokens of five sentences (English and Chinese)", (_bpe_words(_BPE_TEXTS),)),
    ]
    check_function(
        "count_pairs",
        lambda words: dict(fn(words)),
        _reference_count_pairs,
        cases,
        hint="for each word and its count f, walk the positions i = 0 .. len(word) - 2 and add f to the "
        "pair (word[i], word[i + 1]); every occurrence counts, even of a repeated pair in one word",
    )


def check_merge(fn) -> None:
    """``fn(ids, pair, new_id) -> list``: every (a, b) in ``ids``, scanned left to right, becomes new_id."""
    from course_lib.tokenizers import _merge_pair

    require_own_code(fn, "merge")
    cases = [
        Case("one occurrence", ([1, 2, 3, 4], (2, 3), 256)),
        Case("two occurrences", ([1, 2, 1, 2, 5], (1, 2), 256)),
        Case("(7, 7) in 7 7 7: the left pair merges, the last 7 stays", ([7, 7, 7], (7, 7), 300)),
        Case("(7, 7) in 7 7 7 7 gives two new tokens", ([7, 7, 7, 7], (7, 7), 300)),
        Case("the pair at the very end", ([5, 6, 1, 2], (1, 2), 256)),
        Case("the pair is not there", ([1, 3, 2], (1, 2), 256)),
        Case("an empty list", ([], (1, 2), 256)),
        Case("a single id", ([1], (1, 2), 256)),
    ]
    check_function(
        "merge",
        lambda ids, pair, new_id: list(fn(list(ids), pair, new_id)),
        lambda ids, pair, new_id: _merge_pair(list(ids), pair[0], pair[1], new_id),
        cases,
        hint="walk i from the left: when ids[i], ids[i + 1] is the pair, append new_id and jump i by 2, "
        "otherwise append ids[i] and step by 1; mind the last position (i + 1 must exist)",
    )


def _lib_merges(texts: list[str], num_merges: int) -> dict[tuple[int, int], int]:
    """course_lib's BPE merges on ``texts`` as ``{(id_a, id_b): new_id}`` in learning order."""
    from course_lib.tokenizers import BPETokenizer

    tok = BPETokenizer.train(texts, 256 + num_merges + 1, show_progress=False)
    ids = {bytes([b]): b for b in range(256)}
    merges = {}
    for k, (left, right) in enumerate(tok.merges):
        if left + right in ids:  # course_lib reuses the id of a token made twice; the cases avoid it
            raise RuntimeError("these texts make one token by two different merges; choose other texts")
        merges[ids[left], ids[right]] = ids[left + right] = 256 + k
    return merges


def _show(pair: tuple[int, int], vocab: dict[int, bytes]) -> str:
    return "(" + ", ".join(repr(vocab.get(i, b"?")) for i in pair) + ")"


def _vocab_of(merges: dict[tuple[int, int], int]) -> dict[int, bytes]:
    vocab = {b: bytes([b]) for b in range(256)}
    for (a, b), new in merges.items():
        vocab[new] = vocab.get(a, b"?") + vocab.get(b, b"?")
    return vocab


def check_train_bpe(fn) -> None:
    """``fn(texts, num_merges) -> {(a, b): new_id}``: the same merges, in the same order, as course_lib.

    Tie rule (the same as :meth:`course_lib.tokenizers.BPETokenizer.train`): among the pairs with the
    highest count, merge the smallest pair, comparing (a, b) as a tuple of ids.
    """
    require_own_code(fn, "train_bpe")
    hint = (
        "count pairs over the pre-tokens (GPT-2's pattern), each weighted by how often the pre-token "
        "occurs; pick the pair with the highest count, and among equal counts the smallest (a, b) "
        "tuple, e.g. min(counts, key=lambda p: (-counts[p], p)); give it id 256 + k and merge it in "
        "every word before counting again"
    )
    cases = [
        ("English, 30 merges", _BPE_TEXTS[:2] + _BPE_TEXTS[4:], 30),
        ("Chinese, 20 merges", _BPE_TEXTS[2:4], 20),
        ("both, 60 merges", _BPE_TEXTS, 60),
        ("'aaaa' three times, 3 merges (merged ids merge again)", ["aaaa aaaa aaaa"], 3),
    ]
    for i, (label, texts, n) in enumerate(cases, 1):
        where = f"train_bpe, case {i} of {len(cases)} ({label})"
        try:
            got = fn(list(texts), n)
        except NotImplementedError:
            raise not_written_yet("train_bpe") from None
        except Exception as err:
            raise ExerciseFailure(f"{where}: your function raised {type(err).__name__}: {err}") from None
        expected = _lib_merges(list(texts), n)
        if not isinstance(got, dict):
            raise ExerciseFailure(f"{where}: return a dict {{(a, b): new_id}}, got {type(got).__name__}")
        got_list, exp_list = list(got.items()), list(expected.items())
        vocab = _vocab_of(expected)
        for k, (g, e) in enumerate(zip(got_list, exp_list)):
            if g != e:
                gvocab = _vocab_of(got)
                raise ExerciseFailure(
                    f"{where}: merge #{k} differs: you merged {_show(g[0], gvocab)} into id {g[1]}, "
                    f"expected {_show(e[0], vocab)} into id {e[1]}.\n  hint: {hint}"
                )
        if len(got_list) != len(exp_list):
            raise ExerciseFailure(f"{where}: {len(got_list)} merges instead of {len(exp_list)}")
    print(f"✓ train_bpe: all {len(cases)} cases pass (the same merges as course_lib, in the same order)")


def _reference_encode(text: str, merges: dict[tuple[int, int], int]) -> list[int]:
    from course_lib.tokenizers import BPETokenizer

    vocab = _vocab_of(merges)
    tok = BPETokenizer([(vocab[a], vocab[b]) for a, b in merges], special_tokens=())
    return tok.encode(text)


def check_bpe_encode(fn) -> None:
    """``fn(text, merges) -> ids``: pre-tokens, their bytes, then the lowest-ranked merge first."""
    require_own_code(fn, "encode")
    merges = _lib_merges(_BPE_TEXTS, 80)
    cases = [
        Case("a training sentence", (_BPE_TEXTS[0], merges)),
        Case(
            "'abc' where (b, c) was learned before (a, b): order decides",
            ("abc", {(98, 99): 256, (97, 98): 257, (97, 256): 258}),
        ),
        Case("unseen English", ("The economy of the firm announced its plans.", merges)),
        Case("Chinese", ("人民经济增长", merges)),
        Case("spaces, a newline and digits", ("the  plans\nrose 5% in 1998", merges)),
        Case("an empty string", ("", merges)),
        Case("no merges at all: plain UTF-8 bytes", ("plans 中", {})),
    ]
    check_function(
        "encode",
        lambda text, m: list(fn(text, dict(m))),
        _reference_encode,
        cases,
        hint="split the text with GPT-2's pattern; for each pre-token start from its UTF-8 bytes and "
        "repeat: among the adjacent pairs present, take the one learned earliest (smallest new id), "
        "merge it everywhere in the pre-token; stop when no pair present was learned",
    )


def check_bpe_decode(fn) -> None:
    """``fn(ids, vocab) -> str``: join the tokens' bytes, then decode UTF-8 once (invalid bytes -> U+FFFD)."""
    from course_lib.tokenizers import BPETokenizer

    require_own_code(fn, "decode")
    merges = _lib_merges(_BPE_TEXTS, 80)
    vocab = _vocab_of(merges)
    tok = BPETokenizer([(vocab[a], vocab[b]) for a, b in merges], special_tokens=())
    zh = tok.encode("中国经济增长")
    split_char = next(i for i in zh if len(vocab[i]) % 3)  # a token holding part of a character
    cases = [
        Case("English", (tok.encode(_BPE_TEXTS[0]), vocab)),
        Case("Chinese: characters split across tokens", (zh, vocab)),
        Case("one token that is only part of a Chinese character", ([split_char], vocab)),
        Case("a lone continuation byte 0x80", ([72, 105, 0x80], vocab)),
        Case("no ids", ([], vocab)),
    ]
    check_function(
        "decode",
        lambda ids, v: fn(list(ids), dict(v)),
        lambda ids, v: tok.decode(ids),
        cases,
        hint="join the bytes of all the tokens first and decode the whole byte string once, replacing "
        "invalid bytes: a character's bytes can lie in two tokens, and bytes that are not valid UTF-8 "
        "become the replacement character U+FFFD",
    )


def check_compression(fn) -> None:
    """``fn(encode, texts) -> (bytes_per_token, tokens_per_char)``, ratios of totals over all texts."""
    from course_lib.metrics import tokenizer_compression

    require_own_code(fn, "compression")

    def reference(encode, texts):
        stats = tokenizer_compression(encode, texts)
        return (stats.bytes_per_token, stats.tokens_per_char)

    def as_bytes(text):
        return list(text.encode("utf-8"))

    def by_word(text):
        return text.split()

    cases = [
        Case("the 256-byte tokenizer on English", (as_bytes, ["plain English text"])),
        Case("the 256-byte tokenizer on Chinese (3 bytes per character)", (as_bytes, ["人民日报"])),
        Case("one token per character", (list, ["ab", "中文字"])),
        Case("one long and one short text (total bytes / total tokens)", (by_word, ["a b c d", "abcdefgh"])),
    ]
    check_function(
        "compression",
        lambda encode, texts: tuple(float(v) for v in fn(encode, list(texts))),
        reference,
        cases,
        atol=1e-9,
        rtol=1e-9,
        hint="total the UTF-8 bytes (len(text.encode('utf-8'))), the characters (len(text)) and the tokens "
        "(len(encode(text))) over all texts, then divide the totals: bytes / tokens and tokens / characters",
    )


def check_reported_bytes_per_token(value, merges: dict[tuple[int, int], int], texts: list[str]) -> None:
    """The number a learner reports: bytes per token of their tokenizer (``merges``) on ``texts``."""
    from course_lib.metrics import tokenizer_compression

    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        raise ExerciseFailure(f"report a number (a float), got {value!r}")
    stats = tokenizer_compression(lambda t: _reference_encode(t, merges), texts)
    if abs(value - stats.bytes_per_token) > 0.01:
        why = ""
        if abs(value - stats.tokens_per_char) <= 0.01:
            why = " (that is tokens per character, not bytes per token)"
        raise ExerciseFailure(
            f"bytes per token: you reported {value:.3f}, your tokenizer gives "
            f"{stats.bytes_per_token:.3f} on these texts{why}; total the UTF-8 bytes and the tokens of "
            "all the texts and divide"
        )
    print(f"✓ bytes per token {value:.3f} agrees with course_lib's count ({stats.bytes_per_token:.3f})")


# ============================================================================= a GPT, piece by piece (3.5)
# The references are course_lib's own modules (attention.AttentionHead / MultiHeadAttention,
# layers.FeedForward, gpt.Block / GPT, gpt.sample_next_token) and PyTorch's functional ops. Learner
# modules receive the reference's weights through load_state_dict, so the parameter names must be
# GPT-2's (as course_lib uses).


def _randn(*shape: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


def check_embed(fn) -> None:
    """``fn(idx (B, T), wte (V, d), wpe (T_max, d)) -> (B, T, d)``: token row plus position row."""
    require_own_code(fn, "embed")
    idx = torch.tensor([[3, 1, 4, 1, 5], [9, 2, 6, 5, 3]])
    cases = [
        Case(
            "2 sequences of 5 tokens, a table of 10 tokens and 8 positions",
            (idx, _randn(10, 6, seed=1), _randn(8, 6, seed=2)),
        ),
        Case(
            "a sequence as long as the position table", (idx[:1], _randn(10, 4, seed=3), _randn(5, 4, seed=4))
        ),
        Case("one token", (torch.tensor([[7]]), _randn(10, 3, seed=5), _randn(4, 3, seed=6))),
    ]
    check_function(
        "embed",
        lambda i, wte, wpe: fn(i, wte, wpe),
        lambda i, wte, wpe: wte[i] + wpe[: i.size(1)],
        cases,
        atol=0,
        rtol=0,
        hint="a lookup is indexing: wte[idx] gives (B, T, d); the positions are 0 .. T-1, so the position "
        "rows are wpe[:T] (or wpe[torch.arange(T)]), which broadcast over the batch",
    )


def _copy_weights(mine: nn.Module, ref: nn.Module, where: str) -> None:
    """Load the reference's weights into the learner's module; name the keys when they do not match."""
    if not isinstance(mine, nn.Module):
        raise ExerciseFailure(f"{where}: calling the class gave {type(mine).__name__}, not an nn.Module")
    theirs, ours = set(mine.state_dict()), set(ref.state_dict())
    if theirs != ours:
        raise ExerciseFailure(
            f"{where}: the parameter names differ from GPT-2's, so the reference weights cannot load.\n"
            f"  missing: {sorted(ours - theirs)}\n  unexpected: {sorted(theirs - ours)}\n"
            "  name the submodules as the exercise text says"
        )
    try:
        mine.load_state_dict(ref.state_dict())
    except RuntimeError as err:
        raise ExerciseFailure(f"{where}: the weights do not load (a shape differs): {err}") from None


def _no_library_modules(model: nn.Module, what: str, allowed: tuple[str, ...] = ()) -> None:
    for name, module in model.named_modules():
        kind = type(module)
        if kind.__module__.startswith("course_lib.") and kind.__name__ not in allowed:
            raise ExerciseFailure(
                f"{what}: the submodule {name or '(the model itself)'} is course_lib's "
                f"{kind.__name__}; the exercise is to write it yourself"
            )


def _check_module(
    name: str,
    make_mine,
    make_ref,
    inputs: list[tuple[str, tuple]],
    call_ref,
    call_mine,
    hint: str,
    atol: float = 1e-5,
) -> None:
    """Build both modules per case, copy the reference's weights into the learner's, compare outputs."""
    for i, (label, args) in enumerate(inputs, 1):
        where = f"{name}, case {i} of {len(inputs)} ({label})"
        torch.manual_seed(100 + i)
        ref = make_ref(i)
        try:
            mine = make_mine(i)
            _no_library_modules(mine, name)
            _copy_weights(mine, ref, where)
            mine.eval()
            ref.eval()
            with torch.no_grad():
                got = call_mine(mine, *_clone_all(args))
        except NotImplementedError:
            raise not_written_yet(name) from None
        except ExerciseFailure:
            raise
        except Exception as err:
            raise ExerciseFailure(f"{where}: your code raised {type(err).__name__}: {err}") from None
        with torch.no_grad():
            expected = call_ref(ref, *_clone_all(args))
        if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            raise ExerciseFailure(
                f"{where}: output {shape} instead of shape {tuple(expected.shape)}. Hint: {hint}"
            )
        worst = (got.double() - expected.double()).abs().max().item()
        if not worst <= atol:
            raise ExerciseFailure(
                f"{where}: the output differs from course_lib's (largest difference {worst:.3g}, allowed "
                f"{atol:g}).\n  hint: {hint}"
            )
    print(f"✓ {name}: all {len(inputs)} cases pass")


def _clone_all(args: tuple) -> tuple:
    return tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args)


_FUSED = ("scaled_dot_product_attention", "MultiheadAttention", "multi_head_attention_forward")


def check_causal_head(cls) -> None:
    """``cls(d_model, head_size)`` with Linear ``query``, ``key``, ``value``: (B, T, d) -> (B, T, head_size),
    each position attending to itself and the positions before it."""
    from course_lib.attention import AttentionHead

    require_own_code(cls, "CausalHead", forbidden=_FUSED)
    shapes = [(8, 4), (16, 16), (12, 3)]
    _check_module(
        "CausalHead",
        lambda i: cls(*shapes[i - 1]),
        lambda i: AttentionHead(*shapes[i - 1]),
        [
            ("d_model 8, head size 4, 2 sequences of 5", (_randn(2, 5, 8, seed=1),)),
            ("d_model 16, head size 16, 1 sequence of 7", (_randn(1, 7, 16, seed=2),)),
            ("d_model 12, head size 3, large inputs", (_randn(3, 6, 12, seed=3, scale=4.0),)),
        ],
        lambda ref, x: ref(x, is_causal=True),
        lambda mine, x: mine(x),
        "q, k, v = self.query(x), self.key(x), self.value(x); scores q @ k^T / sqrt(head size); a causal "
        "mask that lets query i see keys j <= i (the lower triangle); softmax over the keys; times v",
    )


def check_multi_head_attention(cls) -> None:
    """``cls(d_model, n_head)`` with Linear ``qkv`` (d -> 3d, laid out [q | k | v]) and ``proj`` (d -> d):
    causal self-attention, x (B, T, d) -> (B, T, d)."""
    from course_lib.attention import MultiHeadAttention

    require_own_code(cls, "MultiHeadAttention", forbidden=_FUSED)
    shapes = [(8, 2), (16, 4), (12, 1)]
    _check_module(
        "MultiHeadAttention",
        lambda i: cls(*shapes[i - 1]),
        lambda i: MultiHeadAttention(*shapes[i - 1]),
        [
            ("d_model 8, 2 heads", (_randn(2, 5, 8, seed=4),)),
            ("d_model 16, 4 heads", (_randn(2, 7, 16, seed=5),)),
            ("one head of 12", (_randn(1, 4, 12, seed=6),)),
        ],
        lambda ref, x: ref(x, is_causal=True),
        lambda mine, x: mine(x),
        "q, k, v = self.qkv(x).split(d, dim=-1); each (B, T, d) -> view (B, T, nh, hs) -> transpose(1, 2) to "
        "(B, nh, T, hs); causal attention per head; back with transpose(1, 2).reshape(B, T, d); then proj",
    )


def check_layer_norm(fn) -> None:
    """``fn(x, weight, bias, eps=1e-5)``: normalise the last dimension, then scale and shift."""
    require_own_code(fn, "layer_norm", forbidden=("layer_norm", "LayerNorm", "batch_norm"))

    def case(label, *shape, seed, scale=1.0, shift=0.0, eps=1e-5):
        x = _randn(*shape, seed=seed, scale=scale) + shift
        d = shape[-1]
        return Case(label, (x, _randn(d, seed=seed + 1), _randn(d, seed=seed + 2)), {"eps": eps})

    cases = [
        case("(2, 3, 8)", 2, 3, 8, seed=1),
        case("a small dimension (d = 2), where n and n - 1 differ most", 4, 2, seed=2),
        case("rows far from zero (mean 100)", 3, 16, seed=3, shift=100.0),
        case("tiny values (std 1e-3), where eps matters", 3, 8, seed=4, scale=1e-3),
        case("eps = 0.1", 2, 6, seed=5, eps=0.1),
    ]
    check_function(
        "layer_norm",
        lambda x, w, b, eps: fn(x, w, b, eps=eps),
        lambda x, w, b, eps: F.layer_norm(x, (x.size(-1),), w, b, eps),
        cases,
        atol=1e-5,
        rtol=1e-4,
        hint="mean and variance over the last dimension (keepdim=True); the variance divides by d, not d - 1 "
        "(unbiased=False); (x - mean) / sqrt(var + eps): eps inside the square root; then * weight + bias",
    )


def check_gelu(fn) -> None:
    """``fn(x)``: GPT-2's GELU, 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))."""
    require_own_code(fn, "gelu", forbidden=("gelu", "GELU"))
    cases = [
        Case("a few numbers", (torch.tensor([-3.0, -1.0, -0.1, 0.0, 0.1, 1.0, 3.0]),)),
        Case("a (4, 8) batch", (_randn(4, 8, seed=7, scale=2.0),)),
        Case("large inputs: GELU(x) ~ x for x >> 0, ~ 0 for x << 0", (torch.linspace(-12, 12, 25),)),
    ]
    check_function(
        "gelu",
        fn,
        lambda x: F.gelu(x, approximate="tanh"),
        cases,
        atol=1e-6,
        rtol=1e-5,
        hint="GPT-2 uses the tanh approximation of GELU, not the exact erf form: check the formula in the "
        "text term by term (the square root of 2 / pi, the cubic term's coefficient 0.044715)",
    )


def check_mlp(cls) -> None:
    """``cls(d_model)`` with Linear ``c_fc`` (d -> 4d) and ``c_proj`` (4d -> d) and GPT-2's GELU between."""
    from course_lib.layers import FeedForward

    require_own_code(cls, "MLP")
    sizes = [8, 16, 4]
    _check_module(
        "MLP",
        lambda i: cls(sizes[i - 1]),
        lambda i: FeedForward(sizes[i - 1], 4 * sizes[i - 1]),
        [
            ("d_model 8", (_randn(2, 5, 8, seed=8),)),
            ("d_model 16", (_randn(1, 3, 16, seed=9),)),
            ("d_model 4, large inputs", (_randn(3, 2, 4, seed=10, scale=5.0),)),
        ],
        lambda ref, x: ref(x),
        lambda mine, x: mine(x),
        "c_fc widens d to 4 d, then your gelu (the tanh form), then c_proj back to d",
    )


def _gpt_config(i: int, **overrides):
    from course_lib.gpt import GPTConfig

    shapes = [
        dict(vocab_size=50, block_size=16, n_layer=2, n_head=2, d_model=16),
        dict(vocab_size=30, block_size=8, n_layer=1, n_head=4, d_model=8),
        dict(vocab_size=70, block_size=12, n_layer=3, n_head=1, d_model=12),
    ]
    return GPTConfig(**{**shapes[(i - 1) % 3], **overrides})


def _random_norms(module: nn.Module, seed: int) -> nn.Module:
    """Give every norm's weight and bias random values, so a block that skips a norm is caught."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if ".ln_" in f".{name}" or name.startswith("ln_") or p.ndim == 1:
                p.copy_(
                    1.0 + 0.5 * torch.randn(p.shape, generator=g)
                    if name.endswith("weight")
                    else 0.3 * torch.randn(p.shape, generator=g)
                )
    return module


def check_block(cls) -> None:
    """``cls(config)`` with ``ln_1``, ``attn``, ``ln_2``, ``mlp``: x + attn(ln_1(x)), then x + mlp(ln_2(x))"""
    from course_lib.gpt import Block

    require_own_code(cls, "Block", allowed=("GPTConfig",))
    _check_module(
        "Block",
        lambda i: cls(_gpt_config(i)),
        lambda i: _random_norms(Block(_gpt_config(i)), i),
        [
            ("d_model 16, 2 heads", (_randn(2, 6, 16, seed=11),)),
            ("d_model 8, 4 heads", (_randn(1, 8, 8, seed=12),)),
            ("d_model 12, 1 head, large inputs", (_randn(2, 5, 12, seed=13, scale=3.0),)),
        ],
        lambda ref, x: ref(x),
        lambda mine, x: mine(x),
        "pre-norm: each branch (attention with ln_1 first, then the MLP with ln_2) reads the normalised x, "
        "and its output is added to the unnormalised x it came from; no norm is applied to the sum",
    )


def check_gpt(cls) -> None:
    """``cls(config)``: loads a course_lib ``GPT`` state dict and gives the same logits and loss (<= 1e-5)."""
    from course_lib.gpt import GPT

    require_own_code(cls, "GPT", allowed=("GPTConfig",))
    hint = (
        "logits = lm_head(ln_f(blocks(wte[idx] + wpe[:T]))); the parts live in a ModuleDict called "
        "transformer (wte, wpe, h as a ModuleList of blocks, ln_f), and lm_head (no bias) shares its weight "
        "with the token table; with targets, the loss is the cross-entropy of flattened logits and targets"
    )
    lengths = [16, 5, 1]
    for i, T in enumerate(lengths, 1):
        cfg = _gpt_config(i)
        where = f"GPT, case {i} of {len(lengths)} ({cfg.n_layer} layers, d_model {cfg.d_model}, T = {T})"
        torch.manual_seed(200 + i)
        ref = _random_norms(GPT(cfg), i).eval()
        idx = torch.randint(0, cfg.vocab_size, (2, T), generator=torch.Generator().manual_seed(i))
        targets = torch.randint(0, cfg.vocab_size, (2, T), generator=torch.Generator().manual_seed(10 + i))
        try:
            mine = cls(cfg)
            _no_library_modules(mine, "GPT")
            _copy_weights(mine, ref, where)
            mine.eval()
            with torch.no_grad():
                out = mine(idx, targets)
        except NotImplementedError:
            raise not_written_yet("GPT") from None
        except ExerciseFailure:
            raise
        except Exception as err:
            raise ExerciseFailure(f"{where}: your model raised {type(err).__name__}: {err}") from None
        if isinstance(mine, GPT):
            raise ExerciseFailure("GPT: your model is course_lib's GPT; the exercise is to write it yourself")
        tied = getattr(getattr(mine, "lm_head", None), "weight", None)
        if tied is None or tied is not mine.transformer.wte.weight:
            raise ExerciseFailure(
                f"{where}: lm_head's weight must be the very same Parameter as the token table's "
                "(weight tying, as GPT-2), not a copy"
            )
        if not (isinstance(out, tuple) and len(out) == 2):
            raise ExerciseFailure(f"{where}: return (logits, loss) when called with targets")
        with torch.no_grad():
            exp_logits, exp_loss = ref(idx, targets)
        logits, loss = out
        if not isinstance(logits, torch.Tensor) or logits.shape != exp_logits.shape:
            raise ExerciseFailure(f"{where}: logits must have shape {tuple(exp_logits.shape)} (B, T, V)")
        worst = (logits - exp_logits).abs().max().item()
        if not worst <= 1e-5:
            raise ExerciseFailure(
                f"{where}: the logits differ from course_lib's GPT with the same weights (largest difference "
                f"{worst:.3g}, allowed 1e-05).\n  hint: {hint}"
            )
        if not isinstance(loss, torch.Tensor) or loss.ndim != 0 or abs(loss.item() - exp_loss.item()) > 1e-5:
            raise ExerciseFailure(
                f"{where}: with targets the loss should be {exp_loss.item():.6f}, got {loss!r}; the mean "
                "cross-entropy of logits.view(-1, V) against targets.view(-1)"
            )
    print(f"✓ GPT: all {len(lengths)} cases give course_lib's logits and loss (within 1e-5)")


def check_next_token_loss(fn) -> None:
    """``fn(logits (B, T, V), idx (B, T)) -> scalar``: mean cross-entropy of position t predicting t + 1."""
    require_own_code(fn, "next_token_loss")

    def reference(logits, idx):
        return F.cross_entropy(logits[:, :-1].flatten(0, 1), idx[:, 1:].flatten())

    idx = torch.randint(0, 11, (3, 6), generator=torch.Generator().manual_seed(0))
    cases = [
        Case("3 sequences of 6 tokens, 11 in the vocabulary", (_randn(3, 6, 11, seed=20, scale=3.0), idx)),
        Case(
            "one sequence of 2 tokens: a single prediction",
            (_randn(1, 2, 5, seed=21), torch.tensor([[1, 4]])),
        ),
        Case("confident logits", (_randn(2, 4, 7, seed=22, scale=10.0), idx[:2, :4] % 7)),
    ]
    check_function(
        "next_token_loss",
        lambda lg, i: torch.as_tensor(fn(lg, i)),
        reference,
        cases,
        atol=1e-5,
        rtol=1e-5,
        hint="the logits at position t predict the token at t + 1: compare logits[:, :-1] with idx[:, 1:] "
        "(the last position has no next token, the first token is never predicted); flatten both and "
        "take the mean cross-entropy (F.cross_entropy does the log-softmax)",
    )


def check_generate(fn) -> None:
    """``fn(model, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None) -> (B, T + new)``.

    Each step: the last ``block_size`` tokens in, the last position's logits out, divided by the
    temperature, all but the ``top_k`` largest set to -inf, softmax, one ``torch.multinomial`` draw per row
    with ``generator``. The reference is the same loop around :func:`course_lib.gpt.sample_next_token`.
    """
    from course_lib.gpt import GPT, sample_next_token

    require_own_code(fn, "generate")

    @torch.no_grad()
    def reference(model, idx, n, temperature=1.0, top_k=None, seed=0):
        g = torch.Generator().manual_seed(seed)
        for _ in range(n):
            logits, _ = model(idx[:, -model.config.block_size :])
            idx = torch.cat([idx, sample_next_token(logits[:, -1], temperature, top_k, None, g)], dim=1)
        return idx

    def learner(model, idx, n, temperature=1.0, top_k=None, seed=0):
        with torch.no_grad():
            return fn(
                model,
                idx,
                n,
                temperature=temperature,
                top_k=top_k,
                generator=torch.Generator().manual_seed(seed),
            )

    torch.manual_seed(0)
    model = GPT(_gpt_config(1, vocab_size=40)).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(60.0)  # peaked next-token distributions, so temperature and top-k matter
    prompt = torch.tensor([[1, 2, 3], [4, 5, 6]])
    cases = [
        Case("temperature 1, no top-k", (model, prompt, 8), {"seed": 1}),
        Case("temperature 0.5", (model, prompt, 8), {"temperature": 0.5, "seed": 2}),
        Case("temperature 2", (model, prompt, 8), {"temperature": 2.0, "seed": 3}),
        Case("top_k = 3", (model, prompt, 8), {"top_k": 3, "seed": 4}),
        Case("top_k = 1 (always the most likely token)", (model, prompt, 8), {"top_k": 1, "seed": 5}),
        Case("past block_size: 3 + 20 tokens with block_size 16", (model, prompt, 20), {"seed": 6}),
    ]
    check_function(
        "generate",
        learner,
        reference,
        cases,
        atol=0,
        rtol=0,
        hint="each step feeds the model at most the last block_size tokens and uses only the logits of the "
        "last position, divided by the temperature; with top_k, every logit below the k-th largest of its "
        "row becomes minus infinity; draw one token per row from the softmax with the generator passed "
        "in, and append it along the time axis",
    )


def check_reported_val_loss(value, model: nn.Module, val_ids, block_size: int, batch_size: int = 16) -> None:
    """The number a learner reports: the model's mean next-token loss over the whole validation stream."""
    from course_lib.lm_data import IGNORE_INDEX, eval_windows

    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        raise ExerciseFailure(f"report a number (a float), got {value!r}")
    device = next(model.parameters()).device
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for x, y in eval_windows(val_ids, block_size, batch_size, device=device):
            out = model(x)
            logits = out[0] if isinstance(out, tuple) else out  # (B, T, V)
            total += F.cross_entropy(
                logits.reshape(-1, logits.size(-1)).float(),
                y.reshape(-1),
                ignore_index=IGNORE_INDEX,
                reduction="sum",
            ).item()
            count += int((y != IGNORE_INDEX).sum())
    model.train(was_training)
    expected = total / count
    if abs(value - expected) > 1e-3:
        raise ExerciseFailure(
            f"validation loss: you reported {value:.4f}, the model's loss over every validation token is "
            f"{expected:.4f}; score each target once (eval_windows), sum the losses and divide by the count"
        )
    print(f"✓ validation loss {value:.4f} agrees with course_lib's count ({expected:.4f})")

"""Training written out by hand: the pieces chapter 3 builds before it hands the work to the Trainer.

1. Logistic regression in NumPy: the sigmoid, the cross-entropy loss, its gradient and plain gradient
   descent (:func:`logistic_gradient`, :func:`logistic_regression_gd`).
2. Finite differences (:func:`numerical_gradient`): the slow, obvious gradient every fast one is
   checked against.
3. Backpropagation through an :class:`~course_lib.mlp_cnn.MLP` layer by layer with the chain rule,
   no autograd (:func:`mlp_backward`).
4. Optimizer update rules as formulas (:func:`sgd_step`, :func:`rmsprop_step`, :func:`adamw_step`),
   each equal to its ``torch.optim`` counterpart.
5. A minimal epoch loop for small classifiers (:func:`fit_classifier`, :func:`predict`), so that any
   ``torch.optim`` optimizer can be compared on the same data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.env import get_device
from course_lib.mlp_cnn import MLP

# ----------------------------------------------------------------------------- 1. logistic regression


def sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-z), computed without overflow for large |z|."""
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(-np.abs(z))  # never overflows: the exponent is <= 0
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _check_xy(X: np.ndarray, y: np.ndarray, w: np.ndarray) -> None:
    if X.ndim != 2 or y.ndim != 1 or w.ndim != 1:
        raise ValueError(
            f"want X (N, D), y (N,) and w (D,), got shapes {X.shape}, {y.shape}, {w.shape}; "
            "flatten images to rows first (X.reshape(len(X), -1))"
        )
    if X.shape[0] != y.shape[0] or X.shape[1] != w.shape[0]:
        raise ValueError(
            f"shapes do not fit: X {X.shape}, y {y.shape}, w {w.shape}; need X (N, D), y (N,), w (D,)"
        )


def logistic_loss(X: np.ndarray, y: np.ndarray, w: np.ndarray, b: float) -> float:
    """Mean binary cross-entropy of p = sigmoid(X w + b) against labels y in {0, 1}.

    -[y log p + (1 - y) log(1 - p)] is rewritten as log(1 + e^z) - y z with z = X w + b, which stays
    finite when p rounds to 0 or 1.
    """
    _check_xy(X, y, w)
    z = X @ w + b  # (N,) logits
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def logistic_gradient(X: np.ndarray, y: np.ndarray, w: np.ndarray, b: float) -> tuple[np.ndarray, float]:
    """Gradient of :func:`logistic_loss` with respect to (w, b): (X^T (p - y) / N, mean(p - y))."""
    _check_xy(X, y, w)
    residual = sigmoid(X @ w + b) - y  # (N,) dL/dz for each example, times N
    return X.T @ residual / len(y), float(residual.mean())  # (D,), scalar


def logistic_regression_gd(
    X: np.ndarray,
    y: np.ndarray,
    lr: float,
    steps: int,
    w: np.ndarray | None = None,
    b: float = 0.0,
) -> tuple[np.ndarray, float, list[float]]:
    """Full-batch gradient descent: ``w -= lr * dL/dw``, ``b -= lr * dL/db``. Returns (w, b, losses).

    ``losses[i]`` is the loss before step i, and ``losses[-1]`` the loss after the last step.
    """
    if lr <= 0 or steps < 0:
        raise ValueError(f"need lr > 0 and steps >= 0, got lr={lr}, steps={steps}")
    w = np.zeros(X.shape[1]) if w is None else np.array(w, dtype=np.float64)
    losses = []
    for _ in range(steps):
        losses.append(logistic_loss(X, y, w, b))
        grad_w, grad_b = logistic_gradient(X, y, w, b)
        w, b = w - lr * grad_w, b - lr * grad_b
    losses.append(logistic_loss(X, y, w, b))
    return w, b, losses


# ----------------------------------------------------------------------------- 2. finite differences


def numerical_gradient(f: Callable[[np.ndarray], float], x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences (f(x + eps e_i) - f(x - eps e_i)) / (2 eps) for every entry i of ``x``.

    Two function calls per entry: fine for checking a gradient on a few hundred numbers, far too slow
    for training. The error shrinks like eps^2 until float64 rounding (~1e-16 / eps) takes over.
    """
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        saved = x[i]
        x[i] = saved + eps
        up = f(x)
        x[i] = saved - eps
        down = f(x)
        x[i] = saved
        grad[i] = (up - down) / (2 * eps)
    return grad


# ----------------------------------------------------------------------------- 3. backprop through an MLP


_DERIVATIVES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    # d sigma(z) / dz, written with the pre-activation z and the output a = sigma(z)
    "relu": lambda z, a: (z > 0).to(z.dtype),
    "sigmoid": lambda z, a: a * (1 - a),
    "tanh": lambda z, a: 1 - a * a,
    "identity": lambda z, a: torch.ones_like(z),
}


@torch.no_grad()
def mlp_backward(
    mlp: MLP, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Mean cross-entropy of ``mlp(x)`` against class ids ``y`` and its gradient, by the chain rule.

    Forward, layer l computes z_l = a_{l-1} W_l^T + b_l and a_l = sigma(z_l) (no sigma on the last).
    Backward starts from dL/dz_last = (softmax(z_last) - onehot(y)) / B and walks down:

        dL/dW_l = (dL/dz_l)^T a_{l-1}     dL/db_l = sum over the batch of dL/dz_l
        dL/da_{l-1} = dL/dz_l W_l         dL/dz_{l-1} = dL/da_{l-1} * sigma'(z_{l-1})

    Returns (loss, grads) with ``grads[l] = {"weight": ..., "bias": ...}`` shaped like the layer's.
    """
    if mlp.activation not in _DERIVATIVES:
        raise ValueError(
            f"mlp_backward knows the derivatives of {sorted(_DERIVATIVES)}, not {mlp.activation!r}; "
            "build the MLP with one of those"
        )
    if mlp.training and mlp.dropout.p > 0:
        raise ValueError("mlp_backward has no dropout; call mlp.eval() or build the MLP with dropout=0")
    if x.dim() != 2 or y.shape != (x.shape[0],):
        raise ValueError(
            f"want x (B, features) and y (B,) class ids, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    sigma, dsigma = mlp.sigma, _DERIVATIVES[mlp.activation]
    activations, pre = [x], []  # a_0 = x; z_1, z_2, ...
    for i, layer in enumerate(mlp.layers):
        z = activations[-1] @ layer.weight.T + layer.bias  # (B, d_in) @ (d_in, d_out) -> (B, d_out)
        pre.append(z)
        activations.append(sigma(z) if i < len(mlp.layers) - 1 else z)
    logits = activations[-1]  # (B, C)
    log_probs = torch.log_softmax(logits, dim=-1)
    loss = -log_probs[torch.arange(len(y)), y].mean()

    delta = (log_probs.exp() - F.one_hot(y, logits.shape[-1]).to(logits.dtype)) / len(y)  # (B, C) dL/dz_last
    grads: list[dict[str, torch.Tensor]] = []
    for i in reversed(range(len(mlp.layers))):
        layer = mlp.layers[i]
        grads.append({"weight": delta.T @ activations[i], "bias": delta.sum(0)})  # (d_out, d_in), (d_out,)
        if i > 0:
            delta = (delta @ layer.weight) * dsigma(pre[i - 1], activations[i])  # (B, d_in) dL/dz_{i-1}
    return loss, grads[::-1]


# ----------------------------------------------------------------------------- 4. optimizer update rules


@torch.no_grad()
def sgd_step(
    param: torch.Tensor, grad: torch.Tensor, buf: torch.Tensor | None, lr: float, momentum: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """SGD with (heavy-ball) momentum, as torch.optim.SGD: buf = mu buf + g; p = p - lr buf.

    ``buf=None`` on the first step starts the velocity at the gradient. Returns (param, buf).
    """
    buf = grad.clone() if buf is None else momentum * buf + grad
    return param - lr * buf, buf


@torch.no_grad()
def rmsprop_step(
    param: torch.Tensor,
    grad: torch.Tensor,
    sq_avg: torch.Tensor,
    lr: float,
    alpha: float = 0.99,
    eps: float = 1e-8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """RMSprop, as torch.optim.RMSprop: s = alpha s + (1 - alpha) g^2; p = p - lr g / (sqrt(s) + eps)."""
    sq_avg = alpha * sq_avg + (1 - alpha) * grad * grad
    return param - lr * grad / (sq_avg.sqrt() + eps), sq_avg


@torch.no_grad()
def adamw_step(
    param: torch.Tensor,
    grad: torch.Tensor,
    m: torch.Tensor,
    v: torch.Tensor,
    step: int,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.01,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One AdamW update, as torch.optim.AdamW. ``step`` counts from 1. Returns (param, m, v).

        p = p (1 - lr wd)                         decoupled weight decay
        m = b1 m + (1 - b1) g                     running mean of gradients
        v = b2 v + (1 - b2) g^2                   running mean of squared gradients
        p = p - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)

    With ``weight_decay=0`` this is Adam.
    """
    if step < 1:
        raise ValueError(
            f"step counts optimizer steps from 1 (bias correction divides by 1 - b^step), got {step}"
        )
    b1, b2 = betas
    param = param * (1 - lr * weight_decay)
    m = b1 * m + (1 - b1) * grad
    v = b2 * v + (1 - b2) * grad * grad
    m_hat = m / (1 - b1**step)  # bias correction: m and v start at 0
    v_hat = v / (1 - b2**step)
    return param - lr * m_hat / (v_hat.sqrt() + eps), m, v


# ----------------------------------------------------------------------------- 5. a small epoch loop


@dataclass
class FitHistory:
    """What :func:`fit_classifier` saw: a loss per step; per epoch the train loss and validation figures."""

    step_loss: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)  # mean over the epoch's batches (train mode)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Logits of ``model`` on ``x`` in eval mode, in batches on the model's device; returned on the CPU."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = torch.cat([model(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)])
    model.train(was_training)
    return out


def fit_classifier(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor] | None,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    batch_size: int = 32,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> FitHistory:
    """Train ``model`` for ``epochs`` passes over ``train`` = (x, y) in shuffled mini-batches.

    The loop is the one every framework hides: forward, loss, ``zero_grad``, ``backward``, ``step``.
    The shuffle order is fixed by ``seed``. After each epoch the model is scored on ``val`` (if given).
    """
    x_train, y_train = train
    if len(x_train) != len(y_train):
        raise ValueError(
            f"train has {len(x_train)} inputs but {len(y_train)} labels; pass one label per input"
        )
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    device = torch.device(device) if device is not None else get_device()
    model.to(device)
    generator = torch.Generator().manual_seed(seed)
    history = FitHistory()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        epoch_losses = []
        for lo in range(0, len(order), batch_size):
            idx = order[lo : lo + batch_size]
            xb, yb = x_train[idx].to(device), y_train[idx].to(device)
            loss = loss_fn(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            epoch_losses.append(loss.item())
        history.step_loss += epoch_losses
        history.train_loss.append(float(np.mean(epoch_losses)))
        if val is not None:
            logits = predict(model, val[0])
            history.val_loss.append(float(loss_fn(logits, val[1]).item()))
            history.val_accuracy.append(float((logits.argmax(-1) == val[1]).float().mean()))
    return history


__all__ = [
    "FitHistory",
    "adamw_step",
    "fit_classifier",
    "logistic_gradient",
    "logistic_loss",
    "logistic_regression_gd",
    "mlp_backward",
    "numerical_gradient",
    "predict",
    "rmsprop_step",
    "sgd_step",
    "sigmoid",
]

"""Initial weights and what they do to a deep network: activation and gradient sizes layer by layer.

A linear layer with weights of variance ``s^2`` multiplies the variance of its input by ``fan_in * s^2``
(for zero-mean inputs). Three common choices of ``s^2`` for ``nn.Linear``:

- PyTorch's default, U(-1/sqrt(fan_in), +1/sqrt(fan_in)): variance 1/(3 fan_in), so each layer divides
  the variance by 3 (by 6 behind a ReLU, which zeroes half of it);
- Xavier/Glorot, variance 2/(fan_in + fan_out): 1/fan_in for square layers, variance kept for tanh near 0;
- Kaiming/He, variance 2/fan_in: variance kept behind a ReLU.

:func:`signal_statistics` measures these effects on a real forward and backward pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from course_lib.mlp_cnn import MLP

SCHEMES = ("PyTorch default", "Xavier", "Kaiming")


def weight_variance(scheme: str, fan_in: int, fan_out: int) -> float:
    """The variance of one initial weight under ``scheme`` (one of :data:`SCHEMES`)."""
    if scheme == "PyTorch default":
        return 1.0 / (3 * fan_in)  # U(-a, a) has variance a^2 / 3, a = 1/sqrt(fan_in)
    if scheme == "Xavier":
        return 2.0 / (fan_in + fan_out)
    if scheme == "Kaiming":
        return 2.0 / fan_in
    raise ValueError(f"unknown initialisation scheme {scheme!r}; choose one of {SCHEMES}")


def initialise_(model: MLP, scheme: str, generator: torch.Generator | None = None) -> MLP:
    """Redraw every weight of ``model`` uniformly with the variance of ``scheme``; biases to zero.

    "PyTorch default" redraws with the same rule ``nn.Linear`` uses, so all three schemes differ only in
    the width of the uniform distribution, ``sqrt(3 * variance)``.
    """
    with torch.no_grad():
        for layer in model.layers:
            fan_out, fan_in = layer.weight.shape
            bound = math.sqrt(3 * weight_variance(scheme, fan_in, fan_out))
            layer.weight.uniform_(-bound, bound, generator=generator)
            layer.bias.zero_()
    return model


@dataclass
class SignalStats:
    """Per hidden layer (1 = the first): the activations' and weight gradients' standard deviations."""

    activation_std: list[float]
    gradient_std: list[float]
    activations: list[torch.Tensor]  # each (B, width): the outputs of one hidden layer, for histograms
    gradients: list[torch.Tensor]  # each (width_out, width_in): dL/dW of that layer


def signal_statistics(model: MLP, x: torch.Tensor, y: torch.Tensor) -> SignalStats:
    """One forward and backward pass of ``model`` on (x, y) with cross-entropy, recording every hidden layer.

    Returns the standard deviation of each hidden layer's output (after its activation) and of the
    gradient of the loss with respect to each hidden layer's weights.
    """
    if x.dim() != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x must be (B, features) with one label per row, got x {tuple(x.shape)}, y {tuple(y.shape)}"
        )
    model.zero_grad(set_to_none=True)
    activations = []
    h = x
    for layer in model.layers[:-1]:
        h = model.sigma(layer(h))  # (B, d_i) -> (B, d_{i+1})
        activations.append(h.detach())
    F.cross_entropy(model.layers[-1](h), y).backward()
    gradients = [layer.weight.grad.detach().clone() for layer in model.layers[:-1]]
    return SignalStats(
        activation_std=[a.std().item() for a in activations],
        gradient_std=[g.std().item() for g in gradients],
        activations=activations,
        gradients=gradients,
    )


def deep_mlp(
    n_inputs: int, width: int, depth: int, n_classes: int, activation: str, scheme: str, seed: int = 0
) -> MLP:
    """An MLP of ``depth`` hidden layers of ``width`` units, initialised with ``scheme`` from ``seed``."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1 hidden layer, got {depth}")
    model = MLP([n_inputs] + [width] * depth + [n_classes], activation=activation)
    return initialise_(model, scheme, torch.Generator().manual_seed(seed))


__all__ = ["SCHEMES", "SignalStats", "deep_mlp", "initialise_", "signal_statistics", "weight_variance"]

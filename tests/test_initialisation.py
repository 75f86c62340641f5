"""Initial-weight scales: drawn weights have the stated variance; the measured signal follows theory."""

from __future__ import annotations

import math

import pytest
import torch

from course_lib.initialisation import deep_mlp, initialise_, signal_statistics, weight_variance
from course_lib.mlp_cnn import MLP


def test_pytorch_default_variance_is_what_nn_linear_draws():
    torch.manual_seed(0)
    layer = torch.nn.Linear(400, 300)  # PyTorch's own default initialisation
    assert layer.weight.var().item() == pytest.approx(weight_variance("PyTorch default", 400, 300), rel=0.02)


@pytest.mark.parametrize(
    "scheme,reference",
    [
        ("Xavier", lambda w: torch.nn.init.xavier_uniform_(w)),
        ("Kaiming", lambda w: torch.nn.init.kaiming_uniform_(w, nonlinearity="relu")),
    ],
)
def test_schemes_match_torch_nn_init(scheme, reference):
    model = initialise_(MLP([300, 200, 10]), scheme, torch.Generator().manual_seed(0))
    ours = model.layers[0].weight
    theirs = reference(torch.empty(200, 300))
    # same uniform width: the largest |w| of 60,000 draws is within 0.1% of the bound; variances agree to 2%
    assert ours.abs().max().item() == pytest.approx(theirs.abs().max().item(), rel=1e-3)
    assert ours.var().item() == pytest.approx(theirs.var().item(), rel=0.02)
    assert torch.all(model.layers[0].bias == 0)


def test_unknown_scheme_names_the_choices():
    with pytest.raises(ValueError, match="Kaiming"):
        weight_variance("He-normal", 3, 3)


@pytest.mark.parametrize(
    "scheme,activation,factor",
    [
        ("PyTorch default", "identity", 1 / 3),  # each layer divides the variance by 3
        ("PyTorch default", "relu", 1 / 6),  # ... and a ReLU halves the second moment again
        ("Kaiming", "relu", 1.0),  # Kaiming keeps the second moment behind a ReLU
        ("Xavier", "identity", 1.0),  # square layers: Xavier = 1/fan_in keeps a linear signal
    ],
)
def test_measured_second_moment_follows_the_variance_rule(scheme, activation, factor):
    width, depth = 512, 6
    model = deep_mlp(width, width, depth, 10, activation, scheme, seed=0)
    x = torch.randn(2048, width, generator=torch.Generator().manual_seed(1))
    stats = signal_statistics(model, x, torch.zeros(2048, dtype=torch.long))
    # E[h_L^2] of hidden layer L's output = factor**L for inputs of second moment 1
    # (each layer multiplies it by fan_in * var(w), and a ReLU by a further 1/2)
    for L, a in enumerate(stats.activations, start=1):
        assert a.pow(2).mean().item() == pytest.approx(factor**L, rel=0.15), (scheme, activation, L)
    assert len(stats.gradient_std) == depth and all(g > 0 for g in stats.gradient_std)


def test_gradients_are_autograds():
    model = deep_mlp(8, 16, 3, 4, "tanh", "Xavier", seed=0)
    x, y = torch.randn(5, 8), torch.tensor([0, 1, 2, 3, 0])
    stats = signal_statistics(model, x, y)
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    for g, layer in zip(stats.gradients, model.layers[:-1]):
        torch.testing.assert_close(g, layer.weight.grad, rtol=0, atol=0)
    assert math.isclose(stats.activation_std[0], torch.tanh(model.layers[0](x)).std().item(), rel_tol=1e-6)


def test_bad_shapes_say_what_is_expected():
    with pytest.raises(ValueError, match="one label per row"):
        model = deep_mlp(8, 16, 2, 4, "relu", "Kaiming")
        signal_statistics(model, torch.randn(5, 8), torch.zeros(4, dtype=torch.long))

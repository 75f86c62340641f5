"""Hand-written gradients and update rules against autograd and torch.optim; the small epoch loop."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_lib import training_basics as basics
from course_lib.mlp_cnn import MLP

EXACT = 1e-12  # float64, the same formula evaluated in a slightly different order
FD_TOL = 1e-7  # central differences with eps=1e-6: truncation ~eps^2, rounding ~1e-16/eps


def _logistic_problem(n=40, d=6, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * scale
    y = rng.integers(0, 2, n).astype(np.float64)
    return X, y, rng.normal(size=d), float(rng.normal())


def _autograd_logistic(X, y, w, b):
    wt = torch.tensor(w, requires_grad=True)
    bt = torch.tensor(b, dtype=torch.float64, requires_grad=True)
    loss = F.binary_cross_entropy_with_logits(torch.from_numpy(X) @ wt + bt, torch.from_numpy(y))
    loss.backward()
    return loss.item(), wt.grad.numpy(), bt.grad.item()


def test_sigmoid_is_stable_and_matches_torch():
    z = np.array([-800.0, -30.0, -1.0, 0.0, 2.0, 40.0, 800.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow in exp would warn
        ours = basics.sigmoid(z)
    np.testing.assert_allclose(ours, torch.sigmoid(torch.from_numpy(z)).numpy(), rtol=1e-15, atol=0)


@pytest.mark.parametrize("scale", [0.1, 1.0, 20.0])
def test_logistic_loss_and_gradient_match_autograd(scale):
    X, y, w, b = _logistic_problem(scale=scale)
    loss, gw, gb = _autograd_logistic(X, y, w, b)
    assert abs(basics.logistic_loss(X, y, w, b) - loss) < EXACT * max(1.0, loss)
    ours_w, ours_b = basics.logistic_gradient(X, y, w, b)
    np.testing.assert_allclose(ours_w, gw, atol=EXACT)
    assert abs(ours_b - gb) < EXACT


def test_numerical_gradient_agrees_with_autograd():
    X, y, w, b = _logistic_problem(seed=1)
    _, gw, gb = _autograd_logistic(X, y, w, b)
    numeric = basics.numerical_gradient(lambda v: basics.logistic_loss(X, y, v[:-1], v[-1]), np.append(w, b))
    np.testing.assert_allclose(numeric, np.append(gw, gb), atol=FD_TOL)


def test_numerical_gradient_of_a_matrix_argument_keeps_its_shape():
    A = np.arange(6.0).reshape(2, 3)
    grad = basics.numerical_gradient(lambda M: float((M**2).sum()), A)
    np.testing.assert_allclose(grad, 2 * A, atol=FD_TOL)


def test_gradient_descent_follows_torch_sgd_exactly():
    X, y, _, _ = _logistic_problem(n=60, d=5, seed=2)
    w, b, losses = basics.logistic_regression_gd(X, y, lr=0.3, steps=25)
    wt = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    bt = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([wt, bt], lr=0.3)
    for _ in range(25):
        opt.zero_grad()
        F.binary_cross_entropy_with_logits(torch.from_numpy(X) @ wt + bt, torch.from_numpy(y)).backward()
        opt.step()
    np.testing.assert_allclose(w, wt.detach().numpy(), atol=1e-10)
    assert abs(b - bt.item()) < 1e-10
    assert len(losses) == 26 and losses[-1] < losses[0]


def test_logistic_shape_errors_name_the_expected_shapes():
    X, y, w, b = _logistic_problem()
    with pytest.raises(ValueError, match=r"need X \(N, D\), y \(N,\), w \(D,\)"):
        basics.logistic_gradient(X, y[:-1], w, b)
    with pytest.raises(ValueError, match="flatten images"):
        basics.logistic_loss(X[None], y, w, b)
    with pytest.raises(ValueError, match="lr > 0"):
        basics.logistic_regression_gd(X, y, lr=0.0, steps=3)


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh", "identity"])
@pytest.mark.parametrize("sizes", [[5, 3], [6, 8, 4], [10, 16, 12, 3]])
def test_mlp_backward_matches_autograd(activation, sizes):
    torch.manual_seed(0)
    mlp = MLP(sizes, activation=activation).double()
    x = torch.randn(7, sizes[0], dtype=torch.float64)
    y = torch.randint(0, sizes[-1], (7,))
    loss, grads = basics.mlp_backward(mlp, x, y)
    reference = F.cross_entropy(mlp(x), y)
    reference.backward()
    assert abs(loss.item() - reference.item()) < EXACT
    assert len(grads) == len(mlp.layers)
    for g, layer in zip(grads, mlp.layers):
        torch.testing.assert_close(g["weight"], layer.weight.grad, atol=EXACT, rtol=0)
        torch.testing.assert_close(g["bias"], layer.bias.grad, atol=EXACT, rtol=0)


def test_mlp_backward_refuses_what_it_cannot_differentiate():
    with pytest.raises(ValueError, match="derivatives of"):
        basics.mlp_backward(MLP([3, 2], activation="gelu"), torch.randn(2, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"mlp\.eval\(\)"):
        basics.mlp_backward(MLP([3, 4, 2], dropout=0.5), torch.randn(2, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"want x \(B, features\) and y \(B,\)"):
        basics.mlp_backward(MLP([3, 2]), torch.randn(2, 3), torch.tensor([0, 1, 1]))


def _torch_run(make, grads, w0):
    w = w0.clone().requires_grad_(True)
    opt = make([w])
    for g in grads:
        w.grad = g.clone()
        opt.step()
    return w.detach()


@pytest.fixture
def gradient_stream():
    gen = torch.Generator().manual_seed(3)
    w0 = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    return w0, [torch.randn(4, 3, generator=gen, dtype=torch.float64) for _ in range(12)]


@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.9])
def test_sgd_step_matches_torch(gradient_stream, momentum):
    w0, grads = gradient_stream
    w, buf = w0.clone(), None
    for g in grads:
        w, buf = basics.sgd_step(w, g, buf, lr=0.05, momentum=momentum)
    torch.testing.assert_close(
        w, _torch_run(lambda p: torch.optim.SGD(p, lr=0.05, momentum=momentum), grads, w0), atol=EXACT, rtol=0
    )


@pytest.mark.parametrize("alpha, eps", [(0.99, 1e-8), (0.9, 1e-3)])
def test_rmsprop_step_matches_torch(gradient_stream, alpha, eps):
    w0, grads = gradient_stream
    w, s = w0.clone(), torch.zeros_like(w0)
    for g in grads:
        w, s = basics.rmsprop_step(w, g, s, lr=0.01, alpha=alpha, eps=eps)
    ref = _torch_run(lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=alpha, eps=eps), grads, w0)
    torch.testing.assert_close(w, ref, atol=EXACT, rtol=0)


@pytest.mark.parametrize("betas, weight_decay", [((0.9, 0.999), 0.0), ((0.9, 0.95), 0.1), ((0.8, 0.9), 1.0)])
def test_adamw_step_matches_torch(gradient_stream, betas, weight_decay):
    w0, grads = gradient_stream
    w, m, v = w0.clone(), torch.zeros_like(w0), torch.zeros_like(w0)
    for t, g in enumerate(grads, start=1):
        w, m, v = basics.adamw_step(w, g, m, v, t, lr=0.02, betas=betas, weight_decay=weight_decay)
    ref = _torch_run(
        lambda p: torch.optim.AdamW(p, lr=0.02, betas=betas, weight_decay=weight_decay), grads, w0
    )
    torch.testing.assert_close(w, ref, atol=EXACT, rtol=0)
    with pytest.raises(ValueError, match="counts optimizer steps from 1"):
        basics.adamw_step(w, grads[0], m, v, 0, lr=0.02)


def _blobs(n=120, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.randn(n, 4, generator=g) * 0.3 + F.one_hot(y, 4).float() * 2  # three separable clusters
    return x, y


def test_fit_classifier_learns_is_repeatable_and_restores_training_mode():
    x, y = _blobs()
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = MLP([4, 8, 3], dropout=0.1)
        h = basics.fit_classifier(
            model, (x, y), (x, y), torch.optim.Adam(model.parameters(), 1e-2), 15, 16, device="cpu"
        )
        runs.append(h)
    h = runs[0]
    assert h.train_loss[-1] < 0.5 * h.train_loss[0] and h.val_accuracy[-1] > 0.95
    assert len(h.train_loss) == len(h.val_loss) == 15 and len(h.step_loss) == 15 * 8
    assert runs[0].step_loss == runs[1].step_loss  # same seed, same shuffles, same numbers
    model.train()
    basics.predict(model, x)
    assert model.training


def test_fit_classifier_rejects_mismatched_data():
    model = MLP([4, 3])
    opt = torch.optim.SGD(model.parameters(), 0.1)
    with pytest.raises(ValueError, match="one label per input"):
        basics.fit_classifier(model, (torch.randn(5, 4), torch.zeros(4, dtype=torch.long)), None, opt, 1)
    with pytest.raises(ValueError, match="epochs and batch_size must be >= 1"):
        basics.fit_classifier(model, (torch.randn(5, 4), torch.zeros(5, dtype=torch.long)), None, opt, 0)

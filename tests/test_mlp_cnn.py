"""Classic models: hand-written convolution/pooling against PyTorch, MLP against its own weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from course_lib.mlp_cnn import (
    MLP,
    DenseBinary,
    DigitCNN,
    Neuron,
    conv2d_explicit,
    get_activation,
    max_pool2d_explicit,
)

# fp32 sums in a different order than the PyTorch kernels: differences are a few ulps of the values
ATOL = 1e-5
RTOL = 1e-5


@pytest.mark.parametrize(
    "shape, out_ch, k, stride, padding, bias",
    [
        ((2, 1, 8, 8), 4, 3, 1, 1, True),
        ((2, 3, 9, 7), 5, 3, 2, 0, True),
        ((1, 2, 10, 10), 3, (3, 5), (1, 2), (1, 2), False),
        ((3, 4, 6, 6), 2, 1, 1, 0, True),
        ((1, 1, 28, 28), 8, 5, 3, 2, True),
    ],
)
def test_conv2d_explicit_matches_torch_forward_and_backward(shape, out_ch, k, stride, padding, bias):
    torch.manual_seed(0)
    kh, kw = (k, k) if isinstance(k, int) else k
    x = torch.randn(shape, requires_grad=True)
    w = torch.randn(out_ch, shape[1], kh, kw, requires_grad=True)
    b = torch.randn(out_ch, requires_grad=True) if bias else None
    ours = conv2d_explicit(x, w, b, stride=stride, padding=padding)
    ref = F.conv2d(x, w, b, stride=stride, padding=padding)
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=RTOL)

    g = torch.randn_like(ref)
    inputs = [x, w] + ([b] if bias else [])
    grads_ours = torch.autograd.grad(ours, inputs, g)
    grads_ref = torch.autograd.grad(ref, inputs, g)
    for a, r in zip(grads_ours, grads_ref):
        torch.testing.assert_close(a, r, atol=1e-4, rtol=1e-5)  # grads sum over more terms


@pytest.mark.parametrize(
    "shape, k, stride, padding",
    [
        ((2, 3, 8, 8), 2, None, 0),
        ((1, 2, 9, 9), 3, 2, 1),
        ((2, 1, 7, 10), (2, 3), (1, 2), (1, 1)),
        ((1, 1, 28, 28), 2, 2, 0),
    ],
)
def test_max_pool2d_explicit_matches_torch_forward_and_backward(shape, k, stride, padding):
    torch.manual_seed(1)
    x = torch.randn(shape, requires_grad=True)  # continuous values: no ties inside a window
    ours = max_pool2d_explicit(x, k, stride, padding)
    ref = F.max_pool2d(x, k, stride, padding)
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, atol=0.0, rtol=0.0)  # a max selects, it does not round
    g = torch.randn_like(ref)
    (gx_ours,) = torch.autograd.grad(ours, x, g)
    (gx_ref,) = torch.autograd.grad(ref, x, g)
    torch.testing.assert_close(gx_ours, gx_ref, atol=1e-6, rtol=0.0)  # overlapping windows add grads


def test_conv_and_pool_errors_name_the_fix():
    with pytest.raises(ValueError, match="channels"):
        conv2d_explicit(torch.randn(1, 3, 5, 5), torch.randn(2, 1, 3, 3))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        conv2d_explicit(torch.randn(5, 5), torch.randn(2, 1, 3, 3))
    with pytest.raises(ValueError, match="larger than"):
        conv2d_explicit(torch.randn(1, 1, 2, 2), torch.randn(1, 1, 3, 3))
    with pytest.raises(ValueError, match="stride"):
        conv2d_explicit(torch.randn(1, 1, 5, 5), torch.randn(1, 1, 3, 3), stride=0)
    with pytest.raises(ValueError, match="half the kernel"):
        max_pool2d_explicit(torch.randn(1, 1, 4, 4), 2, padding=2)


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "gelu"])
@pytest.mark.parametrize("sizes", [[64, 128, 10], [5, 3], [7, 16, 8, 2]])
def test_mlp_equals_manual_composition_of_its_weights(sizes, activation):
    torch.manual_seed(2)
    mlp = MLP(sizes, activation=activation).eval()
    x = torch.randn(4, sizes[0])
    sigma = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "gelu": F.gelu}[activation]
    h = x
    params = list(mlp.parameters())
    weights, biases = params[0::2], params[1::2]
    assert len(weights) == len(sizes) - 1
    for i, (w, b) in enumerate(zip(weights, biases)):
        assert w.shape == (sizes[i + 1], sizes[i])
        h = h @ w.T + b
        if i < len(weights) - 1:
            h = sigma(h)
    torch.testing.assert_close(mlp(x), h, atol=1e-6, rtol=1e-6)  # same ops, same order up to matmul kernel


def test_neuron_and_dense_binary():
    torch.manual_seed(3)
    n = Neuron(6)
    x = torch.randn(5, 6)
    torch.testing.assert_close(n(x), torch.sigmoid((x * n.w).sum(-1) + n.b), atol=1e-6, rtol=1e-6)
    assert n(x).shape == (5,)

    model = DenseBinary(12, hidden=(32, 16)).eval()
    p = model(torch.randn(7, 12))
    assert p.shape == (7,) and bool(((p > 0) & (p < 1)).all())
    widths = [m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert widths == [32, 16, 1]
    assert [m.out_features for m in DenseBinary(3).modules() if isinstance(m, torch.nn.Linear)] == [
        1024,
        1024,
        1,
    ]


def test_classic_errors_name_the_fix():
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        get_activation("swish")
    with pytest.raises(ValueError, match="at least 2"):
        MLP([10])
    with pytest.raises(ValueError, match="flatten"):
        MLP([64, 10])(torch.randn(2, 8, 8))
    with pytest.raises(ValueError, match="Neuron"):
        Neuron(3)(torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"x.view\(-1, 1, 8, 8\)"):
        DigitCNN(8)(torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match="multiple of 4"):
        DigitCNN(image_size=10)


@pytest.mark.parametrize("image_size", [8, 28])
@pytest.mark.parametrize("batchnorm", [False, True])
def test_digit_cnn_shapes_and_explicit_path_agree(image_size, batchnorm):
    torch.manual_seed(4)
    model = DigitCNN(image_size=image_size, batchnorm=batchnorm).eval()
    x = torch.randn(3, 1, image_size, image_size)
    fast = model(x)
    assert fast.shape == (3, 10)
    torch.testing.assert_close(model(x.flatten(1)), fast, atol=0.0, rtol=0.0)  # flat input is a pure reshape
    model.explicit = True
    torch.testing.assert_close(model(x), fast, atol=ATOL, rtol=RTOL)


def test_digit_cnn_overfits_64_real_digits():
    from sklearn.datasets import load_digits

    torch.manual_seed(5)
    digits = load_digits()
    x = torch.tensor(digits.data[:64], dtype=torch.float32) / 16.0  # pixel values 0..16
    y = torch.tensor(digits.target[:64])
    model = DigitCNN(image_size=8, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    acc = (model(x).argmax(-1) == y).float().mean().item()
    assert acc == 1.0, f"training accuracy {acc:.3f} after 60 steps (loss {loss.item():.3f})"
